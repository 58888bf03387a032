//! The single audit writer: one per process, group commit.
//!
//! On SQLite it is a thread that owns one connection (called directly, see
//! [`crate::direct`]), and `BEGIN IMMEDIATE` serializes it with any other process on the
//! file. It also runs the store's other writes on an intent's path
//! ([`AuditWriter::write`]) in the same transactions: one fsync covers a whole batch of
//! intents and their audit events, and those writes never contend for SQLite's write lock
//! (whose busy handler sleeps for milliseconds at a time). On PostgreSQL it is a task, and each batch takes a transaction-scoped
//! advisory lock before reading the chain head, so the writers of every gateway instance
//! extend one chain in turn; each batch is one multi-row `INSERT`, one round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_core::now_rfc3339;
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::chain::{GENESIS_HASH, record_hash};
use crate::{AppendReceipt, StoreError};

/// Most events written in one transaction.
const MAX_BATCH: usize = 512;

/// Appends that may wait for the writer before callers are made to wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

const CONTEXT: &str = "appending to the audit log";

type Reply = oneshot::Sender<Result<AppendReceipt, StoreError>>;

/// A statement for [`AuditWriter::write`]: given the writer's connection (inside its
/// transaction), runs and returns the rows it affected.
pub(crate) type Statement = Box<dyn FnOnce(&Connection) -> Result<u64, sqlx::Error> + Send + Sync>;

/// What a [`Statement`] gets back: the batch's commit failed (outer), or the statement's own
/// result once its batch committed (inner).
type WriteReply = oneshot::Sender<Result<Result<u64, sqlx::Error>, StoreError>>;

/// Work for the writer task.
enum Job {
    /// An event waiting to be written: its canonical JSON and where to send the receipt.
    Append {
        event_json: String,
        intent_id: String,
        reply: Reply,
    },
    /// Another write, run in the batch's transaction (SQLite only).
    Write {
        /// Taken when it runs: each statement runs once.
        statement: Option<Statement>,
        reply: WriteReply,
    },
    /// A write and an event that depends on it, in the batch's transaction (SQLite only):
    /// the event is appended only when the statement affected a row (an intent's insert
    /// that found its idempotency key free, then its `decided` event).
    Guarded {
        /// Taken when it runs.
        statement: Option<Statement>,
        event_json: String,
        intent_id: String,
        reply: GuardedReply,
    },
}

/// What a guarded append gets back: the statement's own result, and the event's receipt
/// when it was appended.
pub(crate) type Guarded = (Result<u64, sqlx::Error>, Option<AppendReceipt>);

type GuardedReply = oneshot::Sender<Result<Guarded, StoreError>>;

/// The handle callers use to queue appends.
#[derive(Debug, Clone)]
pub(crate) struct AuditWriter {
    queue: mpsc::Sender<Job>,
    /// Appends queued (or waiting to queue) and not yet answered.
    waiting: Arc<AtomicU64>,
    /// When a batch last failed, in milliseconds since the epoch (0: never).
    failed_at: Arc<AtomicU64>,
}

