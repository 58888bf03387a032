//! Opening a store: URL schemes, credentials kept out of errors and locations, schema
//! versions, and concurrent first opens.

use portcullis_store::{Backend, SCHEMA_VERSION, Store, StoreError};

use crate::support::{TestDb, append_n, with_database, with_password};

async fn a_newer_schema_is_refused_with_a_clear_error(db: TestDb) {
    drop(db.open().await);
    let mut raw = db.raw().await;
    raw.exec("UPDATE schema_version SET version = 99").await.unwrap();
    raw.close().await;
    let err = Store::open(&db.url()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the store at `{}` has schema version 99, but this build knows only up to {SCHEMA_VERSION}: \
             upgrade Portcullis, or restore a backup made by this version",
            db.expected_location(),
        )
    );
}
on_both!(a_newer_schema_is_refused_with_a_clear_error);

/// Several gateway instances starting at once on an empty database: the migrations
/// run once, under the lock, and every instance opens.
async fn concurrent_first_opens_all_succeed_and_migrate_once(db: TestDb) {
    let url = db.url();
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for handle in opening {
        stores.push(handle.await.unwrap().unwrap());
    }
    let mut raw = db.raw().await;
    assert_eq!(
        raw.integers("SELECT version FROM schema_version").await,
        [SCHEMA_VERSION]
    );
    // What the newest migration (0009: the partial index of executing intents) made is
    // there: whoever adds a migration checks its tables here instead.
    assert_eq!(SCHEMA_VERSION, 9, "check the newest migration's tables below");
    let indexes = match db.backend() {
        Backend::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'intents_executing'",
        Backend::Postgres => "SELECT count(*) FROM pg_indexes WHERE indexname = 'intents_executing'",
    };
    assert_eq!(raw.integers(indexes).await, [1]);
    let dropped = match db.backend() {
        Backend::Sqlite => "SELECT count(*) FROM sqlite_master WHERE name = 'intents_by_status'",
        Backend::Postgres => "SELECT count(*) FROM pg_indexes WHERE indexname = 'intents_by_status'",
    };
    assert_eq!(raw.integers(dropped).await, [0]);
    raw.close().await;
    append_n(&stores[3], 2).await;
    assert!(stores[0].verify_audit().await.unwrap().ok);
}
on_both!(concurrent_first_opens_all_succeed_and_migrate_once);

async fn the_store_names_its_backend_and_location(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.location(), db.expected_location());
    let expected = if db.sqlite_path().is_some() {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    assert_eq!(store.backend(), expected);
    assert_eq!(db.backend(), expected);
    assert_eq!(
        serde_json::to_value(store.backend()).unwrap(),
        format!("{expected:?}").to_lowercase()
    );
}
on_both!(the_store_names_its_backend_and_location);

#[tokio::test]
async fn other_url_schemes_are_refused_without_echoing_credentials() {
    for (url, scheme) in [
        ("mysql://admin:hunter2@db.internal/portcullis", "mysql"),
        ("admin:hunter2@db.internal", "admin"),
        ("hunter2-without-a-scheme-at-all", "hunter2-without-"),
    ] {
        let err = Store::open(url).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("unsupported store URL scheme `{scheme}`: this build supports `sqlite://PATH` and `postgres://…`")
        );
    }
}

#[tokio::test]
async fn a_postgres_server_that_cannot_be_reached_is_an_error_without_the_password() {
    // Port 1 on loopback: nothing listens there, so every connection is refused (the
    // open fails after the pool's acquire timeout). `postgres://` itself is used by every
    // other PostgreSQL test.
    let err = Store::open("postgresql://admin:hunter2@127.0.0.1:1/portcullis?sslmode=disable")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("while connecting to PostgreSQL: "), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn a_malformed_postgres_url_is_refused_without_echoing_it() {
    let err = Store::open("postgres://admin:hunter2@db.internal:notaport/x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(err.to_string(), "invalid store URL: not a valid postgres:// URL");
}

#[tokio::test]
async fn postgres_errors_and_locations_never_show_the_password() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // The server is real but the database isn't (or, if the server checks passwords, the
    // password is wrong): either way the open fails, and must not repeat the password.
    let missing = with_password(&with_database(&db.url(), "pc_no_such_database"), "hunter2");
    let err = Store::open(&missing).await.unwrap_err();
    assert!(err.to_string().starts_with("while connecting to PostgreSQL: "), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    let store = db.open().await;
    assert_eq!(store.backend(), Backend::Postgres);
    assert_eq!(store.location(), db.expected_location());
    assert!(store.location().starts_with("postgres://"), "{}", store.location());
    assert!(!store.location().contains('@'), "{}", store.location());
}

#[tokio::test]
async fn a_missing_directory_is_an_error_naming_what_failed() {
    let err = Store::open("sqlite:///nonexistent-dir-portcullis/x.db")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("while opening the store: "), "{err}");
}

#[tokio::test]
async fn an_in_memory_store_works_for_tests() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    append_n(&store, 3).await;
    assert!(store.verify_audit().await.unwrap().ok);
}

/// Least privilege on PostgreSQL: once an owner role has migrated, the gateway can run as a
/// role that may only read and write rows (no CREATE on the schema): opening a store that
/// is up to date runs no DDL. That role can't touch the audit log's triggers either, and a
/// store that still needs migrating is refused with the database's own reason.
#[tokio::test]
async fn an_up_to_date_store_opens_as_a_role_without_create_privileges() {
    use sqlx::{AssertSqlSafe, Connection as _};
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    drop(db.open().await); // migrated by the owner
    let role = format!("pc_runtime_{}", std::process::id());
    let mut owner = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let grant = format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; \
         REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
         GRANT USAGE ON SCHEMA public TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
    );
    sqlx::raw_sql(AssertSqlSafe(grant)).execute(&mut owner).await.unwrap();
    let as_runtime = {
        let options: sqlx::postgres::PgConnectOptions = db.url().parse().unwrap();
        sqlx::ConnectOptions::to_url_lossy(&options.username(&role)).to_string()
    };

    let store = Store::open(&as_runtime).await.unwrap();
    append_n(&store, 3).await;
    assert!(store.verify_audit().await.unwrap().ok);
    let mut runtime = sqlx::PgConnection::connect(&as_runtime).await.unwrap();
    for sql in [
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        "TRUNCATE audit_events",
        "DELETE FROM audit_events WHERE seq = 1",
        "CREATE TABLE sneaky (x BIGINT)",
    ] {
        let refused = sqlx::raw_sql(sql).execute(&mut runtime).await;
        assert!(refused.is_err(), "`{sql}` was allowed");
    }
    runtime.close().await.unwrap();
    drop(store);

    // A fresh database the runtime role may not create tables in: a clear refusal.
    let fresh = TestDb::postgres().await.unwrap();
    let mut fresh_owner = sqlx::PgConnection::connect(&fresh.url()).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO {role};"
    )))
    .execute(&mut fresh_owner)
    .await
    .unwrap();
    let options: sqlx::postgres::PgConnectOptions = fresh.url().parse().unwrap();
    let fresh_as_runtime = sqlx::ConnectOptions::to_url_lossy(&options.username(&role)).to_string();
    let err = Store::open(&fresh_as_runtime).await.unwrap_err().to_string();
    assert!(err.starts_with("while migrating the store schema: "), "{err}");
    assert!(err.contains("permission denied"), "{err}");

    for conn in [&mut owner, &mut fresh_owner] {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP OWNED BY {role}")))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    fresh_owner.close().await.unwrap();
    drop(fresh);
    sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&mut owner)
        .await
        .unwrap();
    owner.close().await.unwrap();
}
