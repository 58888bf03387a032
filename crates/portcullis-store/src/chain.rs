//! The audit hash chain: how a record is hashed, and how a stored chain is checked.
//!
//! Each event's hash is `SHA-256(prev_hash || "\n" || record)` in lowercase hex, where
//! `record` is the RFC 8785 canonical JSON of `{"event": …, "seq": …, "ts": …}` and the
//! first event's `prev_hash` is [`GENESIS_HASH`]. Because the hash covers the sequence
//! number and the previous hash, editing, deleting or reordering events shows up.
//!
//! What the chain alone cannot show is truncation of the tail: deleting the newest events
//! leaves a shorter chain that is still valid. Signed checkpoints of the log's Merkle root,
//! kept outside the database, show that (see `checkpoint`).

use std::fmt;

use portcullis_core::{json, sha256_hex};
use serde::Serialize;

/// The `prev_hash` of the first event: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// At most this many problems are listed in a [`VerifyReport`]; the rest are counted.
pub const MAX_REPORTED_PROBLEMS: usize = 1000;

/// The hash of one record. `event_json` must already be canonical JSON.
pub(crate) fn record_hash(prev_hash: &str, seq: i64, ts: &str, event_json: &str) -> String {
    // Keys in code-unit order ("event" < "seq" < "ts"), no whitespace: this is the RFC 8785
    // form of the record as long as `event_json` is canonical (checked by a test).
    let ts = serde_json::Value::from(ts);
    sha256_hex(format!("{prev_hash}\n{{\"event\":{event_json},\"seq\":{seq},\"ts\":{ts}}}").as_bytes())
}

/// Something wrong with the stored audit log, named by sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditProblem {
    /// The stored hash does not match the stored content: the event was edited.
    Modified {
        /// The edited event.
        seq: i64,
    },
    /// The event's `prev_hash` is not the hash of the event stored before it: events were
    /// deleted or reordered.
    Broken {
        /// The event whose link is wrong.
        seq: i64,
        /// The event stored before it, or 0 at the start of the log.
        after: i64,
    },
    /// Sequence numbers skip: the events between were deleted.
    Gap {
        /// The last event before the gap, or 0 at the start of the log.
        after: i64,
        /// The first event after the gap.
        next: i64,
    },
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Modified { seq } => write!(f, "event {seq} was modified"),
            Self::Broken { seq, after: 0 } => {
                write!(
                    f,
                    "event {seq} does not follow the start of the log: events were deleted or reordered"
                )
            }
            Self::Broken { seq, after } => {
                write!(
                    f,
                    "event {seq} does not follow event {after}: events were deleted or reordered"
                )
            }
            Self::Gap { after, next } if next.checked_sub(after) == Some(2) => {
                write!(f, "event {} is missing: it was deleted", after.saturating_add(1))
            }
            Self::Gap { after, next } => {
                let (first, last) = (after.saturating_add(1), next.saturating_sub(1));
                write!(f, "events {first} to {last} are missing: they were deleted")
            }
        }
    }
}

/// The result of checking the whole audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many events were checked.
    pub events: u64,
    /// True when no problem was found.
    pub ok: bool,
    /// The problems found, in log order, at most [`MAX_REPORTED_PROBLEMS`].
    pub problems: Vec<AuditProblem>,
    /// Problems found beyond the listed ones (verification keeps constant memory).
    pub unlisted_problems: u64,
}

/// One stored row, as read for verification.
pub(crate) struct Row {
    pub seq: i64,
    pub ts: String,
    pub event: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Checks rows one at a time, in `seq` order, remembering only the previous one.
#[derive(Default)]
pub(crate) struct Verifier {
    last: Option<(i64, String)>,
    events: u64,
    problems: Vec<AuditProblem>,
    unlisted: u64,
}

impl Verifier {
    /// The last sequence number seen, to fetch the next page after it. Before the first
    /// row it is `i64::MIN`, so that rows slipped in with a sequence number of 0 or less
    /// are checked too.
    pub fn last_seq(&self) -> i64 {
        self.last.as_ref().map_or(i64::MIN, |(seq, _)| *seq)
    }

