//! Intents and idempotency: the same `(agent, idempotency_key)` is begun at most once.

use portcullis_core::{ActionName, AgentId, AuditEvent, IntentId, now_rfc3339};
use serde::Serialize;

use crate::agents::agent_id;
use crate::error::is_unique_violation;
use crate::{AppendReceipt, Store, StoreError};

/// An intent about to run, as recorded by [`Store::begin_intent`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewIntent {
    /// The intent's id.
    pub id: IntentId,
    /// The agent that sent it.
    pub agent: AgentId,
    /// The requested action.
    pub action: ActionName,
    /// SHA-256 of the canonical validated input, to tell a retry from a conflicting reuse
    /// of the idempotency key.
    pub payload_sha256: String,
    /// The agent's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
    /// The initial status, e.g. `executing`.
    pub status: String,
    /// The initial response, often `null`.
    pub response: serde_json::Value,
}

/// What [`Store::begin_decided_intent`] did.
#[derive(Debug, Clone)]
pub enum Began {
    /// The intent and its `decided` event were recorded: the caller may go on.
    Decided(AppendReceipt),
    /// The agent already used this idempotency key: nothing was written (see
    /// [`Begin::Existing`]).
    Existing(IntentRecord),
    /// The intent was recorded but its `decided` event could not be appended (PostgreSQL,
    /// where they are two writes): nothing may run, and the caller must abandon the intent.
    Undecided(StoreError),
}

/// What [`Store::begin_intent`] found.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per intent and matched at once, never stored in bulk; a Box would only add an allocation"
)]
pub enum Begin {
    /// The intent was recorded: the caller may go on and execute it.
    Started,
    /// The agent already used this idempotency key, for this intent. The caller compares
    /// `payload_sha256` to return the stored result or report a conflict; it must not
    /// execute again.
    Existing(IntentRecord),
}

/// An intent as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentRecord {
    /// The intent's id.
    pub id: IntentId,
    /// The agent that sent it.
    pub agent: AgentId,
    /// The requested action.
    pub action: ActionName,
    /// SHA-256 of the canonical validated input.
    pub payload_sha256: String,
    /// The agent's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// The current status.
    pub status: String,
    /// The response recorded so far (`null` until finished, unless given at the start).
    pub response: serde_json::Value,
    /// When the intent was begun, RFC 3339 UTC.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

type IntentRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
);

/// The columns of an [`IntentRow`], as a literal so that queries stay static strings.
macro_rules! intent_columns {
    () => {
        "id, agent, action, payload_sha256, idempotency_key, status, response, created_at, updated_at"
    };
}

impl Store {
    /// Records a new intent, unless the agent already used its idempotency key.
    ///
    /// The insert and the check are one statement (`ON CONFLICT DO NOTHING` on the
    /// unique `(agent, idempotency_key)`), so of two concurrent calls with the same key
    /// exactly one gets [`Begin::Started`]. Intents without a key never conflict.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when an intent with the same id exists; otherwise
    /// when a statement fails.
    pub async fn begin_intent(&self, new: &NewIntent) -> Result<Begin, StoreError> {
        let inserted = self
            .write(INSERT_INTENT, insert_args(new)?)
            .await?
            .map_err(|e| insert_error(new, e))?;
        if inserted == 1 {
            return Ok(Begin::Started);
        }
        self.holding_key(new).await.map(Begin::Existing)
    }

