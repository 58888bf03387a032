//! One operation to one action document.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::error::ImportError;
use super::schema::Converter;
use super::spec::{Operation, Spec};
use super::yaml::Node;

/// The field that holds the request body when it is not flattened.
const BODY_FIELD: &str = "body";

/// Headers an OpenAPI document may declare as parameters but that the gateway or the
/// credential sets (OpenAPI itself says `Accept`, `Content-Type` and `Authorization`
/// parameters are ignored).
const SKIPPED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
];

/// What the caller chose.
pub(crate) struct Target<'a> {
    pub credential: &'a str,
    pub server: Option<&'a str>,
}

/// A parameter after `$ref` resolution, with the input field it becomes.
struct Param {
    name: String,
    location: String,
    field: String,
    required: bool,
    schema: Value,
    description: Option<String>,
}

/// The action document and the notes for its header comment.
pub(crate) struct Built {
    pub node: Node,
    pub notes: Vec<String>,
}

/// Builds the action `name` from `op`.
pub(crate) fn build(spec: &Spec, op: &Operation<'_>, name: &str, target: &Target<'_>) -> Result<Built, ImportError> {
    let unsupported = |reason: String| ImportError::Unsupported {
        operation: op.id.clone(),
        reason,
    };
    let mut conv = Converter::new(spec, format!("operation `{}`", op.id));
    let params = parameters(spec, op, &mut conv)?;
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in &params {
        let mut schema = p.schema.clone();
        if let (Some(d), Value::Object(m)) = (&p.description, &mut schema) {
            m.entry("description").or_insert_with(|| json!(d));
        }
        properties.insert(p.field.clone(), schema);
        if p.required {
            required.push(json!(p.field));
        }
    }
    let body = request_body(spec, op, &mut conv, &mut properties, &mut required)?;
    if body.is_some() && matches!(op.method, "get" | "head") {
        return Err(unsupported(format!(
            "a {} request can't have a body",
            op.method.to_ascii_uppercase()
        )));
    }
    let method = op.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE") {
        return Err(unsupported(format!("method {method} is not one an action can use")));
    }
    let mut input = json!({"type": "object", "additionalProperties": false, "properties": properties});
    if !required.is_empty() {
        input["required"] = Value::Array(required);
    }
    let url = request_url(spec, op, target.server, &params)?;
    let mut request = Node::Map(vec![
        ("method".into(), Node::Scalar(json!(method))),
        ("url".into(), Node::Scalar(json!(url))),
    ]);
    let mut headers = vec![("Accept".to_owned(), Node::Scalar(json!("application/json")))];
    for p in params.iter().filter(|p| p.location == "header") {
        headers.push((p.name.clone(), Node::Scalar(json!(format!("{{{}}}", p.field)))));
    }
    request.push("headers", Node::Map(headers));
    if let Some(b) = body {
        request.push("body", b);
    }
    let mut doc = Node::Map(vec![
        ("name".into(), Node::Scalar(json!(name))),
        ("description".into(), Node::Scalar(json!(description(op)))),
        ("input".into(), Node::from_json(&input)),
    ]);
    doc.push("resource", resource(op.path, &params, name));
    doc.push("request", request);
    doc.push("credential", Node::Scalar(json!(target.credential)));
    doc.push("hints", hints(op.method));
    let mut notes = conv.notes;
    notes.sort();
    Ok(Built { node: doc, notes })
}

