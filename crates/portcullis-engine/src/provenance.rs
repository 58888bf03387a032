//! Cross-call provenance: which of an intent's input values the agent read, earlier in the
//! same session, from the output of an action marked `provenance: untrusted`.
//!
//! Prompt injection gets an agent to read attacker-written text (an email, a web page, a
//! memo) and act on it. The gateway sees both the read and the act, so it connects them:
//!
//! 1. **Record.** When an untrusted action's result reaches an agent in a session, every
//!    value the agent could later send back is reduced to *keys*: each string value as it is
//!    (trimmed, 3 to 1,024 bytes), and each identifier found inside any string: email
//!    addresses (lowercased) and their domains, URLs (scheme and host lowercased) and their
//!    hosts, domain names (lowercased), IBANs (upper case, no spaces), phone numbers and
//!    digit runs of 8 to 34 digits (account numbers, card numbers; digits only), and
//!    whatever else the redaction detectors recognise (as matched). The store keeps the
//!    SHA-256 of each key, never the value.
//! 2. **Match.** A later intent in the same session has the same keys computed for each
//!    input value (numbers as their digits too), looked up by hash. A hit marks the value's
//!    JSON pointer with the action it was read from and when (`context.provenance`). So the
//!    match is exact for whole values, case-insensitive for emails and domains, and finds an
//!    identifier inside a longer string on either side (an IBAN quoted in a memo, then sent
//!    inside a payment reference).
//! 3. **Trust.** Keys of values the configuration declares trusted (`provenance.trusted`:
//!    an agent attribute such as its contacts, or an attribute of the trusted entities,
//!    such as a list of known payees) never mark anything.
//!
//! Sessions belong to the agent: every store read and write names the agent, so another
//! agent using the same session name sees and extends only its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use portcullis_core::sha256_hex;
use portcullis_policy::{AgentEntity, EntityDecl, InputProvenance, Mark};
use portcullis_redact::detect::Detector;
use portcullis_store::ProvenanceLimits;

use crate::quota::WindowText;

/// Shortest string value recorded and matched as a whole (shorter ones, like `ok` or
/// `no`, would match everything).
const MIN_EXACT_BYTES: usize = 3;
/// Longest string value recorded and matched as a whole; longer text contributes only the
/// identifiers inside it.
const MAX_EXACT_BYTES: usize = 1024;
/// Fewest and most digits of a digit run taken as an account or card number.
const DIGITS: std::ops::RangeInclusive<usize> = 8..=34;
/// The most keys one intent's input is looked up by; the rest are not (inputs are already
/// bounded by `limits.max_body_bytes`, this bounds the lookup).
const MAX_INPUT_KEYS: usize = 4096;

/// Default time a recorded value marks later inputs: a day.
pub const DEFAULT_TTL_SECS: i64 = 86_400;
/// Default most values one session keeps.
pub const DEFAULT_PER_SESSION: u32 = 10_000;
/// Default most values kept over all sessions.
pub const DEFAULT_TOTAL: u32 = 1_000_000;
/// Longest accepted session id.
pub const MAX_SESSION_LEN: usize = 128;

/// `provenance:` in the configuration.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProvenance {
    /// How long a value read from an untrusted output marks later inputs of the session:
    /// `90s`, `15m`, `1h`, `1d` (or seconds). Default `1d`.
    #[serde(default)]
    pub ttl: Option<WindowText>,
    /// The most values one session keeps (default 10000); the oldest make room.
    #[serde(default)]
    pub max_values_per_session: Option<u32>,
    /// The most values kept over all sessions (default 1000000); the oldest make room.
    #[serde(default)]
    pub max_values: Option<u32>,
    /// Values that never mark an input, wherever the agent read them.
    #[serde(default)]
    pub trusted: Vec<RawTrusted>,
}

