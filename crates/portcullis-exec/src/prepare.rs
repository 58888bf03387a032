//! Structural request assembly and credential injection.
//!
//! A request is built from the action's templates and the permitted input, never by
//! concatenating strings that are parsed again: each `{param}` in the path fills exactly
//! one percent-encoded segment, query values are form-encoded, header values are checked
//! for control characters, and JSON bodies keep the input's JSON types. The credential is
//! injected last, and only when the request's origin is the credential's realm.

use base64::Engine as _;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use url::Url;

use portcullis_catalog::smtp::SmtpSpec;
use portcullis_catalog::template::{BodyTemplate, Part, TemplateString};
use portcullis_catalog::{ActionDef, ActionKind, ValidInput};
use portcullis_core::Secret;
use portcullis_core::secret::REDACTED;
use portcullis_policy::Permitted;

use crate::OutboundRequest;
use crate::mail::{Mail, Stamp};
use crate::redirect::RedirectPolicy;

/// How a credential is injected.
#[derive(Debug, Clone)]
pub enum Injection {
    /// `Authorization: Bearer SECRET`.
    Bearer,
    /// `Authorization: Basic base64(USERNAME:SECRET)`.
    Basic {
        /// The user name.
        username: String,
    },
    /// `NAME: PREFIX SECRET`.
    Header {
        /// Header name.
        name: String,
        /// Text before the secret.
        prefix: String,
    },
    /// `?PARAM=SECRET`.
    Query {
        /// Parameter name.
        param: String,
    },
}

/// A credential ready to inject: the secret, how it goes in, and the only origin it may go to.
#[derive(Debug, Clone)]
pub struct Credential {
    injection: Injection,
    secret: Secret<String>,
    realm: String,
}

impl Credential {
    /// A credential for `realm` (`scheme://host:port`, as [`url::Origin::ascii_serialization`] writes it).
    #[must_use]
    pub fn new(injection: Injection, secret: Secret<String>, realm: String) -> Self {
        Self {
            injection,
            secret,
            realm,
        }
    }

    /// Every value derived from the secret that could appear in a response, for the scrubber:
    /// the secret itself and, for basic auth, `username:secret`.
    #[must_use]
    pub fn scrub_values(&self) -> Vec<String> {
        let secret = self.secret.expose_secret().clone();
        match &self.injection {
            Injection::Basic { username } => {
                // SMTP AUTH sends these base64-encoded; a server may quote them back.
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                vec![
                    format!("{username}:{secret}"),
                    b64(&format!("\0{username}\0{secret}")),
                    b64(&secret),
                    secret,
                ]
            }
            _ => vec![secret],
        }
    }

    /// The header the credential goes in, lowercase: `authorization` or its own.
    pub(crate) fn header_name(&self) -> Option<String> {
        match &self.injection {
            Injection::Bearer | Injection::Basic { .. } => Some("authorization".into()),
            Injection::Header { name, .. } => Some(name.to_ascii_lowercase()),
            Injection::Query { .. } => None,
        }
    }

    /// The query parameter the credential goes in, if it goes in one.
    pub(crate) fn query_param(&self) -> Option<&str> {
        match &self.injection {
            Injection::Query { param } => Some(param),
            _ => None,
        }
    }

    /// The user name and password for SMTP AUTH: a `basic` credential only.
    pub(crate) fn login(&self) -> Option<(&str, &str)> {
        match &self.injection {
            Injection::Basic { username } => Some((username, self.secret.expose_secret())),
            _ => None,
        }
    }

    /// The secret, for injection into a redirect that stays in the realm.
    pub(crate) fn secret(&self) -> &str {
        self.secret.expose_secret()
    }

    fn header(&self, secret: &str) -> Option<(String, String)> {
        match &self.injection {
            Injection::Bearer => Some(("authorization".into(), format!("Bearer {secret}"))),
            Injection::Basic { username } => {
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"));
                Some(("authorization".into(), format!("Basic {b}")))
            }
            Injection::Header { name, prefix } => Some((name.to_ascii_lowercase(), format!("{prefix}{secret}"))),
            Injection::Query { .. } => None,
        }
    }

    fn inject(&self, url: &mut Url, headers: &mut Vec<(String, String)>, secret: &str) {
        if let Injection::Query { param } = &self.injection {
            url.query_pairs_mut().append_pair(param, secret);
        }
        if let Some((name, value)) = self.header(secret) {
            headers.retain(|(n, _)| *n != name);
            headers.push((name, value));
        }
    }
}