    /// [`Store::begin_intent`] and the append of the intent's `decided` event, as one: when
    /// the key is free, both are written (on SQLite in one transaction of the audit writer,
    /// so one commit); when it is taken, neither, and the intent holding it is returned.
    ///
    /// # Errors
    /// When nothing could be written.
    pub async fn begin_decided_intent(&self, new: &NewIntent, decided: &AuditEvent) -> Result<Began, StoreError> {
        if matches!(self.pool, crate::Pool::Postgres(_)) {
            return Ok(match self.begin_intent(new).await? {
                Begin::Existing(prev) => Began::Existing(prev),
                Begin::Started => match self.append(decided).await {
                    Ok(receipt) => Began::Decided(receipt),
                    Err(e) => Began::Undecided(e),
                },
            });
        }
        let statement = crate::statement(INSERT_INTENT, insert_args(new)?);
        let (inserted, receipt) = self
            .writer
            .write_then_append(
                statement,
                crate::audit::canonical_event(decided)?,
                decided.intent_id.as_str().to_owned(),
            )
            .await?;
        let inserted = inserted.map_err(|e| insert_error(new, e))?;
        match (inserted, receipt) {
            (1, Some(receipt)) => Ok(Began::Decided(receipt)),
            (0, None) => self.holding_key(new).await.map(Began::Existing),
            _ => Err(StoreError::Encode(
                "the writer mixed up an intent's first record".into(),
            )),
        }
    }

