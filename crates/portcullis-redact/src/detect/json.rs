//! Detection inside JSON: every string value, the digits of every number, every object key,
//! and the whole value of members whose key names a credential (`password`, `api_key`…).
//!
//! A document's strings are short and many, so searching each with `find` is mostly
//! per-call overhead. A walk first collects every text it will search, joined by NULs (a
//! repeated key once; numbers and timestamps the detector can find nothing in not at all),
//! runs the rules once over that (see `Detector::find_joined`), and maps each finding back
//! to its text; only a text with a NUL of its own, or one a match crosses into, is searched
//! alone. It then visits the value, stepping over every array and object in which nothing
//! was found, and masks or drops what was. A property test checks that the result is the
//! one searching each text alone gives.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Category, Detector, Finding, mask, placeholder};
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
        self.walk_target(Target::Read(value), None, &[], true)
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
        self.walk_target(Target::Write(value), treatment, allow, prefilter)
    }

    fn walk_target(
        &self,
        value: Target<'_>,
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
        value: Target<'_>,
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
            let read = match &value {
                Target::Read(value) => value,
                Target::Write(value) => &**value,
            };
            self.plan(read, how, joined);
            how.plan = Some(joined);
        }
        let mut out = Vec::new();
        match value {
            Target::Read(value) => self.scan(value, &mut String::new(), how, &mut out),
            Target::Write(value) => {
                if self.visit(value, &mut String::new(), how, &mut out) {
                    *value = Value::Null;
                }
            }
        }
        finish(out)
    }

    /// Fills `joined` with what the walk of `value` finds in each text, found in advance.
    fn plan(&self, value: &Value, how: How<'_>, joined: &mut Joined) {
        joined.clear();
        let clean = Clean {
            short_numbers: self.short_numbers_clean,
            timestamps: self.timestamps_clean,
        };
        joined.collect(value, how, clean);
        let Joined {
            text,
            ends,
            walk,
            repeats,
            hits,
            crossings,
            found,
            alone,
            ..
        } = joined;
        match self.find_joined(text, crossings) {
            None => {
                let candidates = self.candidate_texts(text, ends);
                alone.extend(
                    walk.iter()
                        .zip(candidates)
                        .filter(|(_, may)| *may)
                        .map(|(index, _)| *index),
                );
            }
            Some(findings) => {
                let text_of = |at: usize| ends.partition_point(|&end| end < at);
                let walk_of = |at: usize| walk.get(text_of(at)).copied().unwrap_or(usize::MAX);
                for range in crossings.iter() {
                    let (first, last) = (text_of(range.start), text_of(range.end));
                    alone.extend(walk.get(first..=last).unwrap_or_default());
                }
                // A text holding a NUL of its own is not one text in the joined buffer.
                if text.bytes().filter(|&byte| byte == 0).count() != ends.len() {
                    let own_nuls = text
                        .match_indices('\0')
                        .filter(|(at, _)| ends.binary_search(at).is_err());
                    alone.extend(own_nuls.map(|(at, _)| walk_of(at)));
                }
                for mut finding in findings {
                    let index = text_of(finding.range.start);
                    let start = index
                        .checked_sub(1)
                        .and_then(|before| ends.get(before))
                        .map_or(0, |end| end + 1);
                    finding.range = finding.range.start - start..finding.range.end - start;
                    found.push((walk.get(index).copied().unwrap_or(usize::MAX), finding));
                }
            }
        }
        alone.sort_unstable();
        alone.dedup();
        // A repeated text holds what its first occurrence does.
        if repeats.is_empty() || (found.is_empty() && alone.is_empty()) {
            return;
        }
        hits.clear();
        hits.resize(joined.count.div_ceil(64), 0);
        let is_hit =
            |hits: &[u64], index: usize| hits.get(index / 64).is_some_and(|word| word >> (index % 64) & 1 != 0);
        for &index in alone.iter().chain(found.iter().map(|(index, _)| index)) {
            if let Some(word) = hits.get_mut(index / 64) {
                *word |= 1 << (index % 64);
            }
        }
        let (alone_sorted, found_sorted) = (alone.len(), found.len());
        for &(index, first) in repeats.iter().filter(|(_, first)| is_hit(hits, *first)) {
            if alone
                .get(..alone_sorted)
                .unwrap_or_default()
                .binary_search(&first)
                .is_ok()
            {
                alone.push(index);
            }
            let sorted = found.get(..found_sorted).unwrap_or_default();
            let start = sorted.partition_point(|(at, _)| *at < first);
            let count = sorted
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|(at, _)| *at == first)
                .count();
            for at in start..start + count {
                if let Some((_, finding)) = found.get(at) {
                    found.push((index, finding.clone()));
                }
            }
        }
        alone.sort_unstable();
        alone.dedup();
        found.sort_by_key(|(index, _)| *index);
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
            out = Cow::Owned(mask(&out, &found));
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
        let len = pointer.len();
        let entered = self.enter_member(key, member, pointer, how, out);
        let mut remove = entered.key_found && how.treatment == Some(Treatment::Drop);
        if entered.sensitive {
            match how.treatment {
                Some(Treatment::Mask) => *member = Value::String(placeholder(SENSITIVE_KEY)),
                Some(Treatment::Drop) => remove = true,
                None => {}
            }
        } else {
            remove |= self.visit(member, pointer, how, out);
        }
        pointer.truncate(len);
        match entered.masked_key {
            _ if remove => Change::Remove,
            Some(masked) => Change::Rename(masked),
            None => Change::None,
        }
    }

    /// Reports the findings in the key of the member `key` and, when the key names a
    /// credential, the member itself; appends the key, masked, to `pointer`.
    fn enter_member(
        &self,
        key: &str,
        member: &Value,
        pointer: &mut String,
        how: How<'_>,
        out: &mut Vec<JsonFinding>,
    ) -> Entered {
        let key_findings = self.find_next(key, how.next(), how);
        let shown_key = if key_findings.is_empty() {
            Cow::Borrowed(key)
        } else {
            self.mask_reported(key, key_findings.clone(), how)
        };
        pointer.push('/');
        push_escaped(pointer, &shown_key);
        let key_found = !key_findings.is_empty();
        for finding in key_findings {
            out.push(JsonFinding {
                kind: finding.rule_id,
                category: finding.category,
                pointer: pointer.clone(),
            });
        }
        let sensitive = is_sensitive_key(key) && holds_a_value(member) && !how.allows(SENSITIVE_KEY);
        if sensitive {
            out.push(JsonFinding {
                kind: Cow::Borrowed(SENSITIVE_KEY),
                category: Category::Secret,
                pointer: pointer.clone(),
            });
        }
        Entered {
            masked_key: match shown_key {
                Cow::Owned(masked) => Some(masked),
                Cow::Borrowed(_) => None,
            },
            key_found,
            sensitive,
        }
    }

    /// Reports what `value` at `pointer` holds without changing it: [`Self::visit`] without
    /// a treatment, for a value it may not change.
    fn scan(&self, value: &Value, pointer: &mut String, how: How<'_>, out: &mut Vec<JsonFinding>) {
        match value {
            Value::String(text) => {
                self.visit_text(text, how.next(), pointer, how, out);
            }
            Value::Number(number) => {
                let next = how.next();
                if !matches!(next, Next::Nothing) {
                    self.visit_text(&number.to_string(), next, pointer, how, out);
                }
            }
            Value::Array(_) | Value::Object(_) if how.skips_container() => {}
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let len = pointer.len();
                    // Writing to a `String` cannot fail.
                    let _ = write!(pointer, "/{index}");
                    self.scan(item, pointer, how, out);
                    pointer.truncate(len);
                }
            }
            Value::Object(members) => {
                for (key, member) in members {
                    let len = pointer.len();
                    if !self.enter_member(key, member, pointer, how, out).sensitive {
                        self.scan(member, pointer, how, out);
                    }
                    pointer.truncate(len);
                }
            }
            Value::Bool(_) | Value::Null => {}
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

