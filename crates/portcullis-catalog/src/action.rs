//! A validated action definition.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use portcullis_core::{ActionName, Diagnostic, json};

use crate::raw::{RawAction, RawHints, RawRequest, RawResource};
use crate::smtp::SmtpSpec;
use crate::template::{BodyTemplate, TemplateString, UrlTemplate};
use crate::validate::{self, ValidInput, ValidationError};

/// HTTP methods an action may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// The method name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    fn has_no_body(self) -> bool {
        matches!(self, Self::Get | Self::Head)
    }
}

/// How the request is assembled.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// The method.
    pub method: Method,
    /// The URL: fixed origin, templated path and query.
    pub url: UrlTemplate,
    /// Headers with templated values.
    pub headers: Vec<(String, TemplateString)>,
    /// The JSON body template, if any.
    pub body: Option<BodyTemplate>,
    /// Mask the secrets and personal data the detector finds in the input before the
    /// request is rendered (policy still decides on, and the audit log hashes, the input
    /// as sent by the agent).
    pub redact: bool,
    /// How many redirects egress follows, at most [`MAX_REDIRECTS`]. 0 (the default): a 3xx
    /// is the result. Each hop passes the egress guard again, and the credential is sent only
    /// while the hop's origin is its realm.
    pub redirects: u8,
}

/// What carrying out an action means.
#[derive(Debug, Clone)]
pub enum ActionKind {
    /// An HTTP request (`request:`).
    Http(RequestSpec),
    /// An email sent over SMTP (`smtp:`).
    Smtp(SmtpSpec),
}

/// The largest `request.redirects` an action may set.
pub const MAX_REDIRECTS: u8 = 5;

/// The Cedar resource entity an intent for this action acts on.
#[derive(Debug, Clone)]
pub struct ResourceSpec {
    /// The entity type, e.g. `Repo`.
    pub entity_type: String,
    /// The entity id, e.g. `{owner}/{repo}`.
    pub id: TemplateString,
}

/// What of the upstream response the agent gets back.
#[derive(Debug, Clone, Default)]
pub struct ResponseSpec {
    /// JSON pointers to keep; everything else is dropped. `None` keeps the whole body.
    pub keep: Option<Vec<String>>,
    /// Response header names (lowercase) the agent may see besides `content-type`.
    pub headers: Vec<String>,
    /// What happens to secrets and personal data found in what the agent would see.
    pub redact: ResponseRedaction,
    /// Finding kinds (rule ids, or `sensitive-key`) this action may return as they are.
    pub allow: Vec<String>,
}

/// What happens to a response in which the detector finds secrets or personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseRedaction {
    /// Each finding is replaced with `[REDACTED:kind]`; a member whose key names a
    /// credential (`password`, `api_key`…) has its whole value replaced.
    #[default]
    Mask,
    /// The JSON member or array element holding a finding is removed.
    Drop,
    /// The agent gets no result at all, only an error naming the kinds found and where;
    /// the audit log records why. The upstream call has been made.
    Block,
}

/// Whether the data an action returns can be trusted to steer later actions.
///
/// Reading email, web pages, files, chat messages or tickets written by outsiders returns
/// text an attacker may have written; mark such actions `untrusted`. The gateway then
/// records, per session, the values their results gave the agent, and tells policy
/// (`context.provenance`) when a later intent's input carries one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// The output is the operator's own data (the default).
    #[default]
    Trusted,
    /// The output may contain attacker-controlled text.
    Untrusted,
}

/// Hints for clients (MCP tool annotations), derived from the method unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// The action only reads.
    pub read_only: bool,
    /// The action may destroy data.
    pub destructive: bool,
    /// Repeating the action has no further effect.
    pub idempotent: bool,
}

