//! Held intents, approval votes, and the people who cast them.
//!
//! Every state change of a hold is one statement or one `BEGIN IMMEDIATE` transaction, so
//! two approvers (or two gateway processes) racing on the same hold see one winner:
//! a vote is recorded once per person, `pending → approved` happens once, and
//! `approved → executing` — the right to call the upstream — is claimed once.

use portcullis_core::{IntentId, now_rfc3339};
use serde::Serialize;

use crate::{Store, StoreError};

/// Moves the hold `$id` to `$state` inside the transaction `$tx`.
macro_rules! set_state {
    ($tx:ident, $id:expr, $state:expr, $now:expr) => {
        sqlx::query("UPDATE holds SET state = $1, decided_at = $2 WHERE intent_id = $3")
            .bind($state)
            .bind($now)
            .bind($id.as_str())
            .execute(&mut *$tx)
            .await
            .map_err(StoreError::db("changing a hold's state"))?
    };
}

/// A hold to store.
#[derive(Debug, Clone)]
pub struct NewHold {
    /// The held intent (already recorded with `begin_intent`).
    pub intent_id: IntentId,
    /// The requesting agent.
    pub agent: String,
    /// The action.
    pub action: String,
    /// SHA-256 of the canonical input.
    pub payload_sha256: String,
    /// The canonical input, executed as is on approval.
    pub input: String,
    /// The decision (JSON), with the policy's reasons.
    pub decision: serde_json::Value,
    /// The approver group that may approve, if the policy names one.
    pub approver_group: Option<String>,
    /// Distinct approvals needed.
    pub required: u32,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Expiry, Unix seconds.
    pub expires_unix: i64,
}

/// A stored hold.
#[derive(Debug, Clone, Serialize)]
pub struct HoldRecord {
    /// The held intent.
    pub intent_id: String,
    /// The requesting agent.
    pub agent: String,
    /// The action.
    pub action: String,
    /// SHA-256 of the canonical input.
    pub payload_sha256: String,
    /// The canonical input (JSON).
    pub input: serde_json::Value,
    /// The decision (JSON).
    pub decision: serde_json::Value,
    /// The approver group, if any.
    pub approver_group: Option<String>,
    /// Distinct approvals needed.
    pub required: u32,
    /// `pending`, `approved`, `executing`, `executed`, `failed`, `denied` or `expired`.
    pub state: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Expiry, Unix seconds.
    pub expires_unix: i64,
    /// When it was held.
    pub created_at: String,
    /// When it was approved, denied or expired.
    pub decided_at: Option<String>,
    /// The votes so far.
    pub votes: Vec<Vote>,
}

/// One approver's vote.
#[derive(Debug, Clone, Serialize)]
pub struct Vote {
    /// Who.
    pub approver: String,
    /// `approve` or `deny`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The payload hash the approver saw.
    pub payload_sha256: String,
    /// When.
    pub at: String,
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Recorded; more approvals are needed.
    Recorded {
        /// Approvals so far.
        have: u32,
        /// Approvals needed.
        need: u32,
    },
    /// The quorum is reached: the hold is approved by these people.
    Approved(Vec<String>),
    /// The hold is denied (final).
    Denied,
    /// The hold had expired; it is now marked expired and can't be approved.
    Expired,
    /// The approver saw a different payload than the one held.
    PayloadMismatch,
    /// This approver already voted on this hold.
    AlreadyVoted,
    /// The hold is no longer pending (its state is given).
    NotPending(String),
    /// There is no such hold.
    NotFound,
}

/// A vote to record.
#[derive(Debug, Clone)]
pub struct NewVote<'a> {
    /// The hold.
    pub intent_id: &'a IntentId,
    /// The approver.
    pub approver: &'a str,
    /// Approve (true) or deny (false).
    pub approve: bool,
    /// Why.
    pub reason: &'a str,
    /// The payload hash the approver saw.
    pub payload_sha256: &'a str,
    /// Now, Unix seconds.
    pub now_unix: i64,
}

type HoldRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    String,
    i64,
    String,
    Option<String>,
);

