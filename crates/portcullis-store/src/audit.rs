//! Appending to, reading and verifying the audit log.

use portcullis_core::{AuditEvent, json};
use serde::Serialize;

use crate::chain::{Row, Verifier};
use crate::{Store, StoreError, VerifyReport};

/// Events read per query while verifying: memory stays constant however long the log.
const VERIFY_PAGE: i64 = 1000;

/// Proof that an event was durably appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendReceipt {
    /// The event's sequence number (1 for the first event, then contiguous).
    pub seq: i64,
    /// The event's chain hash.
    pub hash: String,
}

/// One event as stored in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Sequence number.
    pub seq: i64,
    /// When the event was written, RFC 3339 UTC.
    pub ts: String,
    /// The event, as appended (already redacted).
    pub event: serde_json::Value,
    /// The previous event's hash.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

type RawRow = (i64, String, String, String, String);

const READ_CONTEXT: &str = "reading the audit log";

impl Store {
    /// Appends an event and returns once it is durably committed.
    ///
    /// Concurrent appends are written together in one transaction by the store's single
    /// audit writer. If the write fails, every append in that transaction fails and
    /// nothing of it is stored.
    ///
    /// # Errors
    /// When the event can't be encoded, the write or commit fails, or the writer has stopped.
    pub async fn append(&self, event: &AuditEvent) -> Result<AppendReceipt, StoreError> {
        let event_json = canonical_event(event)?;
        self.writer
            .append(event_json, event.intent_id.as_str().to_owned())
            .await
    }

    /// Audit events this process has queued that are not yet committed (or failed).
    #[must_use]
    pub fn audit_queue_depth(&self) -> u64 {
        self.writer.depth()
    }

    /// The audit events of one intent, in log order. Crash recovery decides with them
    /// whether an interrupted intent ran, so none may be missed.
    ///
    /// Events are found by their `intent_id` column (schema version 7), and also among the
    /// rows whose column is NULL: a gateway of an older version still running after
    /// `portcullis migrate` writes them so (during a rolling upgrade). Those are matched
    /// on the event's own `intent_id`, first by a substring of the canonical JSON, then
    /// exactly. Once no older instance runs there are no such rows, and the index answers
    /// both halves of the query.
    ///
    /// # Errors
    /// When the query fails or a stored event is not an audit event.
    pub async fn audit_events_of(&self, intent: &portcullis_core::IntentId) -> Result<Vec<AuditEvent>, StoreError> {
        // Canonical JSON has no spaces, and an intent id needs no escaping. `_` in an id is
        // a `LIKE` wildcard: it can only let more rows through to the exact check below.
        let pattern = format!("%\"intent_id\":\"{intent}\"%");
        let rows: Vec<(i64, String, Option<String>)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT seq, event, intent_id FROM audit_events \
             WHERE intent_id = $1 OR (intent_id IS NULL AND event LIKE $2) ORDER BY seq"
        )
        .bind(intent.as_str())
        .bind(pattern.as_str())
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db("reading an intent's audit events"))?;
        let mut events = Vec::with_capacity(rows.len());
        for (seq, event, indexed) in rows {
            let event: AuditEvent = serde_json::from_str(&event)
                .map_err(|e| StoreError::corrupt(READ_CONTEXT, format!("audit event {seq}"), e))?;
            if indexed.is_some() || event.intent_id == *intent {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Whether audit events can be written: the writer runs, and no batch failed in the last 10 s
    /// without one committing since.
    #[must_use]
    pub fn audit_writable(&self) -> bool {
        self.writer.writable()
    }

    /// Whether the audit writer task runs (a failed batch doesn't stop it).
    #[must_use]
    pub fn audit_writer_running(&self) -> bool {
        self.writer.running()
    }

    /// Waits until every queued audit event is committed (or failed), at most `limit`.
    /// Returns whether the queue emptied.
    pub async fn flush_audit(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.writer.depth() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// Up to `limit` events with `seq > after_seq`, in ascending order.
    ///
    /// # Errors
    /// When the query fails or a stored event is not JSON.
    pub async fn audit_events(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<RawRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT seq, ts, event, prev_hash, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db(READ_CONTEXT))?;
        rows.into_iter().map(stored_event).collect()
    }

    /// The last `n` events, in ascending order.
    ///
    /// # Errors
    /// When the query fails or a stored event is not JSON.
    pub async fn audit_tail(&self, n: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<RawRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT seq, ts, event, prev_hash, hash FROM \
             (SELECT * FROM audit_events ORDER BY seq DESC LIMIT $1) AS tail ORDER BY seq",
        )
        .bind(i64::from(n))
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db(READ_CONTEXT))?;
        rows.into_iter().map(stored_event).collect()
    }

    /// The length of the log: the newest event's sequence number, 0 when it is empty.
    ///
    /// One index lookup however long the log, for sizing progress bars. Events deleted by
    /// tampering still count: only [`Self::verify_audit`] says whether the chain is whole.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn audit_len(&self) -> Result<u64, StoreError> {
        let newest: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) FROM audit_events"
        )
        .fetch_one(pool)
        .await)
        .map_err(StoreError::db(READ_CONTEXT))?;
        Ok(u64::try_from(newest).unwrap_or(0))
    }

    /// Recomputes the whole hash chain, page by page, and names every event that was
    /// modified, deleted or reordered.
    ///
    /// Deleting the newest events (truncating the tail) leaves a valid shorter chain and is
    /// not detected here: that takes the signed checkpoints of [`Self::verify_checkpoints`].
    ///
    /// # Errors
    /// When a query fails; problems with the stored events are in the report instead.
    pub async fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        self.verify_audit_with(|_| {}).await
    }

    /// [`Self::verify_audit`], calling `progress` after each page with the number of events
    /// checked so far (for a progress bar: the log can be millions of events long).
    ///
    /// # Errors
    /// When a query fails; problems with the stored events are in the report instead.
    pub async fn verify_audit_with(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, StoreError> {
        const CONTEXT: &str = "verifying the audit log";
        let mut verifier = Verifier::default();
        let mut checked: u64 = 0;
        loop {
            let rows: Vec<RawRow> = on_pool!(self, |pool| sqlx::query_as(
                "SELECT seq, ts, event, prev_hash, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(verifier.last_seq())
            .bind(VERIFY_PAGE)
            .fetch_all(pool)
            .await)
            .map_err(StoreError::db(CONTEXT))?;
            let full = rows.len() == usize::try_from(VERIFY_PAGE).unwrap_or(usize::MAX);
            checked += rows.len() as u64;
            for (seq, ts, event, prev_hash, hash) in rows {
                verifier.check(Row {
                    seq,
                    ts,
                    event,
                    prev_hash,
                    hash,
                });
            }
            progress(checked);
            if !full {
                return Ok(verifier.finish());
            }
        }
    }
}

fn stored_event((seq, ts, event, prev_hash, hash): RawRow) -> Result<StoredEvent, StoreError> {
    let event =
        serde_json::from_str(&event).map_err(|e| StoreError::corrupt(READ_CONTEXT, format!("audit event {seq}"), e))?;
    Ok(StoredEvent {
        seq,
        ts,
        event,
        prev_hash,
        hash,
    })
}

/// An event's canonical JSON, as it is hashed and stored.
pub(crate) fn canonical_event(event: &AuditEvent) -> Result<String, StoreError> {
    let value = serde_json::to_value(event).map_err(|e| StoreError::Encode(e.to_string()))?;
    json::canonical(&value).map_err(|e| StoreError::Encode(e.to_string()))
}
