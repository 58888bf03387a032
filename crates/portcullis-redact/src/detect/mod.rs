//! Detection of secrets and personal data that the gateway did not inject.
//!
//! A [`Rule`] names one format (a provider's token, a card number, a private key block) as a
//! regular expression, a few keywords and an optional validator. A [`Detector`] runs a rule
//! set over text in one pass that finds candidate places, then regexes only there:
//! - one search for every rule's keywords (see [`keywords`]: token prefixes such as `ghp_`
//!   matched exactly, words such as `password` ASCII case-insensitively) finds where each rule
//!   can match; a rule runs only in windows around its keyword hits, as wide as its longest
//!   possible match and never past a byte its regex cannot match (so a JSON comma ends the
//!   window of a rule whose matches cannot contain one), or over the whole text when its
//!   matches are unbounded and can contain any byte;
//! - the personal-data rules for numbers (cards, IBANs, phone numbers in E.164, North
//!   American and national forms, IP addresses), whose keywords are a single common character
//!   or none, get their windows from a hand-written scan of the runs of digits and separators
//!   (see [`pii::scan`]);
//! - a text with no keyword hit, no scan window and none of the one-character keywords (`@`)
//!   has no findings, and `find` returns at once, without allocating.
//!
//! The JSON walk (see `detect/json.rs`) searches all texts of a document at once, joined by NULs,
//! with each regex rebuilt so that a match stays inside one text and `^`/`$` match at each
//! text's ends (see `Detector::find_joined`).
//!
//! Every match of a rule contains one of its keywords (custom rules are checked for that on
//! their examples), so a window holds every match that can exist there, and searching a window
//! sees the text around it for `\b` and `^`: the findings are those of running each regex
//! over the whole text. Candidates failing their rule's validator (a checksum, an entropy
//! floor, a known documentation example) are dropped, and the rest are reduced to
//! non-overlapping findings, leftmost first and longest at each position, a candidate that
//! overlaps a kept finding widening it (so every byte any rule matched is covered).
//!
//! Regexes use the `regex` crate's engines, which never backtrack, so the time a rule takes is
//! linear in the text whatever the text is.
//!
//! Two capture-group names carry meaning:
//! - `v`: the value to report and redact, when the regex also matches context around it
//!   (`password=` before a value, the user name before a URL password);
//! - `fp`: context that marks the match as a known false positive (`version 1.2.3.4`); a
//!   match in which it participates is dropped.

mod check;
mod credentials;
mod custom;
mod json;
mod keywords;
mod phone;
mod pii;
mod saas;
mod secrets;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;

pub use custom::{CustomRule, RuleError};
pub use json::{JsonFinding, SENSITIVE_KEY, Treatment, is_sensitive_key};

use regex::Regex;
use regex_automata::Input;
use regex_automata::meta;
use regex_automata::util::captures::Captures;
use regex_syntax::hir::{
    Capture, Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look, Repetition,
};

/// What kind of data a rule finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// A credential: a token, a key, a password.
    Secret,
    /// Personal data: an email address, a card number, a phone number.
    Pii,
}

impl Category {
    /// `"secret"` or `"pii"`, as policies and findings spell it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Pii => "pii",
        }
    }
}

/// One detectable format.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Stable identifier, used in findings and in the redaction placeholder.
    pub id: &'static str,
    /// Whether the rule finds secrets or personal data.
    pub category: Category,
    /// One line saying what the rule finds.
    pub description: &'static str,
    /// ASCII strings, at least one of which occurs in every match; empty means the regex runs
    /// on every text. They are matched exactly as written when the regex has no `(?i` flag
    /// anywhere (a token prefix such as `ghp_` or `AKIA` has one spelling), and ASCII
    /// case-insensitively otherwise.
    pub keywords: &'static [&'static str],
    /// The pattern, in `regex` crate syntax; see the module docs for the `v` and `fp` groups.
    pub regex: &'static str,
    /// Further check on the value (checksum, entropy, example exclusion); `false` drops it.
    pub validate: Option<fn(&str) -> bool>,
    /// Texts in which this rule must find something.
    pub examples_true: &'static [&'static str],
    /// Texts in which no builtin rule may find anything.
    pub examples_false: &'static [&'static str],
}

