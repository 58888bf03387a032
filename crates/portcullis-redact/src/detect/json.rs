//! Detection inside JSON: every string value, the digits of every number, every object key,
//! and the whole value of members whose key names a credential (`password`, `api_key`…).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Category, Detector, Finding, placeholder, replace};
use crate::json::unique_key;

/// The kind reported for a member redacted because of its key's name.
pub const SENSITIVE_KEY: &str = "sensitive-key";

/// Normalized key names (lowercase, letters and digits only) that always hold a credential.
const SENSITIVE_NAMES: &[&str] = &[
    "token",
    "pwd",
    "pass",
    "secret",
    "authorization",
    "cookie",
    "credentials",
];

/// Endings of normalized key names that hold a credential (`client_secret`, `githubToken`…,
/// but not `max_tokens` or `token_type`).
const SENSITIVE_ENDINGS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "apitoken",
    "accesstoken",
    "refreshtoken",
    "authtoken",
    "sessiontoken",
    "idtoken",
    "bearertoken",
    "privatekey",
    "secretkey",
    "signingkey",
    "accesskeysecret",
    "connectionstring",
];

/// Whether a member named `key` holds a credential whatever its value looks like.
#[must_use]
pub fn is_sensitive_key(key: &str) -> bool {
    // Every key of every object goes through here: normalize only the tail a name or an
    // ending can span, on the stack.
    let mut tail = [0u8; NORMALIZED_TAIL];
    let mut len = 0;
    let mut total = 0;
    for byte in key.bytes().rev().filter(u8::is_ascii_alphanumeric) {
        total += 1;
        if len < NORMALIZED_TAIL {
            len += 1;
            tail[NORMALIZED_TAIL - len] = byte.to_ascii_lowercase();
        }
    }
    let normalized = tail.get(NORMALIZED_TAIL - len..).unwrap_or_default();
    (total == len && SENSITIVE_NAMES.iter().any(|name| name.as_bytes() == normalized))
        || SENSITIVE_ENDINGS.iter().any(|end| normalized.ends_with(end.as_bytes()))
}

/// How much of a normalized key [`is_sensitive_key`] looks at: more than the longest name
/// and ending.
const NORMALIZED_TAIL: usize = 32;

/// One finding in a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct JsonFinding {
    /// The rule id, or [`SENSITIVE_KEY`].
    pub kind: Cow<'static, str>,
    /// Secret or personal data.
    pub category: Category,
    /// RFC 6901 pointer to the value (object keys along the way already redacted).
    pub pointer: String,
}

/// What to do with a value in which something was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Treatment {
    /// Replace what was found with `[REDACTED:kind]`; a sensitive member's whole value.
    #[default]
    Mask,
    /// Remove the object member or array element holding it; a bare top-level value
    /// becomes `null`.
    Drop,
}

impl Detector {
    /// Every finding in `value`, without changing it; sorted and without duplicates.
    #[must_use]
    pub fn scan_json(&self, value: &Value) -> Vec<JsonFinding> {
        let mut copy = value.clone();
        self.walk(&mut copy, None, &[], true)
    }

    /// Redacts `value` in place with `treatment` and returns what was found, sorted and
    /// without duplicates.
    pub fn redact_json(&self, value: &mut Value, treatment: Treatment) -> Vec<JsonFinding> {
        self.redact_json_allowing(value, treatment, &[])
    }

    /// Like [`Self::redact_json`], but findings whose kind is in `allow` are neither
    /// redacted nor reported.
    pub fn redact_json_allowing(&self, value: &mut Value, treatment: Treatment, allow: &[String]) -> Vec<JsonFinding> {
        self.walk(value, Some(treatment), allow, true)
    }

