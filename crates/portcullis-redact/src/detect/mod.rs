//! Detection of secrets and personal data that the gateway did not inject.
//!
//! A [`Rule`] names one format (a provider's token, a card number, a private key block) as a
//! regular expression, a few keywords and an optional validator. A [`Detector`] runs a rule
//! set over text: an Aho-Corasick pass over every rule's keywords decides which regexes can
//! match at all, each of those runs once, candidates failing their rule's validator (a
//! checksum, an entropy floor, a known documentation example) are dropped, and the rest are
//! reduced to non-overlapping findings, leftmost first and longest at each position.
//!
//! Regexes use the `regex` crate, which never backtracks, so the time a rule takes is linear
//! in the text whatever the text is.
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
mod phone;
mod pii;
mod saas;
mod secrets;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::ops::Range;

pub use custom::{CustomRule, RuleError};
pub use json::{JsonFinding, SENSITIVE_KEY, Treatment, is_sensitive_key};

use aho_corasick::AhoCorasick;
use regex::Regex;

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
    /// ASCII strings (matched case-insensitively), at least one of which occurs in every match;
    /// empty means the regex runs on every text.
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
    /// Keyword automaton; `None` when building it failed, and then every rule runs.
    prefilter: Option<AhoCorasick>,
    /// For each keyword pattern of `prefilter`, the index of its rule in `rules`.
    keyword_owner: Vec<usize>,
}

#[derive(Debug)]
struct Compiled {
    id: Cow<'static, str>,
    category: Category,
    keywords: Vec<Cow<'static, str>>,
    validate: Option<fn(&str) -> bool>,
    regex: Regex,
    /// Whether the regex has a `v` or `fp` group; without one the faster `find_iter` does.
    has_groups: bool,
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
        let mut keywords: Vec<&str> = Vec::new();
        let mut keyword_owner = Vec::new();
        for (index, compiled) in rules.iter().enumerate() {
            for keyword in &compiled.keywords {
                keywords.push(keyword);
                keyword_owner.push(index);
            }
        }
        let prefilter = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&keywords)
            .ok();
        Self {
            rules,
            prefilter,
            keyword_owner,
        }
    }

    /// The ids of the rules this detector runs.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.rules.iter().map(|compiled| &*compiled.id)
    }

    /// Every finding in `text`, sorted by position and never overlapping.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let active = self.active_rules(text);
        let mut candidates = Vec::new();
        for (compiled, _) in self.rules.iter().zip(active).filter(|(_, active)| *active) {
            compiled.candidates(text, &mut candidates);
        }
        leftmost_longest(candidates)
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
            out = Cow::Owned(replace(&out, &findings));
        }
        out
    }

    /// Which rules can match `text`: those without keywords, and those with a keyword in it.
    fn active_rules(&self, text: &str) -> Vec<bool> {
        let Some(prefilter) = &self.prefilter else {
            return vec![true; self.rules.len()];
        };
        let mut active: Vec<bool> = self.rules.iter().map(|c| c.keywords.is_empty()).collect();
        for found in prefilter.find_overlapping_iter(text) {
            if let Some(&owner) = self.keyword_owner.get(found.pattern().as_usize()) {
                active[owner] = true;
            }
        }
        active
    }
}

impl Compiled {
    fn builtin(rule: Rule) -> Result<Self, regex::Error> {
        let regex = Regex::new(rule.regex)?;
        Ok(Self::new(
            Cow::Borrowed(rule.id),
            rule.category,
            rule.keywords.iter().map(|k| Cow::Borrowed(*k)).collect(),
            rule.validate,
            regex,
        ))
    }

    fn new(
        id: Cow<'static, str>,
        category: Category,
        keywords: Vec<Cow<'static, str>>,
        validate: Option<fn(&str) -> bool>,
        regex: Regex,
    ) -> Self {
        let has_groups = regex.capture_names().flatten().any(|name| name == "v" || name == "fp");
        Self {
            id,
            category,
            keywords,
            validate,
            regex,
            has_groups,
        }
    }

    /// The validated matches of this rule in `text`.
    fn candidates(&self, text: &str, out: &mut Vec<Finding>) {
        if self.has_groups {
            for captures in self.regex.captures_iter(text) {
                if captures.name("fp").is_none()
                    && let Some(value) = captures.name("v").or_else(|| captures.get(0))
                {
                    self.push_if_valid(value, out);
                }
            }
        } else {
            for value in self.regex.find_iter(text) {
                self.push_if_valid(value, out);
            }
        }
    }

    fn push_if_valid(&self, value: regex::Match<'_>, out: &mut Vec<Finding>) {
        let valid = self.validate.is_none_or(|validate| validate(value.as_str()));
        if valid && !value.is_empty() {
            out.push(Finding {
                rule_id: self.id.clone(),
                category: self.category,
                range: value.range(),
            });
        }
    }
}

/// How many times [`Detector::redact`] re-scans its own output.
const MAX_REDACTION_PASSES: usize = 4;

/// `text` with each of `findings` (sorted, disjoint) replaced by its placeholder.
fn replace(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for finding in findings {
        out.push_str(&text[copied..finding.range.start]);
        push_placeholder(&mut out, &finding.rule_id);
        copied = finding.range.end;
    }
    out.push_str(&text[copied..]);
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
/// earlier rule on a tie), and drops every candidate overlapping one already kept.
fn leftmost_longest(mut candidates: Vec<Finding>) -> Vec<Finding> {
    // Stable, so candidates with the same range stay in rule order.
    candidates.sort_by_key(|f| (f.range.start, std::cmp::Reverse(f.range.end)));
    let mut kept: Vec<Finding> = Vec::new();
    for finding in candidates {
        if kept.last().is_none_or(|last| finding.range.start >= last.range.end) {
            kept.push(finding);
        }
    }
    kept
}