/// One match of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The id of the rule that matched.
    pub rule_id: Cow<'static, str>,
    /// The [`Rule::category`] of the rule that matched.
    pub category: Category,
    /// Byte range of the value in the searched text.
    pub range: Range<usize>,
}

/// Every builtin rule: secrets first, then personal data.
///
/// The order matters only when two rules find exactly the same range: the earlier one is
/// reported, so named formats come before the generic password and assignment rules.
pub fn builtin_rules() -> impl Iterator<Item = &'static Rule> {
    secrets::RULES
        .iter()
        .chain(saas::RULES)
        .chain(credentials::RULES)
        .chain(pii::RULES)
        .chain(phone::RULES)
}

/// A compiled rule set.
#[derive(Debug)]
pub struct Detector {
    rules: Vec<Compiled>,
    /// The search for every rule's keywords (see [`keywords`]).
    keywords: keywords::Keywords,
    /// Whether a rule has a [`pii::Scan`], so the digit scan must run.
    scans: bool,
    /// Whether a rule runs on every text: it has no keywords and no scan, or the keyword
    /// search could not be built.
    always: bool,
    /// The one-character keywords, in both cases where matched case-insensitively; a rule
    /// with one runs on the whole text when the character is in it.
    short: Vec<char>,
    /// Whether every rule can search texts joined by NULs (see [`Joined`]).
    joinable: bool,
    /// Whether nothing can be found in a number of fewer than [`SHORT_NUMBER`] characters
    /// or an integer of fewer than [`SHORT_INTEGER`] digits: no rule runs on every text or
    /// has a keyword made of the characters of numbers; the number scan passes over runs of
    /// fewer than seven characters without a colon, and no number rule matches digits with
    /// no separator but a leading `-` short of a card's thirteen (a test checks it).
    short_numbers_clean: bool,
    /// Whether nothing can be found in an ISO 8601 timestamp (see `json::is_timestamp`):
    /// no rule runs on every text or has a keyword made of the characters of timestamps,
    /// and no number rule matches one (see [`pii::scan`]; a test checks it).
    timestamps_clean: bool,
}

/// See [`Detector::short_numbers_clean`].
const SHORT_NUMBER: usize = 7;
/// See [`Detector::short_numbers_clean`].
const SHORT_INTEGER: u64 = 1_000_000_000_000;

/// What `find` reuses from call to call on one thread, so that a call that finds nothing
/// allocates nothing.
#[derive(Debug, Default)]
struct Scratch {
    hits: Vec<(usize, Range<usize>)>,
    /// A lowercased block of the text, for the case-insensitive keywords.
    lower: Vec<u8>,
    scanned: pii::Windows,
    windows: Vec<Range<usize>>,
    candidates: Vec<Finding>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Debug)]
struct Compiled {
    id: Cow<'static, str>,
    category: Category,
    keywords: Vec<Cow<'static, str>>,
    validate: Option<fn(&str) -> bool>,
    regex: Engine,
    /// Whether the regex has a `v` or `fp` group; without one a plain search does.
    has_groups: bool,
    /// How far from a keyword a match can reach.
    reach: Reach,
    /// For the builtin number rules, the scan that finds their windows instead of keywords.
    scan: Option<pii::Scan>,
    /// Whether the keywords are matched exactly as written (see [`Rule::keywords`]).
    exact_keywords: bool,
    /// Whether a keyword is one character long.
    has_short_keyword: bool,
    /// How the rule searches texts joined by NULs.
    joined: Joined,
    /// For a value failing validation, the length of a shorter one to validate instead,
    /// which the regex does not try (see [`pii::card_without_last_group`]).
    shorter: Option<fn(&str) -> Option<usize>>,
}

/// How a rule searches many texts joined by NUL bytes at once (see [`Detector::find_joined`]).
#[derive(Debug)]
enum Joined {
    /// With its own regex, which has no `^` or `$` and cannot match a NUL: a NUL looks
    /// like the end of a text to `\b` already.
    Same,
    /// With this copy of its regex, in which no class matches a NUL, and `^` and `$` match
    /// at the start and end of a line, lines ending with NUL: so a match never crosses from
    /// one text into another, and `^` and `$` match at the start and end of each text.
    Own(meta::Regex),
    /// Not at all: its regex has multi-line anchors or a NUL in a literal, or no windowed
    /// engine could be built.
    No,
}

