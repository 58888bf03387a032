//! JSON Schema → Cedar schema types.
//!
//! Cedar has no floats and no nulls: `number` becomes `decimal`, nullable types become
//! optional attributes, and schema parts Cedar can't type (free-form objects, `anyOf`) are
//! left out of the context, so a policy that uses them fails validation at load.

use serde_json::{Map, Value, json};

/// The Cedar JSON-schema type for a JSON Schema, or `None` when Cedar can't express it.
pub(crate) fn cedar_type(schema: &Value) -> Option<Value> {
    match primary_type(schema)? {
        "string" => Some(json!({"type": "String"})),
        "integer" => Some(json!({"type": "Long"})),
        "number" => Some(json!({"type": "Extension", "name": "decimal"})),
        "boolean" => Some(json!({"type": "Boolean"})),
        "array" => {
            let element = cedar_type(schema.get("items")?)?;
            Some(json!({"type": "Set", "element": element}))
        }
        "object" => Some(record_type(schema)),
        _ => None,
    }
}

/// A Cedar record type for an object schema: every property Cedar can express, required
/// when the schema requires it and it can't be null.
pub(crate) fn record_type(schema: &Value) -> Value {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut attrs = Map::new();
    if let Some(Value::Object(props)) = schema.get("properties") {
        for (name, prop) in props {
            if let Some(mut t) = cedar_type(prop) {
                let req = required.contains(&name.as_str()) && !nullable(prop);
                if let Value::Object(m) = &mut t {
                    m.insert("required".into(), Value::Bool(req));
                }
                attrs.insert(name.clone(), t);
            }
        }
    }
    json!({"type": "Record", "attributes": attrs})
}

/// The one non-null type of a schema (`type: [string, null]` → `string`), inferring
/// `string` from an `enum` or `const` of strings.
pub(crate) fn primary_type(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(ts)) => {
            let non_null: Vec<&str> = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect();
            match non_null.as_slice() {
                [one] => Some(one),
                _ => None,
            }
        }
        None => {
            let all_strings = |v: &Value| {
                v.as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string))
            };
            if schema.get("enum").is_some_and(all_strings) || schema.get("const").is_some_and(Value::is_string) {
                Some("string")
            } else {
                None
            }
        }
        Some(_) => None,
    }
}

fn nullable(schema: &Value) -> bool {
    schema
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(|t| t == "null"))
}

/// The Cedar type of a configured attribute value (agent attributes, entity data).
pub(crate) fn infer_type(value: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::String(_) => json!({"type": "String"}),
        Value::Bool(_) => json!({"type": "Boolean"}),
        Value::Number(n) if n.is_i64() => json!({"type": "Long"}),
        Value::Array(items) => {
            let first = items
                .first()
                .ok_or("an empty list has no element type; give at least one element")?;
            let t = infer_type(first)?;
            for item in items {
                if infer_type(item)? != t {
                    return Err("list elements must all have the same type".into());
                }
            }
            json!({"type": "Set", "element": t})
        }
        Value::Object(map) => {
            let mut attrs = Map::new();
            for (k, v) in map {
                attrs.insert(k.clone(), infer_type(v)?);
            }
            json!({"type": "Record", "attributes": attrs})
        }
        Value::Number(_) => {
            return Err("only whole numbers are supported in attributes (Cedar has no floats)".into());
        }
        Value::Null => return Err("null is not a Cedar value; leave the attribute out".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_schema_types_map_to_cedar() {
        let s = json!({"type": "object", "required": ["a", "n"], "properties": {
            "a": {"type": "string"}, "n": {"type": ["integer", "null"]}, "amount": {"type": "number"},
            "tags": {"type": "array", "items": {"enum": ["x", "y"]}}, "free": {}, "ok": {"type": "boolean"}
        }});
        assert_eq!(
            record_type(&s),
            json!({"type": "Record", "attributes": {
                "a": {"type": "String", "required": true},
                "n": {"type": "Long", "required": false},
                "amount": {"type": "Extension", "name": "decimal", "required": false},
                "tags": {"type": "Set", "element": {"type": "String"}, "required": false},
                "ok": {"type": "Boolean", "required": false}
            }})
        );
    }

    #[test]
    fn attribute_types_are_inferred() {
        assert_eq!(
            infer_type(&json!(["a", "b"])).unwrap(),
            json!({"type": "Set", "element": {"type": "String"}})
        );
        assert!(infer_type(&json!(1.5)).is_err());
        assert!(infer_type(&json!(["a", 1])).is_err());
    }
}