/// Path-item and operation parameters (the operation's win on the same name and location),
/// each given an input field name. Fields are named after the parameter with characters other
/// than letters, digits and `_` replaced by `_` (header names also lowercased); a name already
/// taken gets `_query`/`_header`/`_path` appended, then a number.
fn parameters(spec: &Spec, op: &Operation<'_>, conv: &mut Converter<'_>) -> Result<Vec<Param>, ImportError> {
    let unsupported = |reason: String| ImportError::Unsupported {
        operation: op.id.clone(),
        reason,
    };
    let place = format!("operation `{}`", op.id);
    let mut raw: Vec<&Map<String, Value>> = Vec::new();
    for list in [op.op.get("parameters"), op.item.get("parameters")]
        .into_iter()
        .flatten()
    {
        for p in list.as_array().into_iter().flatten() {
            let p = spec.resolve_object(p, &place)?;
            let key = |p: &Map<String, Value>| (p.get("name").cloned(), p.get("in").cloned());
            if !raw.iter().any(|q| key(q) == key(p)) {
                raw.push(p);
            }
        }
    }
    // Path first, then query, then header: the order of the URL, and of renaming precedence.
    let order = |p: &&Map<String, Value>| match p.get("in").and_then(Value::as_str) {
        Some("path") => 0,
        Some("query") => 1,
        _ => 2,
    };
    raw.sort_by_key(order);
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for p in raw {
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let location = p.get("in").and_then(Value::as_str).unwrap_or_default().to_owned();
        match location.as_str() {
            "path" | "query" => {}
            "header" if SKIPPED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) => continue,
            "header" => {}
            "cookie" => {
                return Err(unsupported(format!(
                    "parameter `{name}` is in a cookie, which actions can't send"
                )));
            }
            other => {
                return Err(unsupported(format!(
                    "parameter `{name}` has unknown location `{other}`"
                )));
            }
        }
        let schema = conv.convert(p.get("schema").unwrap_or(&json!({})))?;
        let required = location == "path" || p.get("required") == Some(&Value::Bool(true));
        let usable = if p.contains_key("content") {
            Err("it is described by `content` (a serialized document), not `schema`".to_owned())
        } else {
            check_style(p, &location, &schema)
        };
        if let Err(reason) = usable {
            if required {
                return Err(unsupported(format!("parameter `{name}`: {reason}")));
            }
            // Optional: the action works without it, and the agent just can't set it.
            conv.notes
                .push(format!("optional {location} parameter `{name}` is left out: {reason}"));
            continue;
        }
        if location == "query" && name.contains(['&', '=', '#', '{', '}', '?']) {
            return Err(unsupported(format!(
                "query parameter name `{name}` can't be written in a URL template"
            )));
        }
        let base = field_name(&name, location == "header");
        let mut field = base.clone();
        if taken.contains(&field) {
            field = format!("{base}_{location}");
        }
        let mut n = 2;
        while taken.contains(&field) {
            field = format!("{base}_{location}{n}");
            n += 1;
        }
        if field != base {
            conv.notes.push(format!(
                "{location} parameter `{name}` is input field `{field}` (`{base}` was taken)"
            ));
        }
        taken.insert(field.clone());
        let description = p
            .get("description")
            .and_then(Value::as_str)
            .map(one_paragraph)
            .filter(|d| !d.is_empty());
        out.push(Param {
            required,
            name,
            location,
            field,
            schema,
            description,
        });
    }
    Ok(out)
}

/// The gateway writes a list in the query as repeated `name=value` pairs (`form`, exploded,
/// OpenAPI's default) and can't write objects at all.
fn check_style(p: &Map<String, Value>, location: &str, schema: &Value) -> Result<(), String> {
    let style = p.get("style").and_then(Value::as_str);
    let explode = p.get("explode").and_then(Value::as_bool);
    let types = type_names(schema);
    if types.iter().any(|t| t == "object") {
        return Err("objects can't be sent as parameters".into());
    }
    let is_array = types.iter().any(|t| t == "array");
    match location {
        "query" if is_array && (style.is_some_and(|s| s != "form") || explode == Some(false)) => Err(
            "lists are sent as repeated `name=value` pairs (style `form`, exploded), not as this parameter asks".into(),
        ),
        "path" | "header" if is_array => Err("lists can't fill a path segment or a header".into()),
        _ => Ok(()),
    }
}