/// A value a walk visits: one it may change, or one it only reports on.
#[derive(Debug)]
enum Target<'v> {
    Read(&'v Value),
    Write(&'v mut Value),
}

/// What [`Detector::enter_member`] found.
#[derive(Debug)]
struct Entered {
    /// The key, masked, when it held a finding.
    masked_key: Option<String>,
    /// Whether the key held a (reported) finding.
    key_found: bool,
    /// Whether the member is redacted for its key's name.
    sensitive: bool,
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
    /// The texts, each followed by a NUL; a key already there is not added again.
    text: String,
    /// Where each text ends in `text`.
    ends: Vec<usize>,
    /// The index in the walk of each text in `text`.
    walk: Vec<usize>,
    /// How many texts the walk searches.
    count: usize,
    /// Each array and object the walk visits, in order.
    shapes: Vec<Shape>,
    /// The keys in `text`, hashed (open addressing); a slot of an earlier walk is free, and
    /// one in use may be taken by another key.
    keys: Vec<Slot>,
    /// Which walk this is, to tell this walk's slots from earlier ones.
    generation: u32,
    /// The keys not added to `text` again: their index in the walk, and that of the same
    /// key's first occurrence.
    repeats: Vec<(usize, usize)>,
    /// A bit per text of the walk: whether it holds a finding or is searched alone.
    hits: Vec<u64>,
    crossings: Vec<Range<usize>>,
    /// The findings of the texts searched joined, sorted by text, with ranges in the text.
    found: Vec<(usize, Finding)>,
    /// The texts to search alone, sorted.
    alone: Vec<usize>,
}

/// A key in [`Joined::text`]: most keys of a document repeat (every record of an array has
/// the same), and each is searched once. (Strings repeat too, types, states, currencies,
/// but looking them up costs about what searching them again does.)
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The walk that filled it (see [`Joined::generation`]).
    generation: u32,
    hash: u64,
    start: usize,
    len: usize,
    /// Its first index in the walk.
    first: usize,
    /// Whether the member is redacted for its key's name (when it holds a value).
    sensitive: bool,
}