/// Where a match around a keyword can be.
#[derive(Debug)]
struct Reach {
    /// The longest match in bytes; `None` when unbounded.
    max_len: Option<usize>,
    /// The bytes that can occur in a match.
    alphabet: Box<[bool; 256]>,
}

impl Detector {
    /// A detector with every builtin rule.
    pub fn builtin() -> Self {
        Self::new(builtin_rules().copied())
    }

    /// A detector for `rules`; a rule whose regex does not compile is left out (the builtin
    /// rules are all checked by a test).
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        Self::from_compiled(
            rules
                .into_iter()
                .filter_map(|rule| Compiled::builtin(rule).ok())
                .collect(),
        )
    }

    /// The builtin rules minus those whose ids are in `disable`, plus `custom`.
    ///
    /// # Errors
    /// Every problem at once: an unknown id in `disable`, and each custom rule that is
    /// malformed or does not behave as its own examples say (see [`CustomRule`]).
    pub fn configure(disable: &[String], custom: &[CustomRule]) -> Result<Self, Vec<RuleError>> {
        let mut errors = Vec::new();
        for id in disable {
            if !builtin_rules().any(|rule| rule.id == id) {
                errors.push(RuleError::new(id, "is not a builtin rule, so it can't be disabled"));
            }
        }
        let mut compiled: Vec<Compiled> = builtin_rules()
            .filter(|rule| !disable.iter().any(|id| id == rule.id))
            .filter_map(|rule| Compiled::builtin(*rule).ok())
            .collect();
        for (index, rule) in custom.iter().enumerate() {
            let earlier = custom.get(..index).unwrap_or_default();
            match custom::compile(rule, earlier) {
                Ok(rule) => compiled.push(rule),
                Err(problems) => errors.extend(problems),
            }
        }
        if errors.is_empty() {
            Ok(Self::from_compiled(compiled))
        } else {
            Err(errors)
        }
    }

    fn from_compiled(rules: Vec<Compiled>) -> Self {
        let keywords = keywords::Keywords::new(
            rules
                .iter()
                .enumerate()
                .filter(|(_, compiled)| compiled.scan.is_none())
                .flat_map(|(index, compiled)| {
                    // A one-character keyword would be a hit on nearly every line; such a
                    // rule runs on the whole text when the character is in it (see `find`).
                    let long = compiled.keywords.iter().filter(|keyword| keyword.len() > 1);
                    long.map(move |keyword| (&**keyword, index, compiled.exact_keywords))
                }),
        );
        let scans = rules.iter().any(|compiled| compiled.scan.is_some());
        let always = keywords.failed
            || rules
                .iter()
                .any(|compiled| compiled.scan.is_none() && compiled.keywords.is_empty());
        let unscanned = rules.iter().filter(|compiled| compiled.scan.is_none());
        let mut short: Vec<char> = unscanned.flat_map(Compiled::short_keywords).collect();
        short.sort_unstable();
        short.dedup();
        let joinable = rules.iter().all(|compiled| !matches!(compiled.joined, Joined::No));
        // The number rules' keywords are not searched.
        let keywords_avoid = |chars: &[u8]| {
            !always
                && !rules.iter().any(|compiled| {
                    let within = |keyword: &Cow<'static, str>| keyword.bytes().all(|byte| chars.contains(&byte));
                    compiled.scan.is_none() && compiled.keywords.iter().any(within)
                })
        };
        let short_numbers_clean = keywords_avoid(b"0123456789+-.eE");
        let timestamps_clean = keywords_avoid(b"0123456789+-.:TZtz");
        Self {
            rules,
            keywords,
            scans,
            always,
            short,
            joinable,
            short_numbers_clean,
            timestamps_clean,
        }
    }

    /// The ids of the rules this detector runs.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.rules.iter().map(|compiled| &*compiled.id)
    }

    /// Every finding in `text`, sorted by position and never overlapping.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.find_with(text, &mut scratch, None),
            // Only if a validator ever searched with a detector itself.
            Err(_) => self.find_with(text, &mut Scratch::default(), None),
        })
    }

    /// Every finding in texts joined by NUL bytes (none of which holds a NUL), as `find` on
    /// each text alone would report it, except in the texts a match crosses into: such a
    /// match's range is added to `crossings`, and the texts it touches must be searched
    /// alone. `None` when a rule cannot search joined texts (see [`Joined`]).
    ///
    /// Why that is `find` on each text: a NUL is not a word character, so `\b` sees the
    /// same on either side of it as at a text's start or end; `^` and `$` match next to a
    /// NUL (see [`Joined::Own`]); a match starting on a NUL is an artifact of joining and
    /// the search resumes after it; and a match that stays inside one text is the one the
    /// regex finds in that text alone, since everything it looked at is the same there.
    fn find_joined(&self, joined: &str, crossings: &mut Vec<Range<usize>>) -> Option<Vec<Finding>> {
        if !self.joinable {
            return None;
        }
        Some(SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.find_with(joined, &mut scratch, Some(crossings)),
            Err(_) => self.find_with(joined, &mut Scratch::default(), Some(crossings)),
        }))
    }

    /// `find`, or with `crossings` `find_joined`.
    fn find_with(
        &self,
        text: &str,
        scratch: &mut Scratch,
        mut crossings: Option<&mut Vec<Range<usize>>>,
    ) -> Vec<Finding> {
        let Scratch {
            hits,
            lower,
            scanned,
            windows,
            candidates,
        } = scratch;
        let whole = self.keywords.failed;
        self.keywords.find(text, lower, hits);
        scanned.clear();
        if self.scans {
            pii::scan(text, scanned);
        }
        let nothing_short = || !self.short.iter().any(|&c| text.contains(c));
        if !self.always && hits.is_empty() && scanned.is_empty() && nothing_short() {
            return Vec::new();
        }
        candidates.clear();
        let mut rest = hits.as_slice();
        for (index, compiled) in self.rules.iter().enumerate() {
            windows.clear();
            if let Some(scan) = compiled.scan {
                windows.extend_from_slice(scanned.of(scan));
            } else if !whole && !compiled.keywords.is_empty() {
                let (own, others) = rest.split_at(rest.partition_point(|hit| hit.0 == index));
                rest = others;
                if own.is_empty() && !compiled.has_short_keyword {
                    continue;
                }
                if compiled.has_short_keyword && compiled.has_short_keyword_in(text) {
                    windows.push(0..text.len());
                } else {
                    let ranges = own.iter().map(|hit| hit.1.clone());
                    compiled
                        .reach
                        .windows(text.as_bytes(), ranges, windows, crossings.is_some());
                }
            } else {
                windows.push(0..text.len());
            }
            compiled.candidates(text, windows, candidates, crossings.as_deref_mut());
        }
        merge(candidates)
    }

    /// For texts joined by NUL bytes into `joined`, the `i`th ending at `ends[i]`, whether
    /// `find` can report anything in each: whether a keyword hit, a number-scan window or a
    /// one-character keyword touches it. Keywords and the runs the scan looks at lie inside
    /// one text (a NUL ends every run), so a text with a hit on its own has it here too; a
    /// hit across a NUL only marks a text needlessly.
    fn candidate_texts(&self, joined: &str, ends: &[usize]) -> Vec<bool> {
        let mut candidates = vec![self.always; ends.len()];
        if self.always {
            return candidates;
        }
        let mut mark = |range: Range<usize>| {
            let first = ends.partition_point(|&end| end < range.start);
            let last = ends.partition_point(|&end| end < range.end);
            for candidate in candidates.iter_mut().take(last + 1).skip(first) {
                *candidate = true;
            }
        };
        SCRATCH.with(|scratch| {
            let mut fresh = Scratch::default();
            let mut borrowed = scratch.try_borrow_mut();
            let scratch = borrowed.as_deref_mut().unwrap_or(&mut fresh);
            self.keywords.find(joined, &mut scratch.lower, &mut scratch.hits);
            scratch.hits.drain(..).for_each(|(_, range)| mark(range));
            if self.scans {
                pii::scan(joined, &mut scratch.scanned);
                scratch.scanned.all().for_each(|range| mark(range.clone()));
            }
        });
        for &c in &self.short {
            joined.match_indices(c).for_each(|(at, _)| mark(at..at + 1));
        }
        candidates
    }

    /// `text` with each finding replaced by `[REDACTED:RULE_ID]`; borrowed when nothing matched.
    ///
    /// A placeholder changes the context of its neighbours (a phone number glued to a token
    /// is found only once the token is replaced), so redaction repeats until nothing more is
    /// found, at most four times; that makes it idempotent in practice.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for _ in 0..MAX_REDACTION_PASSES {
            let findings = self.find(&out);
            if findings.is_empty() {
                break;
            }
            out = Cow::Owned(mask(&out, &findings));
        }
        out
    }
}