    /// The intent holding `new`'s idempotency key.
    async fn holding_key(&self, new: &NewIntent) -> Result<IntentRecord, StoreError> {
        const CONTEXT: &str = "recording an intent";
        let row: Option<IntentRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            intent_columns!(),
            " FROM intents WHERE agent = $1 AND idempotency_key = $2"
        ))
        .bind(new.agent.as_str())
        .bind(new.idempotency_key.as_deref())
        .fetch_optional(pool)
        .await)
        .map_err(StoreError::db(CONTEXT))?;
        match row {
            Some(row) => intent_record(CONTEXT, row),
            // Rows are never deleted, so a conflict without a row means the database was
            // edited underneath us: refuse rather than execute.
            None => Err(StoreError::NotFound {
                what: format!("the intent holding idempotency key of `{}`", new.agent),
            }),
        }
    }

    /// Sets an intent's final status and response.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when no intent has this id; otherwise when the statement fails.
    pub async fn finish_intent(
        &self,
        id: &IntentId,
        status: &str,
        response: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let args = finish_args(id, status, response)?;
        finished(id, self.write(FINISH_INTENT, args).await?)
    }

    /// [`Store::finish_intent`] with the response as JSON text (it must be a JSON object:
    /// the gateway writes its `IntentResponse` once, for the store and for the agent).
    ///
    /// # Errors
    /// As [`Store::finish_intent`], and [`StoreError::Encode`] when `response` is not a
    /// JSON object's text.
    pub async fn finish_intent_json(&self, id: &IntentId, status: &str, response: &str) -> Result<(), StoreError> {
        check_object_text(response)?;
        let args = finish_args_json(id, status, response.to_owned());
        finished(id, self.write(FINISH_INTENT, args).await?)
    }

    /// Sets an intent's status and response only if its status is still `from`; true when
    /// this call moved it. Of several concurrent calls for one intent, at most one moves it.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn finish_intent_if(
        &self,
        id: &IntentId,
        from: &str,
        status: &str,
        response: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let mut args = finish_args(id, status, response)?;
        args.push(Some(from.to_owned()));
        let moved = self
            .write(FINISH_INTENT_IF, args)
            .await?
            .map_err(StoreError::db("finishing an intent"))?;
        Ok(moved > 0)
    }

    /// Settles an intent still `executing` (its instance stopped mid-execution) with
    /// `status` and `response`, and appends `event` (its `outcome`), atomically: both are
    /// written in one transaction, and only when the intent was still `executing`. Returns
    /// the event's receipt, or `None` when the intent had already left `executing` (another
    /// instance settled it first, or its own instance finished it): then nothing is written.
    ///
    /// Every instance looks for interrupted intents, so several may settle the same one at
    /// once; the conditional update decides which of them writes the one `outcome` event.
    ///
    /// # Errors
    /// When nothing could be written.
    pub async fn settle_intent(
        &self,
        event: &AuditEvent,
        status: &str,
        response: &serde_json::Value,
    ) -> Result<Option<AppendReceipt>, StoreError> {
        const CONTEXT: &str = "settling an interrupted intent";
        let id = &event.intent_id;
        let event_json = crate::audit::canonical_event(event)?;
        let mut args = finish_args(id, status, response)?;
        args.push(Some(EXECUTING.to_owned()));
        let pool = match &self.pool {
            crate::Pool::Postgres(pool) => pool,
            crate::Pool::Sqlite(_) => {
                let statement = crate::statement(FINISH_INTENT_IF, args);
                let (moved, receipt) = self
                    .writer
                    .write_then_append(statement, event_json, id.as_str().to_owned())
                    .await?;
                moved.map_err(StoreError::db(CONTEXT))?;
                return Ok(receipt);
            }
        };
        // The update row-locks the intent until commit: a concurrent settle of the same
        // intent waits, then finds it no longer `executing` and moves nothing.
        let mut tx = pool.begin().await.map_err(StoreError::db(CONTEXT))?;
        let moved = crate::text_query(FINISH_INTENT_IF, args)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(CONTEXT))?
            .rows_affected();
        if moved == 0 {
            tx.rollback().await.map_err(StoreError::db(CONTEXT))?;
            return Ok(None);
        }
        let receipt = crate::writer::append_postgres_in(&mut tx, &event_json, id.as_str()).await?;
        tx.commit().await.map_err(StoreError::db(CONTEXT))?;
        Ok(Some(receipt))
    }

    /// Appends an intent's `outcome` event, then records its final state (`response` as
    /// JSON text, as for [`Store::finish_intent_json`]), and returns what became of each. On
    /// SQLite both are queued to the audit writer back to back: they usually share one
    /// commit (one wait instead of two), and the state is never committed in an earlier
    /// batch than the event. On PostgreSQL one after the other.
    pub async fn append_then_finish_intent(
        &self,
        event: &AuditEvent,
        status: &str,
        response: &str,
    ) -> (Result<AppendReceipt, StoreError>, Result<(), StoreError>) {
        let id = &event.intent_id;
        if matches!(self.pool, crate::Pool::Postgres(_)) {
            let appended = self.append(event).await;
            return (appended, self.finish_intent_json(id, status, response).await);
        }
        let queued = match crate::audit::canonical_event(event) {
            Ok(json) => self.writer.queue_append(json, id.as_str().to_owned()).await,
            Err(e) => Err(e),
        };
        let queued = match queued {
            Ok(q) => q,
            Err(e) => return (Err(e), self.finish_intent_json(id, status, response).await),
        };
        let written = match check_object_text(response) {
            Ok(()) => {
                let args = finish_args_json(id, status, response.to_owned());
                self.writer.queue_write(crate::statement(FINISH_INTENT, args)).await
            }
            Err(e) => Err(e),
        };
        let appended = queued.committed().await;
        let finished = match written {
            Ok(w) => w.committed().await.and_then(|r| finished(id, r)),
            Err(e) => Err(e),
        };
        (appended, finished)
    }

    /// Forgets an intent that never got past its decision record (the audit log could not
    /// be written, so nothing ran): its idempotency key becomes free again, so a retry
    /// after the outage runs the action. Only an intent still `executing` is removed.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn abandon_intent(&self, id: &IntentId) -> Result<bool, StoreError> {
        let done = on_pool!(self, |pool| sqlx::query(
            "DELETE FROM intents WHERE id = $1 AND status = 'executing'"
        )
        .bind(id.as_str())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(StoreError::db("abandoning an intent"))?;
        Ok(done > 0)
    }

    /// The intent with this id, if any.
    ///
    /// # Errors
    /// When the query fails or the stored row is unreadable.
    pub async fn get_intent(&self, id: &IntentId) -> Result<Option<IntentRecord>, StoreError> {
        const CONTEXT: &str = "reading an intent";
        let row: Option<IntentRow> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            intent_columns!(),
            " FROM intents WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await)
        .map_err(StoreError::db(CONTEXT))?;
        row.map(|row| intent_record(CONTEXT, row)).transpose()
    }
}

impl Store {
    /// Every intent whose status is `executing`, oldest first.
    ///
    /// The status is written into the query, not bound: only then can either backend use
    /// the partial index `intents_executing`, which holds just these rows.
    ///
    /// # Errors
    /// When the query fails or a stored row is unreadable.
    pub async fn executing_intents(&self) -> Result<Vec<IntentRecord>, StoreError> {
        const CONTEXT: &str = "listing executing intents";
        let rows: Vec<IntentRow> = on_pool!(self, |pool| sqlx::query_as(EXECUTING_INTENTS).fetch_all(pool).await)
            .map_err(StoreError::db(CONTEXT))?;
        rows.into_iter().map(|row| intent_record(CONTEXT, row)).collect()
    }
}