    /// Visits `value`. With `prefilter`, first searches all of its texts (keys, strings,
    /// numbers) joined by NULs at once (see [`Detector::find_joined`]), and searches alone
    /// only the texts a match crosses into: per-call overhead, not scanning, dominates on
    /// the short strings of a JSON document. A detector that cannot search joined texts
    /// runs one keyword search and number scan over them instead, and searches alone the
    /// texts these touch.
    fn walk(
        &self,
        value: &mut Value,
        treatment: Option<Treatment>,
        allow: &[String],
        prefilter: bool,
    ) -> Vec<JsonFinding> {
        JOINED.with(|joined| match joined.try_borrow_mut() {
            Ok(mut joined) => self.walk_with(value, treatment, allow, prefilter, &mut joined),
            // Only if a validator ever redacted JSON itself.
            Err(_) => self.walk_with(value, treatment, allow, prefilter, &mut Joined::default()),
        })
    }

    fn walk_with(
        &self,
        value: &mut Value,
        treatment: Option<Treatment>,
        allow: &[String],
        prefilter: bool,
        joined: &mut Joined,
    ) -> Vec<JsonFinding> {
        let at = Cursor::default();
        let mut how = How {
            treatment,
            allow,
            plan: None,
            at: &at,
        };
        if prefilter {
            self.plan(value, how, joined);
            how.plan = Some(joined);
        }
        let mut out = Vec::new();
        if self.visit(value, &mut String::new(), how, &mut out) {
            *value = Value::Null;
        }
        finish(out)
    }

    /// Fills `joined` with what the walk of `value` finds in each text, found in advance.
    fn plan(&self, value: &Value, how: How<'_>, joined: &mut Joined) {
        let Joined {
            text,
            ends,
            shapes,
            crossings,
            found,
            alone,
        } = joined;
        text.clear();
        ends.clear();
        alone.clear();
        shapes.clear();
        crossings.clear();
        found.clear();
        collect(value, how, text, ends, shapes);
        let Some(findings) = self.find_joined(text, crossings) else {
            let candidates = self.candidate_texts(text, ends);
            alone.extend((0..ends.len()).filter(|&index| candidates[index]));
            return;
        };
        let text_of = |at: usize| ends.partition_point(|&end| end < at);
        for range in crossings.iter() {
            alone.extend(text_of(range.start)..=text_of(range.end));
        }
        // A text holding a NUL of its own is not one text in the joined buffer.
        if text.bytes().filter(|&byte| byte == 0).count() != ends.len() {
            let own_nuls = text
                .match_indices('\0')
                .filter(|(at, _)| ends.binary_search(at).is_err());
            alone.extend(own_nuls.map(|(at, _)| text_of(at)));
        }
        alone.sort_unstable();
        alone.dedup();
        for mut finding in findings {
            let index = text_of(finding.range.start);
            let start = index
                .checked_sub(1)
                .and_then(|before| ends.get(before))
                .map_or(0, |end| end + 1);
            finding.range = finding.range.start - start..finding.range.end - start;
            found.push((index, finding));
        }
    }

    /// The reported findings in `text`, the next text of the walk, as its plan says.
    fn find_next(&self, text: &str, next: Next, how: How<'_>) -> Vec<Finding> {
        match next {
            Next::Nothing => Vec::new(),
            Next::Found(mut found) => {
                if !how.allow.is_empty() {
                    found.retain(|f| !how.allows(&f.rule_id));
                }
                found
            }
            Next::Search => self.find_reported(text, how),
        }
    }

    /// The findings in `text` whose kind `how` does not allow.
    fn find_reported(&self, text: &str, how: How<'_>) -> Vec<Finding> {
        let mut found = self.find(text);
        if !how.allow.is_empty() {
            found.retain(|f| !how.allows(&f.rule_id));
        }
        found
    }

