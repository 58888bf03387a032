//! Persistence for Portcullis: the hash-chained audit log, intents and idempotency, held
//! intents and votes, rate and spend counters, web UI sessions, agents (token hashes only) and secrets
//! (ciphertext only), on SQLite (the embedded default) or PostgreSQL (many gateway
//! instances sharing one database).
//!
//! [`Store`] is the one interface; the backend is chosen by the URL's scheme. Both run the
//! same SQL text (positional `$N` parameters, `ON CONFLICT`, `RETURNING`), compiled once
//! per driver by [`on_pool!`], so the two cannot drift apart; only connecting, migrating
//! and the audit writer's locking differ, and the store test suite runs against both.
//!
//! One [`Store`] is cheap to clone and shared by the whole process. Audit appends go
//! through a single writer task that commits whatever is queued in one transaction
//! (group commit), so many concurrent appends cost one fsync; each caller gets its
//! [`AppendReceipt`] only once the commit is durable, and an error otherwise. On
//! PostgreSQL every batch also takes a transaction-scoped advisory lock, so writers in
//! several gateway processes extend one chain, one batch at a time.

/// Runs `$body` with `$pool` bound to the store's pool, once per backend: the same
/// statement text, type-checked against each driver.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::Pool::Sqlite($pool) => $body,
            $crate::Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in a transaction that is the only writer of the rows it touches, once per
/// backend, and commits it when `$body` yields `Ok`. SQLite takes the database write lock
/// up front (`BEGIN IMMEDIATE`); on PostgreSQL the body's first statement must be a write
/// to the row it decides on, which row-locks it until commit. An early `return` rolls back.
macro_rules! in_tx {
    ($store:expr, $context:expr, |$tx:ident| $body:expr) => {
        match &$store.pool {
            $crate::Pool::Sqlite(pool) => {
                use sqlx::Connection as _;
                let mut conn = pool.acquire().await.map_err(StoreError::db($context))?;
                let mut $tx = conn
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(StoreError::db($context))?;
                let out = $body;
                $tx.commit().await.map_err(StoreError::db($context))?;
                out
            }
            $crate::Pool::Postgres(pool) => {
                let mut $tx = pool.begin().await.map_err(StoreError::db($context))?;
                let out = $body;
                $tx.commit().await.map_err(StoreError::db($context))?;
                out
            }
        }
    };
}

mod agents;
mod audit;
mod chain;
mod checkpoint;
mod direct;
mod error;
mod holds;
mod intents;
mod limits;
pub mod merkle;
mod provenance;
mod schema;
mod secrets;
mod sessions;
mod writer;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use agents::AgentRecord;
pub use audit::{AppendReceipt, StoredEvent};
pub use chain::{AuditProblem, GENESIS_HASH, MAX_REPORTED_PROBLEMS, VerifyReport};
pub use checkpoint::{Checkpoint, CheckpointKey, CheckpointProblem, CheckpointReport, InclusionProof};
pub use error::StoreError;
pub use holds::{HoldRecord, NewHold, NewVote, Vote, VoteOutcome};
pub use intents::{Began, Begin, EXECUTING_INTENTS, IntentRecord, NewIntent};
pub use limits::{Charge, Charged, CounterView};
pub use provenance::{NewValues, ProvenanceLimits, SeenValue};
pub use schema::SCHEMA_VERSION;
pub use secrets::SecretMeta;
pub use sessions::UiSession;

/// How long a statement waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in a SQLite pool for reads and for writes other than audit appends.
const SQLITE_POOL_SIZE: u32 = 4;

/// Connections per gateway instance on PostgreSQL (the audit writer takes one at a time
/// from the same pool). Several instances multiply it: size `max_connections` for all.
const POSTGRES_POOL_SIZE: u32 = 10;

/// How long to wait for a PostgreSQL connection before an operation fails (closed).
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The backend's connection pool.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// The embedded default: one file, one process writing at a time.
    Sqlite(SqlitePool),
    /// Shared state for any number of gateway instances.
    Postgres(PgPool),
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A handle on the store. Clones share one connection pool and one audit writer.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    writer: writer::AuditWriter,
    /// SQLite only: connections for the reads on every intent's path, called directly.
    readers: Option<Arc<direct::Readers>>,
    location: Arc<str>,
}

