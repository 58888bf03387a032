//! Versioned schema migrations, embedded in the binary.
//!
//! The version lives in a one-row `schema_version` table rather than in SQLite's
//! `user_version` pragma so that the PostgreSQL backend can use the same scheme.

use sqlx::{Connection as _, SqliteConnection};

use crate::StoreError;

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_approvals.sql"),
    include_str!("../migrations/0003_intents_by_status.sql"),
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const CONTEXT: &str = "migrating the store schema";

/// Brings the schema up to [`SCHEMA_VERSION`] in one transaction, or refuses a database
/// written by a newer build.
pub(crate) async fn migrate(conn: &mut SqliteConnection, location: &str) -> Result<(), StoreError> {
    // IMMEDIATE takes the write lock up front, so two processes opening a new file at
    // once migrate one after the other instead of failing to upgrade a read lock.
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::db(CONTEXT))?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            location: location.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for sql in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
    }
    sqlx::query("DELETE FROM schema_version")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
    sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
        .bind(SCHEMA_VERSION)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
    tx.commit().await.map_err(StoreError::db(CONTEXT))
}
