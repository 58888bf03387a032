//! Persistence for Portcullis on SQLite: the hash-chained audit log, intents and
//! idempotency, agents (token hashes only) and secrets (ciphertext only).
//!
//! One [`Store`] is cheap to clone and shared by the whole process. Audit appends go
//! through a single writer task that commits whatever is queued in one transaction
//! (group commit), so many concurrent appends cost one fsync; each caller gets its
//! [`AppendReceipt`] only once the commit is durable, and an error otherwise.

mod agents;
mod audit;
mod chain;
mod error;
mod holds;
mod intents;
mod schema;
mod secrets;
mod writer;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use agents::AgentRecord;
pub use audit::{AppendReceipt, StoredEvent};
pub use chain::{AuditProblem, GENESIS_HASH, MAX_REPORTED_PROBLEMS, VerifyReport};
pub use error::StoreError;
pub use holds::{HoldRecord, NewHold, NewVote, Vote, VoteOutcome};
pub use intents::{Begin, IntentRecord, NewIntent};
pub use schema::SCHEMA_VERSION;
pub use secrets::SecretMeta;

/// How long a statement waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool for reads and for writes other than audit appends.
const POOL_SIZE: u32 = 4;

/// A handle on the store. Clones share one connection pool and one audit writer.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: writer::AuditWriter,
    location: Arc<str>,
}

impl Store {
    /// Opens (creating if missing) the SQLite database at `url` and brings its schema up
    /// to date.
    ///
    /// `url` is `sqlite://PATH` (also `sqlite:PATH`); `sqlite::memory:` gives a private
    /// in-memory database for tests. The database runs in WAL mode with
    /// `synchronous=FULL` (an acknowledged audit append survives a power cut), a
    /// [`BUSY_TIMEOUT`] and foreign keys on.
    ///
    /// # Errors
    /// When the URL is not a SQLite URL, the file can't be opened or created, a
    /// migration fails, or the database has a newer schema than [`SCHEMA_VERSION`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        const CONTEXT: &str = "opening the store";
        let options = connect_options(url)?;
        let location: Arc<str> = options.get_filename().display().to_string().into();
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::db(CONTEXT))?;
        let mut conn = pool.acquire().await.map_err(StoreError::db(CONTEXT))?;
        schema::migrate(&mut conn, &location).await?;
        drop(conn);
        // The audit writer owns its own connection so that appends never queue behind
        // reads for a pool slot.
        let writer_conn = options.connect().await.map_err(StoreError::db(CONTEXT))?;
        Ok(Self {
            pool,
            writer: writer::AuditWriter::spawn(writer_conn),
            location,
        })
    }

    /// The database file this store was opened on.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }
}

fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    if !url.starts_with("sqlite:") {
        let scheme = url
            .split_once(':')
            .map_or_else(|| url.chars().take(16).collect(), |(s, _)| s.to_owned());
        return Err(StoreError::UnsupportedUrl { scheme });
    }
    let options = SqliteConnectOptions::from_str(url).map_err(StoreError::db("parsing the store URL"))?;
    Ok(options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true))
}
