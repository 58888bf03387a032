use std::collections::BTreeSet;

use super::{Detector, Finding, Rule, builtin_rules, check};

/// Texts that look like secrets or personal data to a naive pattern but are neither.
const HARD_NEGATIVES: &[&str] = &[
    "id: 123e4567-e89b-12d3-a456-426614174000",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "Merge pull request #42 from org/feature",
    "the 12345678901234 items",
    "requires rustc 1.94.0 or later",
    "release 2.0.1.7 is out",
    "{\"user\": \"jane\", \"count\": 3, \"ok\": true}",
    // AWS's documentation key pair.
    "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "etag: d41d8cd98f00b204e9800998ecf8427e",
    "card 4111 1111 1111 1112 was declined",
    "2026-05-12T08:15:00Z start, 10:30 - 12:45 break, 01/02/2026 due",
    "upgraded from v2.14.0-rc.1 to 2.15.0 (build 20260512.3)",
    "ISBN 978-0-306-40615-7, total 1 234 567,89 EUR",
    "the run took 0.012 s over 04 05 2026",
];

fn rule(id: &str) -> &'static Rule {
    builtin_rules().find(|rule| rule.id == id).unwrap()
}

#[test]
fn every_builtin_regex_compiles() {
    for rule in builtin_rules() {
        assert!(
            regex::Regex::new(rule.regex).is_ok(),
            "rule `{}` does not compile",
            rule.id
        );
    }
    assert_eq!(Detector::builtin().rule_ids().count(), builtin_rules().count());
}

#[test]
fn rule_ids_are_unique_and_every_rule_has_examples() {
    let mut ids = BTreeSet::new();
    for rule in builtin_rules() {
        assert!(ids.insert(rule.id), "duplicate rule id `{}`", rule.id);
        assert!(!rule.examples_true.is_empty(), "rule `{}` has no true example", rule.id);
        assert!(!rule.description.is_empty());
    }
}

#[test]
fn every_true_example_is_found_and_no_false_example_is() {
    let detector = Detector::builtin();
    for rule in builtin_rules() {
        for example in rule.examples_true {
            let found = detector.find(example);
            assert!(
                found.iter().any(|finding| finding.rule_id == rule.id),
                "rule `{}` misses {example:?}; found {found:?}",
                rule.id
            );
        }
    }
    let negatives = builtin_rules().flat_map(|rule| rule.examples_false.iter());
    for example in negatives.chain(HARD_NEGATIVES) {
        assert_eq!(detector.find(example), [], "false positive in {example:?}");
    }
}

#[test]
fn each_true_example_is_found_by_its_rule_alone() {
    // The keyword prefilter must let a rule run on its own examples.
    for rule in builtin_rules() {
        let detector = Detector::new([*rule]);
        for example in rule.examples_true {
            assert!(
                !detector.find(example).is_empty(),
                "`{}` alone misses {example:?}",
                rule.id
            );
        }
    }
}

#[test]
fn redaction_removes_the_value_and_is_idempotent() {
    let detector = Detector::builtin();
    for rule in builtin_rules() {
        for example in rule.examples_true {
            let once = detector.redact(example);
            let marker = format!("[REDACTED:{}]", rule.id);
            assert!(once.contains(&marker), "{example:?} became {once:?}");
            assert_eq!(detector.redact(&once), once, "redacting {example:?} twice");
        }
    }
}

#[test]
fn redaction_replaces_only_the_value() {
    let detector = Detector::builtin();
    assert_eq!(
        detector.redact("db: postgres://app:Zq8vXt2LmR@db.internal/app, mail ops@example.com"),
        "db: postgres://app:[REDACTED:url-password]@db.internal/app, mail [REDACTED:email]"
    );
    // `t2LmR@db.internal` after the `!` is also shaped like an address: the two findings
    // overlap and merge, so the host goes too rather than any of the password staying.
    assert_eq!(
        detector.redact("db: postgres://app:Zq8v!t2LmR@db.internal/app"),
        "db: postgres://app:[REDACTED:url-password]/app"
    );
    assert!(matches!(detector.redact("nothing here"), std::borrow::Cow::Borrowed(_)));
}

#[test]
fn findings_do_not_overlap_and_the_longest_wins() {
    let detector = Detector::builtin();
    let text = "token: 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 and 4111-1111-1111-1111";
    let found = detector.find(text);
    let ids: Vec<_> = found.iter().map(|f| f.rule_id.clone()).collect();
    assert_eq!(ids, ["github-pat", "payment-card"]);
    assert!(found.windows(2).all(|pair| pair[0].range.end <= pair[1].range.start));
}

