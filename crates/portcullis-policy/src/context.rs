//! Building the Cedar context of one intent from its validated input.

use std::collections::BTreeSet;

use cedar_policy::RestrictedExpression;
use serde_json::{Map, Value, json};

use portcullis_redact::detect::{Category, JsonFinding};

use crate::schema::primary_type;

/// The input as Cedar values, typed by the action's JSON Schema: integers are `Long`,
/// `number`s are `decimal`, nulls are left out. A value Cedar can't represent exactly (a
/// decimal with more than four fraction digits, an integer beyond 64 bits) is left out
/// too; when the schema requires it, the context then fails validation and the intent is
/// denied, rather than deciding on a rounded value.
pub(crate) fn to_cedar(value: &Value, schema: &Value) -> Option<Value> {
    match (value, primary_type(schema)) {
        (Value::Null, _) => None,
        (Value::String(s), Some("string")) => Some(Value::String(s.clone())),
        (Value::Bool(b), Some("boolean")) => Some(Value::Bool(*b)),
        (Value::Number(n), Some("integer")) => n.as_i64().map(Value::from),
        (Value::Number(n), Some("number")) => decimal(n).map(|arg| json!({"__extn": {"fn": "decimal", "arg": arg}})),
        (Value::Array(items), Some("array")) => {
            let item_schema = schema.get("items")?;
            let converted: Option<Vec<Value>> = items.iter().map(|i| to_cedar(i, item_schema)).collect();
            converted.map(Value::Array)
        }
        (Value::Object(_), Some("object")) => Some(Value::Object(record(value, schema))),
        _ => None,
    }
}

/// An object's properties as a Cedar record (properties the schema doesn't describe, or
/// that Cedar can't type, are left out).
pub(crate) fn record(value: &Value, schema: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let (Some(obj), Some(Value::Object(props))) = (value.as_object(), schema.get("properties")) else {
        return out;
    };
    for (k, v) in obj {
        if let Some(c) = props.get(k).and_then(|s| to_cedar(v, s)) {
            out.insert(k.clone(), c);
        }
    }
    out
}

/// A context value as a Cedar expression: strings, booleans, 64-bit integers, sets and
/// records as themselves, and the `{"__extn": {"fn": "decimal", "arg": …}}` form that
/// [`record`] and the counters give decimals as a `decimal(…)` call.
///
/// # Errors
/// A null, a number that isn't a 64-bit integer, or a record with a repeated key (none of
/// which the context builders produce).
pub(crate) fn restricted(value: &Value) -> Result<RestrictedExpression, String> {
    Ok(match value {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => RestrictedExpression::new_long(n.as_i64().ok_or("a number that is not a 64-bit integer")?),
        Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().map(restricted).collect::<Result<Vec<_>, _>>()?)
        }
        Value::Object(fields) => {
            if fields.len() == 1
                && let Some(Value::Object(call)) = fields.get("__extn")
                && call.get("fn").and_then(Value::as_str) == Some("decimal")
                && let Some(arg) = call.get("arg").and_then(Value::as_str)
            {
                return Ok(RestrictedExpression::new_decimal(arg));
            }
            let fields = fields
                .iter()
                .map(|(k, v)| restricted(v).map(|v| (k.clone(), v)))
                .collect::<Result<Vec<_>, _>>()?;
            RestrictedExpression::new_record(fields).map_err(|e| e.to_string())?
        }
        Value::Null => return Err("a null".to_owned()),
    })
}

/// Cedar's `decimal` text for a JSON number: at most four fraction digits, within
/// Cedar's range, or `None` when the number can't be written exactly.
fn decimal(n: &serde_json::Number) -> Option<String> {
    if let Some(i) = n.as_i64() {
        return (i.checked_mul(10_000).is_some()).then(|| format!("{i}.0"));
    }
    let f = n.as_f64()?;
    let text = n.to_string();
    if text.contains(['e', 'E']) {
        return None;
    }
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
    if frac.len() > 4 || f.abs() >= 922_337_203_685_477.0 {
        return None;
    }
    Some(format!("{whole}.{frac}"))
}

/// Facts Cedar can't compute itself, derived from the canonical input: the domain of
/// each `format: email` field and the host of each `format: uri` field, as
/// `context.derived.FIELD.domain` / `.domains` (for arrays) and `.host` / `.hosts`.
pub(crate) fn derived(value: &Value, schema: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let (Some(obj), Some(Value::Object(props))) = (value.as_object(), schema.get("properties")) else {
        return out;
    };
    for (k, v) in obj {
        let Some(prop) = props.get(k) else { continue };
        let Some((kind, _)) = derivation(prop) else {
            continue;
        };
        let single = |s: &str| match kind {
            Derive::Domain => email_domain(s),
            Derive::Host => uri_host(s),
        };
        let entry = match v {
            Value::String(s) => single(s).map(|d| json!({ kind.single(): d })),
            Value::Array(items) => {
                let all: Option<Vec<String>> = items.iter().map(|i| i.as_str().and_then(single)).collect();
                all.map(|d| json!({ kind.plural(): d }))
            }
            _ => None,
        };
        if let Some(e) = entry {
            out.insert(k.clone(), e);
        }
    }
    out
}