/// Where trusted values come from: exactly one of `principal` and `entity`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrusted {
    /// An attribute of the agent itself (from `agents.ID.attributes`), such as `contacts`:
    /// its strings are trusted for that agent only.
    #[serde(default)]
    pub principal: Option<String>,
    /// An entity type of `entities`: the ids of its entities are trusted for every agent,
    /// or, with `attribute`, the strings of that attribute.
    #[serde(default)]
    pub entity: Option<String>,
    /// With `entity`: the attribute whose strings (or lists of strings) are trusted.
    #[serde(default)]
    pub attribute: Option<String>,
}

/// Validated provenance settings, with the trusted values reduced to key hashes.
#[derive(Debug, Clone)]
pub struct ProvenanceSettings {
    /// Expiry and size limits.
    pub limits: ProvenanceLimits,
    trusted_everywhere: Arc<HashSet<String>>,
    trusted_by_agent: Arc<HashMap<String, HashSet<String>>>,
}

impl Default for ProvenanceSettings {
    fn default() -> Self {
        Self {
            limits: ProvenanceLimits {
                ttl_secs: DEFAULT_TTL_SECS,
                per_session: i64::from(DEFAULT_PER_SESSION),
                total: i64::from(DEFAULT_TOTAL),
            },
            trusted_everywhere: Arc::default(),
            trusted_by_agent: Arc::default(),
        }
    }
}

impl ProvenanceSettings {
    /// Validates `raw` and hashes the trusted values it names.
    ///
    /// # Errors
    /// Every problem, each a message naming the entry.
    pub fn new(
        raw: RawProvenance,
        agents: &BTreeMap<String, AgentEntity>,
        entities: &[EntityDecl],
        detector: &Detector,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let ttl_secs = match raw.ttl.as_ref().map(crate::quota::window) {
            None => DEFAULT_TTL_SECS,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                problems.push(format!("`ttl`: {}", e.replace("window", "ttl")));
                DEFAULT_TTL_SECS
            }
        };
        let positive = |what: &str, v: Option<u32>, default: u32, problems: &mut Vec<String>| match v {
            None => i64::from(default),
            Some(0) => {
                problems.push(format!("`{what}` must be at least 1"));
                i64::from(default)
            }
            Some(n) => i64::from(n),
        };
        let per_session = positive(
            "max_values_per_session",
            raw.max_values_per_session,
            DEFAULT_PER_SESSION,
            &mut problems,
        );
        let total = positive("max_values", raw.max_values, DEFAULT_TOTAL, &mut problems);
        if per_session > total {
            problems.push("`max_values_per_session` can't be more than `max_values`".to_owned());
        }
        let mut everywhere = HashSet::new();
        let mut by_agent: HashMap<String, HashSet<String>> = HashMap::new();
        for (i, t) in raw.trusted.iter().enumerate() {
            let at = format!("`trusted[{i}]`");
            match (&t.principal, &t.entity, &t.attribute) {
                (Some(attr), None, None) => {
                    for (id, agent) in agents {
                        let set = by_agent.entry(id.clone()).or_default();
                        if let Some(v) = agent.attributes.get(attr) {
                            strings_of(v, &mut |s| set.extend(hashed_keys(detector, s)));
                        }
                    }
                }
                (None, Some(entity_type), attribute) => {
                    let of_type: Vec<&EntityDecl> =
                        entities.iter().filter(|e| &e.uid.entity_type == entity_type).collect();
                    if of_type.is_empty() {
                        problems.push(format!("{at}: no entity of type `{entity_type}` in `entities`"));
                    }
                    for e in of_type {
                        match attribute {
                            None => everywhere.extend(hashed_keys(detector, &e.uid.id)),
                            Some(a) => match e.attrs.get(a) {
                                Some(v) => strings_of(v, &mut |s| everywhere.extend(hashed_keys(detector, s))),
                                None => problems.push(format!(
                                    "{at}: entity `{entity_type}::\"{}\"` has no attribute `{a}`",
                                    e.uid.id
                                )),
                            },
                        }
                    }
                }
                _ => problems.push(format!(
                    "{at}: give either `principal: ATTRIBUTE`, or `entity: TYPE` with an optional `attribute`"
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            limits: ProvenanceLimits {
                ttl_secs,
                per_session,
                total,
            },
            trusted_everywhere: Arc::new(everywhere),
            trusted_by_agent: Arc::new(by_agent),
        })
    }

    fn trusted(&self, agent: &str, hash: &str) -> bool {
        self.trusted_everywhere.contains(hash) || self.trusted_by_agent.get(agent).is_some_and(|set| set.contains(hash))
    }

    /// What to look up for an input: each input value's JSON pointer with the hash of each
    /// of its keys that `agent` does not trust.
    #[must_use]
    pub fn probe(&self, detector: &Detector, agent: &str, input: &Value) -> Probe {
        let mut pairs = Vec::new();
        let mut pointer = String::new();
        walk(input, &mut pointer, &mut |pointer, v| {
            if pairs.len() >= MAX_INPUT_KEYS {
                return;
            }
            let mut keys = Vec::new();
            match v {
                Value::String(s) => string_keys(detector, s, &mut keys),
                Value::Number(n) => number_keys(n, &mut keys),
                _ => {}
            }
            for key in dedup(keys) {
                let hash = sha256_hex(key.as_bytes());
                if !self.trusted(agent, &hash) {
                    pairs.push((pointer.to_owned(), hash));
                }
            }
        });
        pairs.truncate(MAX_INPUT_KEYS);
        Probe { pairs }
    }

    /// The key hashes of what an untrusted result gave the agent, in document order,
    /// without repeats, at most as many as a session keeps.
    #[must_use]
    pub fn harvest(&self, detector: &Detector, output: &Value) -> Vec<String> {
        let cap = usize::try_from(self.limits.per_session).unwrap_or(usize::MAX);
        let mut seen = HashSet::new();
        let mut hashes = Vec::new();
        let mut pointer = String::new();
        walk(output, &mut pointer, &mut |_, v| {
            let Value::String(s) = v else { return };
            if hashes.len() >= cap {
                return;
            }
            let mut keys = Vec::new();
            string_keys(detector, s, &mut keys);
            for key in keys {
                let hash = sha256_hex(key.as_bytes());
                if hashes.len() < cap && seen.insert(hash.clone()) {
                    hashes.push(hash);
                }
            }
        });
        hashes
    }
}

/// An input's lookups: `(JSON pointer, key hash)` pairs.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pairs: Vec<(String, String)>,
}