/// Why a request could not be assembled. These are problems with the agent's input (a
/// value that can't fill its slot) or with the configuration (a credential for another
/// origin); none of them carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// A value can't fill a URL path segment.
    #[error("`{field}` can't be used as a URL path segment: {reason}")]
    PathSegment {
        /// The input field.
        field: String,
        /// Why.
        reason: &'static str,
    },
    /// A required value is missing.
    #[error("`{0}` is required to build the request")]
    Missing(String),
    /// A value of the wrong shape for its slot.
    #[error("`{field}` can't be used in {place}: {reason}")]
    Shape {
        /// The input field.
        field: String,
        /// Where.
        place: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A header value is not acceptable.
    #[error("header `{0}` would contain a control character or invalid text")]
    Header(String),
    /// A value can't be used in an email (a control character in a header-bound field, an
    /// address outside the accepted form, too many recipients, too large a message).
    #[error("`{field}` can't be used in the email: {reason}")]
    Mail {
        /// The input field (or the `smtp` template's place, for a literal).
        field: String,
        /// Why.
        reason: String,
    },
    /// The action is not of the kind this step handles (an SMTP action given to the HTTP
    /// renderer, or the other way round).
    #[error("the action is not {0}")]
    WrongKind(&'static str),
    /// The credential's realm is not the request's origin.
    #[error("credential realm `{realm}` does not match the request origin `{origin}`; the credential was not sent")]
    RealmMismatch {
        /// The credential's realm.
        realm: String,
        /// The request's origin.
        origin: String,
    },
}

/// A request rendered from templates, without a credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Method.
    pub method: &'static str,
    /// URL.
    pub url: Url,
    /// Headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
}

/// A request that policy permitted, with its credential injected. Only [`prepare`] builds
/// one, and only from a [`Permitted`] input; the executor takes nothing else.
///
/// It carries the action's redirect policy (`request.redirects`) and what the executor needs to
/// keep the credential in its realm across redirects.
#[derive(Debug)]
pub struct PreparedRequest {
    pub(crate) request: OutboundRequest,
    pub(crate) redirects: RedirectPolicy,
}

/// Checks that `input` fills the action's templates (an HTTP request or an email), without
/// a credential: the gateway calls it before deciding, so that an input that can't be sent is
/// refused as invalid rather than failing after the decision.
///
/// # Errors
/// When a value can't fill its slot.
pub fn check(action: &ActionDef, input: &Value) -> Result<(), PrepareError> {
    match &action.kind {
        ActionKind::Http(_) => render(action, input).map(drop),
        ActionKind::Smtp(spec) => crate::mail::render(spec, input).map(drop),
    }
}

/// An email that policy permitted, with its server login. Only [`prepare_mail`] builds one,
/// and only from a [`Permitted`] input; [`crate::Egress::send_mail`] takes nothing else.
#[derive(Debug)]
pub struct PreparedMail {
    pub(crate) spec: SmtpSpec,
    pub(crate) mail: Mail,
    pub(crate) credential: Option<Credential>,
}

/// Builds the email to send from the permitted input, with the credential for SMTP AUTH,
/// refusing a credential whose realm is not the action's `smtp://server:port` or that is not
/// of kind `basic`.
///
/// # Errors
/// When a value can't be used, or the credential can't log in to this server.
pub fn prepare_mail(
    permitted: Permitted<ValidInput>,
    action: &ActionDef,
    credential: Option<&Credential>,
) -> Result<PreparedMail, PrepareError> {
    let spec = action.smtp().ok_or(PrepareError::WrongKind("an email"))?;
    let mail = crate::mail::render(spec, permitted.get().value())?;
    if let Some(c) = credential {
        check_smtp_credential(c, spec)?;
    }
    Ok(PreparedMail {
        spec: spec.clone(),
        mail,
        credential: credential.cloned(),
    })
}

fn check_smtp_credential(c: &Credential, spec: &SmtpSpec) -> Result<(), PrepareError> {
    let origin = spec.realm();
    if c.realm != origin {
        return Err(PrepareError::RealmMismatch {
            realm: c.realm.clone(),
            origin,
        });
    }
    if c.login().is_none() {
        return Err(PrepareError::WrongKind(
            "given a `basic` credential, which SMTP AUTH needs",
        ));
    }
    Ok(())
}