impl Store {
    /// Opens the store at `url` and brings its schema up to date.
    ///
    /// - `sqlite://PATH` (also `sqlite:PATH`) opens or creates a SQLite file, in WAL mode
    ///   with `synchronous=FULL` (an acknowledged audit append survives a power cut), a
    ///   [`BUSY_TIMEOUT`] and foreign keys on; `sqlite::memory:` gives a private in-memory
    ///   database for tests.
    /// - `postgres://…` (also `postgresql://…`) connects to PostgreSQL with libpq's URL
    ///   syntax (`sslmode`, `options`, … as query parameters).
    ///
    /// Migrations run in one transaction; concurrent openers (several instances starting
    /// at once) migrate one after the other.
    ///
    /// # Errors
    /// When the URL is not one of these, the database can't be reached, opened or
    /// created, a migration fails, or the database has a newer schema than
    /// [`SCHEMA_VERSION`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else if url.starts_with("sqlite:") {
            Self::open_sqlite(url).await
        } else {
            let scheme = url
                .split_once(':')
                .map_or_else(|| url.chars().take(16).collect(), |(s, _)| s.to_owned());
            Err(StoreError::UnsupportedUrl { scheme })
        }
    }

    async fn open_sqlite(url: &str) -> Result<Self, StoreError> {
        const CONTEXT: &str = "opening the store";
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::db("parsing the store URL"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let location: Arc<str> = options.get_filename().display().to_string().into();
        let pool = busy_retry(|| {
            SqlitePoolOptions::new()
                .max_connections(SQLITE_POOL_SIZE)
                // sqlx pings a connection before lending it by default, a round trip to the
                // connection's worker thread on every read. A SQLite connection is a file
                // handle in this process: it can't have been hung up on while idle.
                .test_before_acquire(false)
                .connect_with(options.clone())
        })
        .await
        .map_err(StoreError::db(CONTEXT))?;
        let mut conn = pool.acquire().await.map_err(StoreError::db(CONTEXT))?;
        schema::migrate_sqlite(&mut conn, &location).await?;
        drop(conn);
        // The audit writer owns its own connection so that appends never queue behind
        // reads for a pool slot.
        let filename = options.get_filename().to_path_buf();
        let writer_conn = direct::open(&filename, BUSY_TIMEOUT).map_err(StoreError::direct(CONTEXT))?;
        let writer =
            writer::AuditWriter::spawn_sqlite(writer_conn).map_err(|e| StoreError::db(CONTEXT)(sqlx::Error::Io(e)))?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            writer,
            readers: Some(Arc::new(direct::Readers::new(filename))),
            location,
        })
    }

    async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        const CONTEXT: &str = "connecting to PostgreSQL";
        let mut options = PgConnectOptions::from_str(url).map_err(|_| StoreError::Invalid {
            what: "store URL",
            reason: "not a valid postgres:// URL",
        })?;
        if options.get_application_name().is_none() {
            // So that `pg_stat_activity` tells the gateway's connections apart.
            options = options.application_name("portcullis");
        }
        // Never the password: the location appears in errors and logs.
        let location: Arc<str> = format!(
            "postgres://{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        )
        .into();
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_POOL_SIZE)
            .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::db(CONTEXT))?;
        schema::migrate_postgres(&pool, &location).await?;
        Ok(Self {
            writer: writer::AuditWriter::spawn_postgres(pool.clone()),
            pool: Pool::Postgres(pool),
            readers: None,
            location,
        })
    }

    /// Where this store lives: the SQLite file, or the PostgreSQL server and database
    /// (never a password).
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Which database this store runs on.
    #[must_use]
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one write on an intent's path: `sql` with text parameters `$1`, `$2`, … bound
    /// to `args` (`None` is NULL). On SQLite it runs in the audit writer's next transaction
    /// (group commit, no contention for the write lock); on PostgreSQL, on the pool.
    ///
    /// # Errors
    /// The outer error when the write could not be committed (SQLite); the inner one is the
    /// statement's own (say, a unique violation), for the caller to classify.
    pub(crate) async fn write(
        &self,
        sql: &'static str,
        args: Vec<Option<String>>,
    ) -> Result<Result<u64, sqlx::Error>, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => self.writer.write(statement(sql, args)).await,
            Pool::Postgres(pool) => Ok(text_query(sql, args)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())),
        }
    }
}

/// `sql` with text parameters `$1`, `$2`, … bound to `args` (`None` is NULL), for either
/// driver.
pub(crate) fn text_query<DB: sqlx::Database>(
    sql: &'static str,
    args: Vec<Option<String>>,
) -> sqlx::query::Query<'static, DB, <DB as sqlx::Database>::Arguments>
where
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    args.into_iter().fold(sqlx::query(sql), |query, arg| query.bind(arg))
}

/// `sql` with text parameters bound to `args`, as a job for the SQLite writer.
fn statement(sql: &'static str, args: Vec<Option<String>>) -> writer::Statement {
    Box::new(move |conn| {
        let args: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
        direct::execute(conn, sql, &args).map_err(direct::to_sqlx)
    })
}

impl Store {
    /// Runs `read` on one of SQLite's direct read connections; `None` when the store is
    /// not SQLite, or SQLite answered "busy" (then the caller reads through the pool, which
    /// waits for the lock).
    ///
    /// # Errors
    /// Any other error of the read, as a driver error.
    pub(crate) fn read_direct<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, sqlx::Error> {
        let Some(readers) = &self.readers else {
            return Ok(None);
        };
        match readers.read(read) {
            Ok(out) => Ok(Some(out)),
            Err(e) if direct::is_busy(&e) => Ok(None),
            Err(e) => Err(direct::to_sqlx(e)),
        }
    }
}

/// Runs `connect` again while SQLite answers "database is locked" (for up to
/// [`BUSY_TIMEOUT`]): several processes opening a new file at once race to switch it to WAL
/// mode, a change SQLite makes without waiting on its busy handler.
async fn busy_retry<T, F, Fut>(mut connect: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    const PAUSE: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match connect().await {
            Err(sqlx::Error::Database(e))
                if e.message().contains("database is locked") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(PAUSE).await;
            }
            other => return other,
        }
    }
}