    pub fn check(&mut self, row: Row) {
        self.events += 1;
        let (after, expected_prev) = match &self.last {
            Some((seq, hash)) => (*seq, hash.as_str()),
            None => (0, GENESIS_HASH),
        };
        let mut found = Vec::new();
        if row.seq > after.saturating_add(1) {
            found.push(AuditProblem::Gap { after, next: row.seq });
        }
        if row.prev_hash != expected_prev {
            found.push(AuditProblem::Broken { seq: row.seq, after });
        }
        if !is_canonical(&row.event) || record_hash(&row.prev_hash, row.seq, &row.ts, &row.event) != row.hash {
            found.push(AuditProblem::Modified { seq: row.seq });
        }
        for problem in found {
            self.report(problem);
        }
        self.last = Some((row.seq, row.hash));
    }

    fn report(&mut self, problem: AuditProblem) {
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.unlisted += 1;
        }
    }

    pub fn finish(self) -> VerifyReport {
        VerifyReport {
            events: self.events,
            ok: self.problems.is_empty() && self.unlisted == 0,
            problems: self.problems,
            unlisted_problems: self.unlisted,
        }
    }
}

/// Whether stored event text is exactly the canonical JSON of what it parses to. Text that
/// is not would hash differently from what was appended, or could smuggle duplicate keys.
fn is_canonical(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| json::canonical(&v).ok())
        .is_some_and(|c| c == text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn record_hash_covers_the_canonical_record() {
        let event = json!({"kind": "decided", "agent": "bot", "detail": {"z": 1, "a": "\u{1F600}\n"}});
        let event_json = json::canonical(&event).unwrap();
        let ts = "2026-11-24T10:00:00.000000Z";
        let record = json::canonical(&json!({"seq": 7, "ts": ts, "event": event})).unwrap();
        let expected = sha256_hex(format!("{GENESIS_HASH}\n{record}").as_bytes());
        assert_eq!(record_hash(GENESIS_HASH, 7, ts, &event_json), expected);
    }

    fn chain(n: i64) -> Vec<Row> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let event = format!("{{\"n\":{seq}}}");
                let ts = "2026-11-24T10:00:00.000000Z".to_owned();
                let hash = record_hash(&prev, seq, &ts, &event);
                let row = Row {
                    seq,
                    ts,
                    event,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                row
            })
            .collect()
    }

    fn verify(rows: Vec<Row>) -> VerifyReport {
        let mut v = Verifier::default();
        rows.into_iter().for_each(|r| v.check(r));
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let report = verify(chain(5));
        assert!(report.ok);
        assert_eq!(report.events, 5);
    }

    #[test]
    fn non_canonical_whitespace_counts_as_modification() {
        let mut rows = chain(3);
        rows[1].event = "{ \"n\":2}".into();
        assert_eq!(verify(rows).problems, [AuditProblem::Modified { seq: 2 }]);
    }

    #[test]
    fn deleting_the_first_events_is_named() {
        let rows: Vec<Row> = chain(4).into_iter().skip(2).collect();
        let report = verify(rows);
        assert_eq!(
            report.problems,
            [
                AuditProblem::Gap { after: 0, next: 3 },
                AuditProblem::Broken { seq: 3, after: 0 }
            ]
        );
        assert_eq!(
            report.problems[0].to_string(),
            "events 1 to 2 are missing: they were deleted"
        );
    }

    #[test]
    fn problem_messages() {
        assert_eq!(AuditProblem::Modified { seq: 17 }.to_string(), "event 17 was modified");
        assert_eq!(
            AuditProblem::Broken { seq: 18, after: 16 }.to_string(),
            "event 18 does not follow event 16: events were deleted or reordered"
        );
        assert_eq!(
            AuditProblem::Gap { after: 16, next: 18 }.to_string(),
            "event 17 is missing: it was deleted"
        );
    }

    #[test]
    fn the_problem_list_is_capped() {
        let mut rows = chain(1);
        let template = rows.remove(0);
        let many = (1..=(MAX_REPORTED_PROBLEMS as i64 + 10)).map(|seq| Row {
            seq,
            ts: template.ts.clone(),
            event: template.event.clone(),
            prev_hash: template.prev_hash.clone(),
            hash: "bad".into(),
        });
        let report = verify(many.collect());
        assert!(!report.ok);
        assert_eq!(report.problems.len(), MAX_REPORTED_PROBLEMS);
        assert!(report.unlisted_problems > 0);
    }
}