/// An approved action, validated and compiled.
#[derive(Debug)]
pub struct ActionDef {
    /// The action's name.
    pub name: ActionName,
    /// What it does, for people and for agents choosing a tool.
    pub description: String,
    /// The input JSON Schema (with `additionalProperties: false` made explicit).
    pub input_schema: Value,
    validator: jsonschema::Validator,
    limits: json::Limits,
    /// The Cedar resource.
    pub resource: ResourceSpec,
    /// What the action does: the HTTP request or the email template.
    pub kind: ActionKind,
    /// The credential injected into the request, by name.
    pub credential: Option<String>,
    /// The line in the action file where `credential` is, for diagnostics.
    pub credential_line: Option<u64>,
    /// Response projection.
    pub response: ResponseSpec,
    /// Client hints.
    pub hints: Hints,
    /// Whether its output is recorded as untrusted data for provenance tracking.
    pub provenance: Provenance,
    /// The file the action was defined in.
    pub file: PathBuf,
    /// The line of its `name`.
    pub line: u64,
}

/// Header names an action may not set: the gateway owns them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
];

impl ActionDef {
    /// Validates `input` against the action's schema and returns its canonical form.
    ///
    /// # Errors
    /// With every schema problem (up to a limit), each naming the offending field.
    pub fn validate(&self, input: Value) -> Result<ValidInput, ValidationError> {
        validate::validate(&self.name, &self.validator, &self.input_schema, input, self.limits)
    }

    /// The top-level input properties and whether each is required.
    pub fn input_fields(&self) -> impl Iterator<Item = (&str, bool)> {
        let required: BTreeSet<&str> = required_fields(&self.input_schema);
        self.input_schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
            .map(move |k| (k.as_str(), required.contains(k.as_str())))
    }

    /// The HTTP request template, for an HTTP action.
    #[must_use]
    pub fn http(&self) -> Option<&RequestSpec> {
        match &self.kind {
            ActionKind::Http(r) => Some(r),
            ActionKind::Smtp(_) => None,
        }
    }

    /// The email template, for an SMTP action.
    #[must_use]
    pub fn smtp(&self) -> Option<&SmtpSpec> {
        match &self.kind {
            ActionKind::Smtp(s) => Some(s),
            ActionKind::Http(_) => None,
        }
    }

    /// Whether secrets and personal data found in the input are masked before sending
    /// (`request.redact`).
    #[must_use]
    pub fn redacts_input(&self) -> bool {
        self.http().is_some_and(|r| r.redact)
    }

    /// The credential realm: the request URL's origin, or `smtp://server:port`.
    #[must_use]
    pub fn realm(&self) -> String {
        match &self.kind {
            ActionKind::Http(r) => r.url.realm(),
            ActionKind::Smtp(s) => s.realm(),
        }
    }