#[derive(Clone, Copy)]
pub(crate) enum Derive {
    Domain,
    Host,
}

impl Derive {
    pub(crate) fn single(self) -> &'static str {
        match self {
            Self::Domain => "domain",
            Self::Host => "host",
        }
    }
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Self::Domain => "domains",
            Self::Host => "hosts",
        }
    }
}

/// Which derived fact a property gets, and whether it is an array.
pub(crate) fn derivation(prop: &Value) -> Option<(Derive, bool)> {
    let (schema, array) = match primary_type(prop) {
        Some("array") => (prop.get("items")?, true),
        Some("string") => (prop, false),
        _ => return None,
    };
    let kind = match schema.get("format").and_then(Value::as_str)? {
        "email" | "idn-email" => Derive::Domain,
        "uri" | "iri" | "url" => Derive::Host,
        _ => return None,
    };
    Some((kind, array))
}

fn email_domain(s: &str) -> Option<String> {
    let (_, domain) = s.rsplit_once('@')?;
    (!domain.is_empty()).then(|| domain.trim_end_matches('.').to_ascii_lowercase())
}

fn uri_host(s: &str) -> Option<String> {
    let (_, rest) = s.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split_once(']').map(|(h, _)| format!("{h}]"))?
    } else {
        host_port.split(':').next()?.to_owned()
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

/// `context.now`: the decision time as Unix seconds, the UTC hour (0–23), the ISO weekday
/// (1 = Monday … 7 = Sunday) and the UTC date (`YYYY-MM-DD`).
pub(crate) fn now(t: time::OffsetDateTime) -> Value {
    let t = t.to_offset(time::UtcOffset::UTC);
    json!({
        "timestamp": t.unix_timestamp(),
        "hour": t.hour(),
        "weekday": t.weekday().number_from_monday(),
        "date": format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
    })
}

/// `context.findings`: what the detector found in the input.
///
/// - `kinds`: the rule ids (`payment-card`, `aws-access-key-id`, `sensitive-key`…);
/// - `categories`: `secret` and/or `pii`;
/// - `pointers`, `secrets`, `pii`: the JSON pointers of the input fields where anything, a
///   secret, or personal data was found;
/// - `at`: each finding as `{kind, pointer}`.
pub(crate) fn findings(found: &[JsonFinding]) -> Value {
    let set = |items: BTreeSet<&str>| Value::Array(items.into_iter().map(Value::from).collect());
    let of = |category: Category| {
        found
            .iter()
            .filter(move |f| f.category == category)
            .map(|f| f.pointer.as_str())
    };
    let at: BTreeSet<(&str, &str)> = found.iter().map(|f| (&*f.kind, f.pointer.as_str())).collect();
    json!({
        "kinds": set(found.iter().map(|f| &*f.kind).collect()),
        "categories": set(found.iter().map(|f| f.category.as_str()).collect()),
        "pointers": set(found.iter().map(|f| f.pointer.as_str()).collect()),
        "secrets": set(of(Category::Secret).collect()),
        "pii": set(of(Category::Pii).collect()),
        "at": at.into_iter().map(|(kind, pointer)| json!({"kind": kind, "pointer": pointer})).collect::<Vec<_>>(),
    })
}

/// The Cedar type of `context.findings`.
pub(crate) fn findings_type() -> Value {
    let strings = json!({"type": "Set", "element": {"type": "String"}});
    json!({"type": "Record", "attributes": {
        "kinds": strings, "categories": strings, "pointers": strings, "secrets": strings, "pii": strings,
        "at": {"type": "Set", "element": {"type": "Record", "attributes": {
            "kind": {"type": "String"}, "pointer": {"type": "String"}
        }}}
    }})
}

/// The Cedar type of `context.now`.
pub(crate) fn now_type() -> Value {
    json!({"type": "Record", "attributes": {
        "timestamp": {"type": "Long"}, "hour": {"type": "Long"},
        "weekday": {"type": "Long"}, "date": {"type": "String"}
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_become_exact_decimals_or_nothing() {
        let s = json!({"type": "number"});
        assert_eq!(
            to_cedar(&json!(12.5), &s),
            Some(json!({"__extn": {"fn": "decimal", "arg": "12.5"}}))
        );
        assert_eq!(
            to_cedar(&json!(40), &s),
            Some(json!({"__extn": {"fn": "decimal", "arg": "40.0"}}))
        );
        assert_eq!(to_cedar(&json!(0.00001), &s), None);
        assert_eq!(to_cedar(&json!(1.23456), &s), None);
    }

    #[test]
    fn derived_facts_come_from_canonical_values() {
        let schema = json!({"type": "object", "properties": {
            "to": {"type": "array", "items": {"type": "string", "format": "email"}},
            "cc": {"type": "string", "format": "email"},
            "link": {"type": "string", "format": "uri"}
        }});
        let v = json!({"to": ["a@example.com", "b@Partner.org"], "cc": "c@x.io", "link": "https://user@Docs.Example.com:8443/p?q"});
        let d = derived(&v, &schema);
        assert_eq!(d["to"], json!({"domains": ["example.com", "partner.org"]}));
        assert_eq!(d["cc"], json!({"domain": "x.io"}));
        assert_eq!(d["link"], json!({"host": "docs.example.com"}));
    }
}
