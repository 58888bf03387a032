//! Building the Cedar context of one intent from its validated input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use cedar_policy::Context;
use cedar_policy_core::ast::{self, ExtensionFunction, Name, PartialValue, Value as CedarValue};
use cedar_policy_core::extensions::Extensions;
use serde_json::{Map, Value, json};
use smol_str::SmolStr;

use portcullis_redact::detect::{Category, JsonFinding};

use crate::schema::primary_type;

/// The attributes of a Cedar record or context, as Cedar holds them once evaluated.
pub(crate) type Attributes = BTreeMap<SmolStr, CedarValue>;

/// A present input value that has a Cedar attribute but no exact Cedar value: the intent
/// is denied rather than decided without it (an optional field left out would skip every
/// policy guarded by `has`) or on a rounded value.
#[derive(Debug)]
pub(crate) struct Unrepresentable {
    /// The JSON pointer's segments, innermost first (filled in on the way out).
    path: Vec<String>,
    why: &'static str,
}

impl Unrepresentable {
    fn new(why: &'static str) -> Self {
        Self { path: Vec::new(), why }
    }

    fn within(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    /// The JSON pointer of the value (`/items/2/price`).
    pub(crate) fn pointer(&self) -> String {
        self.path
            .iter()
            .rev()
            .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
            .collect()
    }
}

impl std::fmt::Display for Unrepresentable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.pointer(), self.why)
    }
}

/// `context.input`: the input as a Cedar record typed by the action's JSON Schema, with
/// exactly the attributes [`crate::schema::record_type`] declares. Integers are `Long`s,
/// `number`s are `decimal`s; nulls are left out (they mean absent), and so are properties
/// the schema doesn't describe or gives no Cedar type (no attribute exists for them).
///
/// The record is built as Cedar values, not as expressions for Cedar to evaluate: that
/// evaluation (`Context::from_pairs`) was the largest fixed cost of a decision.
///
/// # Errors
/// A present, non-null value of a property that has a Cedar attribute but no exact Cedar
/// value: a `number` with more than four fraction digits or beyond `decimal`'s range, an
/// `integer` beyond 64 bits, a null inside a list, a value of another type than its
/// schema's. A float for an `integer` is refused too: the catalog has already made whole
/// floats within ±2^53 integers, so one left is beyond what a float holds exactly. A
/// required attribute that is missing is an error as well (the catalog's validation rules
/// it out), so the record always fits the schema.
pub(crate) fn input(
    value: &Value,
    shape: &RecordShape,
    read: impl Fn(&str) -> bool,
) -> Result<CedarValue, Unrepresentable> {
    record(value, shape, &read, true).map(|r| r.unwrap_or_else(|| CedarValue::empty_record(None)))
}

/// The context of a decision from its attributes, as Cedar holds an evaluated one.
pub(crate) fn context(attributes: Attributes) -> Context {
    Context::from(ast::Context::Value(Arc::new(attributes)))
}

/// What an object's JSON Schema says of its properties' Cedar values, worked out once per
/// action: each decision then converts its input without looking anything up in the
/// JSON Schema.
#[derive(Debug, Default)]
pub(crate) struct RecordShape {
    /// Each property of `properties`, by name.
    props: BTreeMap<String, Prop>,
    /// The properties that are required, described and can't be null: a missing one
    /// would not fit the schema.
    required: Vec<String>,
}

/// One property of a [`RecordShape`].
#[derive(Debug)]
struct Prop {
    /// Its Cedar value, `None` when it has no Cedar attribute.
    kind: Option<Kind>,
    /// The fact `context.derived` holds for it.
    derive: Option<(Derive, bool)>,
}

/// The Cedar value of a described JSON Schema.
#[derive(Debug)]
enum Kind {
    String,
    Bool,
    Long,
    Decimal,
    Set(Box<Kind>),
    Record(RecordShape),
}

