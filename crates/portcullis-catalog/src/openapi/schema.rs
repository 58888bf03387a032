//! OpenAPI schemas to the JSON Schema the catalog compiles.
//!
//! Local `$ref`s are inlined so that reviewers see the whole schema and policies can use
//! every field. A reference that would recurse into itself is cut: the recursive occurrence
//! keeps only its `type`. Only keywords the validator understands and that constrain a
//! request are kept; documentation-only and response-only keywords are dropped, and
//! OpenAPI 3.0's `nullable` and boolean `exclusiveMinimum`/`exclusiveMaximum` are rewritten.

use serde_json::{Map, Value, json};

use super::error::ImportError;
use super::spec::Spec;

/// Keywords carried over as they are (their subschemas converted in turn).
const KEPT: &[&str] = &[
    "type",
    "enum",
    "const",
    "format",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "description",
    "default",
];

/// How deep schemas are inlined before the rest is left unconstrained.
const MAX_DEPTH: usize = 64;

/// Converts schemas of one operation, collecting notes for the reviewer.
pub(crate) struct Converter<'a> {
    spec: &'a Spec,
    place: String,
    stack: Vec<String>,
    pub notes: Vec<String>,
}

impl<'a> Converter<'a> {
    pub fn new(spec: &'a Spec, place: String) -> Self {
        Self {
            spec,
            place,
            stack: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The JSON Schema for `schema`, as part of a request (read-only properties dropped).
    pub fn convert(&mut self, schema: &Value) -> Result<Value, ImportError> {
        if self.stack.len() > MAX_DEPTH {
            self.note("a schema nested deeper than 64 levels is left unconstrained there".into());
            return Ok(json!({}));
        }
        let map = match schema {
            Value::Bool(b) => return Ok(Value::Bool(*b)),
            Value::Object(m) => m,
            _ => return Ok(json!({})),
        };
        if let Some(r) = map.get("$ref").and_then(Value::as_str) {
            return self.convert_ref(r, map);
        }
        let mut out = Map::new();
        for (k, v) in map {
            if !KEPT.contains(&k.as_str()) {
                continue;
            }
            let v = match k.as_str() {
                "items" | "not" => self.convert(v)?,
                "additionalProperties" if v.is_object() => self.convert(v)?,
                "allOf" | "anyOf" | "oneOf" => Value::Array(
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| self.convert(s))
                        .collect::<Result<_, _>>()?,
                ),
                "properties" => Value::Object(self.properties(v)?),
                "pattern" => match v.as_str() {
                    Some(p) if pattern_compiles(p) => v.clone(),
                    _ => {
                        self.note(format!(
                            "pattern `{v}` is dropped: the validator's regex engine can't run it"
                        ));
                        continue;
                    }
                },
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
        self.legacy_bounds(map, &mut out);
        drop_read_only_required(map, &mut out, self.spec, &self.place)?;
        if map.get("nullable") == Some(&Value::Bool(true)) {
            return Ok(nullable(out));
        }
        Ok(Value::Object(out))
    }

    fn convert_ref(&mut self, reference: &str, map: &Map<String, Value>) -> Result<Value, ImportError> {
        let target = self.spec.lookup(reference, &self.place)?;
        if self.stack.iter().any(|r| r == reference) {
            self.note(format!(
                "`{reference}` refers to itself: the recursive part only checks its type"
            ));
            let cut: Map<String, Value> = target
                .get("type")
                .map(|t| ("type".to_owned(), t.clone()))
                .into_iter()
                .collect();
            return Ok(Value::Object(cut));
        }
        self.stack.push(reference.to_owned());
        let converted = self.convert(target);
        self.stack.pop();
        let converted = converted?;
        // 3.1 allows keywords beside `$ref`; 3.0 ignores them. Apply 3.1's as an `allOf`.
        let siblings: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| *k != "$ref")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.spec.minor == 1
            && siblings
                .keys()
                .any(|k| KEPT.contains(&k.as_str()) && k != "description" && k != "default")
        {
            let extra = self.convert(&Value::Object(siblings))?;
            return Ok(json!({"allOf": [converted, extra]}));
        }
        Ok(converted)
    }

    fn properties(&mut self, props: &Value) -> Result<Map<String, Value>, ImportError> {
        let mut out = Map::new();
        for (name, s) in props.as_object().into_iter().flatten() {
            if is_read_only(self.spec, s, &self.place)? {
                continue;
            }
            out.insert(name.clone(), self.convert(s)?);
        }
        Ok(out)
    }

    /// OpenAPI 3.0 writes exclusive bounds as booleans beside `minimum`/`maximum`.
    fn legacy_bounds(&self, map: &Map<String, Value>, out: &mut Map<String, Value>) {
        for (excl, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
            match map.get(excl) {
                Some(Value::Bool(true)) => {
                    out.remove(excl);
                    if let Some(b) = out.remove(bound) {
                        out.insert(excl.to_owned(), b);
                    }
                }
                Some(Value::Bool(false)) => {
                    out.remove(excl);
                }
                _ => {}
            }
        }
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

fn is_read_only(spec: &Spec, schema: &Value, place: &str) -> Result<bool, ImportError> {
    let s = spec.resolve(schema, place)?;
    Ok(s.get("readOnly") == Some(&Value::Bool(true)))
}

/// Read-only properties are not sent, so they can't be required either.
fn drop_read_only_required(
    map: &Map<String, Value>,
    out: &mut Map<String, Value>,
    spec: &Spec,
    place: &str,
) -> Result<(), ImportError> {
    let Some(props) = map.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    let mut read_only = Vec::new();
    for (name, s) in props {
        if is_read_only(spec, s, place)? {
            read_only.push(name.as_str());
        }
    }
    if let Some(Value::Array(req)) = out.get_mut("required") {
        req.retain(|r| !r.as_str().is_some_and(|r| read_only.contains(&r)));
    }
    Ok(())
}

/// `nullable: true` (3.0): null is one more allowed value.
fn nullable(mut out: Map<String, Value>) -> Value {
    if let Some(Value::Array(values)) = out.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    match out.get("type").cloned() {
        Some(Value::String(t)) => {
            out.insert("type".into(), json!([t, "null"]));
            Value::Object(out)
        }
        Some(Value::Array(mut ts)) => {
            if !ts.contains(&json!("null")) {
                ts.push(json!("null"));
            }
            out.insert("type".into(), Value::Array(ts));
            Value::Object(out)
        }
        _ => json!({"anyOf": [Value::Object(out), {"type": "null"}]}),
    }
}

/// Whether the catalog's validator (the `regex` engine, no look-around) accepts `pattern`.
fn pattern_compiles(pattern: &str) -> bool {
    jsonschema::options()
        .offline()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&json!({"pattern": pattern}))
        .is_ok()
}