impl Compiled {
    fn builtin(rule: Rule) -> Result<Self, regex::Error> {
        let regex = Regex::new(rule.regex)?;
        let mut compiled = Self::new(
            Cow::Borrowed(rule.id),
            rule.category,
            rule.keywords.iter().map(|k| Cow::Borrowed(*k)).collect(),
            rule.validate,
            regex,
        );
        compiled.scan = pii::Scan::of(&rule);
        compiled.shorter = pii::shorter_value(&rule);
        compiled.exact_keywords = !rule.regex.contains("(?i");
        Ok(compiled)
    }

    fn new(
        id: Cow<'static, str>,
        category: Category,
        keywords: Vec<Cow<'static, str>>,
        validate: Option<fn(&str) -> bool>,
        regex: Regex,
    ) -> Self {
        let has_groups = regex.capture_names().flatten().any(|name| name == "v" || name == "fp");
        let reach = Reach::of(regex.as_str());
        let has_short_keyword = keywords.iter().any(|keyword| keyword.len() == 1);
        let pattern = regex.as_str().to_owned();
        let regex = Engine::of(regex);
        let joined = Joined::of(&pattern, &regex);
        Self {
            id,
            category,
            keywords,
            validate,
            regex,
            has_groups,
            reach,
            scan: None,
            exact_keywords: false,
            has_short_keyword,
            joined,
            shorter: None,
        }
    }