macro_rules! hold_columns {
    () => {
        "intent_id, agent, action, payload_sha256, input, decision, approver_group, required, \
         state, expires_at, expires_unix, created_at, decided_at"
    };
}

impl Store {
    /// Stores a hold in state `pending`.
    ///
    /// # Errors
    /// When the database can't be written (the intent must then not be reported as held).
    pub async fn put_hold(&self, hold: &NewHold) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO holds (intent_id, agent, action, payload_sha256, input, decision, approver_group, \
             required, state, expires_at, expires_unix, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11)",
        )
        .bind(hold.intent_id.as_str())
        .bind(&hold.agent)
        .bind(&hold.action)
        .bind(&hold.payload_sha256)
        .bind(&hold.input)
        .bind(hold.decision.to_string())
        .bind(hold.approver_group.as_deref())
        .bind(i64::from(hold.required))
        .bind(&hold.expires_at)
        .bind(hold.expires_unix)
        .bind(now_rfc3339())
        .execute(pool)
        .await.map(|done| done.rows_affected()))
        .map_err(StoreError::db("storing a held intent"))?;
        Ok(())
    }

    /// The hold for an intent, with its votes.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn get_hold(&self, id: &IntentId) -> Result<Option<HoldRecord>, StoreError> {
        let row: Option<HoldRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            hold_columns!(),
            " FROM holds WHERE intent_id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await)
        .map_err(StoreError::db("reading a hold"))?;
        match row {
            Some(row) => Ok(Some(self.hold_record(row).await?)),
            None => Ok(None),
        }
    }

    /// How many holds are in `state`.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn count_holds(&self, state: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = on_pool!(self, |pool| sqlx::query_as(
            "SELECT COUNT(*) FROM holds WHERE state = $1"
        )
        .bind(state)
        .fetch_one(pool)
        .await)
        .map_err(StoreError::db("counting holds"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Holds in one of `states` (all when empty), newest first, at most `limit`.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn list_holds(&self, states: &[&str], limit: u32) -> Result<Vec<HoldRecord>, StoreError> {
        const CONTEXT: &str = "listing holds";
        let mut rows: Vec<HoldRow> = Vec::new();
        if states.is_empty() {
            rows = on_pool!(self, |pool| sqlx::query_as(concat!(
                "SELECT ",
                hold_columns!(),
                " FROM holds ORDER BY created_at DESC, intent_id LIMIT $1"
            ))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
            .map_err(StoreError::db(CONTEXT))?;
        }
        // One indexed query per state (the set is small and fixed), merged: a filter after
        // a global LIMIT would miss older holds in a rarer state.
        for state in states {
            let more: Vec<HoldRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
                "SELECT ",
                hold_columns!(),
                " FROM holds WHERE state = $1 ORDER BY created_at DESC, intent_id LIMIT $2"
            ))
            .bind(*state)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
            .map_err(StoreError::db(CONTEXT))?;
            rows.extend(more);
        }
        rows.sort_by(|a, b| b.11.cmp(&a.11).then_with(|| a.0.cmp(&b.0)));
        rows.dedup_by(|a, b| a.0 == b.0);
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.hold_record(row).await?);
        }
        Ok(out)
    }

    /// Records one approver's vote in one transaction: refuses votes on holds that are not
    /// pending, expired (marking them so), whose payload hash differs from the one the
    /// approver saw, or that this approver already voted on; a denial is final; the vote
    /// that reaches the quorum moves the hold to `approved`.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn vote(&self, v: &NewVote<'_>) -> Result<VoteOutcome, StoreError> {
        const CONTEXT: &str = "recording an approval vote";
        let outcome = in_tx!(self, CONTEXT, |tx| {
            // The first statement writes the hold's row: on PostgreSQL that row-locks it, so
            // concurrent votes on one hold (from any instance) run one after the other.
            sqlx::query("UPDATE holds SET state = state WHERE intent_id = $1")
                .bind(v.intent_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(CONTEXT))?;
            let row: Option<(String, String, i64, i64)> =
                sqlx::query_as("SELECT state, payload_sha256, required, expires_unix FROM holds WHERE intent_id = $1")
                    .bind(v.intent_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db(CONTEXT))?;
            let now = now_rfc3339();
            match row {
                None => VoteOutcome::NotFound,
                Some((state, _, _, _)) if state != "pending" => VoteOutcome::NotPending(state),
                Some((_, _, _, expires)) if expires <= v.now_unix => {
                    set_state!(tx, v.intent_id, "expired", &now);
                    VoteOutcome::Expired
                }
                Some((_, sha, _, _)) if sha != v.payload_sha256 => VoteOutcome::PayloadMismatch,
                Some((_, _, required, _)) => {
                    let inserted = sqlx::query(
                        "INSERT INTO approval_votes (intent_id, approver, verdict, reason, payload_sha256, at) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (intent_id, approver) DO NOTHING",
                    )
                    .bind(v.intent_id.as_str())
                    .bind(v.approver)
                    .bind(if v.approve { "approve" } else { "deny" })
                    .bind(v.reason)
                    .bind(v.payload_sha256)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db(CONTEXT))?;
                    if inserted.rows_affected() == 0 {
                        VoteOutcome::AlreadyVoted
                    } else if v.approve {
                        let approvers: Vec<String> = sqlx::query_scalar(
                            "SELECT approver FROM approval_votes WHERE intent_id = $1 AND verdict = 'approve' \
                             ORDER BY at, approver",
                        )
                        .bind(v.intent_id.as_str())
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                        let have = u32::try_from(approvers.len()).unwrap_or(u32::MAX);
                        let need = u32::try_from(required).unwrap_or(1);
                        if have >= need {
                            set_state!(tx, v.intent_id, "approved", &now);
                            VoteOutcome::Approved(approvers)
                        } else {
                            VoteOutcome::Recorded { have, need }
                        }
                    } else {
                        set_state!(tx, v.intent_id, "denied", &now);
                        VoteOutcome::Denied
                    }
                }
            }
        });
        Ok(outcome)
    }

    /// Takes back a vote that could not be written to the audit log, so that no decision
    /// stands without its audit event: the vote is deleted and a hold it approved or denied
    /// is pending again. A hold already claimed for execution keeps the votes it was
    /// approved on.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn retract_vote(&self, id: &IntentId, approver: &str) -> Result<(), StoreError> {
        const CONTEXT: &str = "retracting an unaudited vote";
        in_tx!(self, CONTEXT, |tx| {
            // A write to the hold's row whatever its state: the row lock on PostgreSQL, as
            // in `vote`, so that no vote is counted while this one is being taken back.
            sqlx::query("UPDATE holds SET state = state WHERE intent_id = $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(CONTEXT))?;
            sqlx::query(
                "DELETE FROM approval_votes WHERE intent_id = $1 AND approver = $2 AND EXISTS \
                 (SELECT 1 FROM holds WHERE intent_id = $1 AND state IN ('pending', 'approved', 'denied'))",
            )
            .bind(id.as_str())
            .bind(approver)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
            sqlx::query(
                "UPDATE holds SET state = 'pending', decided_at = NULL \
                 WHERE intent_id = $1 AND state IN ('approved', 'denied')",
            )
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
        });
        Ok(())
    }

    /// Claims the right to execute an approved hold and marks its intent, in one
    /// transaction: the hold `approved → executing`, and its intent `from → status` with
    /// `response`. True for exactly one caller. No other instance can see the hold claimed
    /// while its intent is still `from`.
    ///
    /// When the hold was approved but its intent is no longer `from` (recovery by an earlier
    /// build failed it), the hold is set `failed` in the same transaction and the answer is
    /// false: nothing may run it.
    ///
    /// # Errors
    /// When the database can't be written, or `response` can't be encoded.
    pub async fn claim_execution(
        &self,
        id: &IntentId,
        from: &str,
        status: &str,
        response: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "claiming an approved hold";
        let mut mark = crate::intents::finish_args(id, status, response)?;
        mark.push(Some(from.to_owned()));
        let claimed = in_tx!(self, CONTEXT, |tx| {
            // First a write to the hold's row: on PostgreSQL it row-locks the hold, so a
            // concurrent claim waits and then finds it no longer `approved`.
            let claimed =
                sqlx::query("UPDATE holds SET state = 'executing' WHERE intent_id = $1 AND state = 'approved'")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db(CONTEXT))?
                    .rows_affected();
            if claimed == 1 {
                let marked = crate::text_query(crate::intents::FINISH_INTENT_IF, mark)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db(CONTEXT))?
                    .rows_affected();
                if marked == 0 {
                    sqlx::query("UPDATE holds SET state = 'failed' WHERE intent_id = $1 AND state = 'executing'")
                        .bind(id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                }
                marked == 1
            } else {
                false
            }
        });
        Ok(claimed)
    }

    /// Sets the final state of a hold that was executing (`executed` or `failed`).
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn finish_hold(&self, id: &IntentId, state: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE holds SET state = $1 WHERE intent_id = $2 AND state = 'executing'"
        )
        .bind(state)
        .bind(id.as_str())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(StoreError::db("finishing a hold"))?;
        Ok(())
    }

    /// Marks every pending hold whose expiry has passed as `expired` and returns them.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn expire_due(&self, now_unix: i64) -> Result<Vec<HoldRecord>, StoreError> {
        let rows: Vec<HoldRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "UPDATE holds SET state = 'expired', decided_at = $1 WHERE state = 'pending' AND expires_unix <= $2 RETURNING ",
            hold_columns!()
        ))
        .bind(now_rfc3339())
        .bind(now_unix)
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db("expiring holds"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.hold_record(row).await?);
        }
        Ok(out)
    }

    /// Holds in `state` (used at start-up to resume approved holds and to settle ones a
    /// crash interrupted).
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn holds_in_state(&self, state: &str) -> Result<Vec<HoldRecord>, StoreError> {
        let rows: Vec<HoldRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            hold_columns!(),
            " FROM holds WHERE state = $1"
        ))
        .bind(state)
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db("listing holds"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.hold_record(row).await?);
        }
        Ok(out)
    }

    async fn hold_record(&self, row: HoldRow) -> Result<HoldRecord, StoreError> {
        const CONTEXT: &str = "reading a hold";
        let votes: Vec<(String, String, String, String, String)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT approver, verdict, reason, payload_sha256, at FROM approval_votes WHERE intent_id = $1 ORDER BY at, approver",
        )
        .bind(&row.0)
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db(CONTEXT))?;
        let json = |what: &'static str, text: &str| {
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                context: CONTEXT,
                what: what.to_owned(),
                reason: e.to_string(),
            })
        };
        let votes = votes
            .into_iter()
            .map(|(approver, verdict, reason, payload_sha256, at)| Vote {
                approver,
                verdict,
                reason,
                payload_sha256,
                at,
            })
            .collect();
        Ok(HoldRecord {
            input: json("hold input", &row.4)?,
            decision: json("hold decision", &row.5)?,
            intent_id: row.0,
            agent: row.1,
            action: row.2,
            payload_sha256: row.3,
            approver_group: row.6,
            required: u32::try_from(row.7).unwrap_or(1),
            state: row.8,
            expires_at: row.9,
            expires_unix: row.10,
            created_at: row.11,
            decided_at: row.12,
            votes,
        })
    }

    /// Registers a person's login token (only its SHA-256 is stored); replaces an
    /// existing token for the same person.
    ///
    /// # Errors
    /// When the hash is not a SHA-256 hex digest or the database can't be written.
    pub async fn set_person_token(&self, id: &str, token_sha256: &str) -> Result<(), StoreError> {
        crate::agents::check_token_hash(token_sha256)?;
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO people (id, token_sha256, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET token_sha256 = excluded.token_sha256, created_at = excluded.created_at",
        )
        .bind(id)
        .bind(token_sha256)
        .bind(now_rfc3339())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(StoreError::db("setting a login token"))?;
        Ok(())
    }

    /// The person a login token belongs to.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn person_for_token_hash(&self, token_sha256: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM people WHERE token_sha256 = $1"
        )
        .bind(token_sha256)
        .fetch_optional(pool)
        .await)
        .map_err(StoreError::db("looking up a login token"))
    }
}