    pub(crate) fn from_raw(raw: RawAction, file: &Path, limits: json::Limits) -> Result<Self, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let line = raw.name.referenced.line();
        let at = |l: u64, m: String| Diagnostic::at(file, Some(l), m);
        let name = match ActionName::new(raw.name.value.clone()) {
            Ok(n) => Some(n),
            Err(e) => {
                problems.push(at(line, e.to_string()));
                None
            }
        };
        let label = raw.name.value.clone();
        let input_line = raw.input.referenced.line();
        let schema = compile_schema(raw.input.value).map_err(|m| at(input_line, format!("action `{label}`: {m}")));
        let (input_schema, validator) = match schema {
            Ok(s) => (Some(s.0), Some(s.1)),
            Err(d) => {
                problems.push(d);
                (None, None)
            }
        };
        let (request, request_line) = match (raw.request, raw.smtp) {
            (Some(request), None) => {
                let request_line = request.value.url.referenced.line();
                let redirects = request.value.redirects.as_ref().map_or(Ok(0), |r| {
                    parse_redirects(r.value, &label).map_err(|m| at(r.referenced.line(), m))
                });
                let redirects = redirects.unwrap_or_else(|d| {
                    problems.push(d);
                    0
                });
                let request = parse_request(request.value, &label)
                    .map(|r| ActionKind::Http(RequestSpec { redirects, ..r }))
                    .map_err(|m| at(request_line, m));
                (request, request_line)
            }
            (None, Some(smtp)) => {
                let smtp_line = smtp.referenced.line();
                let spec = SmtpSpec::parse(smtp.value, &label).map_err(|m| at(smtp_line, m));
                (spec.map(ActionKind::Smtp), smtp_line)
            }
            (Some(r), Some(_)) => (
                Err(at(
                    r.referenced.line(),
                    format!("action `{label}`: has both `request` and `smtp`; use one"),
                )),
                r.referenced.line(),
            ),
            (None, None) => (
                Err(at(
                    line,
                    format!("action `{label}`: needs a `request` (HTTP) or an `smtp` section"),
                )),
                line,
            ),
        };
        let resource = raw.resource.map_or_else(
            || Ok(default_resource(&label)),
            |r| parse_resource(r.value, &label).map_err(|m| at(r.referenced.line(), m)),
        );
        let response = ResponseSpec {
            keep: raw.response.keep,
            headers: raw.response.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            redact: raw.response.redact,
            allow: raw.response.allow,
        };
        for p in response.keep.iter().flatten() {
            if !(p.is_empty() || p.starts_with('/')) {
                problems.push(at(
                    line,
                    format!(
                        "action `{label}`: `response.keep` entry `{p}` is not a JSON pointer (it must start with `/`)"
                    ),
                ));
            }
        }
        let (request, resource) = match (request, resource) {
            (Ok(req), Ok(res)) => (Some(req), Some(res)),
            (req, res) => {
                problems.extend(req.err());
                problems.extend(res.err());
                (None, None)
            }
        };
        if let (Some(schema), Some(req), Some(res)) = (&input_schema, &request, &resource) {
            check_placeholders(schema, req, res, &label, &mut |m| problems.push(at(request_line, m)));
        }
        let (Some(name), Some(input_schema), Some(validator), Some(request), Some(resource)) =
            (name, input_schema, validator, request, resource)
        else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let hints = match &request {
            ActionKind::Http(r) => hints(raw.hints, r.method),
            ActionKind::Smtp(_) => Hints {
                read_only: raw.hints.read_only.unwrap_or(false),
                destructive: raw.hints.destructive.unwrap_or(false),
                idempotent: raw.hints.idempotent.unwrap_or(false),
            },
        };
        Ok(Self {
            name,
            description: raw.description,
            input_schema,
            validator,
            limits,
            resource,
            kind: request,
            credential_line: raw.credential.as_ref().map(|c| c.referenced.line()),
            credential: raw.credential.map(|c| c.value),
            response,
            hints,
            provenance: raw.provenance,
            file: file.to_owned(),
            line,
        })
    }
}

fn required_fields(schema: &Value) -> BTreeSet<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn compile_schema(mut schema: Value) -> Result<(Value, jsonschema::Validator), String> {
    let Value::Object(map) = &mut schema else {
        return Err("`input` must be a JSON Schema object".into());
    };
    if map.get("type").and_then(Value::as_str) != Some("object") {
        return Err("`input` must be a schema with `type: object`".into());
    }
    map.entry("additionalProperties").or_insert(Value::Bool(false));
    if let Err(e) = jsonschema::meta::validate(&schema) {
        return Err(format!(
            "`input` is not a valid JSON Schema: {} at `{}`",
            e.masked(),
            e.instance_path()
        ));
    }
    let validator = jsonschema::options()
        .offline()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&schema)
        .map_err(|e| format!("`input` schema does not compile: {}", e.masked()))?;
    Ok((schema, validator))
}