    /// `text`, in which `found` are the reported findings, with every reported finding
    /// masked, repeated as [`Detector::redact`] does.
    fn mask_reported<'t>(&self, text: &'t str, mut found: Vec<Finding>, how: How<'_>) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for pass in 0..MAX_MASK_PASSES {
            if pass > 0 {
                found = self.find_reported(&out, how);
            }
            if found.is_empty() {
                break;
            }
            out = Cow::Owned(replace(&out, &found));
        }
        out
    }

    /// Visits `value` at `pointer`; returns whether it must be removed from its parent.
    /// Recursion depth is that of the value, which `serde_json` bounds when parsing.
    fn visit(&self, value: &mut Value, pointer: &mut String, how: How<'_>, out: &mut Vec<JsonFinding>) -> bool {
        match value {
            Value::String(text) => self
                .visit_text(text, how.next(), pointer, how, out)
                .is_some_and(|masked| {
                    if let Some(masked) = masked {
                        *text = masked;
                    }
                    how.treatment == Some(Treatment::Drop)
                }),
            Value::Number(number) => {
                let next = how.next();
                if matches!(next, Next::Nothing) {
                    // Not even worth formatting.
                    return false;
                }
                let digits = number.to_string();
                self.visit_text(&digits, next, pointer, how, out).is_some_and(|masked| {
                    if let Some(masked) = masked {
                        *value = Value::String(masked);
                    }
                    how.treatment == Some(Treatment::Drop)
                })
            }
            Value::Array(_) | Value::Object(_) if how.skips_container() => false,
            Value::Array(items) => {
                let mut removed = Vec::new();
                for (index, item) in items.iter_mut().enumerate() {
                    let len = pointer.len();
                    // Writing to a `String` cannot fail.
                    let _ = write!(pointer, "/{index}");
                    if self.visit(item, pointer, how, out) {
                        removed.push(index);
                    }
                    pointer.truncate(len);
                }
                if !removed.is_empty() {
                    let mut index = 0;
                    items.retain(|_| {
                        index += 1;
                        removed.binary_search(&(index - 1)).is_err()
                    });
                }
                false
            }
            Value::Object(members) => {
                self.visit_members(members, pointer, how, out);
                false
            }
            Value::Bool(_) | Value::Null => false,
        }
    }

    fn visit_members(
        &self,
        members: &mut Map<String, Value>,
        pointer: &mut String,
        how: How<'_>,
        out: &mut Vec<JsonFinding>,
    ) {
        // Most objects keep every key: visit them in place, and rebuild the map only when a
        // key is masked or a member removed.
        let mut changes: Vec<(usize, Change)> = Vec::new();
        for (index, (key, member)) in members.iter_mut().enumerate() {
            let change = self.visit_member(key, member, pointer, how, out);
            if !matches!(change, Change::None) {
                changes.push((index, change));
            }
        }
        if changes.is_empty() {
            return;
        }
        let mut changes = changes.into_iter().peekable();
        let mut rebuilt = Map::with_capacity(members.len());
        for (index, (key, member)) in std::mem::take(members).into_iter().enumerate() {
            let change = changes.next_if(|(at, _)| *at == index).map(|(_, change)| change);
            match change {
                Some(Change::Remove) => {}
                Some(Change::Rename(masked)) => {
                    let key = unique_key(&rebuilt, masked);
                    rebuilt.insert(key, member);
                }
                Some(Change::None) | None => {
                    rebuilt.insert(key, member);
                }
            }
        }
        *members = rebuilt;
    }

    /// Visits the member `key` of an object; says whether to remove it or mask its key.
    fn visit_member(
        &self,
        key: &str,
        member: &mut Value,
        pointer: &mut String,
        how: How<'_>,
        out: &mut Vec<JsonFinding>,
    ) -> Change {
        let key_findings = self.find_next(key, how.next(), how);
        let shown_key = if key_findings.is_empty() {
            Cow::Borrowed(key)
        } else {
            self.mask_reported(key, key_findings.clone(), how)
        };
        let len = pointer.len();
        pointer.push('/');
        push_escaped(pointer, &shown_key);
        let mut remove = false;
        for finding in key_findings {
            out.push(JsonFinding {
                kind: finding.rule_id,
                category: finding.category,
                pointer: pointer.clone(),
            });
            remove |= how.treatment == Some(Treatment::Drop);
        }
        if is_sensitive_key(key) && holds_a_value(member) && !how.allows(SENSITIVE_KEY) {
            out.push(JsonFinding {
                kind: Cow::Borrowed(SENSITIVE_KEY),
                category: Category::Secret,
                pointer: pointer.clone(),
            });
            match how.treatment {
                Some(Treatment::Mask) => *member = Value::String(placeholder(SENSITIVE_KEY)),
                Some(Treatment::Drop) => remove = true,
                None => {}
            }
        } else {
            remove |= self.visit(member, pointer, how, out);
        }
        pointer.truncate(len);
        match shown_key {
            _ if remove => Change::Remove,
            Cow::Owned(masked) => Change::Rename(masked),
            Cow::Borrowed(_) => Change::None,
        }
    }

    /// Records the findings in `text`. `None` when there are none; otherwise `Some` of the
    /// masked text when masking.
    fn visit_text(
        &self,
        text: &str,
        next: Next,
        pointer: &str,
        how: How<'_>,
        out: &mut Vec<JsonFinding>,
    ) -> Option<Option<String>> {
        let findings = self.find_next(text, next, how);
        if findings.is_empty() {
            return None;
        }
        let mut kinds = BTreeSet::new();
        for finding in &findings {
            if kinds.insert(finding.rule_id.clone()) {
                out.push(JsonFinding {
                    kind: finding.rule_id.clone(),
                    category: finding.category,
                    pointer: pointer.to_owned(),
                });
            }
        }
        Some((how.treatment == Some(Treatment::Mask)).then(|| self.mask_reported(text, findings, how).into_owned()))
    }
}