impl RecordShape {
    /// The shape of an object schema (one without `properties` has no attributes).
    pub(crate) fn of(schema: &Value) -> Self {
        let Some(Value::Object(props)) = schema.get("properties") else {
            return Self::default();
        };
        let required = schema.get("required").and_then(Value::as_array).into_iter().flatten();
        Self {
            props: props
                .iter()
                .map(|(name, prop)| {
                    let shape = Prop {
                        kind: Kind::of(prop),
                        derive: derivation(prop),
                    };
                    (name.clone(), shape)
                })
                .collect(),
            required: required
                .filter_map(Value::as_str)
                .filter(|name| props.get(*name).is_some_and(|p| described(p) && !nullable(p)))
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl Kind {
    /// `None` for a schema without a Cedar type ([`described`] is false).
    fn of(schema: &Value) -> Option<Self> {
        Some(match primary_type(schema)? {
            "string" => Self::String,
            "boolean" => Self::Bool,
            "integer" => Self::Long,
            "number" => Self::Decimal,
            "array" => Self::Set(Box::new(Self::of(schema.get("items")?)?)),
            "object" => Self::Record(RecordShape::of(schema)),
            _ => return None,
        })
    }
}

/// Whether a property has a Cedar attribute: [`crate::schema::cedar_type`] is `Some`,
/// without building the type.
fn described(schema: &Value) -> bool {
    match primary_type(schema) {
        Some("string" | "integer" | "number" | "boolean" | "object") => true,
        Some("array") => schema.get("items").is_some_and(described),
        _ => false,
    }
}

/// Whether null is one of the schema's types (its attribute is then optional).
fn nullable(schema: &Value) -> bool {
    schema
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(|t| t == "null"))
}

/// An object's described properties as a Cedar record, with only the properties `read`
/// names built; the others are checked all the same, so that what is refused does not
/// depend on what the policies read. With `build` false, nothing is built (`None`).
fn record(
    value: &Value,
    shape: &RecordShape,
    read: &dyn Fn(&str) -> bool,
    build: bool,
) -> Result<Option<CedarValue>, Unrepresentable> {
    let mut fields = Attributes::new();
    let Some(obj) = value.as_object() else {
        return Ok(build.then(|| CedarValue::record_arc(Arc::new(fields), None)));
    };
    for (k, v) in obj {
        let Some(kind) = shape.props.get(k).and_then(|p| p.kind.as_ref()) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        let c = convert(v, kind, build && read(k)).map_err(|e| e.within(k))?;
        if let Some(c) = c {
            // The keys come from a JSON object, so none repeats.
            fields.insert(SmolStr::new(k), c);
        }
    }
    for name in &shape.required {
        if obj.get(name).is_none_or(Value::is_null) {
            return Err(Unrepresentable::new("is required but missing").within(name.as_str()));
        }
    }
    Ok(build.then(|| CedarValue::record_arc(Arc::new(fields), None)))
}

/// A non-null value of a described schema as a Cedar value (`None` when `build` is false:
/// only checked).
fn convert(value: &Value, kind: &Kind, build: bool) -> Result<Option<CedarValue>, Unrepresentable> {
    Ok(match (value, kind) {
        (Value::String(s), Kind::String) => build.then(|| CedarValue::from(s.as_str())),
        (Value::Bool(b), Kind::Bool) => build.then(|| CedarValue::from(*b)),
        (Value::Number(n), Kind::Long) => {
            let n = n
                .as_i64()
                .ok_or(Unrepresentable::new("is beyond Cedar's 64-bit integers"))?;
            build.then(|| CedarValue::from(n))
        }
        (Value::Number(n), Kind::Decimal) => {
            let inexact = || {
                Unrepresentable::new("has more than four fraction digits or is beyond the range of Cedar's decimals")
            };
            let text = decimal(n).ok_or_else(inexact)?;
            if build {
                Some(new_decimal(&text).ok_or_else(inexact)?)
            } else {
                None
            }
        }
        (Value::Array(items), Kind::Set(item_kind)) => {
            let mut built = Vec::with_capacity(if build { items.len() } else { 0 });
            for (i, item) in items.iter().enumerate() {
                if item.is_null() {
                    return Err(
                        Unrepresentable::new("is a null inside a list, which Cedar can't hold").within(i.to_string())
                    );
                }
                built.extend(convert(item, item_kind, build).map_err(|e| e.within(i.to_string()))?);
            }
            build.then(|| CedarValue::set(built, None))
        }
        (Value::Object(_), Kind::Record(shape)) => record(value, shape, &|_| true, build)?,
        _ => return Err(Unrepresentable::new("does not have the type its schema gives")),
    })
}

/// Cedar's `decimal` constructor, looked up once.
static DECIMAL: LazyLock<Option<&'static ExtensionFunction>> = LazyLock::new(|| {
    let name = Name::parse_unqualified_name("decimal").ok()?;
    Extensions::all_available().func(&name).ok()
});