    /// This rule's one-character keywords, in both cases where matched case-insensitively.
    fn short_keywords(&self) -> impl Iterator<Item = char> + '_ {
        let chars = self
            .keywords
            .iter()
            .filter_map(|keyword| keyword.chars().next().filter(|_| keyword.len() == 1));
        chars.flat_map(|c| {
            if self.exact_keywords {
                [c, c]
            } else {
                [c.to_ascii_lowercase(), c.to_ascii_uppercase()]
            }
        })
    }

    /// Whether one of this rule's one-character keywords is in `text`.
    fn has_short_keyword_in(&self, text: &str) -> bool {
        self.keywords
            .iter()
            .filter_map(|keyword| keyword.chars().next().filter(|_| keyword.len() == 1))
            .any(|c| {
                text.contains(c)
                    || (!self.exact_keywords
                        && (text.contains(c.to_ascii_uppercase()) || text.contains(c.to_ascii_lowercase())))
            })
    }

    /// The validated matches of this rule in `windows` of `text` (sorted and disjoint), the
    /// same as searching all of `text` finds there; with `crossings`, of texts joined by
    /// NULs (see [`Detector::find_joined`]).
    fn candidates(
        &self,
        text: &str,
        windows: &[Range<usize>],
        out: &mut Vec<Finding>,
        mut crossings: Option<&mut Vec<Range<usize>>>,
    ) {
        if windows.is_empty() {
            return;
        }
        let regex = match (&self.regex, &self.joined, crossings.is_some()) {
            (Engine::Meta(regex), _, false) | (Engine::Meta(regex), Joined::Same, true) => regex,
            (_, Joined::Own(regex), true) => regex,
            (Engine::Plain(regex), _, false) => return self.candidates_whole(regex, text, out),
            // `find_joined` does not run such a detector.
            (_, Joined::No, true) | (Engine::Plain(_), Joined::Same, true) => return,
        };
        let mut caps = None;
        let mut searched = 0;
        for window in windows {
            let start = window.start.max(searched);
            if start >= window.end {
                continue;
            }
            let mut input = Input::new(text).span(start..window.end);
            while let Some(found) = self.search(regex, &input, &mut caps, text, out, crossings.as_deref_mut()) {
                // As the `regex` crate's iterators do, step over an empty match.
                searched = if found.is_empty() {
                    next_char(text, found.end)
                } else {
                    found.end
                };
                if searched >= window.end {
                    break;
                }
                input.set_start(searched);
            }
        }
    }

    /// Finds the first match in `input`, records its value when valid, returns its range.
    fn search(
        &self,
        regex: &meta::Regex,
        input: &Input<'_>,
        caps: &mut Option<Captures>,
        text: &str,
        out: &mut Vec<Finding>,
        crossings: Option<&mut Vec<Range<usize>>>,
    ) -> Option<Range<usize>> {
        // Most windows hold no match; only a match needs its groups, and only then the
        // (allocated) captures.
        let found = regex.search(input)?.range();
        if let Some(crossings) = crossings {
            let bytes = text.as_bytes();
            if bytes.get(found.start) == Some(&0) {
                // A match starting on the NUL before a text (`(?:^|[^\w])…` taking the NUL for
                // a non-word character): resume after the NUL, as in the text alone.
                return Some(found.start..found.start);
            }
            if bytes.get(found.clone()).is_none_or(|matched| matched.contains(&0)) {
                crossings.push(found.clone());
                return Some(found);
            }
        }
        if !self.has_groups {
            self.push_if_valid(text, found.clone(), out);
            return Some(found);
        }
        let caps = caps.get_or_insert_with(|| regex.create_captures());
        regex.search_captures(input, caps);
        let found = caps.get_match()?.range();
        if caps.get_group_by_name("fp").is_none() {
            let value = caps
                .get_group_by_name("v")
                .map_or_else(|| found.clone(), |span| span.range());
            self.push_if_valid(text, value, out);
        }
        Some(found)
    }

    /// The old way, over the whole text, for a regex the windowed engine could not build.
    fn candidates_whole(&self, regex: &Regex, text: &str, out: &mut Vec<Finding>) {
        if self.has_groups {
            for captures in regex.captures_iter(text) {
                if captures.name("fp").is_none()
                    && let Some(value) = captures.name("v").or_else(|| captures.get(0))
                {
                    self.push_if_valid(text, value.range(), out);
                }
            }
        } else {
            for value in regex.find_iter(text) {
                self.push_if_valid(text, value.range(), out);
            }
        }
    }

    fn push_if_valid(&self, text: &str, value: Range<usize>, out: &mut Vec<Finding>) {
        let Some(slice) = text.get(value.clone()) else {
            return;
        };
        let valid = self.validate.is_none_or(|validate| validate(slice));
        if value.is_empty() {
            return;
        }
        let value = if valid {
            value
        } else if let Some(len) = self.shorter.and_then(|shorter| shorter(slice))
            && self
                .validate
                .is_none_or(|validate| slice.get(..len).is_some_and(validate))
        {
            value.start..value.start + len
        } else {
            return;
        };
        out.push(Finding {
            rule_id: self.id.clone(),
            category: self.category,
            range: value,
        });
    }
}