#[test]
fn the_github_checksum_is_the_base62_crc32_of_the_random_part() {
    assert_eq!(check::crc32(b"123456789"), 0xCBF4_3926);
    let body = "Portcullis0Synthetic0Example01";
    let checksum = check::base62_6(check::crc32(body.as_bytes()));
    let token = format!("ghp_{body}{}", std::str::from_utf8(&checksum).unwrap());
    assert!(check::github_checksum(&token));
    assert!(
        Detector::builtin()
            .find(&token)
            .iter()
            .any(|f| f.rule_id == "github-pat")
    );
    assert!(!check::github_checksum(&token.replace("ghp_P", "ghp_Q")));
}

#[test]
fn validators_accept_and_reject_known_values() {
    assert!(check::luhn(b"79927398713"));
    assert!(!check::luhn(b"79927398710"));
    assert!(check::iban("GB82WEST12345698765432"));
    assert!(!check::iban("GB82WEST12345698765431"));
    assert!(check::shannon_entropy("aaaa") < 0.01);
    assert!((check::shannon_entropy("abcd") - 2.0).abs() < 1e-9);
    assert!(check::jwt("eyJhbGciOiJub25lIn0"));
    assert!(!check::jwt("eyJub3QiOiJqd3QifQ"));
}

#[test]
fn a_rule_with_a_broken_regex_is_skipped() {
    let broken = Rule {
        id: "broken",
        regex: "(",
        ..*rule("email")
    };
    let detector = Detector::new([broken, *rule("email")]);
    assert_eq!(detector.rule_ids().collect::<Vec<_>>(), ["email"]);
}

#[test]
fn a_card_number_followed_by_a_digit_group_is_found() {
    for text in [
        "card 3782-822463-10005 0 items",
        "card 3782 822463 10005 0 items",
        "card 4111 1111 1111 1111 2 items",
        "card 4111111111111111 12 items",
    ] {
        let found = Detector::builtin().find(text);
        assert!(found.iter().any(|f| f.rule_id == "payment-card"), "{text:?}: {found:?}");
    }
}

#[test]
fn a_card_number_followed_by_three_digits_with_its_separator_is_found() {
    let detector = Detector::builtin();
    for (text, card) in [
        ("4111 1111 1111 1111 123", "4111 1111 1111 1111"),
        ("ref 4111-1111-1111-1111-123 paid", "4111-1111-1111-1111"),
        // 19 digits that pass the checksum are one card.
        ("4111 1111 1111 1111 003", "4111 1111 1111 1111 003"),
    ] {
        let found = detector.find(text);
        let ranges: Vec<_> = found.iter().map(|f| (&*f.rule_id, &text[f.range.clone()])).collect();
        assert_eq!(ranges, [("payment-card", card)], "{text:?}");
    }
    assert_eq!(
        detector.redact("card 4111 1111 1111 1111 123"),
        "card [REDACTED:payment-card] 123"
    );
}