const FREE: Slot = Slot {
    generation: 0,
    hash: 0,
    start: 0,
    len: 0,
    first: 0,
    sensitive: false,
};
/// Slots in [`Joined::keys`], a power of two.
const SLOTS: usize = 1024;
/// How many slots a lookup probes.
const PROBES: usize = 8;

impl Joined {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.walk.clear();
        self.count = 0;
        self.shapes.clear();
        // Slots are freed by starting a new generation, not by clearing all of them.
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 || self.keys.len() != SLOTS {
            self.keys.clear();
            self.keys.resize(SLOTS, FREE);
            self.generation = 1;
        }
        self.repeats.clear();
        self.crossings.clear();
        self.found.clear();
        self.alone.clear();
    }

    /// Adds `text`, the next text of the walk.
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
        self.push_end();
    }

    fn push_end(&mut self) {
        self.ends.push(self.text.len());
        self.walk.push(self.count);
        self.count += 1;
        self.text.push('\0');
    }

    /// Adds `key`, the next text of the walk, unless already there; returns whether it
    /// names a credential.
    fn push_key(&mut self, key: &str) -> bool {
        let hash = hash(key.as_bytes());
        match self.lookup(&self.keys, hash, key) {
            Ok(slot) => {
                self.repeats.push((self.count, slot.first));
                self.count += 1;
                slot.sensitive
            }
            Err(at) => {
                let sensitive = is_sensitive_key(key);
                let slot = self.slot(hash, key, sensitive);
                if let Some(free) = self.keys.get_mut(at) {
                    *free = slot;
                }
                self.push(key);
                sensitive
            }
        }
    }

    /// The slot of `table` holding `text`, or where to put it: a free slot, or else the
    /// first one probed.
    fn lookup(&self, table: &[Slot], hash: u64, text: &str) -> Result<Slot, usize> {
        let home = (hash as usize) & (SLOTS - 1);
        for probe in 0..PROBES {
            let at = (home + probe) & (SLOTS - 1);
            let Some(slot) = table.get(at) else {
                break;
            };
            if slot.generation != self.generation {
                return Err(at);
            }
            if slot.hash == hash && self.text.as_bytes().get(slot.start..slot.start + slot.len) == Some(text.as_bytes())
            {
                return Ok(*slot);
            }
        }
        Err(home)
    }

    /// A slot for `text`, about to be added as the next text.
    fn slot(&self, hash: u64, text: &str, sensitive: bool) -> Slot {
        Slot {
            generation: self.generation,
            hash,
            start: self.text.len(),
            len: text.len(),
            first: self.count,
            sensitive,
        }
    }

    /// Appends every text the walk of `value` searches, in the order it searches them, and
    /// the shape of each array and object; a short number or a timestamp counts as a text
    /// but is left out when `clean` says nothing can be found in it. Mirrors
    /// [`Detector::visit`]. Returns whether a member is redacted for its key's name.
    fn collect(&mut self, value: &Value, how: How<'_>, clean: Clean) -> bool {
        let (texts, at) = (self.count, self.shapes.len());
        let sensitive = match value {
            Value::String(text) if clean.timestamps && is_timestamp(text) => {
                self.count += 1;
                return false;
            }
            Value::String(text) => {
                self.push(text);
                return false;
            }
            Value::Number(number) => {
                let start = self.text.len();
                let integer = push_number(&mut self.text, number);
                let short = match integer {
                    Some(magnitude) => magnitude < super::SHORT_INTEGER,
                    None => self.text.len() - start < super::SHORT_NUMBER,
                };
                if clean.short_numbers && short {
                    self.text.truncate(start);
                    self.count += 1;
                } else {
                    self.push_end();
                }
                return false;
            }
            Value::Bool(_) | Value::Null => return false,
            Value::Array(items) => {
                self.shapes.push(Shape::default());
                let mut sensitive = false;
                for item in items {
                    sensitive |= self.collect(item, how, clean);
                }
                sensitive
            }
            Value::Object(members) => {
                self.shapes.push(Shape::default());
                let mut sensitive = false;
                for (key, member) in members {
                    if self.push_key(key) && holds_a_value(member) && !how.allows(SENSITIVE_KEY) {
                        sensitive = true;
                    } else {
                        sensitive |= self.collect(member, how, clean);
                    }
                }
                sensitive
            }
        };
        let shape = Shape {
            texts: self.count - texts,
            containers: self.shapes.len() - at - 1,
            sensitive,
        };
        if let Some(slot) = self.shapes.get_mut(at) {
            *slot = shape;
        }
        sensitive
    }
}