/// What happens to an object member after its visit.
#[derive(Debug)]
enum Change {
    None,
    Remove,
    /// Its key becomes this (masked) one.
    Rename(String),
}

/// How many times masking re-scans its own output (placeholders change their neighbours'
/// context).
const MAX_MASK_PASSES: usize = 4;

/// What a walk does: only report (`treatment: None`), mask or drop; and which kinds it lets
/// through.
#[derive(Debug, Clone, Copy)]
struct How<'a> {
    treatment: Option<Treatment>,
    allow: &'a [String],
    /// What each text the walk searches (keys, strings and numbers, in order) holds; `None`
    /// when each must be searched alone.
    plan: Option<&'a Joined>,
    /// Where the walk is in `plan`.
    at: &'a Cursor,
}

/// The next text of a walk, and the next entries of its plan's lists.
#[derive(Debug, Default)]
struct Cursor {
    text: Cell<usize>,
    container: Cell<usize>,
    found: Cell<usize>,
    alone: Cell<usize>,
}

/// What the plan says of a text.
#[derive(Debug)]
enum Next {
    Nothing,
    Found(Vec<Finding>),
    Search,
}

/// What a walk knows before it visits the value: the texts it will search (keys, strings
/// and numbers, in order) joined, and what each holds. Reused from walk to walk on one
/// thread.
#[derive(Debug, Default)]
struct Joined {
    /// The texts, each followed by a NUL.
    text: String,
    /// Where each text ends in `text`.
    ends: Vec<usize>,
    /// Each array and object the walk visits, in order.
    shapes: Vec<Shape>,
    crossings: Vec<Range<usize>>,
    /// The findings of the texts searched joined, sorted by text, with ranges in the text.
    found: Vec<(usize, Finding)>,
    /// The texts to search alone, sorted.
    alone: Vec<usize>,
}

/// What an array or object holds, for a walk to step over it when nothing is found there.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// How many texts the walk searches in it.
    texts: usize,
    /// How many arrays and objects the walk visits in it.
    containers: usize,
    /// Whether it has a member redacted for its key's name.
    sensitive: bool,
}