/// The Cedar `decimal` of this text, as `decimal("…")` evaluates to, or `None` when Cedar
/// refuses the text.
fn new_decimal(text: &str) -> Option<CedarValue> {
    match DECIMAL.as_ref()?.call(&[CedarValue::from(text)]) {
        Ok(PartialValue::Value(v)) => Some(v),
        Ok(PartialValue::Residual(_)) | Err(_) => None,
    }
}

/// A context value as a Cedar value: strings, booleans, 64-bit integers, sets and records
/// as themselves, and the `{"__extn": {"fn": "decimal", "arg": …}}` form that the counters
/// give decimals as a `decimal`.
///
/// # Errors
/// A null, a number that isn't a 64-bit integer, or a decimal Cedar refuses (none of which
/// the context builders produce).
pub(crate) fn restricted(value: &Value) -> Result<CedarValue, String> {
    restricted_picking(value, &|_| true)
}

/// [`restricted`], with only the members of a top-level object that `read` names.
pub(crate) fn restricted_picking(value: &Value, read: &dyn Fn(&str) -> bool) -> Result<CedarValue, String> {
    Ok(match value {
        Value::Bool(b) => CedarValue::from(*b),
        Value::String(s) => CedarValue::from(s.as_str()),
        Value::Number(n) => CedarValue::from(n.as_i64().ok_or("a number that is not a 64-bit integer")?),
        Value::Array(items) => CedarValue::set(items.iter().map(restricted).collect::<Result<Vec<_>, _>>()?, None),
        Value::Object(fields) => {
            if fields.len() == 1
                && let Some(Value::Object(call)) = fields.get("__extn")
                && call.get("fn").and_then(Value::as_str) == Some("decimal")
                && let Some(arg) = call.get("arg").and_then(Value::as_str)
            {
                return new_decimal(arg).ok_or_else(|| format!("`{arg}` is not a Cedar decimal"));
            }
            let fields = fields
                .iter()
                .filter(|(k, _)| read(k))
                .map(|(k, v)| restricted(v).map(|v| (SmolStr::new(k), v)))
                .collect::<Result<Attributes, _>>()?;
            CedarValue::record_arc(Arc::new(fields), None)
        }
        Value::Null => return Err("a null".to_owned()),
    })
}

/// Cedar's `decimal` text for a JSON number, or `None` when the number can't be written
/// exactly: more than four fraction digits, or beyond the range Cedar's parser accepts
/// (ten-thousandths in 64 bits; the checks below are the parser's).
fn decimal(n: &serde_json::Number) -> Option<String> {
    if let Some(i) = n.as_i64() {
        return i.checked_mul(10_000).map(|_| format!("{i}.0"));
    }
    // A float's text is its shortest exact form: what the canonical input, and so the
    // request sent, holds. An exponent means more than four fraction digits or a value
    // beyond the range; a `u64` beyond `i64` fails the range check.
    let text = n.to_string();
    if text.contains(['e', 'E']) {
        return None;
    }
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
    if frac.is_empty() || frac.len() > 4 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scaled = whole.parse::<i64>().ok()?.checked_mul(10_000)?;
    let pad = 10_i64.pow(4 - u32::try_from(frac.len()).ok()?);
    let part = frac.parse::<i64>().ok()?.checked_mul(pad)?;
    if whole.starts_with('-') {
        scaled.checked_sub(part)?;
    } else {
        scaled.checked_add(part)?;
    }
    Some(format!("{whole}.{frac}"))
}