/// Which texts the detector of a walk can find nothing in (see
/// [`Detector::short_numbers_clean`] and [`Detector::timestamps_clean`]).
#[derive(Debug, Clone, Copy)]
struct Clean {
    short_numbers: bool,
    timestamps: bool,
}

/// Whether `text` is an ISO 8601 timestamp as APIs write them: `2024-03-05T10:20:30`, then
/// up to nine digits of a fraction of a second, then `Z` or an offset (`+01:00`) or nothing.
/// No number rule matches in one: its groups of digits are too short for a card or a phone
/// number and too few for an IP address, its colons too few for an IPv6 address without
/// `::`, and its `+` is followed by `0` or one digit only.
fn is_timestamp(text: &str) -> bool {
    let [
        y1,
        y2,
        y3,
        y4,
        b'-',
        m1,
        m2,
        b'-',
        d1,
        d2,
        b'T',
        h1,
        h2,
        b':',
        n1,
        n2,
        b':',
        s1,
        s2,
        rest @ ..,
    ] = text.as_bytes()
    else {
        return false;
    };
    let digits = [y1, y2, y3, y4, m1, m2, d1, d2, h1, h2, n1, n2, s1, s2];
    if !digits.iter().all(|digit| digit.is_ascii_digit()) {
        return false;
    }
    let rest = match rest {
        [b'.', fraction @ ..] => {
            let count = fraction.iter().take_while(|byte| byte.is_ascii_digit()).count();
            if !(1..=9).contains(&count) {
                return false;
            }
            fraction.get(count..).unwrap_or_default()
        }
        rest => rest,
    };
    match rest {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|digit| digit.is_ascii_digit()),
        _ => false,
    }
}