thread_local! {
    static JOINED: std::cell::RefCell<Joined> = std::cell::RefCell::new(Joined::default());
}

impl How<'_> {
    /// What the next text of the walk holds; moves on to the text after it.
    fn next(&self) -> Next {
        let index = self.at.text.get();
        self.at.text.set(index + 1);
        let Some(plan) = self.plan else {
            return Next::Search;
        };
        let first = self.at.found.get();
        let found = plan.found.get(first..).unwrap_or_default();
        let count = found.iter().take_while(|(text, _)| *text == index).count();
        self.at.found.set(first + count);
        let alone = self.at.alone.get();
        if plan.alone.get(alone) == Some(&index) {
            self.at.alone.set(alone + 1);
            return Next::Search;
        }
        match found.get(..count) {
            Some(found) if !found.is_empty() => Next::Found(found.iter().map(|(_, f)| f.clone()).collect()),
            _ => Next::Nothing,
        }
    }

    /// Whether the walk can step over the next array or object, as nothing is found in it;
    /// if so, moves past it.
    fn skips_container(&self) -> bool {
        let Some(plan) = self.plan else {
            return false;
        };
        let container = self.at.container.get();
        self.at.container.set(container + 1);
        let Some(shape) = plan.shapes.get(container) else {
            return false;
        };
        let end = self.at.text.get() + shape.texts;
        let next_found = plan
            .found
            .get(self.at.found.get())
            .map_or(usize::MAX, |(text, _)| *text);
        let next_alone = plan.alone.get(self.at.alone.get()).copied().unwrap_or(usize::MAX);
        if shape.sensitive || next_found.min(next_alone) < end {
            return false;
        }
        self.at.text.set(end);
        self.at.container.set(container + 1 + shape.containers);
        true
    }

    fn allows(&self, kind: &str) -> bool {
        self.allow.iter().any(|a| a == kind)
    }
}

/// Appends to `joined` every text the walk of `value` searches, in the order it searches
/// them, each followed by a NUL; `ends` gets where each ends, and `shapes` the shape of each
/// array and object. Mirrors [`Detector::visit`]. Returns whether a member is redacted for
/// its key's name.
fn collect(value: &Value, how: How<'_>, joined: &mut String, ends: &mut Vec<usize>, shapes: &mut Vec<Shape>) -> bool {
    let push = |joined: &mut String, ends: &mut Vec<usize>, text: &str| {
        joined.push_str(text);
        ends.push(joined.len());
        joined.push('\0');
    };
    let (texts, at) = (ends.len(), shapes.len());
    let sensitive = match value {
        Value::String(text) => {
            push(joined, ends, text);
            return false;
        }
        Value::Number(number) => {
            push_number(joined, number);
            push(joined, ends, "");
            return false;
        }
        Value::Bool(_) | Value::Null => return false,
        Value::Array(items) => {
            shapes.push(Shape::default());
            let mut sensitive = false;
            for item in items {
                sensitive |= collect(item, how, joined, ends, shapes);
            }
            sensitive
        }
        Value::Object(members) => {
            shapes.push(Shape::default());
            let mut sensitive = false;
            for (key, member) in members {
                push(joined, ends, key);
                if is_sensitive_key(key) && holds_a_value(member) && !how.allows(SENSITIVE_KEY) {
                    sensitive = true;
                } else {
                    sensitive |= collect(member, how, joined, ends, shapes);
                }
            }
            sensitive
        }
    };
    let shape = Shape {
        texts: ends.len() - texts,
        containers: shapes.len() - at - 1,
        sensitive,
    };
    if let Some(slot) = shapes.get_mut(at) {
        *slot = shape;
    }
    sensitive
}

