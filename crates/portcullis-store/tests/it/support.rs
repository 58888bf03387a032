//! A fresh, empty database per test on either backend, raw connections for tampering, and
//! the macro that runs one test body on both.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::{ActionName, AgentId, AuditEvent, AuditKind, IntentId, sha256_hex};
use portcullis_store::{Backend, Store};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, PgConnection, SqliteConnection};

/// The PostgreSQL server the `postgres` variant of each test runs against, as a URL to a
/// database the test user may connect to and create databases from.
pub const PG_ENV: &str = "PORTCULLIS_TEST_DATABASE_URL";

/// Runs the test body `async fn $case(db: TestDb)` once per backend: defines a module
/// `$case` with two tests, `sqlite` and `postgres`, each passing a fresh empty [`TestDb`]
/// of its backend. The `postgres` one is skipped, saying so on stderr, only when
/// [`PG_ENV`] is unset; when it is set, the test fails if the server can't be used.
macro_rules! on_both {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$case(crate::support::TestDb::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = crate::support::TestDb::postgres().await {
                    super::$case(db).await;
                }
            }
        }
    };
}

/// An empty database that exists for one test.
pub struct TestDb {
    kind: Kind,
}

enum Kind {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        /// The URL from [`PG_ENV`], used to create and drop the test's database.
        admin_url: String,
        /// The test's own database.
        name: String,
        url: String,
    },
}

impl TestDb {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.db");
        Self {
            kind: Kind::Sqlite { _dir: dir, path },
        }
    }

    /// A new database on the server named by [`PG_ENV`], or `None` (after saying so) when
    /// the variable is unset. Panics when it is set but the server can't be used.
    pub async fn postgres() -> Option<Self> {
        let Some(admin_url) = std::env::var_os(PG_ENV) else {
            eprintln!("skipped: {PG_ENV} is unset");
            return None;
        };
        let admin_url = admin_url.into_string().unwrap();
        let name = unique_name();
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV} is set, but its server can't be reached: {e}"));
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV} is set, but database `{name}` can't be created: {e}"));
        admin.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        Some(Self {
            kind: Kind::Postgres { admin_url, name, url },
        })
    }

    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite { .. } => Backend::Sqlite,
            Kind::Postgres { .. } => Backend::Postgres,
        }
    }

    pub fn url(&self) -> String {
        match &self.kind {
            Kind::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Kind::Postgres { url, .. } => url.clone(),
        }
    }

    /// The SQLite file, for the tests that read it directly.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Some(path),
            Kind::Postgres { .. } => None,
        }
    }

    /// What [`Store::location`] should say: the file, or `postgres://host:port/db`.
    pub fn expected_location(&self) -> String {
        match &self.kind {
            Kind::Sqlite { path, .. } => path.display().to_string(),
            Kind::Postgres { admin_url, name, .. } => {
                let options = PgConnectOptions::from_str(admin_url).unwrap();
                format!("postgres://{}:{}/{name}", options.get_host(), options.get_port())
            }
        }
    }

    /// A new [`Store`] handle: its own pool and its own audit writer, as a separate
    /// gateway instance would have.
    pub async fn open(&self) -> Store {
        Store::open(&self.url()).await.unwrap()
    }

    /// A connection that bypasses the store, as an attacker with write access to the
    /// database would have.
    pub async fn raw(&self) -> Raw {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                Raw::Sqlite(SqliteConnectOptions::new().filename(path).connect().await.unwrap())
            }
            Kind::Postgres { url, .. } => Raw::Postgres(PgConnection::connect(url).await.unwrap()),
        }
    }

    /// Runs `sql` on a raw connection after switching off the audit log's append-only
    /// triggers.
    pub async fn tamper(&self, sql: &'static str) {
        let mut raw = self.raw().await;
        raw.exec(match self.backend() {
            Backend::Sqlite => "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;",
            Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER USER",
        })
        .await
        .unwrap();
        raw.exec(sql).await.unwrap();
        raw.close().await;
    }
}

impl Drop for TestDb {
    /// Drops a PostgreSQL test database, closing whatever connections are still open on
    /// it. Best effort: a failure is reported but does not fail the test. It runs on its
    /// own thread and runtime, since `drop` can't await on the test's.
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, name, .. } = &self.kind else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let dropped = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database: {e}"),
            Err(_) => eprintln!("could not drop the test database: the dropping thread panicked"),
        }
    }
}

/// A raw connection to a test database.
pub enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Raw {
    /// Runs one or more statements.
    pub async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(conn) => sqlx::raw_sql(sql).execute(conn).await.map(drop),
            Self::Postgres(conn) => sqlx::raw_sql(sql).execute(conn).await.map(drop),
        }
    }

    /// The first column of every row of `sql`, which must be an integer.
    pub async fn integers(&mut self, sql: &'static str) -> Vec<i64> {
        match self {
            Self::Sqlite(conn) => sqlx::query_scalar(sql).fetch_all(conn).await.unwrap(),
            Self::Postgres(conn) => sqlx::query_scalar(sql).fetch_all(conn).await.unwrap(),
        }
    }

    /// The first column of every row of `sql`, which must be a blob (`BYTEA` on PostgreSQL).
    pub async fn blobs(&mut self, sql: &'static str) -> Vec<Vec<u8>> {
        match self {
            Self::Sqlite(conn) => sqlx::query_scalar(sql).fetch_all(conn).await.unwrap(),
            Self::Postgres(conn) => sqlx::query_scalar(sql).fetch_all(conn).await.unwrap(),
        }
    }

    pub async fn close(self) {
        match self {
            Self::Sqlite(conn) => conn.close().await.unwrap(),
            Self::Postgres(conn) => conn.close().await.unwrap(),
        }
    }
}

/// A database name no other test, run or process uses.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!(
        "pc_t_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database (the path) replaced by `name`; user, host and query are kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` with its user's password set to `password`.
pub fn with_password(url: &str, password: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority..];
    let host = rest.split('/').next().unwrap_or_default();
    let host_start = host.rfind('@').map_or(0, |i| i + 1);
    let user = PgConnectOptions::from_str(url).unwrap().get_username().to_owned();
    format!("{}{user}:{password}@{}", &url[..authority], &rest[host_start..])
}

/// A distinct audit event for each `n`.
pub fn event(n: usize) -> AuditEvent {
    AuditEvent {
        actor: None,
        kind: AuditKind::Decided,
        intent_id: IntentId::from_random([u8::try_from(n % 256).unwrap(); 16]),
        agent: AgentId::new(format!("agent-{n}")).unwrap(),
        action: Some(ActionName::new("github.create_issue").unwrap()),
        payload_sha256: Some(sha256_hex(n.to_string().as_bytes())),
        decision: None,
        dry_run: false,
        detail: json!({"n": n}),
    }
}

/// Appends events 1 to `n` to an empty log, checking each sequence number.
pub async fn append_n(store: &Store, n: usize) {
    for i in 1..=n {
        let receipt = store.append(&event(i)).await.unwrap();
        assert_eq!(receipt.seq, i64::try_from(i).unwrap());
    }
}
