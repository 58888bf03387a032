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

/// `context.input` and `context.derived` of one input, built in one pass over it, each only
/// when asked for and with the properties asked for ([`Pick`]).
///
/// `context.input` is the input as a Cedar record typed by the action's JSON Schema, with
/// exactly the attributes [`crate::schema::record_type`] declares. Integers are `Long`s,
/// `number`s are `decimal`s; nulls are left out (they mean absent), and so are properties
/// the schema doesn't describe or gives no Cedar type (no attribute exists for them).
///
/// The record is built as Cedar values, not as expressions for Cedar to evaluate: that
/// evaluation (`Context::from_pairs`) was the largest fixed cost of a decision. Every
/// property is checked, built or not, so that what is refused doesn't depend on what the
/// policies read.
///
/// `context.derived` holds, for each `format: email` field, its domain
/// (`context.derived.FIELD.domain`, or `.domains` for an array), and for each `format: uri`
/// field its host (`.host` / `.hosts`): facts Cedar can't compute itself, from the
/// canonical input. A field with a value that has no domain or host has no entry.
///
/// # Errors
/// A present, non-null value of a property that has a Cedar attribute but no exact Cedar
/// value: a `number` with more than four fraction digits or beyond `decimal`'s range, an
/// `integer` beyond 64 bits, a null inside a list, a value of another type than its
/// schema's. A float for an `integer` is refused too: the catalog has already made whole
/// floats within ±2^53 integers, so one left is beyond what a float holds exactly. A
/// required attribute that is missing is an error as well (the catalog's validation rules
/// it out), so the record always fits the schema.
pub(crate) fn from_input(
    value: &Value,
    shape: &RecordShape,
    input: Pick,
    derived: Pick,
) -> Result<Built, Unrepresentable> {
    let mut fields = Attributes::new();
    let mut facts = Attributes::new();
    let mut required_present = 0;
    let record = |attributes| CedarValue::record_arc(Arc::new(attributes), None);
    let Some(obj) = value.as_object() else {
        return Ok(Built {
            input: input.any().then(|| record(fields)),
            derived: derived.any().then(|| record(facts)),
        });
    };
    for (k, v) in obj {
        let Some(prop) = shape.props.get(k) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        required_present += usize::from(prop.required);
        if let Some(kind) = &prop.kind
            && let Some(c) = convert(v, kind, input.picks(prop.read)).map_err(|e| e.within(k))?
        {
            // The keys come from a JSON object, so none repeats.
            fields.insert(SmolStr::new(k), c);
        }
        if let Some((derive, _)) = prop.derive
            && derived.picks(prop.read_derived)
            && let Some(fact) = fact(v, derive)
        {
            facts.insert(SmolStr::new(k), fact);
        }
    }
    required(obj, shape, required_present)?;
    Ok(Built {
        input: input.any().then(|| record(fields)),
        derived: derived.any().then(|| record(facts)),
    })
}

/// What [`from_input`] built: each record it was asked for.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) input: Option<CedarValue>,
    pub(crate) derived: Option<CedarValue>,
}

/// Which properties of an input [`from_input`] builds into a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// No record at all (the input is still checked).
    Nothing,
    /// The properties the action's policies read, as [`RecordShape::reading`] marked them.
    Read,
    /// Every property.
    All,
}

impl Pick {
    fn any(self) -> bool {
        self != Self::Nothing
    }