/// What a dry run of an email shows: the server, the envelope, the message headers and
/// bodies, and the login with its password as `<redacted>`.
///
/// # Errors
/// When a value can't be used, or the credential can't log in to this server.
pub fn mail_dry_run_view(
    action: &ActionDef,
    input: &Value,
    credential: Option<&Credential>,
) -> Result<Rendered, PrepareError> {
    let spec = action.smtp().ok_or(PrepareError::WrongKind("an email"))?;
    let mail = crate::mail::render(spec, input)?;
    let stamp = Stamp::new(&mail.from);
    let mut headers: Vec<(String, String)> = mail
        .headers(&stamp)
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    let mut auth = Value::Null;
    if let Some(c) = credential {
        check_smtp_credential(c, spec)?;
        if let Some((username, _)) = c.login() {
            auth = serde_json::json!({"username": username, "password": REDACTED});
        }
    }
    headers.retain(|(n, _)| n != "date");
    let url = Url::parse(&spec.realm()).map_err(|_| PrepareError::WrongKind("an email to a valid server"))?;
    let body = serde_json::json!({
        "envelope": {"from": mail.from, "to": mail.recipients()},
        "tls": spec.tls,
        "auth": auth,
        "text": mail.text,
        "html": mail.html,
    });
    Ok(Rendered {
        method: "SMTP",
        url,
        headers,
        body: Some(body),
    })
}

/// Renders the action's request for `input`. Deterministic: the same input renders the
/// same request, so the gateway renders once before deciding (to refuse inputs that can't
/// fill their slots) and again, permitted, to send.
///
/// # Errors
/// When a value can't fill its slot.
pub fn render(action: &ActionDef, input: &Value) -> Result<Rendered, PrepareError> {
    let spec = action.http().ok_or(PrepareError::WrongKind("an HTTP request"))?;
    let mut url = spec.url.origin.clone();
    let mut path = String::new();
    for seg in &spec.url.segments {
        path.push('/');
        path.push_str(&path_segment(seg, input)?);
    }
    url.set_path(if path.is_empty() { "/" } else { &path });
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, t) in &spec.url.query {
        for v in query_values(t, input)? {
            pairs.push((name.clone(), v));
        }
    }
    if !pairs.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    let mut headers = Vec::new();
    for (name, t) in &spec.headers {
        if let Some(v) = interpolate(t, input)? {
            if v.contains(['\r', '\n', '\0']) || HeaderValue::from_str(&v).is_err() {
                return Err(PrepareError::Header(name.clone()));
            }
            headers.push((name.clone(), v));
        }
    }
    let body = match &spec.body {
        Some(t) => {
            if !headers.iter().any(|(n, _)| n == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Some(body(t, input)?.unwrap_or(Value::Null))
        }
        None => None,
    };
    Ok(Rendered {
        method: spec.method.as_str(),
        url,
        headers,
        body,
    })
}

/// Builds the request to send: renders the permitted input and injects the credential,
/// refusing when the credential's realm is not the request's origin.
///
/// # Errors
/// When rendering fails or the realm doesn't match.
pub fn prepare(
    permitted: Permitted<ValidInput>,
    action: &ActionDef,
    credential: Option<&Credential>,
) -> Result<PreparedRequest, PrepareError> {
    let Rendered {
        method,
        mut url,
        mut headers,
        body,
    } = render(action, permitted.get().value())?;
    let max_redirects = action.http().map_or(0, |r| r.redirects);
    let redirects = RedirectPolicy::new(max_redirects, &url, credential);
    if let Some(c) = credential {
        check_realm(c, &url)?;
        c.inject(&mut url, &mut headers, c.secret.expose_secret());
    }
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| PrepareError::Header("method".into()))?;
    let mut out_headers = Vec::with_capacity(headers.len());
    for (n, v) in headers {
        let name = HeaderName::from_bytes(n.as_bytes()).map_err(|_| PrepareError::Header(n.clone()))?;
        let mut value = HeaderValue::from_str(&v).map_err(|_| PrepareError::Header(n.clone()))?;
        if credential.is_some() && matches!(n.as_str(), "authorization") {
            value.set_sensitive(true);
        }
        out_headers.push((name, value));
    }
    let body = body
        .map(|b| serde_json::to_vec(&b))
        .transpose()
        .map_err(|_| PrepareError::Header("body".into()))?;
    Ok(PreparedRequest {
        request: OutboundRequest {
            method,
            url,
            headers: out_headers,
            body,
        },
        redirects,
    })
}

