//! Strict JSON parsing for everything an agent sends.
//!
//! `serde_json` keeps the last of duplicate keys, has no nesting limit below its own
//! recursion guard and turns integers beyond 64 bits into rounded floats. A payload
//! parsed that way can mean one thing to policy and another to the upstream, so agent
//! input goes through [`parse_strict`], which refuses all three.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest allowed nesting of arrays and objects (the top level is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Default maximum nesting depth of agent JSON.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// The largest magnitude a JSON number may have when it is not an exact 64-bit integer:
/// beyond 2^53 a float no longer represents every integer, so the value the upstream
/// parses could differ from the one policy saw.
const MAX_SAFE_FLOAT: f64 = 9_007_199_254_740_992.0;

/// Why agent JSON was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

/// Parses `bytes` as one JSON value, refusing duplicate object keys, nesting deeper than
/// `limits.max_depth`, invalid UTF-8 and numbers that can't be represented exactly.
///
/// # Errors
/// With a message that names the problem and, where known, its line and column.
pub fn parse_strict(bytes: &[u8], limits: Limits) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed { depth: 0, limits }.deserialize(&mut de).map_err(describe)?;
    de.end().map_err(describe)?;
    Ok(value)
}

/// Checks an already-parsed value against the depth limit (for values that did not come
/// through [`parse_strict`], such as YAML test cases).
///
/// # Errors
/// When the value nests deeper than allowed.
pub fn check_depth(value: &Value, limits: Limits) -> Result<(), JsonError> {
    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if depth(value) > limits.max_depth {
        return Err(JsonError(format!("JSON nests deeper than {} levels", limits.max_depth)));
    }
    Ok(())
}

fn describe(e: serde_json::Error) -> JsonError {
    JsonError(e.to_string())
}

#[derive(Clone, Copy)]
struct Seed {
    depth: usize,
    limits: Limits,
}

impl Seed {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.limits.max_depth {
            return Err(E::custom(format_args!(
                "JSON nests deeper than {} levels",
                self.limits.max_depth
            )));
        }
        Ok(Self {
            depth,
            limits: self.limits,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        if !v.is_finite() || v.abs() > MAX_SAFE_FLOAT {
            return Err(E::custom("number is too large to be represented exactly"));
        }
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// RFC 8785 canonical JSON of a value: the bytes that are hashed and compared.
///
/// # Errors
/// Never for values produced by [`parse_strict`]; for others, when a number can't be
/// written canonically.
pub fn canonical(value: &Value) -> Result<String, JsonError> {
    canonical_json(value)
}

fn canonical_json(value: &Value) -> Result<String, JsonError> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) -> Result<(), JsonError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.push_str(&serde_json::to_string(value).map_err(describe)?);
        }
        Value::Number(n) => write_number(n, out)?,
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // RFC 8785 orders keys by their UTF-16 code units.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).map_err(describe)?);
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out)?;
                }
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_number(n: &Number, out: &mut String) -> Result<(), JsonError> {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else {
        let f = n
            .as_f64()
            .ok_or_else(|| JsonError("number is not representable".into()))?;
        out.push_str(&es6_number(f));
    }
    Ok(())
}

/// ECMAScript `Number.prototype.toString` for finite doubles, as RFC 8785 requires.
fn es6_number(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        return format!("{f:.0}");
    }
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        // Rust's shortest round-trip formatting matches ECMAScript in this range.
        return format!("{f}");
    }
    let s = format!("{f:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if exp.starts_with('-') => format!("{mantissa}e{exp}"),
        Some((mantissa, exp)) => format!("{mantissa}e+{exp}"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Value, JsonError> {
        parse_strict(s.as_bytes(), Limits::default())
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err = parse(r#"{"a":1,"a":2}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key `a`"), "{err}");
        assert!(parse(r#"{"x":{"b":1,"b":1}}"#).is_err());
        assert!(parse(r#"[{"b":1},{"b":1}]"#).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(parse(&deep).unwrap_err().to_string().contains("deeper than 32"));
        let ok = "[".repeat(32) + &"]".repeat(32);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn inexact_numbers_and_trailing_data_are_refused() {
        assert!(parse("123456789012345678901234567890").is_err());
        assert!(parse("1e300").is_err());
        assert_eq!(parse("18446744073709551615").unwrap(), serde_json::json!(u64::MAX));
        assert_eq!(parse("12.5").unwrap(), serde_json::json!(12.5));
        assert!(parse("{} x").is_err());
        assert!(parse_strict(b"\"\xff\"", Limits::default()).is_err());
    }

    #[test]
    fn canonical_form_sorts_keys_and_normalizes_numbers() {
        let v = parse(r#"{"b": [1, 2.50, "x"], "a": {"d": true, "c": null}}"#).unwrap();
        assert_eq!(canonical(&v).unwrap(), r#"{"a":{"c":null,"d":true},"b":[1,2.5,"x"]}"#);
        assert_eq!(es6_number(1e-7), "1e-7");
        assert_eq!(es6_number(100.0), "100");
    }
}