/// A rule's compiled regex.
#[derive(Debug)]
enum Engine {
    /// The regex, searchable in part of a text with the text around as context.
    Meta(meta::Regex),
    /// Only when the above could not be built from a regex the `regex` crate accepted; then
    /// the rule runs on the whole text.
    Plain(Regex),
}

impl Engine {
    fn of(regex: Regex) -> Self {
        // `regex::Regex` is a `meta::Regex` with these same defaults inside (but the one-pass
        // DFA, see `meta_config`); it just does not expose searching a span.
        meta::Builder::new()
            .configure(meta_config())
            .build(regex.as_str())
            .map_or(Self::Plain(regex), Self::Meta)
    }
}

/// How the rules' regexes are built: as `meta::Regex`'s defaults, without the one-pass DFA.
/// The meta engine builds one up front for every regex that has one, only to resolve the
/// capture groups of a match; for the builtin rules that was 4 MB, over a quarter of an
/// idle gateway's heap. Captures are resolved only once a window holds a match, over the
/// match alone, where the bounded backtracker does the same work; which engine resolves
/// them changes no finding.
fn meta_config() -> meta::Config {
    meta::Config::new().onepass(false)
}

impl Joined {
    fn of(pattern: &str, regex: &Engine) -> Self {
        if matches!(regex, Engine::Plain(_)) {
            return Self::No;
        }
        let Ok(hir) = regex_syntax::parse(pattern) else {
            return Self::No;
        };
        if hir.properties().look_set().contains_anchor_line() {
            return Self::No;
        }
        match for_joined(&hir) {
            None => Self::No,
            Some(joined) if joined == hir => Self::Same,
            Some(joined) => meta::Builder::new()
                .configure(meta_config().line_terminator(0))
                .build_from_hir(&joined)
                .map_or(Self::No, Self::Own),
        }
    }
}