/// Appends `number` as it displays, integers without the formatting machinery.
fn push_number(joined: &mut String, number: &serde_json::Number) {
    let (negative, magnitude) = match (number.as_u64(), number.as_i64()) {
        (Some(positive), _) => (false, positive),
        (None, Some(negative)) => (true, negative.unsigned_abs()),
        (None, None) => {
            // Writing to a `String` cannot fail.
            let _ = write!(joined, "{number}");
            return;
        }
    };
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = magnitude;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        joined.push('-');
    }
    joined.extend(digits[at..].iter().map(|&digit| char::from(digit)));
}

/// A member whose key names a credential is redacted unless its value is empty, `null` or a
/// boolean (`"password": null`, `"token": ""`, `"secret": false` reveal nothing).
fn holds_a_value(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) => false,
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(members) => !members.is_empty(),
        Value::Number(_) => true,
    }
}

/// RFC 6901: `~` becomes `~0` and `/` becomes `~1`.
fn push_escaped(pointer: &mut String, key: &str) {
    if !key.contains(['~', '/']) {
        pointer.push_str(key);
        return;
    }
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

fn finish(mut out: Vec<JsonFinding>) -> Vec<JsonFinding> {
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kinds(found: &[JsonFinding]) -> Vec<(String, String)> {
        found.iter().map(|f| (f.kind.to_string(), f.pointer.clone())).collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<_> = expected
            .iter()
            .map(|(k, p)| ((*k).to_owned(), (*p).to_owned()))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    fn sample() -> Value {
        json!({
            "id": 7,
            "owner": {"email": "jane@example.com", "name": "Jane"},
            "cards": [{"pan": 4_111_111_111_111_111_u64}, {"pan": "4111 1111 1111 1111", "note": "ok"}, "fine"],
            "api_key": "looks-harmless",
            "password": null,
            "max_tokens": 100,
            "by/user": {"ops@example.com": "on call"},
            "text": "mail ops@example.com or call +14155550123",
        })
    }

    #[test]
    fn scanning_reports_kind_and_pointer_and_changes_nothing() {
        let value = sample();
        let found = Detector::builtin().scan_json(&value);
        assert_eq!(
            kinds(&found),
            pairs(&[
                ("email", "/owner/email"),
                ("payment-card", "/cards/0/pan"),
                ("payment-card", "/cards/1/pan"),
                ("sensitive-key", "/api_key"),
                ("email", "/by~1user/[REDACTED:email]"),
                ("email", "/text"),
                ("phone-e164", "/text"),
            ])
        );
        assert_eq!(value, sample());
    }

    #[test]
    fn masking_replaces_values_and_whole_sensitive_members() {
        let mut value = sample();
        Detector::builtin().redact_json(&mut value, Treatment::Mask);
        assert_eq!(
            value,
            json!({
                "id": 7,
                "owner": {"email": "[REDACTED:email]", "name": "Jane"},
                "cards": [{"pan": "[REDACTED:payment-card]"}, {"pan": "[REDACTED:payment-card]", "note": "ok"}, "fine"],
                "api_key": "[REDACTED:sensitive-key]",
                "password": null,
                "max_tokens": 100,
                "by/user": {"[REDACTED:email]": "on call"},
                "text": "mail [REDACTED:email] or call [REDACTED:phone-e164]",
            })
        );
        let again = value.clone();
        assert!(
            Detector::builtin()
                .redact_json(&mut value, Treatment::Mask)
                .iter()
                .all(|f| f.kind == SENSITIVE_KEY)
        );
        assert_eq!(value, again, "masking is idempotent");
    }

    #[test]
    fn dropping_removes_the_members_and_elements() {
        let mut value = sample();
        Detector::builtin().redact_json(&mut value, Treatment::Drop);
        assert_eq!(
            value,
            json!({
                "id": 7,
                "owner": {"name": "Jane"},
                "cards": [{}, {"note": "ok"}, "fine"],
                "password": null,
                "max_tokens": 100,
                "by/user": {},
            })
        );
        let mut bare = json!("jane@example.com");
        Detector::builtin().redact_json(&mut bare, Treatment::Drop);
        assert_eq!(bare, Value::Null);
    }

    #[test]
    fn colliding_masked_keys_are_kept_apart() {
        let mut value = json!({"a@example.com": 1, "b@example.com": 2});
        Detector::builtin().redact_json(&mut value, Treatment::Mask);
        assert_eq!(value, json!({"[REDACTED:email]": 1, "[REDACTED:email]#2": 2}));
    }

    #[test]
    fn allowed_kinds_are_left_alone_and_not_reported() {
        let mut value = sample();
        let allow = ["email".to_owned(), "sensitive-key".to_owned()];
        let found = Detector::builtin().redact_json_allowing(&mut value, Treatment::Mask, &allow);
        assert!(
            found.iter().all(|f| f.kind != "email" && f.kind != SENSITIVE_KEY),
            "{found:?}"
        );
        assert_eq!(value["owner"]["email"], "jane@example.com");
        assert_eq!(value["api_key"], "looks-harmless");
        assert_eq!(value["text"], "mail ops@example.com or call [REDACTED:phone-e164]");
        assert_eq!(value["cards"][0]["pan"], "[REDACTED:payment-card]");
    }

    mod prefilter {
        use std::sync::LazyLock;

        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::super::super::builtin_rules;
        use super::{Detector, Treatment};

        static DETECTOR: LazyLock<Detector> = LazyLock::new(Detector::builtin);

        /// JSON made of the rules' examples, near-misses, sensitive key names and numbers.
        fn json() -> impl Strategy<Value = Value> {
            let examples: Vec<String> = builtin_rules()
                .flat_map(|rule| rule.examples_true.iter().chain(rule.examples_false))
                .map(|example| (*example).to_owned())
                .chain(["password".to_owned(), "api_key".to_owned(), "ok".to_owned()])
                .collect();
            let text = prop_oneof![
                proptest::sample::select(examples),
                "[ a-zA-Z0-9@.:+/_-]{0,12}",
                any::<String>()
            ];
            let leaf = prop_oneof![
                text.clone().prop_map(Value::String),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                Just(Value::Null),
                Just(Value::Bool(true)),
            ];
            leaf.prop_recursive(3, 24, 4, move |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::vec((text.clone(), inner), 0..4)
                        .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        proptest! {
            #[test]
            fn the_joined_prefilter_changes_nothing(value in json(), drop in any::<bool>(), allow_email in any::<bool>()) {
                let detector = &*DETECTOR;
                let treatment = if drop { Treatment::Drop } else { Treatment::Mask };
                let allow = if allow_email { vec!["email".to_owned()] } else { Vec::new() };
                let (mut fast, mut slow) = (value.clone(), value.clone());
                let found_fast = detector.walk(&mut fast, Some(treatment), &allow, true);
                let found_slow = detector.walk(&mut slow, Some(treatment), &allow, false);
                prop_assert_eq!(found_fast, found_slow);
                prop_assert_eq!(fast, slow);
                let (mut fast, mut slow) = (value.clone(), value);
                prop_assert_eq!(detector.walk(&mut fast, None, &[], true), detector.walk(&mut slow, None, &[], false));
            }
        }
    }

    #[test]
    fn sensitive_key_names() {
        for key in [
            "password",
            "db_password",
            "clientSecret",
            "api-key",
            "X-Api-Key",
            "token",
            "accessToken",
            "private_key",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in [
            "max_tokens",
            "token_type",
            "tokens",
            "passage",
            "secretary",
            "keyboard",
            "author",
        ] {
            assert!(!is_sensitive_key(key), "{key}");
        }
        let long = format!("{}_password", "x".repeat(40));
        assert!(is_sensitive_key(&long));
        assert!(!is_sensitive_key(&format!("{}token", "x".repeat(40))));
        assert!(
            SENSITIVE_NAMES
                .iter()
                .chain(SENSITIVE_ENDINGS)
                .all(|name| name.len() < NORMALIZED_TAIL)
        );
    }
}