#[test]
fn version_numbers_in_json_are_not_ip_addresses() {
    let detector = Detector::builtin();
    for text in [
        r#"{"version": "17.1.9.5"}"#,
        r#"{"ver":"10.0.19041.1"}"#,
        r#"{'build': '10.2.3.4'}"#,
    ] {
        assert_eq!(detector.find(text), [], "{text}");
    }
    assert_eq!(detector.find(r#"{"client": "10.2.3.4"}"#).len(), 1);
}

#[test]
fn exact_keywords_are_spelled_as_in_the_examples() {
    // A keyword matched exactly must be written in the case its regex matches, or the rule
    // would never run; its true examples show that case.
    for rule in builtin_rules().filter(|rule| !rule.regex.contains("(?i")) {
        assert!(
            rule.keywords.is_empty()
                || rule
                    .keywords
                    .iter()
                    .any(|keyword| rule.examples_true.iter().any(|example| example.contains(keyword))),
            "no true example of `{}` contains one of its keywords as written",
            rule.id
        );
    }
}

mod properties {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::{Detector, Finding, Rule, builtin_rules};

    static DETECTOR: LazyLock<Detector> = LazyLock::new(Detector::builtin);
    static PLACEHOLDER: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\[REDACTED:[a-z0-9-]+\]").unwrap());

    /// Text made of true examples, false examples and arbitrary filler, so that findings,
    /// near-misses and their boundaries meet.
    fn mixed_text() -> impl Strategy<Value = String> {
        let examples: Vec<&'static str> = builtin_rules()
            .flat_map(|rule| rule.examples_true.iter().chain(rule.examples_false))
            .copied()
            .collect();
        let piece = prop_oneof![
            proptest::sample::select(examples).prop_map(String::from),
            any::<String>(),
            "[ \n\",:=;@./a-zA-Z0-9+-]{0,12}",
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
    }

    /// Every true example with the value its own rule finds in it.
    fn examples_with_values() -> Vec<(&'static str, String)> {
        builtin_rules()
            .flat_map(|rule| rule.examples_true.iter().map(move |example| (rule.id, *example)))
            .filter_map(|(id, example)| {
                let finding = DETECTOR.find(example).into_iter().find(|f| f.rule_id == id)?;
                Some((example, example[finding.range].to_owned()))
            })
            .collect()
    }

    /// Filler around an example: arbitrary text or text made of the characters tokens and
    /// their context are made of, separated from the example by a line break or a space.
    fn filler() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[ -~]{0,24}", "[ \n\",:=;@./a-zA-Z0-9+_-]{0,16}"]
    }

    /// The length in characters of the longest part of `value` that occurs in `text`.
    fn exposure(text: &str, value: &str) -> usize {
        let bounds: Vec<usize> = value.char_indices().map(|(i, _)| i).chain([value.len()]).collect();
        let mut longest = 0;
        for (a, &start) in bounds.iter().enumerate() {
            for (b, &end) in bounds.iter().enumerate().skip(a + longest + 1) {
                if !text.contains(&value[start..end]) {
                    break;
                }
                longest = b - a;
            }
        }
        longest
    }

    /// Each builtin rule with its regex, compiled by the `regex` crate for whole texts.
    static REFERENCE: LazyLock<Vec<(&'static Rule, regex::Regex)>> = LazyLock::new(|| {
        builtin_rules()
            .map(|rule| (rule, regex::Regex::new(rule.regex).unwrap()))
            .collect()
    });

    /// What `find` must return: every rule's regex over the whole text, validated, reduced
    /// the same way.
    fn reference_find(text: &str) -> Vec<Finding> {
        let mut candidates = Vec::new();
        for (rule, regex) in REFERENCE.iter() {
            for captures in regex.captures_iter(text) {
                if captures.name("fp").is_some() {
                    continue;
                }
                let value = captures.name("v").or_else(|| captures.get(0)).unwrap();
                let valid = |value: &str| rule.validate.is_none_or(|validate| validate(value));
                let mut range = value.range();
                if !valid(value.as_str()) {
                    // A card followed by three more digits, which the rule retries without them.
                    let shorter = super::super::pii::shorter_value(rule).and_then(|shorter| shorter(value.as_str()));
                    match shorter {
                        Some(len) if valid(&value.as_str()[..len]) => range.end = range.start + len,
                        _ => continue,
                    }
                }
                if !range.is_empty() {
                    candidates.push(Finding {
                        rule_id: rule.id.into(),
                        category: rule.category,
                        range,
                    });
                }
            }
        }
        super::super::leftmost_longest(candidates)
    }

    /// Like [`mixed_text`], with more of what windows are cut at: digits and separators,
    /// labels, JSON punctuation, keywords in other cases.
    fn window_edge_text() -> impl Strategy<Value = String> {
        let examples: Vec<&'static str> = builtin_rules()
            .flat_map(|rule| rule.examples_true.iter().chain(rule.examples_false))
            .copied()
            .collect();
        let piece = prop_oneof![
            3 => proptest::sample::select(examples).prop_map(String::from),
            1 => any::<String>(),
            2 => "[ \n\",:=;@./a-zA-Z0-9+_-]{0,12}",
            2 => "[ 0-9.:+()/#-]{0,16}",
            1 => "(version|Ver|order|ref|build|\"|: |=|#|\u{212A}|\u{2003}|ſ){1,3}",
            1 => "(akia|Akia|GHP_|Ghp_|sk|Sk|ac|aC|eyj|private key-----|xoxb-){1,2}",
        ];
        proptest::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn windowed_find_equals_whole_text_regexes(text in window_edge_text()) {
            prop_assert_eq!(DETECTOR.find(&text), reference_find(&text), "in {:?}", text);
        }
    }

    proptest! {
        #[test]
        fn redaction_never_exposes_more_of_a_secret_than_cutting_it_out(
            (example, value) in proptest::sample::select(examples_with_values()),
            before in filler(),
            after in filler(),
            // Punctuation, not bare whitespace, between filler and example: filler ending in
            // a label (`order`, `ID`, `v`) or starting with more digits (`0151 23456789 00`)
            // rightly changes what the example is, and the property is about the example.
            separator in prop_oneof![Just(", "), Just(";\n"), Just(" | ")],
        ) {
            let text = format!("{before}{separator}{example}{separator}{after}");
            let redacted = DETECTOR.redact(&text);
            prop_assert!(!redacted.contains(value.as_str()), "{value:?} survives in {redacted:?}");
            // The best any redaction can do is to cut the value out of the example; what the
            // filler and the example's context happen to share with the value stays visible.
            // Placeholders are the detector's own text (a rule id can share `key-` with a value).
            let cut = format!("{before}{separator}{}{separator}{after}", example.replacen(value.as_str(), "\u{0}", 1));
            let shown = PLACEHOLDER.replace_all(&redacted, "\u{0}");
            prop_assert!(
                exposure(&shown, &value) <= exposure(&cut, &value),
                "{redacted:?} shows more of {value:?} than {cut:?}"
            );
        }

        #[test]
        fn redaction_is_idempotent_on_arbitrary_text(text in any::<String>()) {
            let once = DETECTOR.redact(&text).into_owned();
            prop_assert_eq!(DETECTOR.redact(&once), once.as_str());
        }

        #[test]
        fn lossily_decoded_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let found = DETECTOR.find(&text);
            prop_assert!(found.iter().all(|f| text.get(f.range.clone()).is_some()));
            let _ = DETECTOR.redact(&text);
        }

        #[test]
        fn lossily_decoded_examples_with_invalid_bytes_never_panic(
            example in proptest::sample::select(examples_with_values()),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
            at in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = example.0.as_bytes().to_vec();
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, noise);
            let text = String::from_utf8_lossy(&bytes);
            let once = DETECTOR.redact(&text).into_owned();
            prop_assert_eq!(DETECTOR.redact(&once), once.as_str());
        }

        #[test]
        fn findings_are_sorted_disjoint_char_ranges(text in mixed_text()) {
            let found = DETECTOR.find(&text);
            for finding in &found {
                prop_assert!(finding.range.start < finding.range.end);
                prop_assert!(text.get(finding.range.clone()).is_some());
            }
            prop_assert!(found.windows(2).all(|w| w[0].range.end <= w[1].range.start));
        }

        #[test]
        fn redaction_is_idempotent(text in mixed_text()) {
            let once = DETECTOR.redact(&text).into_owned();
            prop_assert_eq!(DETECTOR.redact(&once), once.as_str());
        }

        #[test]
        fn redaction_never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = DETECTOR.redact(&text);
        }
    }
}