impl Probe {
    /// The distinct hashes to look up.
    #[must_use]
    pub fn hashes(&self) -> Vec<String> {
        dedup(self.pairs.iter().map(|(_, h)| h.clone()).collect())
    }

    /// The marks, given which hashes were found with which `(source, read_at)`: one per
    /// pointer and source, with the earliest read.
    #[must_use]
    pub fn marks(&self, found: &HashMap<String, Vec<(String, i64)>>) -> Vec<Mark> {
        let mut marks: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (pointer, hash) in &self.pairs {
            for (source, read_at) in found.get(hash).into_iter().flatten() {
                let at = marks.entry((pointer, source)).or_insert(*read_at);
                *at = (*at).min(*read_at);
            }
        }
        marks
            .into_iter()
            .map(|((pointer, source), read_at)| Mark {
                pointer: pointer.to_owned(),
                source: source.to_owned(),
                read_at,
            })
            .collect()
    }

    /// Whether there is nothing to look up.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// A session's recorded values held in memory, for `portcullis eval` transcripts.
#[derive(Debug, Default)]
pub struct MemorySession {
    found: HashMap<String, Vec<(String, i64)>>,
}

impl MemorySession {
    /// Records what an untrusted `source` returned at `read_at`.
    pub fn record(&mut self, hashes: Vec<String>, source: &str, read_at: i64) {
        for h in hashes {
            let entry = self.found.entry(h).or_default();
            if !entry.iter().any(|(s, _)| s == source) {
                entry.push((source.to_owned(), read_at));
            }
        }
    }