/// `hir` with `^` and `$` (start and end of the text) made start and end of a line, and
/// NUL taken out of every class; `None` when a literal holds a NUL.
fn for_joined(hir: &Hir) -> Option<Hir> {
    let all = |subs: &[Hir]| subs.iter().map(for_joined).collect::<Option<Vec<_>>>();
    Some(match hir.kind() {
        HirKind::Look(Look::Start) => Hir::look(Look::StartLF),
        HirKind::Look(Look::End) => Hir::look(Look::EndLF),
        HirKind::Literal(literal) if literal.0.contains(&0) => return None,
        HirKind::Empty | HirKind::Literal(_) | HirKind::Look(_) => hir.clone(),
        HirKind::Class(Class::Unicode(class)) => {
            let mut class = class.clone();
            class.difference(&ClassUnicode::new([ClassUnicodeRange::new('\0', '\0')]));
            Hir::class(Class::Unicode(class))
        }
        HirKind::Class(Class::Bytes(class)) => {
            let mut class = class.clone();
            class.difference(&ClassBytes::new([ClassBytesRange::new(0, 0)]));
            Hir::class(Class::Bytes(class))
        }
        HirKind::Repetition(repetition) => Hir::repetition(Repetition {
            sub: Box::new(for_joined(&repetition.sub)?),
            ..repetition.clone()
        }),
        HirKind::Capture(capture) => Hir::capture(Capture {
            sub: Box::new(for_joined(&capture.sub)?),
            ..capture.clone()
        }),
        HirKind::Concat(subs) => Hir::concat(all(subs)?),
        HirKind::Alternation(subs) => Hir::alternation(all(subs)?),
    })
}

impl Reach {
    /// The reach of `pattern`; unbounded and over every byte when it does not parse.
    fn of(pattern: &str) -> Self {
        let mut alphabet = Box::new([false; 256]);
        let Ok(hir) = regex_syntax::parse(pattern) else {
            return Self {
                max_len: None,
                alphabet: Box::new([true; 256]),
            };
        };
        add_bytes(&hir, &mut alphabet);
        Self {
            max_len: hir.properties().maximum_len(),
            alphabet,
        }
    }

    /// Appends to `windows` the sorted, disjoint parts of `text` that hold every match
    /// containing one of `hits` (sorted by start): around each, as far as the longest match
    /// and the bytes a match can contain allow; never past a NUL when `joined` (see
    /// [`Joined::Own`]).
    fn windows(
        &self,
        text: &[u8],
        hits: impl Iterator<Item = Range<usize>>,
        windows: &mut Vec<Range<usize>>,
        joined: bool,
    ) {
        let len = text.len();
        let inside = |b: &u8| self.alphabet[usize::from(*b)] && !(joined && *b == 0);
        for hit in hits {
            if windows.last().is_some_and(|last| hit.end <= last.end) {
                continue;
            }
            let floor = windows.last().map_or(0, |last| last.end);
            let (lo, hi) = match self.max_len {
                Some(max) => (
                    hit.end.saturating_sub(max).max(floor),
                    hit.start.saturating_add(max).min(len),
                ),
                None => (floor, len),
            };
            let mut start = hit.start.max(lo);
            while start > lo && text.get(start - 1).is_some_and(inside) {
                start -= 1;
            }
            let mut end = hit.end.min(hi).max(start);
            while end < hi && text.get(end).is_some_and(inside) {
                end += 1;
            }
            match windows.last_mut() {
                Some(last) if start <= last.end => last.end = last.end.max(end),
                _ => windows.push(start..end),
            }
        }
    }
}