fn type_names(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Adds the request body to the input and returns its template: the body's properties become
/// top-level fields when the body is an object whose property names are usable field names
/// that no parameter has taken; otherwise the whole body is the field `body`.
fn request_body(
    spec: &Spec,
    op: &Operation<'_>,
    conv: &mut Converter<'_>,
    properties: &mut Map<String, Value>,
    required: &mut Vec<Value>,
) -> Result<Option<Node>, ImportError> {
    let Some(rb) = op.op.get("requestBody") else {
        return Ok(None);
    };
    let place = format!("operation `{}`", op.id);
    let rb = spec.resolve_object(rb, &place)?;
    let content = rb
        .get("content")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let Some(media) = content.iter().find(|(t, _)| is_json(t)).map(|(_, m)| m) else {
        let types: Vec<String> = content.keys().map(|t| format!("`{t}`")).collect();
        return Err(ImportError::Unsupported {
            operation: op.id.clone(),
            reason: format!(
                "the request body is {}: only `application/json` bodies are supported",
                if types.is_empty() {
                    "of no content type".into()
                } else {
                    types.join(", ")
                }
            ),
        });
    };
    let body_required = rb.get("required") == Some(&Value::Bool(true));
    let schema = conv.convert(media.get("schema").unwrap_or(&json!({})))?;
    if let Some(fields) = flattenable(&schema, properties) {
        let mut template = Vec::new();
        let mut fields: Vec<_> = fields.iter().collect();
        fields.sort_by_key(|(name, _)| name.as_str());
        for (name, s) in fields {
            template.push((name.clone(), Node::Scalar(json!(format!("{{{name}}}")))));
            properties.insert(name.clone(), s.clone());
        }
        required.extend(
            schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .cloned(),
        );
        return Ok(Some(Node::Map(template)));
    }
    let mut field = BODY_FIELD.to_owned();
    let mut n = 2;
    while properties.contains_key(&field) {
        field = format!("{BODY_FIELD}{n}");
        n += 1;
    }
    conv.notes
        .push(format!("the request body is the input field `{field}`"));
    properties.insert(field.clone(), schema);
    if body_required {
        required.push(json!(field));
    }
    Ok(Some(Node::Scalar(json!(format!("{{{field}}}")))))
}

fn is_json(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
}

/// The body's properties, when they can be top-level fields.
fn flattenable<'s>(schema: &'s Value, taken: &Map<String, Value>) -> Option<&'s Map<String, Value>> {
    let props = schema.get("properties")?.as_object()?;
    let only_keywords = schema.as_object()?.keys().all(|k| {
        matches!(
            k.as_str(),
            "type" | "properties" | "required" | "description" | "additionalProperties"
        )
    });
    let closed_or_open = !schema.get("additionalProperties").is_some_and(Value::is_object);
    let names_ok = props
        .keys()
        .all(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !taken.contains_key(k));
    let types = type_names(schema);
    let object = types == ["object"] || types == ["object", "null"];
    (object && only_keywords && closed_or_open && names_ok && !props.is_empty()).then_some(props)
}

fn field_name(name: &str, header: bool) -> String {
    let mut f: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if header {
        f.make_ascii_lowercase();
    }
    if f.is_empty() {
        f.push('_');
    }
    f
}

/// `prefix.operation_id`, with characters an action name can't hold replaced by `_`.
pub(crate) fn action_name(operation_id: &str, prefix: Option<&str>) -> String {
    let id: String = operation_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match prefix {
        Some(p) if p.ends_with(['.', '_', '-']) => format!("{p}{id}"),
        Some(p) if !p.is_empty() => format!("{p}.{id}"),
        _ => id,
    }
}