/// The query of [`Store::executing_intents`], public so that its plan can be checked.
pub const EXECUTING_INTENTS: &str = concat!(
    "SELECT ",
    intent_columns!(),
    " FROM intents WHERE status = 'executing' ORDER BY created_at, id"
);

fn intent_record(context: &'static str, row: IntentRow) -> Result<IntentRecord, StoreError> {
    let (id, agent, action, payload_sha256, idempotency_key, status, response, created_at, updated_at) = row;
    let what = format!("intent `{id}`");
    Ok(IntentRecord {
        id: IntentId::new(id).map_err(|e| StoreError::corrupt(context, what.clone(), e))?,
        agent: agent_id(context, agent)?,
        action: ActionName::new(action).map_err(|e| StoreError::corrupt(context, what.clone(), e))?,
        payload_sha256,
        idempotency_key,
        status,
        response: serde_json::from_str(&response).map_err(|e| StoreError::corrupt(context, what, e))?,
        created_at,
        updated_at,
    })
}

const FINISH_INTENT: &str = "UPDATE intents SET status = $1, response = $2, updated_at = $3 WHERE id = $4";

/// [`FINISH_INTENT`] only from status `$5`.
pub(crate) const FINISH_INTENT_IF: &str =
    "UPDATE intents SET status = $1, response = $2, updated_at = $3 WHERE id = $4 AND status = $5";

/// The status of an intent between its decision and its outcome.
const EXECUTING: &str = "executing";

pub(crate) fn finish_args(
    id: &IntentId,
    status: &str,
    response: &serde_json::Value,
) -> Result<Vec<Option<String>>, StoreError> {
    let response = serde_json::to_string(response).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(finish_args_json(id, status, response))
}

/// [`finish_args`] for a response already written as JSON text.
fn finish_args_json(id: &IntentId, status: &str, response: String) -> Vec<Option<String>> {
    vec![
        Some(status.to_owned()),
        Some(response),
        Some(now_rfc3339()),
        Some(id.to_string()),
    ]
}

/// A cheap guard on a response given as JSON text: it must be an object's. The text comes
/// from `serde_json` in the gateway; this catches a caller passing something else, not a
/// malformed object.
fn check_object_text(response: &str) -> Result<(), StoreError> {
    let text = response.trim();
    if text.starts_with('{') && text.ends_with('}') {
        Ok(())
    } else {
        Err(StoreError::Encode("an intent's response must be a JSON object".into()))
    }
}

/// What an intent's final update did: it must have found the intent.
fn finished(id: &IntentId, done: Result<u64, sqlx::Error>) -> Result<(), StoreError> {
    match done.map_err(StoreError::db("finishing an intent"))? {
        0 => Err(StoreError::NotFound {
            what: format!("intent `{id}`"),
        }),
        _ => Ok(()),
    }
}

const INSERT_INTENT: &str = "INSERT INTO intents (id, agent, action, payload_sha256, idempotency_key, status, response, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (agent, idempotency_key) DO NOTHING";

fn insert_args(new: &NewIntent) -> Result<Vec<Option<String>>, StoreError> {
    let now = now_rfc3339();
    let response = serde_json::to_string(&new.response).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(vec![
        Some(new.id.to_string()),
        Some(new.agent.to_string()),
        Some(new.action.to_string()),
        Some(new.payload_sha256.clone()),
        new.idempotency_key.clone(),
        Some(new.status.clone()),
        Some(response),
        Some(now.clone()),
        Some(now),
    ])
}

/// An intent insert's own error: a taken id, or a failed statement.
fn insert_error(new: &NewIntent, e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::AlreadyExists {
            what: format!("intent `{}`", new.id),
        }
    } else {
        StoreError::db("recording an intent")(e)
    }
}