    fn picks(self, read: bool) -> bool {
        match self {
            Self::Nothing => false,
            Self::Read => read,
            Self::All => true,
        }
    }
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
    /// Each property of `properties`, by name: looked up for every field of every input
    /// decided, with a fast hash (the names are the schema's, fixed at load; a B-tree's
    /// string comparisons cost a twentieth of a decision).
    props: foldhash::HashMap<String, Prop>,
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
    /// Whether it is one of the record's `required` properties.
    required: bool,
    /// Whether policies read it (`context.input.NAME`) and its derived fact
    /// (`context.derived.NAME`): see [`RecordShape::reading`].
    read: bool,
    read_derived: bool,
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
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|name| props.get(*name).is_some_and(|p| described(p) && !nullable(p)))
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Self {
            props: props
                .iter()
                .map(|(name, prop)| {
                    let shape = Prop {
                        kind: Kind::of(prop),
                        derive: derivation(prop),
                        required: required.contains(name),
                        read: true,
                        read_derived: true,
                    };
                    (name.clone(), shape)
                })
                .collect(),
            required,
        }
    }

    /// Marks which properties an action's policies read, for [`Pick::Read`]: `input` of
    /// the name reads `context.input.NAME`, `derived` reads `context.derived.NAME`.
    pub(crate) fn reading(mut self, input: impl Fn(&str) -> bool, derived: impl Fn(&str) -> bool) -> Self {
        for (name, prop) in &mut self.props {
            prop.read = input(name);
            prop.read_derived = derived(name);
        }
        self
    }

    /// Whether `name` is one of the schema's `properties`.
    pub(crate) fn has_property(&self, name: &str) -> bool {
        self.props.contains_key(name)
    }

    /// Whether input field `name` has a derived fact (its value has a domain or host).
    pub(crate) fn has_fact(&self, value: &Value, name: &str) -> bool {
        let Some((derive, _)) = self.props.get(name).and_then(|p| p.derive) else {
            return false;
        };
        let one = |s: &str| derive.of(s).is_some();
        match value.get(name) {
            Some(Value::String(s)) => one(s),
            Some(Value::Array(items)) => items.iter().all(|i| i.as_str().is_some_and(one)),
            _ => false,
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

/// A nested object's described properties as a Cedar record (`None` when `build` is
/// false: only checked). Derived facts are only of the input's own fields.
fn record(value: &Value, shape: &RecordShape, build: bool) -> Result<Option<CedarValue>, Unrepresentable> {
    let input = if build { Pick::All } else { Pick::Nothing };
    from_input(value, shape, input, Pick::Nothing).map(|built| built.input)
}

/// A required attribute that is missing (the catalog's validation rules it out), so that
/// the record always fits the schema. `present` counts the required properties seen with a
/// value: when that is all of them, nothing is looked up.
fn required(obj: &Map<String, Value>, shape: &RecordShape, present: usize) -> Result<(), Unrepresentable> {
    if present == shape.required.len() {
        return Ok(());
    }
    match shape
        .required
        .iter()
        .find(|name| obj.get(*name).is_none_or(Value::is_null))
    {
        Some(name) => Err(Unrepresentable::new("is required but missing").within(name.as_str())),
        None => Ok(()),
    }
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
        (Value::Object(_), Kind::Record(shape)) => record(value, shape, build)?,
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

/// The `context.derived` entry of one value: `{domain}` / `{host}` of a string, or
/// `{domains}` / `{hosts}` of an array whose every item has one; `None` otherwise.
fn fact(value: &Value, derive: Derive) -> Option<CedarValue> {
    let one = |s: &str| derive.of(s).map(|d| CedarValue::from(d.to_ascii_lowercase()));
    match value {
        Value::String(s) => Some(fixed_record([(derive.single(), one(s)?)])),
        Value::Array(items) => {
            let all = items
                .iter()
                .map(|i| i.as_str().and_then(one))
                .collect::<Option<Vec<_>>>()?;
            Some(fixed_record([(derive.plural(), CedarValue::set(all, None))]))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Derive {
    Domain,
    Host,
}

impl Derive {
    /// The domain of an email address or the host of a URI, as written (the fact is its
    /// lowercase form).
    fn of(self, s: &str) -> Option<&str> {
        match self {
            Self::Domain => email_domain(s),
            Self::Host => uri_host(s),
        }
    }

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

fn email_domain(s: &str) -> Option<&str> {
    let (_, domain) = s.rsplit_once('@')?;
    (!domain.is_empty()).then(|| domain.trim_end_matches('.'))
}

fn uri_host(s: &str) -> Option<&str> {
    let (_, rest) = s.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.get(..=host_port.find(']')?)?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.'))
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
            from_input(&v, &RecordShape::of(&schema), Pick::All, Pick::All)
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
            from_input(&json!({}), &RecordShape::of(&schema), Pick::Nothing, Pick::Nothing)
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
            "link": {"type": "string", "format": "uri"},
            "v6": {"type": "string", "format": "uri"},
            "urn": {"type": "string", "format": "uri"},
            "bad": {"type": "array", "items": {"type": "string", "format": "email"}}
        }});
        let shape = RecordShape::of(&schema);
        let v = json!({
            "to": ["a@example.com", "b@Partner.org"], "cc": "c@x.io.",
            "link": "https://user@Docs.Example.com:8443/p?q", "v6": "http://[::1]:80/x",
            "urn": "urn:isbn:0451450523", "bad": ["a@example.com", "nobody"]
        });
        let built = |input, derived| from_input(&v, &shape, input, derived).unwrap();
        let all = built(Pick::Nothing, Pick::All);
        let expected = restricted(&json!({
            "to": {"domains": ["example.com", "partner.org"]}, "cc": {"domain": "x.io"},
            "link": {"host": "docs.example.com"}, "v6": {"host": "[::1]"}
        }))
        .unwrap();
        assert_eq!(all.derived, Some(expected));
        assert!(all.input.is_none());
        for (name, has) in [
            ("to", true),
            ("cc", true),
            ("link", true),
            ("v6", true),
            ("urn", false),
            ("bad", false),
        ] {
            assert_eq!(shape.has_fact(&v, name), has, "{name}");
        }
        // Only what the policies read is built.
        let shape = RecordShape::of(&schema).reading(|k| k == "cc", |k| k == "link");
        let read = from_input(&v, &shape, Pick::Read, Pick::Read).unwrap();
        assert_eq!(read.input, Some(restricted(&json!({"cc": "c@x.io."})).unwrap()));
        assert_eq!(
            read.derived,
            Some(restricted(&json!({"link": {"host": "docs.example.com"}})).unwrap())
        );
    }
}