    /// The input's provenance in this session.
    #[must_use]
    pub fn provenance(&self, probe: &Probe) -> InputProvenance {
        InputProvenance {
            session: true,
            marks: probe.marks(&self.found),
        }
    }
}

/// Checks a session id: 1 to [`MAX_SESSION_LEN`] bytes, no control characters.
///
/// # Errors
/// A message saying what a session id must be.
pub fn check_session(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_SESSION_LEN || id.chars().any(char::is_control) {
        return Err(format!(
            "a session must be a string of 1 to {MAX_SESSION_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

fn dedup(mut keys: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    keys
}

/// Calls `f` with every string in `v` (itself, or the items of a list).
fn strings_of(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|i| strings_of(i, f)),
        _ => {}
    }
}

fn hashed_keys(detector: &Detector, s: &str) -> Vec<String> {
    let mut keys = Vec::new();
    string_keys(detector, s, &mut keys);
    keys.iter().map(|k| sha256_hex(k.as_bytes())).collect()
}

/// Calls `f` with the JSON pointer and value of every scalar in `v`.
fn walk<'v>(v: &'v Value, pointer: &mut String, f: &mut dyn FnMut(&str, &'v Value)) {
    match v {
        Value::Object(map) => {
            for (k, item) in map {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                walk(item, pointer, f);
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk(item, pointer, f);
                pointer.truncate(len);
            }
        }
        scalar => f(pointer, scalar),
    }
}

/// The keys of a number in an input: its text, and its digits when it is a long integer
/// (an account number sent as a number).
fn number_keys(n: &serde_json::Number, out: &mut Vec<String>) {
    let text = n.to_string();
    if text.len() >= MIN_EXACT_BYTES {
        out.push(format!("s:{text}"));
    }
    if n.is_u64() || n.is_i64() {
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        if DIGITS.contains(&digits.len()) {
            out.push(format!("n:{digits}"));
        }
    }
}

/// The keys of one string: the whole (trimmed) string, and every identifier inside it.
/// Each key is prefixed with its class so that equal text of different kinds never meets.
pub(crate) fn string_keys(detector: &Detector, s: &str, out: &mut Vec<String>) {
    let t = s.trim();
    if (MIN_EXACT_BYTES..=MAX_EXACT_BYTES).contains(&t.len()) {
        out.push(format!("s:{t}"));
    }
    for finding in detector.find(t) {
        let Some(text) = t.get(finding.range.clone()) else {
            continue;
        };
        match &*finding.rule_id {
            // Found below, without the detector's exclusions of example addresses.
            "email" => {}
            "iban" => out.push(format!(
                "i:{}",
                text.chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_ascii_uppercase()
            )),
            "payment-card" => out.push(format!(
                "n:{}",
                text.chars().filter(char::is_ascii_digit).collect::<String>()
            )),
            id if id.starts_with("phone") => {
                out.push(format!(
                    "p:{}",
                    text.chars().filter(char::is_ascii_digit).collect::<String>()
                ));
            }
            _ => out.push(format!("t:{text}")),
        }
    }
    emails(t, out);
    urls(t, out);
    domains(t, out);
    digit_runs(t, out);
}

/// Email addresses, lowercased (the domain part is matched by [`domains`]).
fn emails(t: &str, out: &mut Vec<String>) {
    for token in t.split(|c: char| c.is_whitespace() || "<>()[]{},;:\"'`".contains(c)) {
        let token = token.trim_end_matches('.');
        let Some((local, domain)) = token.split_once('@') else {
            continue;
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local.chars().all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
        if local_ok && is_domain(domain) {
            out.push(format!("e:{}", token.to_ascii_lowercase()));
        }
    }
}

/// Dot-separated labels of letters, digits and `-`, the last of at least two letters.
fn is_domain(token: &str) -> bool {
    token.len() <= 253
        && token.contains('.')
        && token
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && token
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
}

/// URLs (`http://` and `https://`), with scheme and host lowercased and a bare trailing `/`
/// dropped, and their hosts as domains.
fn urls(t: &str, out: &mut Vec<String>) {
    let lower = t.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = ["https://", "http://"]
        .iter()
        .filter_map(|p| lower[from..].find(p).map(|i| (from + i, p.len())))
        .min()
    {
        let (start, scheme_len) = found;
        let rest = &t[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(rest.len());
        let url = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '}']);
        from = start + end.max(scheme_len);
        let after = &url[scheme_len..];
        let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let host = after[..host_end].to_ascii_lowercase();
        let host_name = host.rsplit_once('@').map_or(host.as_str(), |(_, h)| h);
        let host_name = host_name.split(':').next().unwrap_or_default().trim_end_matches('.');
        if host_name.is_empty() {
            continue;
        }
        let path = &after[host_end..];
        let path = if path == "/" { "" } else { path };
        out.push(format!("u:{}{host}{path}", &lower[start..start + scheme_len]));
        out.push(format!("d:{host_name}"));
    }
}

/// Domain names, lowercased: dot-separated labels of letters, digits and `-`, ending in
/// a label of at least two letters.
fn domains(t: &str, out: &mut Vec<String>) {
    for token in t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')) {
        let token = token.trim_matches(['.', '-']);
        if is_domain(token) {
            out.push(format!("d:{}", token.to_ascii_lowercase()));
        }
    }
}

/// Runs of 8 to 34 digits, which may be grouped by single spaces or dashes, as digits.
fn digit_runs(t: &str, out: &mut Vec<String>) {
    let mut digits = String::new();
    let mut pending_separator = false;
    let flush = |digits: &mut String, out: &mut Vec<String>| {
        if DIGITS.contains(&digits.len()) {
            out.push(format!("n:{digits}"));
        }
        digits.clear();
    };
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            pending_separator = false;
        } else if (c == ' ' || c == '-') && !digits.is_empty() && !pending_separator {
            pending_separator = true;
        } else {
            flush(&mut digits, out);
            pending_separator = false;
        }
    }
    flush(&mut digits, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        string_keys(&Detector::builtin(), s, &mut out);
        out
    }