/// Marks in `set` every byte that can occur in a match of `hir`.
fn add_bytes(hir: &Hir, set: &mut [bool; 256]) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(literal) => {
            for &byte in literal.0.iter() {
                set[usize::from(byte)] = true;
            }
        }
        HirKind::Class(Class::Unicode(class)) => {
            for range in class.ranges() {
                let (start, end) = (u32::from(range.start()), u32::from(range.end()));
                for byte in start..=end.min(0x7F) {
                    set[byte as usize] = true;
                }
                if end > 0x7F {
                    // Any UTF-8 encoding of a non-ASCII character: lead and continuation bytes.
                    set[0x80..].fill(true);
                }
            }
        }
        HirKind::Class(Class::Bytes(class)) => {
            for range in class.ranges() {
                set[usize::from(range.start())..=usize::from(range.end())].fill(true);
            }
        }
        HirKind::Repetition(repetition) => add_bytes(&repetition.sub, set),
        HirKind::Capture(capture) => add_bytes(&capture.sub, set),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            for sub in subs {
                add_bytes(sub, set);
            }
        }
    }
}

/// The end of the character starting at `at`, or `at + 1` past the end of `text`.
fn next_char(text: &str, at: usize) -> usize {
    text.get(at..)
        .and_then(|rest| rest.chars().next())
        .map_or(at + 1, |c| at + c.len_utf8())
}

/// How many times [`Detector::redact`] re-scans its own output.
const MAX_REDACTION_PASSES: usize = 4;

/// `text` with each of `findings` (sorted, disjoint ranges of `text`, as [`Detector::find`]
/// returns them) replaced by its placeholder. A finding that starts before the previous one
/// ends, or whose range is not in `text`, is skipped.
#[must_use]
pub fn mask(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for finding in findings {
        let Some(before) = text.get(copied..finding.range.start) else {
            continue;
        };
        if text.get(finding.range.clone()).is_none() {
            continue;
        }
        out.push_str(before);
        push_placeholder(&mut out, &finding.rule_id);
        copied = finding.range.end;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

/// The text that replaces a finding of `kind`: `[REDACTED:kind]`.
#[must_use]
pub fn placeholder(kind: &str) -> String {
    let mut out = String::with_capacity(kind.len() + 11);
    push_placeholder(&mut out, kind);
    out
}

fn push_placeholder(out: &mut String, kind: &str) {
    out.push_str("[REDACTED:");
    out.push_str(kind);
    out.push(']');
}

/// Keeps the earliest-starting candidate, the longest among those starting together (the
/// earlier rule on a tie), and merges every candidate overlapping one already kept into it:
/// the kept finding keeps its rule and grows to cover both. Dropping the overlapping one
/// instead would leave the part of its value outside the kept range unredacted (a token
/// glued to the end of a private key block).
#[cfg(test)]
fn leftmost_longest(mut candidates: Vec<Finding>) -> Vec<Finding> {
    merge(&mut candidates)
}

/// `leftmost_longest` of `candidates`, leaving it empty (with its allocation).
fn merge(candidates: &mut Vec<Finding>) -> Vec<Finding> {
    if candidates.is_empty() {
        return Vec::new();
    }
    // Stable, so candidates with the same range stay in rule order.
    candidates.sort_by_key(|f| (f.range.start, std::cmp::Reverse(f.range.end)));
    let mut kept: Vec<Finding> = Vec::new();
    for finding in candidates.drain(..) {
        match kept.last_mut() {
            Some(last) if finding.range.start < last.range.end => {
                last.range.end = last.range.end.max(finding.range.end);
            }
            _ => kept.push(finding),
        }
    }
    kept
}