/// Prints the "Rules" table of `docs/redaction.md`:
/// `cargo test -p portcullis-redact -- --ignored --nocapture rule_table`.
#[test]
#[ignore = "prints documentation, run by hand"]
fn rule_table() {
    println!("| Rule id | Category | Finds |\n|---|---|---|");
    for rule in builtin_rules() {
        let description = rule.description.replace('|', "\\|");
        println!("| `{}` | {} | {description} |", rule.id, rule.category.as_str());
    }
}

// Throughput is measured by `cargo bench -p portcullis-redact --bench detect`
// (benches/detect.rs), not by a test: timings do not belong in assertions.

#[test]
fn overlapping_findings_merge_so_no_part_of_either_survives() {
    let detector = Detector::builtin();
    // The URL password rule ends at `@`; the email rule starts inside the password.
    let text = "postgres://app:Zq8v!t2LmRjane@db.example.com/app";
    let found = detector.find(text);
    let redacted = detector.redact(text);
    assert!(!redacted.contains("Zq8v"), "{redacted} from {found:?}");
    let candidates: Vec<Finding> = super::leftmost_longest(vec![
        Finding {
            rule_id: "a".into(),
            category: super::Category::Secret,
            range: 0..10,
        },
        Finding {
            rule_id: "b".into(),
            category: super::Category::Secret,
            range: 5..20,
        },
        Finding {
            rule_id: "c".into(),
            category: super::Category::Pii,
            range: 20..25,
        },
    ]);
    let ranges: Vec<_> = candidates.iter().map(|f| (&*f.rule_id, f.range.clone())).collect();
    assert_eq!(ranges, [("a", 0..20), ("c", 20..25)]);
}