    #[test]
    fn identifiers_inside_text_become_normalized_keys() {
        let k = keys(
            "Please wire it to DE89 3704 0044 0532 0130 00 and confirm to Billing@Evil-Corp.example.COM, see https://Pay.Evil.example/Invoice?id=7.",
        );
        for want in [
            "i:DE89370400440532013000",
            "e:billing@evil-corp.example.com",
            "d:evil-corp.example.com",
            "u:https://pay.evil.example/Invoice?id=7",
            "d:pay.evil.example",
            "n:89370400440532013000",
        ] {
            assert!(k.contains(&want.to_owned()), "{want} missing from {k:?}");
        }
        // The whole sentence too, as it is short enough.
        assert!(k.iter().any(|x| x.starts_with("s:Please wire")));
    }

    #[test]
    fn short_and_long_strings_give_only_their_identifiers() {
        assert!(keys("ok").is_empty());
        let long = format!("{} mallory@evil.example", "x".repeat(2000));
        let k = keys(&long);
        assert!(k.iter().all(|x| !x.starts_with("s:")), "{k:?}");
        assert!(k.contains(&"e:mallory@evil.example".to_owned()));
    }

    #[test]
    fn an_input_matches_exactly_case_insensitively_for_emails_and_inside_longer_text() {
        let detector = Detector::builtin();
        let settings = ProvenanceSettings::default();
        let mut session = MemorySession::default();
        let email = json!({"from": "Mallory <MALLORY@Evil.example>", "body": "Pay NL91ABNA0417164300 today", "subject": "Invoice 42"});
        session.record(settings.harvest(&detector, &email), "mail.read", 100);
        let input = json!({
            "to": ["friend@home.example", "mallory@evil.example"],
            "reference": "invoice for nl91 abna 0417 1643 00",
            "subject": "Invoice 42",
            "note": "Invoice 4"
        });
        let p = session.provenance(&settings.probe(&detector, "agent", &input));
        let pointers: Vec<&str> = p.marks.iter().map(|m| m.pointer.as_str()).collect();
        assert_eq!(pointers, vec!["/reference", "/subject", "/to/1"], "{p:?}");
        assert!(p.marks.iter().all(|m| m.source == "mail.read" && m.read_at == 100));
    }

