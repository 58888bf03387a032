//! Input validation: the compiled JSON Schema and the canonical form of valid input.

use serde_json::Value;

use portcullis_core::{ActionName, json};

/// Input that passed the action's schema, in canonical form. Only [`crate::ActionDef::validate`]
/// builds one, so holding a `ValidInput` proves validation happened.
#[derive(Debug, Clone)]
pub struct ValidInput {
    action: ActionName,
    value: Value,
    canonical: String,
    sha256: String,
}

impl ValidInput {
    /// The action the input was validated for.
    #[must_use]
    pub fn action(&self) -> &ActionName {
        &self.action
    }
    /// The canonical input: what policy sees and what the request is built from.
    #[must_use]
    pub fn value(&self) -> &Value {
        &self.value
    }
    /// RFC 8785 canonical JSON of [`Self::value`].
    #[must_use]
    pub fn canonical_json(&self) -> &str {
        &self.canonical
    }
    /// SHA-256 (hex) of the canonical JSON: the payload hash idempotency and approvals bind to.
    #[must_use]
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The input doesn't match the schema; one entry per problem, each naming the field.
    #[error("input does not match the schema of `{action}`: {}", .problems.join("; "))]
    Schema {
        /// The action.
        action: ActionName,
        /// `"/field: problem"` entries.
        problems: Vec<String>,
    },
    /// The input nests too deeply or can't be canonicalized.
    #[error("input is not acceptable: {0}")]
    Shape(String),
}

impl ValidationError {
    /// The individual problems, for structured error responses.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Schema { problems, .. } => problems.clone(),
            Self::Shape(m) => vec![m.clone()],
        }
    }
}

/// Most problems listed for one invalid input.
const MAX_PROBLEMS: usize = 20;

pub(crate) fn validate(
    action: &ActionName,
    validator: &jsonschema::Validator,
    schema: &Value,
    mut input: Value,
    limits: json::Limits,
) -> Result<ValidInput, ValidationError> {
    json::check_depth(&input, limits).map_err(|e| ValidationError::Shape(e.to_string()))?;
    canonicalize(schema, &mut input);
    let problems: Vec<String> = validator
        .iter_errors(&input)
        .take(MAX_PROBLEMS)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() { "/".to_owned() } else { path };
            format!("{path}: {}", e.masked())
        })
        .collect();
    if !problems.is_empty() {
        return Err(ValidationError::Schema {
            action: action.clone(),
            problems,
        });
    }
    let canonical = json::canonical(&input).map_err(|e| ValidationError::Shape(e.to_string()))?;
    let sha256 = portcullis_core::sha256_hex(canonical.as_bytes());
    Ok(ValidInput {
        action: action.clone(),
        value: input,
        canonical,
        sha256,
    })
}

/// Normalizes strings whose schema `format` is `email`, `idn-email` or `hostname`: trimmed
/// and lowercased; and whole numbers written as floats (`7.0`) where the schema says
/// `integer`, which JSON Schema accepts as integers: they become integers, so that policy
/// (where an integer is a Cedar `Long`) sees the number the schema let through. This happens
/// before validation and changes the input itself, so the value policy decides on is the
/// value that is sent.
pub(crate) fn canonicalize(schema: &Value, value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() && says_integer(schema) => {
            // Exactly representable: |x| up to 2^53.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                #[expect(clippy::cast_possible_truncation, reason = "a whole number within ±2^53")]
                let whole = f as i64;
                *value = Value::from(whole);
            }
        }
        Value::String(s) => {
            let fmt = schema.get("format").and_then(Value::as_str);
            if matches!(fmt, Some("email" | "idn-email" | "hostname" | "idn-hostname")) {
                let norm = s.trim().to_lowercase();
                *s = norm;
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items.iter_mut().for_each(|i| canonicalize(item_schema, i));
            }
        }
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, v) in map.iter_mut() {
                    if let Some(s) = props.get(k) {
                        canonicalize(s, v);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Whether `schema`'s `type` is `integer`, or a list that holds it.
fn says_integer(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
        _ => false,
    }
}