/// How long after a failed batch (with none committed since) the writer counts as unable to
/// write. Past it, readiness lets traffic try again: the next batch shows whether the
/// cause went away, and an instance nobody sends intents to would otherwise stay unready.
const FAILURE_MEMORY_MS: u64 = 10_000;

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Counts one append as waiting until it is dropped: answered, failed, or abandoned by a
/// caller that stopped waiting.
struct Waiting(Arc<AtomicU64>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AuditWriter {
    /// Starts the writer thread for a SQLite store. It stops when every handle is gone.
    ///
    /// # Errors
    /// When the thread can't be started.
    pub fn spawn_sqlite(conn: Connection) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let failed_at = Arc::new(AtomicU64::new(0));
        let failures = Arc::clone(&failed_at);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run_sqlite(conn, rx, &failures))?;
        Ok(Self::handle(queue, failed_at))
    }

    /// Starts the writer task for a PostgreSQL store on the current runtime; it borrows a
    /// connection from the pool for each batch, so a lost connection is replaced on the
    /// next one.
    pub fn spawn_postgres(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let failed_at = Arc::new(AtomicU64::new(0));
        tokio::spawn(run_postgres(pool, rx, Arc::clone(&failed_at)));
        Self::handle(queue, failed_at)
    }

    fn handle(queue: mpsc::Sender<Job>, failed_at: Arc<AtomicU64>) -> Self {
        Self {
            queue,
            waiting: Arc::new(AtomicU64::new(0)),
            failed_at,
        }
    }

    /// Whether the writer task runs.
    pub fn running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Whether appends can be written: the writer task runs, and no batch failed in the
    /// last [`FAILURE_MEMORY_MS`] without one committing since.
    pub fn writable(&self) -> bool {
        let failed_at = self.failed_at.load(Ordering::Relaxed);
        self.running() && (failed_at == 0 || now_millis().saturating_sub(failed_at) > FAILURE_MEMORY_MS)
    }

    /// Appends queued (or waiting for room in the queue) and not yet committed or failed.
    pub fn depth(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Queues one event and waits until it is durably committed.
    pub async fn append(&self, event_json: String, intent_id: String) -> Result<AppendReceipt, StoreError> {
        self.queue_append(event_json, intent_id).await?.committed().await
    }

    /// Queues one event (waiting only for room in the queue); the returned handle waits for
    /// its commit. Jobs are written in the order they were queued, so whatever is queued
    /// after this returns is committed with it or after it, never before.
    pub async fn queue_append(
        &self,
        event_json: String,
        intent_id: String,
    ) -> Result<Queued<AppendReceipt>, StoreError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(Arc::clone(&self.waiting));
        let (reply, receipt) = oneshot::channel();
        self.queue
            .send(Job::Append {
                event_json,
                intent_id,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(Queued {
            receipt,
            _waiting: Some(waiting),
        })
    }

    /// Runs `statement` in the writer's next transaction (SQLite) and returns its result
    /// once that transaction is durably committed.
    ///
    /// # Errors
    /// The outer error when the batch could not be committed (nothing of it was written) or
    /// the writer stopped; the inner one is the statement's own, its batch committed.
    pub async fn write(&self, statement: Statement) -> Result<Result<u64, sqlx::Error>, StoreError> {
        self.queue_write(statement).await?.committed().await
    }

    /// Runs `statement` and, if it affected a row, appends the event, in one transaction
    /// (SQLite only); returns once it is durably committed.
    ///
    /// # Errors
    /// When the batch could not be committed (nothing of it was written) or the writer
    /// stopped.
    pub async fn write_then_append(
        &self,
        statement: Statement,
        event_json: String,
        intent_id: String,
    ) -> Result<Guarded, StoreError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(Arc::clone(&self.waiting));
        let (reply, receipt) = oneshot::channel();
        self.queue
            .send(Job::Guarded {
                statement: Some(statement),
                event_json,
                intent_id,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        receipt.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Queues `statement` (waiting only for room in the queue), as [`Self::queue_append`].
    pub async fn queue_write(&self, statement: Statement) -> Result<Queued<Result<u64, sqlx::Error>>, StoreError> {
        let (reply, receipt) = oneshot::channel();
        self.queue
            .send(Job::Write {
                statement: Some(statement),
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(Queued {
            receipt,
            _waiting: None,
        })
    }
}

/// A job in the writer's queue: what it produces once its batch is committed.
pub(crate) struct Queued<T> {
    receipt: oneshot::Receiver<Result<T, StoreError>>,
    /// Counts a queued append in [`AuditWriter::depth`] until it is settled.
    _waiting: Option<Waiting>,
}

impl<T> Queued<T> {
    /// Waits for the job's batch to commit (or fail).
    pub(crate) async fn committed(self) -> Result<T, StoreError> {
        self.receipt.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append { intent_id, .. } => f.debug_struct("Append").field("intent_id", intent_id).finish(),
            Self::Write { .. } => f.write_str("Write"),
            Self::Guarded { intent_id, .. } => f.debug_struct("Guarded").field("intent_id", intent_id).finish(),
        }
    }
}

/// What one job of a committed batch produced.
enum Done {
    Appended(AppendReceipt),
    Wrote(Result<u64, sqlx::Error>),
    Guarded(Guarded),
}

/// The SQLite writer thread: waits for a job, takes whatever else is already queued, and
/// writes them in one transaction.
fn run_sqlite(mut conn: Connection, mut rx: mpsc::Receiver<Job>, failed_at: &AtomicU64) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = rx.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let written = write_sqlite(&mut conn, &mut batch);
        answer(&mut batch, written, failed_at);
    }
}

/// The PostgreSQL writer task.
async fn run_postgres(pool: PgPool, mut rx: mpsc::Receiver<Job>, failed_at: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // `recv_many` waits for one job, then takes whatever else is already queued.
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let written = write_postgres(&pool, &batch).await;
        answer(&mut batch, written, &failed_at);
    }
}

/// Tells every job of a batch what became of it, and remembers a failure for readiness.
fn answer(batch: &mut Vec<Job>, written: Result<Vec<Done>, StoreError>, failed_at: &AtomicU64) {
    failed_at.store(if written.is_ok() { 0 } else { now_millis() }, Ordering::Relaxed);
    match written {
        Ok(done) => {
            // A caller that stopped waiting still has its write durably stored.
            for (job, done) in batch.drain(..).zip(done) {
                match (job, done) {
                    (Job::Append { reply, .. }, Done::Appended(receipt)) => {
                        let _ = reply.send(Ok(receipt));
                    }
                    (Job::Write { reply, .. }, Done::Wrote(result)) => {
                        let _ = reply.send(Ok(result));
                    }
                    (Job::Guarded { reply, .. }, Done::Guarded(result)) => {
                        let _ = reply.send(Ok(result));
                    }
                    (job, _) => fail(job, &StoreError::Encode("the writer mixed up its batch".into())),
                }
            }
        }
        Err(error) => {
            // Fail closed: nothing of the batch was committed, and every caller in it
            // learns so.
            for job in batch.drain(..) {
                fail(job, &error);
            }
        }
    }
}

/// Tells a job's caller that its batch failed.
fn fail(job: Job, error: &StoreError) {
    match job {
        Job::Append { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Job::Write { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Job::Guarded { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// Writes a batch in one transaction and returns what each job produced once it has
/// committed. A statement's own error (a constraint) is its caller's; SQLite undoes only
/// that statement, and the rest of the batch commits.
///
/// The chain head is read inside the transaction, under the write lock, on every batch.
/// That costs one indexed lookup and means the head is never stale: not after a failed
/// batch, and not when another process (say `portcullis audit` tooling) appended.
fn write_sqlite(conn: &mut Connection, batch: &mut [Job]) -> Result<Vec<Done>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::direct(CONTEXT))?;
    let head: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(StoreError::direct(CONTEXT))?;
    let (mut seq, mut prev_hash) = head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let mut done = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        match job {
            Job::Append {
                event_json, intent_id, ..
            } => {
                let receipt = append_sqlite(&tx, &mut seq, &mut prev_hash, event_json, intent_id)?;
                done.push(Done::Appended(receipt));
            }
            Job::Write { statement, .. } => {
                let result = run_statement(&tx, statement.take())?;
                done.push(Done::Wrote(result));
            }
            Job::Guarded {
                statement,
                event_json,
                intent_id,
                ..
            } => {
                let result = run_statement(&tx, statement.take())?;
                let receipt = match result {
                    Ok(n) if n > 0 => Some(append_sqlite(&tx, &mut seq, &mut prev_hash, event_json, intent_id)?),
                    _ => None,
                };
                done.push(Done::Guarded((result, receipt)));
            }
        }
    }
    // Dropping the transaction unfinished (an early return above) rolls it back.
    tx.commit().map_err(StoreError::direct(CONTEXT))?;
    Ok(done)
}

/// Appends one event after `prev_hash` as number `seq + 1`, and moves both on.
fn append_sqlite(
    tx: &Connection,
    seq: &mut i64,
    prev_hash: &mut String,
    event_json: &str,
    intent_id: &str,
) -> Result<AppendReceipt, StoreError> {
    *seq += 1;
    let ts = now_rfc3339();
    let hash = record_hash(prev_hash, *seq, &ts, event_json);
    crate::direct::execute(
        tx,
        "INSERT INTO audit_events (seq, ts, event, prev_hash, hash, intent_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&*seq, &ts, &event_json, &*prev_hash, &hash, &intent_id],
    )
    .map_err(StoreError::direct(CONTEXT))?;
    *prev_hash = hash.clone();
    Ok(AppendReceipt { seq: *seq, hash })
}

/// Runs a queued statement. A constraint undoes only its statement and is its caller's
/// result; any other error (a full disk, an I/O error) may have rolled back the whole
/// transaction, so the whole batch fails, as it does when an audit insert fails.
fn run_statement(tx: &Connection, statement: Option<Statement>) -> Result<Result<u64, sqlx::Error>, StoreError> {
    let result = match statement {
        Some(statement) => statement(tx),
        None => Ok(0),
    };
    match result {
        Err(e) if !is_constraint(&e) => Err(StoreError::db(CONTEXT)(e)),
        result => Ok(result),
    }
}

/// Whether `e` is a constraint violation, which SQLite undoes by itself, statement only.
fn is_constraint(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.is_unique_violation() || db.is_foreign_key_violation() || db.is_check_violation())
}

/// The advisory lock key that serializes audit appends across instances (`"pcaudit"`).
const AUDIT_LOCK: i64 = 0x0070_6361_7564_6974;

/// The most parameter bytes one `INSERT` carries on PostgreSQL. sqlx 0.9.0 leaves Nagle's
/// algorithm on (its issue #4335; fixed upstream, not yet released): a message larger than
/// its 16 KiB write buffer goes out in two writes, and the second waits for the server's
/// delayed ACK, 40 ms. Batches are therefore written as several statements below that
/// size, in the same transaction; an event larger than this alone still pays the delay.
const PG_STATEMENT_BYTES: usize = 12 * 1024;

/// Writes a batch on PostgreSQL: lock, read the head, multi-row inserts, commit.
///
/// The lock is transaction-scoped, so it is released by commit, rollback, or the server
/// dropping a dead connection; an instance that crashes mid-batch blocks nobody.
async fn write_postgres(pool: &PgPool, batch: &[Job]) -> Result<Vec<Done>, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::db(CONTEXT))?;
    let (mut seq, mut prev_hash) = locked_head_postgres(&mut tx).await?;
    let mut rows = Rows::default();
    let mut receipts = Vec::with_capacity(batch.len());
    for job in batch {
        let Job::Append {
            event_json, intent_id, ..
        } = job
        else {
            // Other writes go to the pool on PostgreSQL; only a bug could queue one here.
            return Err(StoreError::Encode("a SQLite statement was queued on PostgreSQL".into()));
        };
        seq += 1;
        let ts = now_rfc3339();
        let hash = record_hash(&prev_hash, seq, &ts, event_json);
        let size = event_json.len() + intent_id.len() + ts.len() + 2 * hash.len();
        if rows.bytes + size > PG_STATEMENT_BYTES && !rows.seqs.is_empty() {
            rows.insert(&mut tx).await?;
        }
        rows.bytes += size;
        rows.seqs.push(seq);
        rows.stamps.push(ts);
        rows.events.push(event_json.as_str());
        rows.intents.push(intent_id.as_str());
        rows.prevs.push(std::mem::replace(&mut prev_hash, hash.clone()));
        rows.hashes.push(hash.clone());
        receipts.push(Done::Appended(AppendReceipt { seq, hash }));
    }
    rows.insert(&mut tx).await?;
    tx.commit().await.map_err(StoreError::db(CONTEXT))?;
    Ok(receipts)
}

