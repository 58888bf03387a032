//! Recall and precision of the builtin detector on the labelled corpus that
//! `tests/redaction-corpus/generate.py` writes (synthetic secrets and personal data in config
//! files, API responses, logs, emails and code, and hard negatives).
//!
//! A labelled value counts as found when findings cover all of it: a redaction that leaves a
//! tail of a secret behind is a miss. A finding counts as correct when it overlaps a labelled
//! value. Labels whose kind is not a builtin rule id (`password`, `secret`: forms no rule claims
//! to find) are reported but not held to the thresholds; findings on them still count as
//! correct.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

use portcullis_redact::detect::{Category, Detector, Finding, builtin_rules};
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/redaction-corpus/corpus.jsonl");
const MIN_RECALL: f64 = 0.98;
const MIN_PRECISION: f64 = 0.95;

struct Record {
    id: String,
    text: String,
    /// Label kind and every byte range the labelled value occupies in the text.
    labels: Vec<(String, Vec<Range<usize>>)>,
}

/// Hits and totals for one row of the table.
#[derive(Default)]
struct Score {
    found: usize,
    labelled: usize,
    correct: usize,
    reported: usize,
}

impl Score {
    fn recall(&self) -> f64 {
        ratio(self.found, self.labelled)
    }

    fn precision(&self) -> f64 {
        ratio(self.correct, self.reported)
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 { 1.0 } else { part as f64 / whole as f64 }
}

fn parse(line: &str) -> Option<Record> {
    let value: Value = serde_json::from_str(line).ok()?;
    let text = value["text"].as_str()?.to_owned();
    let labels = value["labels"]
        .as_array()?
        .iter()
        .map(|label| {
            let kind = label["kind"].as_str().unwrap_or_default().to_owned();
            let needle = label["value"].as_str().unwrap_or_default();
            let spans = text
                .match_indices(needle)
                .map(|(at, _)| at..at + needle.len())
                .collect();
            (kind, spans)
        })
        .collect();
    Some(Record {
        id: value["id"].as_str()?.to_owned(),
        text,
        labels,
    })
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Whether `findings` (sorted, disjoint) cover every byte of `span`.
fn covered(span: &Range<usize>, findings: &[Finding]) -> bool {
    let mut next = span.start;
    for finding in findings.iter().filter(|f| overlaps(&f.range, span)) {
        if finding.range.start > next {
            return false;
        }
        next = next.max(finding.range.end);
    }
    next >= span.end
}

/// The category a label kind belongs to: its rule's, or secret for a generic kind.
fn category_of(kind: &str) -> Category {
    builtin_rules()
        .find(|rule| rule.id == kind)
        .map_or(Category::Secret, |rule| rule.category)
}

fn is_known(kind: &str) -> bool {
    builtin_rules().any(|rule| rule.id == kind)
}

#[derive(Default)]
struct Report {
    by_kind: BTreeMap<String, Score>,
    by_category: BTreeMap<&'static str, Score>,
    known: Score,
    misses: Vec<String>,
    false_positives: Vec<String>,
}

impl Report {
    fn add(&mut self, record: &Record, findings: &[Finding]) {
        for (kind, spans) in &record.labels {
            let found = !spans.is_empty() && spans.iter().all(|span| covered(span, findings));
            let category = if is_known(kind) {
                category_of(kind).as_str()
            } else {
                "unsupported"
            };
            for score in [
                Some(self.by_kind.entry(kind.clone()).or_default()),
                Some(self.by_category.entry(category).or_default()),
                is_known(kind).then_some(&mut self.known),
            ]
            .into_iter()
            .flatten()
            {
                score.labelled += 1;
                score.found += usize::from(found);
            }
            if !found && is_known(kind) {
                self.misses.push(format!("{}: {kind}", record.id));
            }
        }
        for finding in findings {
            let correct = record
                .labels
                .iter()
                .flat_map(|(_, spans)| spans)
                .any(|s| overlaps(s, &finding.range));
            for score in [
                self.by_kind.entry(finding.rule_id.to_string()).or_default(),
                self.by_category.entry(finding.category.as_str()).or_default(),
                &mut self.known,
            ] {
                score.reported += 1;
                score.correct += usize::from(correct);
            }
            if !correct {
                let value = &record.text[finding.range.clone()];
                self.false_positives
                    .push(format!("{}: {} {value:?}", record.id, finding.rule_id));
            }
        }
    }

    fn table(&self) -> String {
        let mut out = format!(
            "{:<34} {:>8} {:>7} {:>9} {:>9}\n",
            "kind", "labelled", "recall", "findings", "precision"
        );
        let rows = self
            .by_kind
            .iter()
            .map(|(kind, score)| (kind.as_str(), score))
            .chain(self.by_category.iter().map(|(category, score)| (*category, score)))
            .chain([("known formats", &self.known)]);
        for (name, score) in rows {
            let _ = writeln!(
                out,
                "{name:<34} {:>8} {:>7.3} {:>9} {:>9.3}",
                score.labelled,
                score.recall(),
                score.reported,
                score.precision()
            );
        }
        let _ = writeln!(out, "\nmisses:\n  {}", self.misses.join("\n  "));
        let _ = writeln!(out, "false positives:\n  {}", self.false_positives.join("\n  "));
        out
    }
}

#[test]
fn the_detector_finds_the_labelled_corpus() {
    let corpus = std::fs::read_to_string(CORPUS).unwrap();
    let records: Vec<Record> = corpus
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| parse(line).unwrap_or_else(|| panic!("malformed corpus line {line:?}")))
        .collect();
    assert!(records.len() >= 300, "the corpus has only {} records", records.len());
    for record in &records {
        for (kind, spans) in &record.labels {
            assert!(!spans.is_empty(), "{}: the {kind} label is not in the text", record.id);
        }
    }

    let detector = Detector::builtin();
    let mut report = Report::default();
    for record in &records {
        report.add(record, &detector.find(&record.text));
    }
    let table = report.table();
    println!("{table}");
    for category in ["secret", "pii"] {
        let score = &report.by_category[category];
        assert!(
            score.recall() >= MIN_RECALL,
            "{category} recall {:.3}\n{table}",
            score.recall()
        );
        assert!(
            score.precision() >= MIN_PRECISION,
            "{category} precision {:.3}\n{table}",
            score.precision()
        );
    }
    assert!(
        report.known.recall() >= MIN_RECALL,
        "recall {:.3}\n{table}",
        report.known.recall()
    );
    assert!(
        report.known.precision() >= MIN_PRECISION,
        "precision {:.3}\n{table}",
        report.known.precision()
    );
}