    #[test]
    fn trusted_values_never_mark() {
        let detector = Detector::builtin();
        let mut attributes = serde_json::Map::new();
        attributes.insert("contacts".into(), json!(["landlord@rent.example"]));
        let agents = BTreeMap::from([(
            "assistant".to_owned(),
            AgentEntity {
                attributes,
                groups: vec![],
            },
        )]);
        let entities = vec![EntityDecl {
            uid: portcullis_policy::EntityRef {
                entity_type: "Payees".into(),
                id: "household".into(),
            },
            attrs: json!({"ibans": ["GB82WEST12345698765432"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            parents: vec![],
        }];
        let raw = RawProvenance {
            trusted: vec![
                RawTrusted {
                    principal: Some("contacts".into()),
                    ..RawTrusted::default()
                },
                RawTrusted {
                    entity: Some("Payees".into()),
                    attribute: Some("ibans".into()),
                    ..RawTrusted::default()
                },
            ],
            ..RawProvenance::default()
        };
        let settings = ProvenanceSettings::new(raw, &agents, &entities, &detector).unwrap_or_default();
        let mut session = MemorySession::default();
        let read = json!({"text": "Contact landlord@rent.example or pay GB82 WEST 1234 5698 7654 32, or mallory@evil.example"});
        session.record(settings.harvest(&detector, &read), "mail.read", 5);
        let input = json!({"a": "Landlord@rent.example", "b": "GB82WEST12345698765432", "c": "mallory@evil.example"});
        let marked: Vec<String> = session
            .provenance(&settings.probe(&detector, "assistant", &input))
            .marks
            .into_iter()
            .map(|m| m.pointer)
            .collect();
        assert_eq!(marked, vec!["/c"]);
        // Another agent doesn't have the assistant's contacts: for it the address is marked.
        let other = session.provenance(&settings.probe(&detector, "other", &input));
        assert!(other.marks.iter().any(|m| m.pointer == "/a"), "{other:?}");
        assert!(
            !other.marks.iter().any(|m| m.pointer == "/b"),
            "entity data is trusted for all"
        );
    }

    #[test]
    fn bad_settings_are_reported() {
        let detector = Detector::builtin();
        let raw = RawProvenance {
            max_values_per_session: Some(0),
            trusted: vec![
                RawTrusted::default(),
                RawTrusted {
                    entity: Some("Nope".into()),
                    ..RawTrusted::default()
                },
            ],
            ..RawProvenance::default()
        };
        let problems = ProvenanceSettings::new(raw, &BTreeMap::new(), &[], &detector)
            .err()
            .unwrap_or_default();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("max_values_per_session"));
        assert!(problems[1].contains("either `principal"));
        assert!(problems[2].contains("no entity of type `Nope`"));
    }

    #[test]
    fn session_ids_are_bounded_printable_strings() {
        assert!(check_session("task-1").is_ok());
        assert!(check_session("").is_err());
        assert!(check_session("a\nb").is_err());
        assert!(check_session(&"x".repeat(MAX_SESSION_LEN + 1)).is_err());
    }
}
