//! Versioned schema migrations, embedded in the binary: one list per backend, with the
//! same numbering, so a version means the same tables on both.
//!
//! The version lives in a one-row `schema_version` table rather than in SQLite's
//! `user_version` pragma so that both backends use the same scheme.

use sqlx::{Connection as _, PgPool, SqliteConnection};

use crate::StoreError;

/// SQLite's migrations, in order; migration `i` brings the schema to version `i + 1`.
const SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_approvals.sql"),
    include_str!("../migrations/sqlite/0003_intents_by_status.sql"),
    include_str!("../migrations/sqlite/0004_limits.sql"),
    include_str!("../migrations/sqlite/0005_ui_sessions.sql"),
    include_str!("../migrations/sqlite/0006_audit_checkpoints.sql"),
    include_str!("../migrations/sqlite/0007_audit_by_intent.sql"),
    include_str!("../migrations/sqlite/0008_provenance.sql"),
    include_str!("../migrations/sqlite/0009_intents_executing.sql"),
];

/// PostgreSQL's migrations, numbered like SQLite's.
const POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_initial.sql"),
    include_str!("../migrations/postgres/0002_approvals.sql"),
    include_str!("../migrations/postgres/0003_intents_by_status.sql"),
    include_str!("../migrations/postgres/0004_limits.sql"),
    include_str!("../migrations/postgres/0005_ui_sessions.sql"),
    include_str!("../migrations/postgres/0006_audit_checkpoints.sql"),
    include_str!("../migrations/postgres/0007_audit_by_intent.sql"),
    include_str!("../migrations/postgres/0008_provenance.sql"),
    include_str!("../migrations/postgres/0009_intents_executing.sql"),
];

const _: () = assert!(
    SQLITE.len() == POSTGRES.len(),
    "both backends migrate to the same versions"
);

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = SQLITE.len() as i64;

/// The advisory lock key that serializes migrations across gateway instances
/// (`"pcmigrat"` as an integer).
const MIGRATION_LOCK: i64 = 0x7063_6d69_6772_6174;

const CONTEXT: &str = "migrating the store schema";

/// Brings the schema to [`SCHEMA_VERSION`] inside the open transaction `$tx`, or refuses a
/// database written by a newer build. Shared text for both backends.
macro_rules! migrate_in {
    ($tx:ident, $migrations:expr, $location:expr, $has_version_table:expr) => {{
        // Looked up first, so that a store already at this version needs no DDL at all: the
        // gateway can then run as a role without CREATE privileges, once an owner role has
        // run `portcullis migrate`.
        let tables: i64 = sqlx::query_scalar($has_version_table)
            .fetch_one(&mut *$tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
        if tables == 0 {
            sqlx::raw_sql("CREATE TABLE schema_version (version BIGINT NOT NULL)")
                .execute(&mut *$tx)
                .await
                .map_err(StoreError::db(CONTEXT))?;
        }
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *$tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
        let found = found.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                location: $location.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            for sql in $migrations.iter().skip(usize::try_from(found).unwrap_or(0)) {
                sqlx::raw_sql(*sql)
                    .execute(&mut *$tx)
                    .await
                    .map_err(StoreError::db(CONTEXT))?;
            }
            sqlx::query("DELETE FROM schema_version")
                .execute(&mut *$tx)
                .await
                .map_err(StoreError::db(CONTEXT))?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(SCHEMA_VERSION)
                .execute(&mut *$tx)
                .await
                .map_err(StoreError::db(CONTEXT))?;
        }
        $tx.commit().await.map_err(StoreError::db(CONTEXT))
    }};
}

/// Migrates a SQLite database in one transaction.
pub(crate) async fn migrate_sqlite(conn: &mut SqliteConnection, location: &str) -> Result<(), StoreError> {
    // IMMEDIATE takes the write lock up front, so two processes opening a new file at
    // once migrate one after the other instead of failing to upgrade a read lock.
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::db(CONTEXT))?;
    migrate_in!(
        tx,
        SQLITE,
        location,
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    )
}

/// Migrates a PostgreSQL database in one transaction (DDL is transactional there), under
/// an advisory lock so that instances starting together migrate one after the other.
pub(crate) async fn migrate_postgres(pool: &PgPool, location: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::db(CONTEXT))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
    migrate_in!(
        tx,
        POSTGRES,
        location,
        "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_version'"
    )
}
