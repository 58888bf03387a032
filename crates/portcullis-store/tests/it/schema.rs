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
    // Every table of the newest migration is there.
    assert_eq!(raw.integers("SELECT count(*) FROM limit_counters").await, [0]);
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