fn request_url(spec: &Spec, op: &Operation<'_>, server: Option<&str>, params: &[Param]) -> Result<String, ImportError> {
    let base = spec.server(op, server)?;
    let mut path = op.path.to_owned();
    for p in params.iter().filter(|p| p.location == "path") {
        path = path.replace(&format!("{{{}}}", p.name), &format!("\u{0}{}\u{1}", p.field));
    }
    if path.contains(['{', '}']) {
        return Err(ImportError::Unsupported {
            operation: op.id.clone(),
            reason: format!("path `{}` has a placeholder that no path parameter describes", op.path),
        });
    }
    let path = path.replace('\u{0}', "{").replace('\u{1}', "}");
    let query: Vec<String> = params
        .iter()
        .filter(|p| p.location == "query")
        .map(|p| format!("{}={{{}}}", p.name, p.field))
        .collect();
    let mut url = format!("{base}{path}");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    Ok(url)
}

/// The Cedar resource: the leading run of path parameters (`/repos/{owner}/{repo}/issues`
/// gives `Repo::"{owner}/{repo}"`), typed after the segment before it; without path
/// parameters, the default `Resource::"<action name>"`.
fn resource(path: &str, params: &[Param], name: &str) -> Node {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_param = |s: &str| s.starts_with('{') && s.ends_with('}') && s.matches('{').count() == 1;
    let field_of = |s: &str| {
        let n = s.trim_start_matches('{').trim_end_matches('}');
        params
            .iter()
            .find(|p| p.location == "path" && p.name == n)
            .map(|p| p.field.clone())
    };
    let first = segments.iter().position(|s| is_param(s));
    let (entity_type, id) = match first {
        Some(i) => {
            let fields: Vec<String> = segments[i..]
                .iter()
                .take_while(|s| is_param(s))
                .filter_map(|s| field_of(s))
                .map(|f| format!("{{{f}}}"))
                .collect();
            let ty = i
                .checked_sub(1)
                .and_then(|j| segments.get(j))
                .map_or_else(|| "Resource".to_owned(), |s| type_name(s));
            (ty, fields.join("/"))
        }
        None => ("Resource".to_owned(), name.to_owned()),
    };
    let id = if id.is_empty() { name.to_owned() } else { id };
    Node::Map(vec![
        ("type".into(), Node::Scalar(json!(entity_type))),
        ("id".into(), Node::Scalar(json!(id))),
    ])
}

/// `repos` → `Repo`, `pull-requests` → `PullRequest`; `Resource` when that isn't a usable
/// Cedar type name.
fn type_name(segment: &str) -> String {
    let mut out = String::new();
    for word in segment
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut cs = word.chars();
        if let Some(c) = cs.next() {
            out.push(c.to_ascii_uppercase());
            out.extend(cs);
        }
    }
    if out.len() > 3 && out.ends_with("ies") {
        out.truncate(out.len() - 3);
        out.push('y');
    } else if out.len() > 1 && out.ends_with('s') && !out.ends_with("ss") {
        out.pop();
    }
    let usable = out.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !matches!(out.as_str(), "Agent" | "Action" | "AgentGroup");
    if usable { out } else { "Resource".into() }
}

fn hints(method: &str) -> Node {
    let read_only = matches!(method, "get" | "head");
    let idempotent = read_only || matches!(method, "put" | "delete");
    Node::Map(vec![
        ("read_only".into(), Node::Scalar(json!(read_only))),
        ("destructive".into(), Node::Scalar(json!(method == "delete"))),
        ("idempotent".into(), Node::Scalar(json!(idempotent))),
    ])
}

/// The summary, else the first paragraph of the description, on one line.
/// Without either, `METHOD /path`.
fn description(op: &Operation<'_>) -> String {
    let get = |k| {
        op.op
            .get(k)
            .and_then(Value::as_str)
            .map(one_paragraph)
            .filter(|s| !s.is_empty())
    };
    get("summary")
        .or_else(|| get("description"))
        .unwrap_or_else(|| format!("{} {}", op.method.to_ascii_uppercase(), op.path))
}

fn one_paragraph(text: &str) -> String {
    let first = text.trim().split("\n\n").next().unwrap_or("");
    first.split_whitespace().collect::<Vec<_>>().join(" ")
}