/// Takes the audit lock for the rest of `tx` and reads the chain head: the sequence number
/// and hash the next event follows.
async fn locked_head_postgres(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(i64, String), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
    let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
    Ok(head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned())))
}

/// Appends one event inside the caller's transaction on PostgreSQL, under the same lock as
/// the writer's batches, so that it commits (or rolls back) together with the caller's
/// other writes. For the rare writes whose event must depend on them atomically (settling
/// an interrupted intent); everything else goes through the batching writer.
pub(crate) async fn append_postgres_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event_json: &str,
    intent_id: &str,
) -> Result<AppendReceipt, StoreError> {
    let (seq, prev_hash) = locked_head_postgres(tx).await?;
    let mut rows = Rows::default();
    let seq = seq + 1;
    let ts = now_rfc3339();
    let hash = record_hash(&prev_hash, seq, &ts, event_json);
    rows.seqs.push(seq);
    rows.stamps.push(ts);
    rows.events.push(event_json);
    rows.intents.push(intent_id);
    rows.prevs.push(prev_hash);
    rows.hashes.push(hash.clone());
    rows.insert(tx).await?;
    Ok(AppendReceipt { seq, hash })
}

/// Audit rows gathered for one multi-row `INSERT`.
#[derive(Default)]
struct Rows<'a> {
    seqs: Vec<i64>,
    stamps: Vec<String>,
    events: Vec<&'a str>,
    intents: Vec<&'a str>,
    prevs: Vec<String>,
    hashes: Vec<String>,
    bytes: usize,
}

impl Rows<'_> {
    /// Inserts the gathered rows (if any) and empties the buffers.
    async fn insert(&mut self, tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO audit_events (seq, ts, event, prev_hash, hash, intent_id) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[])",
        )
        .bind(self.seqs.as_slice())
        .bind(self.stamps.as_slice())
        .bind(self.events.as_slice())
        .bind(self.prevs.as_slice())
        .bind(self.hashes.as_slice())
        .bind(self.intents.as_slice())
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
        self.seqs.clear();
        self.stamps.clear();
        self.events.clear();
        self.intents.clear();
        self.prevs.clear();
        self.hashes.clear();
        self.bytes = 0;
        Ok(())
    }
}