/// The rendered request as a dry run shows it: the credential injected as `<redacted>`.
///
/// # Errors
/// When the credential's realm doesn't match.
pub fn dry_run_view(mut rendered: Rendered, credential: Option<&Credential>) -> Result<Rendered, PrepareError> {
    if let Some(c) = credential {
        check_realm(c, &rendered.url)?;
        c.inject(&mut rendered.url, &mut rendered.headers, REDACTED);
    }
    Ok(rendered)
}

fn check_realm(c: &Credential, url: &Url) -> Result<(), PrepareError> {
    let origin = url.origin().ascii_serialization();
    if origin != c.realm {
        return Err(PrepareError::RealmMismatch {
            realm: c.realm.clone(),
            origin,
        });
    }
    Ok(())
}

/// Bytes left as they are in a path segment: RFC 3986 unreserved characters. Everything
/// else, including `/`, `?`, `#`, `%`, `;` and whitespace, is percent-encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn path_segment(t: &TemplateString, input: &Value) -> Result<String, PrepareError> {
    let mut out = String::new();
    let mut last_field = String::new();
    for part in t.parts() {
        match part {
            Part::Lit(l) => out.push_str(&encode_segment(l)),
            Part::Param(name) => {
                let v = input
                    .get(name)
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| PrepareError::Missing(name.clone()))?;
                let text = scalar_text(v).ok_or_else(|| PrepareError::PathSegment {
                    field: name.clone(),
                    reason: "only strings, numbers and booleans fill a path segment",
                })?;
                if text.is_empty() {
                    return Err(PrepareError::PathSegment {
                        field: name.clone(),
                        reason: "it is empty",
                    });
                }
                out.push_str(&encode_segment(&text));
                last_field.clone_from(name);
            }
        }
    }
    if out == "." || out == ".." {
        return Err(PrepareError::PathSegment {
            field: last_field,
            reason: "`.` and `..` would change the path",
        });
    }
    Ok(out)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn query_values(t: &TemplateString, input: &Value) -> Result<Vec<String>, PrepareError> {
    if let Some(name) = t.sole_param() {
        return match input.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    scalar_text(i).ok_or_else(|| PrepareError::Shape {
                        field: name.to_owned(),
                        place: "the query",
                        reason: "list items must be strings, numbers or booleans",
                    })
                })
                .collect(),
            Some(v) => scalar_text(v).map(|s| vec![s]).ok_or_else(|| PrepareError::Shape {
                field: name.to_owned(),
                place: "the query",
                reason: "objects can't be query values",
            }),
        };
    }
    Ok(interpolate(t, input)?.into_iter().collect())
}

/// Fills a mixed template as text; `None` when a placeholder's field is absent (the slot is then left out).
fn interpolate(t: &TemplateString, input: &Value) -> Result<Option<String>, PrepareError> {
    let mut out = String::new();
    for part in t.parts() {
        match part {
            Part::Lit(l) => out.push_str(l),
            Part::Param(name) => match input.get(name) {
                None | Some(Value::Null) => return Ok(None),
                Some(v) => out.push_str(&scalar_text(v).unwrap_or_else(|| v.to_string())),
            },
        }
    }
    Ok(Some(out))
}

/// Builds the JSON body; `None` means "leave this slot out" (a missing optional field).
fn body(t: &BodyTemplate, input: &Value) -> Result<Option<Value>, PrepareError> {
    Ok(match t {
        BodyTemplate::Literal(v) => Some(v.clone()),
        BodyTemplate::Text(s) => match s.sole_param() {
            Some(name) => input.get(name).filter(|v| !v.is_null()).cloned(),
            None => interpolate(s, input)?.map(Value::String),
        },
        BodyTemplate::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.extend(body(i, input)?);
            }
            Some(Value::Array(out))
        }
        BodyTemplate::Object(fields) => {
            let mut out = Map::new();
            for (k, v) in fields {
                if let Some(v) = body(v, input)? {
                    out.insert(k.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
    })
}

impl crate::Egress {
    /// Sends a permitted, prepared request through the egress guard, following as many
    /// redirects as its action allows (none by default), each hop guarded like the first and
    /// the credential sent only while a hop stays in its realm (see [`crate::redirect`]).
    ///
    /// # Errors
    /// As [`crate::Egress::send`], and [`crate::ExecError::Redirect`]
    /// for a redirect that is not followed.
    pub async fn execute(&self, request: PreparedRequest) -> Result<portcullis_core::RawResponse, crate::ExecError> {
        self.send_following(request.request, &request.redirects).await
    }
}