fn parse_request(raw: RawRequest, label: &str) -> Result<RequestSpec, String> {
    let method = Method::parse(&raw.method).ok_or_else(|| {
        format!(
            "action `{label}`: unsupported method `{}` (use GET, HEAD, POST, PUT, PATCH or DELETE)",
            raw.method
        )
    })?;
    let url = UrlTemplate::parse(&raw.url.value).map_err(|e| format!("action `{label}`: {e}"))?;
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let lower = name.to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(format!("action `{label}`: invalid header name `{name}`"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "action `{label}`: header `{name}` is set by the gateway and can't be templated"
            ));
        }
        if value.contains(['\r', '\n', '\0']) {
            return Err(format!(
                "action `{label}`: header `{name}` contains a control character"
            ));
        }
        let t = TemplateString::parse(&value).map_err(|e| format!("action `{label}`: header `{name}`: {e}"))?;
        if lower == "authorization" && !t.is_literal() {
            return Err(format!(
                "action `{label}`: header `Authorization` can't take input values; use a credential"
            ));
        }
        headers.push((lower, t));
    }
    let body = raw
        .body
        .as_ref()
        .map(BodyTemplate::parse)
        .transpose()
        .map_err(|e| format!("action `{label}`: body: {e}"))?;
    if body.is_some() && method.has_no_body() {
        return Err(format!(
            "action `{label}`: a {} request can't have a body",
            method.as_str()
        ));
    }
    Ok(RequestSpec {
        method,
        url,
        headers,
        body,
        redact: raw.redact,
        redirects: 0,
    })
}

fn parse_redirects(n: i64, label: &str) -> Result<u8, String> {
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_REDIRECTS)
        .ok_or_else(|| {
            format!("action `{label}`: `request.redirects` is {n}: it must be a whole number from 0 (the default: redirects are not followed) to {MAX_REDIRECTS}")
        })
}

fn parse_resource(raw: RawResource, label: &str) -> Result<ResourceSpec, String> {
    let valid_type = raw.entity_type.split("::").all(|seg| {
        let mut cs = seg.chars();
        cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if !valid_type || matches!(raw.entity_type.as_str(), "Agent" | "Action" | "AgentGroup") {
        return Err(format!(
            "action `{label}`: `resource.type` `{}` is not a usable Cedar entity type name",
            raw.entity_type
        ));
    }
    let id = TemplateString::parse(&raw.id).map_err(|e| format!("action `{label}`: `resource.id`: {e}"))?;
    Ok(ResourceSpec {
        entity_type: raw.entity_type,
        id,
    })
}

/// Actions without a `resource` act on `Resource::"<action name>"`.
fn default_resource(label: &str) -> ResourceSpec {
    ResourceSpec {
        entity_type: "Resource".into(),
        id: TemplateString::literal(label),
    }
}

fn check_placeholders(
    schema: &Value,
    kind: &ActionKind,
    res: &ResourceSpec,
    label: &str,
    report: &mut dyn FnMut(String),
) {
    let props: BTreeSet<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
        .map(String::as_str)
        .collect();
    let required = required_fields(schema);
    let mut check = |name: &str, place: &str, must_be_required: bool| {
        if !props.contains(name) {
            report(format!(
                "action `{label}`: {place} uses `{{{name}}}`, but the input schema has no field `{name}`"
            ));
        } else if must_be_required && !required.contains(name) {
            report(format!(
                "action `{label}`: {place} uses `{{{name}}}`, which must be listed in `required`"
            ));
        }
    };
    for p in res.id.params() {
        check(p, "`resource.id`", true);
    }
    let req = match kind {
        ActionKind::Http(req) => req,
        ActionKind::Smtp(smtp) => {
            for (place, t) in smtp.templates() {
                for p in t.params() {
                    check(p, &format!("`smtp.{place}`"), place == "from");
                }
            }
            return;
        }
    };
    for p in req.url.path_params() {
        check(p, "the URL path", true);
    }
    for p in req.url.query_params() {
        check(p, "the URL query", false);
    }
    for (h, t) in &req.headers {
        for p in t.params() {
            check(p, &format!("header `{h}`"), false);
        }
    }
    let mut body = BTreeSet::new();
    if let Some(b) = &req.body {
        b.collect_params(&mut body);
    }
    for p in &body {
        check(p, "the body", false);
    }
}

fn hints(raw: RawHints, method: Method) -> Hints {
    let read_only = matches!(method, Method::Get | Method::Head);
    Hints {
        read_only: raw.read_only.unwrap_or(read_only),
        destructive: raw.destructive.unwrap_or(method == Method::Delete),
        idempotent: raw
            .idempotent
            .unwrap_or(read_only || matches!(method, Method::Put | Method::Delete)),
    }
}
