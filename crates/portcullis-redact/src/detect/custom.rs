//! Rules an operator adds in configuration, checked against their own examples at load.

use std::borrow::Cow;

use regex::RegexBuilder;
use serde::Deserialize;

use super::{Category, Compiled, Detector, builtin_rules};

/// The most memory one custom rule's compiled regex may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A rule written by an operator: a regex, keywords for the pre-filter, and examples.
///
/// It is accepted only when its id is new and well formed, its regex compiles, it has at
/// least one keyword (every match must contain one, so the pre-filter can skip texts
/// without), it finds something in each of its `examples_true` and nothing in any of its
/// `examples_false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Identifier: lowercase letters, digits and dashes; not a builtin rule's id.
    pub id: String,
    /// `secret` or `pii`.
    pub category: Category,
    /// What the rule finds, for people.
    #[serde(default)]
    pub description: String,
    /// ASCII strings, matched case-insensitively, at least one of which is in every match.
    pub keywords: Vec<String>,
    /// The pattern in `regex` crate syntax; a `v` group narrows the value to redact and an
    /// `fp` group marks a match as a false positive.
    pub regex: String,
    /// Texts in which the rule must find something.
    pub examples_true: Vec<String>,
    /// Texts in which the rule must find nothing.
    #[serde(default)]
    pub examples_false: Vec<String>,
}

/// Why a rule in configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redaction rule `{rule}` {problem}")]
pub struct RuleError {
    /// The rule's id as written.
    pub rule: String,
    /// What is wrong, as the end of a sentence starting with the rule's name.
    pub problem: String,
}

impl RuleError {
    pub(crate) fn new(rule: &str, problem: impl Into<String>) -> Self {
        Self {
            rule: rule.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Compiles `rule` and checks it against its examples; `earlier` are the custom rules before
/// it, whose ids it may not reuse.
pub(crate) fn compile(rule: &CustomRule, earlier: &[CustomRule]) -> Result<Compiled, Vec<RuleError>> {
    let id = rule.id.as_str();
    let mut errors = Vec::new();
    let mut problem = |text: String| errors.push(RuleError::new(id, text));
    let well_formed = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        problem("has a bad id: use 1 to 64 lowercase letters, digits and dashes".to_owned());
    }
    if builtin_rules().any(|builtin| builtin.id == id) || id == super::SENSITIVE_KEY {
        problem("has the id of a builtin rule; pick another, or disable the builtin one".to_owned());
    }
    if earlier.iter().any(|other| other.id == id) {
        problem("is defined twice".to_owned());
    }
    if rule.keywords.is_empty() {
        problem("has no keywords; every match must contain one of them".to_owned());
    }
    for keyword in &rule.keywords {
        if keyword.is_empty() || !keyword.is_ascii() {
            problem(format!(
                "has keyword {keyword:?}, which is not a non-empty ASCII string"
            ));
        }
    }
    if rule.examples_true.is_empty() {
        problem("has no examples_true; give at least one text it must find".to_owned());
    }
    let regex = match RegexBuilder::new(&rule.regex).size_limit(REGEX_SIZE_LIMIT).build() {
        Ok(regex) => Some(regex),
        Err(err) => {
            problem(format!(
                "has a regex that does not compile: {}",
                one_line(&err.to_string())
            ));
            None
        }
    };
    let (Some(regex), true) = (regex, errors.is_empty()) else {
        return Err(errors);
    };
    let compiled = Compiled::new(
        Cow::Owned(rule.id.clone()),
        rule.category,
        rule.keywords.iter().map(|k| Cow::Owned(k.clone())).collect(),
        None,
        regex,
    );
    let mut alone = Detector::from_compiled(vec![compiled]);
    for example in &rule.examples_true {
        if alone.find(example).is_empty() {
            errors.push(RuleError::new(
                id,
                format!("finds nothing in its true example {example:?} (a keyword must occur in the text)"),
            ));
        }
    }
    for example in &rule.examples_false {
        if !alone.find(example).is_empty() {
            errors.push(RuleError::new(
                id,
                format!("finds something in its false example {example:?}"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    alone
        .rules
        .pop()
        .ok_or_else(|| vec![RuleError::new(id, "could not be compiled")])
}

/// The regex crate's errors span lines with a caret diagram; keep them on one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn employee_rule() -> CustomRule {
        CustomRule {
            id: "employee-id".into(),
            category: Category::Pii,
            description: "Acme employee number".into(),
            keywords: vec!["emp-".into()],
            regex: r"\bEMP-\d{6}\b".into(),
            examples_true: vec!["assigned to EMP-123456".into()],
            examples_false: vec!["EMP-12".into()],
        }
    }

    fn problems(disable: &[&str], rules: &[CustomRule]) -> Vec<String> {
        let disable: Vec<String> = disable.iter().map(|d| (*d).to_owned()).collect();
        match Detector::configure(&disable, rules) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_custom_rule_finds_and_redacts_and_disabled_rules_do_not() {
        let detector = Detector::configure(&["email".to_owned()], &[employee_rule()]).unwrap();
        assert_eq!(
            detector.redact("EMP-654321 is jane@example.com"),
            "[REDACTED:employee-id] is jane@example.com"
        );
        assert!(detector.rule_ids().any(|id| id == "employee-id"));
        assert!(!detector.rule_ids().any(|id| id == "email"));
    }

    #[test]
    fn every_problem_is_reported_with_the_rule_name() {
        let mut bad = employee_rule();
        bad.id = "Bad Id".into();
        bad.regex = "(".into();
        bad.keywords = vec![];
        let found = problems(&["no-such-rule"], &[bad]);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("`no-such-rule` is not a builtin rule"), "{found:?}");
        assert!(found[1].contains("`Bad Id` has a bad id"), "{found:?}");
        assert!(found[2].contains("no keywords"), "{found:?}");
        assert!(found[3].contains("regex that does not compile"), "{found:?}");
    }

    #[test]
    fn examples_are_checked() {
        let mut wrong = employee_rule();
        wrong.examples_true = vec!["EMP 123456".into()];
        wrong.examples_false = vec!["EMP-999999".into()];
        let found = problems(&[], &[wrong]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("finds nothing in its true example \"EMP 123456\""));
        assert!(found[1].contains("finds something in its false example \"EMP-999999\""));
        let mut no_keyword_hit = employee_rule();
        no_keyword_hit.keywords = vec!["staff".into()];
        assert_eq!(problems(&[], &[no_keyword_hit]).len(), 1);
    }

    #[test]
    fn ids_may_not_collide() {
        let mut builtin = employee_rule();
        builtin.id = "email".into();
        assert!(problems(&[], &[builtin])[0].contains("id of a builtin rule"));
        let twice = problems(&[], &[employee_rule(), employee_rule()]);
        assert_eq!(twice.len(), 1);
        assert!(twice[0].contains("defined twice"));
    }
}