/// Facts Cedar can't compute itself, derived from the canonical input: the domain of
/// each `format: email` field and the host of each `format: uri` field, as
/// `context.derived.FIELD.domain` / `.domains` (for arrays) and `.host` / `.hosts`.
pub(crate) fn derived(value: &Value, shape: &RecordShape) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(obj) = value.as_object() else {
        return out;
    };
    for (k, v) in obj {
        let Some((kind, _)) = shape.props.get(k).and_then(|p| p.derive) else {
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

#[derive(Debug, Clone, Copy)]
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
pub(crate) fn now(t: time::OffsetDateTime, read: impl Fn(&str) -> bool) -> CedarValue {
    let t = t.to_offset(time::UtcOffset::UTC);
    let long = |n: u8| CedarValue::from(i64::from(n));
    lazy_record(
        [
            ("timestamp", &|| CedarValue::from(t.unix_timestamp())),
            ("hour", &|| long(t.hour())),
            ("weekday", &|| long(t.weekday().number_from_monday())),
            ("date", &|| {
                CedarValue::from(format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
            }),
        ],
        read,
    )
}

/// `context.findings`: what the detector found in the input.
///
/// - `kinds`: the rule ids (`payment-card`, `aws-access-key-id`, `sensitive-key`…);
/// - `categories`: `secret` and/or `pii`;
/// - `pointers`, `secrets`, `pii`: the JSON pointers of the input fields where anything, a
///   secret, or personal data was found;
/// - `at`: each finding as `{kind, pointer}`.
pub(crate) fn findings(found: &[JsonFinding], read: impl Fn(&str) -> bool) -> CedarValue {
    let string = |s: &str| CedarValue::from(s);
    let set = |items: BTreeSet<&str>| CedarValue::set(items.into_iter().map(string), None);
    let of = |category: Category| {
        found
            .iter()
            .filter(move |f| f.category == category)
            .map(|f| f.pointer.as_str())
            .collect()
    };
    let at = || {
        let at: BTreeSet<(&str, &str)> = found.iter().map(|f| (&*f.kind, f.pointer.as_str())).collect();
        let at = at
            .into_iter()
            .map(|(kind, pointer)| fixed_record([("kind", string(kind)), ("pointer", string(pointer))]));
        CedarValue::set(at, None)
    };
    lazy_record(
        [
            ("kinds", &|| set(found.iter().map(|f| &*f.kind).collect())),
            ("categories", &|| {
                set(found.iter().map(|f| f.category.as_str()).collect())
            }),
            ("pointers", &|| set(found.iter().map(|f| f.pointer.as_str()).collect())),
            ("secrets", &|| set(of(Category::Secret))),
            ("pii", &|| set(of(Category::Pii))),
            ("at", &at),
        ],
        read,
    )
}

/// A Cedar record with those of these (distinct) keys that `read` names, each value
/// built only then.
fn lazy_record<const N: usize>(
    fields: [(&str, &dyn Fn() -> CedarValue); N],
    read: impl Fn(&str) -> bool,
) -> CedarValue {
    let fields = fields
        .into_iter()
        .filter(|(k, _)| read(k))
        .map(|(k, v)| (SmolStr::new(k), v()));
    CedarValue::record_arc(Arc::new(fields.collect()), None)
}

/// A Cedar record with these (distinct) keys.
fn fixed_record<const N: usize>(fields: [(&str, CedarValue); N]) -> CedarValue {
    CedarValue::record_arc(
        Arc::new(fields.into_iter().map(|(k, v)| (SmolStr::new(k), v)).collect()),
        None,
    )
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
        let d = |v: Value| decimal(v.as_number().unwrap());
        assert_eq!(d(json!(12.5)), Some("12.5".into()));
        assert_eq!(d(json!(40)), Some("40.0".into()));
        assert_eq!(d(json!(-0.5)), Some("-0.5".into()));
        assert_eq!(d(json!(922_337_203_685_477_i64)), Some("922337203685477.0".into()));
        assert_eq!(d(json!(922_337_203_685_478_i64)), None);
        assert_eq!(d(json!(u64::MAX)), None);
        assert_eq!(d(json!(0.00001)), None);
        assert_eq!(d(json!(1.23456)), None);
        assert_eq!(d(json!(1e300)), None);
    }

    #[test]
    fn a_property_has_a_cedar_value_exactly_when_the_schema_gives_it_an_attribute() {
        let schemas = [
            json!({"type": "string"}),
            json!({"type": ["integer", "null"]}),
            json!({"type": "number"}),
            json!({"type": "boolean"}),
            json!({"type": "object"}),
            json!({"enum": ["a", "b"]}),
            json!({"const": "a"}),
            json!({"enum": ["a", null]}),
            json!({"type": "null"}),
            json!({"type": ["string", "integer"]}),
            json!({"type": "array"}),
            json!({"type": "array", "items": {}}),
            json!({"type": "array", "items": [{"type": "string"}]}),
            json!({"type": "array", "items": {"type": "string"}}),
            json!({"type": "array", "items": {"type": "array", "items": {"anyOf": []}}}),
            json!({"anyOf": [{"type": "string"}]}),
            json!({}),
        ];
        for s in &schemas {
            assert_eq!(described(s), crate::schema::cedar_type(s).is_some(), "{s}");
            assert_eq!(Kind::of(s).is_some(), described(s), "{s}");
        }
    }

    #[test]
    fn present_values_without_an_exact_cedar_value_are_refused_with_their_pointer() {
        let schema = json!({"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"},
            "amount": {"type": ["number", "null"]},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {"type": "object", "properties": {"a/b": {"type": "number"}}},
            "free": {},
            "loose": {"type": "array", "items": {}}
        }});
        let refused = |extra: Value| {
            let mut v = json!({"id": "x"});
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            input(&v, &RecordShape::of(&schema), |_| true)
                .err()
                .map(|e| e.pointer())
        };
        assert_eq!(refused(json!({"amount": 12.5, "count": 3, "tags": ["a"]})), None);
        assert_eq!(
            refused(json!({"amount": null, "free": 1.23456, "loose": [0.00001, null]})),
            None
        );
        assert_eq!(refused(json!({"amount": 1.23456})).as_deref(), Some("/amount"));
        assert_eq!(refused(json!({"count": u64::MAX})).as_deref(), Some("/count"));
        assert_eq!(refused(json!({"count": 1e19})).as_deref(), Some("/count"));
        assert_eq!(refused(json!({"tags": ["a", null]})).as_deref(), Some("/tags/1"));
        assert_eq!(refused(json!({"tags": ["a", 1]})).as_deref(), Some("/tags/1"));
        assert_eq!(
            refused(json!({"meta": {"a/b": 0.00001}})).as_deref(),
            Some("/meta/a~1b")
        );
        assert_eq!(
            input(&json!({}), &RecordShape::of(&schema), |_| true)
                .err()
                .map(|e| e.pointer())
                .as_deref(),
            Some("/id")
        );
    }

    #[test]
    fn derived_facts_come_from_canonical_values() {
        let schema = json!({"type": "object", "properties": {
            "to": {"type": "array", "items": {"type": "string", "format": "email"}},
            "cc": {"type": "string", "format": "email"},
            "link": {"type": "string", "format": "uri"}
        }});
        let v = json!({"to": ["a@example.com", "b@Partner.org"], "cc": "c@x.io", "link": "https://user@Docs.Example.com:8443/p?q"});
        let d = derived(&v, &RecordShape::of(&schema));
        assert_eq!(d["to"], json!({"domains": ["example.com", "partner.org"]}));
        assert_eq!(d["cc"], json!({"domain": "x.io"}));
        assert_eq!(d["link"], json!({"host": "docs.example.com"}));
    }
}