/// A fast hash of a short key (FxHash's mixing, eight bytes at a time).
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let mut word = [0u8; 8];
    let rest = chunks.remainder();
    word.get_mut(..rest.len()).unwrap_or_default().copy_from_slice(rest);
    hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    hash ^ (hash >> 29)
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

/// Appends `number` as it displays, integers without the formatting machinery.
/// Returns the magnitude of an integer.
fn push_number(joined: &mut String, number: &serde_json::Number) -> Option<u64> {
    let (negative, magnitude) = match (number.as_u64(), number.as_i64()) {
        (Some(positive), _) => (false, positive),
        (None, Some(negative)) => (true, negative.unsigned_abs()),
        (None, None) => {
            // Writing to a `String` cannot fail.
            let _ = write!(joined, "{number}");
            return None;
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
    Some(magnitude)
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
    if !key.bytes().any(|byte| byte == b'~' || byte == b'/') {
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

        use super::super::super::{Category, CustomRule, builtin_rules};
        use super::{Detector, Treatment};

        fn custom(id: &str, keyword: &str, regex: &str, example: &str) -> CustomRule {
            CustomRule {
                id: id.to_owned(),
                category: Category::Secret,
                description: "test".to_owned(),
                keywords: vec![keyword.to_owned()],
                regex: regex.to_owned(),
                examples_true: vec![example.to_owned()],
                examples_false: vec!["nothing here".to_owned()],
            }
        }

        /// The builtin rules; plus a rule anchored at both ends and one whose class matches
        /// a NUL, which search joined texts with their own regexes; plus a multi-line rule,
        /// with which the detector cannot search joined texts at all.
        static DETECTORS: LazyLock<[Detector; 3]> = LazyLock::new(|| {
            let joinable = [
                custom("order-ref", "ord-", r"(?i)^ord-[0-9]{4}$", "ORD-1234"),
                custom("ref-code", "ref:", r"(?i)ref:[^,]{2,10}", "ref:abc"),
            ];
            let mut all = joinable.to_vec();
            all.push(custom("ticket", "tkt", r"(?m)^tkt[0-9]{3}$", "tkt123"));
            [
                Detector::builtin(),
                Detector::configure(&[], &joinable).unwrap(),
                Detector::configure(&[], &all).unwrap(),
            ]
        });

        const KINDS: &[&str] = &[
            "email",
            "ipv4",
            "phone-e164",
            "payment-card",
            "sensitive-key",
            "order-ref",
        ];

        /// JSON made of the rules' examples, near-misses, sensitive key names, numbers,
        /// texts with NULs and line breaks, and keys that repeat.
        fn json() -> impl Strategy<Value = Value> {
            let examples: Vec<String> = builtin_rules()
                .flat_map(|rule| rule.examples_true.iter().chain(rule.examples_false))
                .map(|example| (*example).to_owned())
                .chain(
                    [
                        "password",
                        "api_key",
                        "ok",
                        "ORD-1234",
                        "tkt123",
                        "ref:abcdef",
                        "a\ntkt123",
                    ]
                    .map(str::to_owned),
                )
                .collect();
            let keys = [
                "id",
                "email",
                "password",
                "ip",
                "ops@example.com",
                "ORD-1234",
                "+14155550123",
            ]
            .map(str::to_owned);
            let example = proptest::sample::select(examples);
            let text = prop_oneof![
                4 => example.clone(),
                2 => "[ a-zA-Z0-9@.:+/_-]{0,12}",
                1 => (example.clone(), "[\\x00\n ,.:-]", example).prop_map(|(a, sep, b)| format!("{a}{sep}{b}")),
                1 => any::<String>(),
            ];
            let text = prop_oneof![5 => text, 1 => super::timestamp()];
            let key = prop_oneof![text.clone(), proptest::sample::select(keys.to_vec())];
            let leaf = prop_oneof![
                text.prop_map(Value::String),
                any::<i64>().prop_map(Value::from),
                (0..100_000_i64).prop_map(Value::from),
                (-10_000_000_000_000_i64..10_000_000_000_000).prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                Just(Value::Null),
                Just(Value::Bool(true)),
            ];
            leaf.prop_recursive(3, 24, 4, move |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::vec((key.clone(), inner), 0..4)
                        .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        #[test]
        fn the_detectors_take_each_path() {
            let [builtin, anchored, multi_line] = &*DETECTORS;
            assert!(builtin.joinable && builtin.short_numbers_clean && builtin.timestamps_clean);
            assert!(anchored.joinable && anchored.timestamps_clean);
            assert!(!multi_line.joinable);
            let digits = custom("digits", "20", r"\b20[0-9]{2}\b", "in 2024");
            let digits = Detector::configure(&[], &[digits]).unwrap();
            assert!(!digits.short_numbers_clean && !digits.timestamps_clean);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Searching a document's texts joined (or prefiltered joined, for a detector
            /// that cannot search them joined) gives what searching each text alone does:
            /// the same findings, masked or dropped values and masked keys, in
            /// `redact_json` and `scan_json` alike.
            #[test]
            fn the_joined_search_changes_nothing(
                value in json(),
                which in 0..3_usize,
                treatment in 0..3_usize,
                allow in proptest::sample::subsequence(KINDS, 0..3),
            ) {
                let detector = &DETECTORS[which];
                let treatment = [None, Some(Treatment::Mask), Some(Treatment::Drop)][treatment];
                let allow: Vec<String> = allow.into_iter().map(str::to_owned).collect();
                let (mut fast, mut slow) = (value.clone(), value.clone());
                let found_fast = detector.walk(&mut fast, treatment, &allow, true);
                let found_slow = detector.walk(&mut slow, treatment, &allow, false);
                prop_assert_eq!(found_fast, found_slow);
                prop_assert_eq!(fast, slow);
                let scanned = detector.scan_json(&value);
                prop_assert_eq!(scanned, detector.walk(&mut value.clone(), None, &[], false));
            }
        }
    }

    /// ISO 8601 timestamps with any digits, fractions of a second and zones.
    fn timestamp() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let zone = prop_oneof![Just(String::new()), Just("Z".to_owned()), "[+-][0-9]{2}:[0-9]{2}"];
        (
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}",
            proptest::option::of("\\.[0-9]{1,9}"),
            zone,
        )
            .prop_map(|(time, fraction, zone)| format!("{time}{}{zone}", fraction.unwrap_or_default()))
    }

    static BUILTIN: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(Detector::builtin);

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// What lets a walk leave timestamps out of its search.
        #[test]
        fn nothing_is_found_in_a_timestamp(text in timestamp()) {
            proptest::prop_assert!(is_timestamp(&text));
            proptest::prop_assert_eq!(BUILTIN.find(&text), Vec::new());
        }

        /// What lets a walk leave integers of up to twelve digits out of its search.
        #[test]
        fn nothing_is_found_in_a_short_integer(number in -999_999_999_999_i64..=999_999_999_999, digits in 1_u32..=12) {
            let number = number % 10_i64.pow(digits);
            proptest::prop_assert_eq!(BUILTIN.find(&number.to_string()), Vec::new());
        }
    }

    #[test]
    fn what_is_a_timestamp() {
        for text in [
            "2024-03-05T10:20:30Z",
            "2024-03-05T10:20:30",
            "2024-03-05T10:20:30.123456789+05:30",
        ] {
            assert!(is_timestamp(text), "{text}");
        }
        for text in [
            "2024-03-05T10:20:30.1234567890Z",
            "2024-03-05 10:20:30",
            "2024-03-05T10:20:30Zx",
            "2024-03-05T10:20:30.Z",
            "2024-03-05T10:20",
            "2024-03-05T10:20:30+0530",
            "20x4-03-05T10:20:30Z",
        ] {
            assert!(!is_timestamp(text), "{text}");
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
