//! Drives the store against real SQLite files in temporary directories.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test on any error"
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use portcullis_core::{ActionName, AgentId, AuditEvent, AuditKind, IntentId, sha256_hex};
use portcullis_secrets::{MasterKey, open, seal};
use portcullis_store::{AuditProblem, Begin, NewIntent, Store, StoreError};
use serde_json::json;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection, sqlite::SqliteConnectOptions};

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.db");
        Self { _dir: dir, path }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn open(&self) -> Store {
        Store::open(&self.url()).await.unwrap()
    }
}

/// A second connection, as an attacker with write access to the file would have.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new().filename(path).connect().await.unwrap()
}

async fn tamper(path: &Path, sql: &'static str) {
    let mut conn = raw(path).await;
    sqlx::raw_sql("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

fn event(n: usize) -> AuditEvent {
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

async fn append_n(store: &Store, n: usize) {
    for i in 1..=n {
        let receipt = store.append(&event(i)).await.unwrap();
        assert_eq!(receipt.seq, i64::try_from(i).unwrap());
    }
}

// ---------- audit chain ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_appends_form_one_contiguous_verified_chain() {
    let db = Db::new();
    let store = db.open().await;
    let tasks: Vec<_> = (0..50)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    seqs.push(store.append(&event(t * 20 + i)).await.unwrap().seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1000).collect::<Vec<i64>>());

    let stored = store.audit_events(0, 5000).await.unwrap();
    assert_eq!(stored.len(), 1000);
    assert!(
        stored
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash)
    );
    assert_eq!(stored[0].prev_hash, portcullis_store::GENESIS_HASH);

    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events, 1000);
}

#[tokio::test]
async fn reading_pages_and_the_tail() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 10).await;
    let page = store.audit_events(3, 4).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6, 7]);
    assert_eq!(page[0].event["detail"], json!({"n": 4}));
    assert_eq!(page[0].event["kind"], "decided");
    let tail = store.audit_tail(3).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9, 10]);
    assert!(store.audit_tail(0).await.unwrap().is_empty());
    let as_json = serde_json::to_value(&tail[0]).unwrap();
    assert_eq!(as_json["seq"], 8);
}

#[tokio::test]
async fn the_chain_continues_across_reopening() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 3).await;
    drop(store);
    let store = db.open().await;
    assert_eq!(store.append(&event(4)).await.unwrap().seq, 4);
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok);
    assert_eq!(report.events, 4);
}

#[tokio::test]
async fn update_and_delete_are_refused_by_triggers() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 2).await;
    let mut conn = raw(&db.path).await;
    for sql in [
        "UPDATE audit_events SET event = '{}' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("audit log is append-only"), "{err}");
    }
    assert!(store.verify_audit().await.unwrap().ok);
}

#[tokio::test]
async fn an_edited_event_is_named() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 20).await;
    tamper(
        &db.path,
        r#"UPDATE audit_events SET event = replace(event, '"n":7', '"n":8') WHERE seq = 7"#,
    )
    .await;
    let report = store.verify_audit().await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.problems, [AuditProblem::Modified { seq: 7 }]);
    assert_eq!(report.problems[0].to_string(), "event 7 was modified");
}

#[tokio::test]
async fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 5).await;
    // A forger who rewrites the hash of event 3 still cannot make event 4 point at it.
    tamper(
        &db.path,
        "UPDATE audit_events SET hash = (SELECT hash FROM audit_events WHERE seq = 1) WHERE seq = 3",
    )
    .await;
    let report = store.verify_audit().await.unwrap();
    assert!(
        report.problems.contains(&AuditProblem::Modified { seq: 3 }),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.contains(&AuditProblem::Broken { seq: 4, after: 3 }),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_deleted_event_is_named() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 20).await;
    tamper(&db.path, "DELETE FROM audit_events WHERE seq = 17").await;
    let report = store.verify_audit().await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.events, 19);
    assert_eq!(
        report.problems,
        [
            AuditProblem::Gap { after: 16, next: 18 },
            AuditProblem::Broken { seq: 18, after: 16 }
        ]
    );
    let messages: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "event 17 is missing: it was deleted",
            "event 18 does not follow event 16: events were deleted or reordered"
        ]
    );
}

#[tokio::test]
async fn swapped_events_are_named() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 10).await;
    // Swap everything but the sequence numbers of events 4 and 5.
    tamper(
        &db.path,
        "CREATE TEMP TABLE t AS SELECT * FROM audit_events WHERE seq IN (4, 5);
         UPDATE audit_events SET (ts, event, prev_hash, hash) =
             (SELECT ts, event, prev_hash, hash FROM t WHERE t.seq = 9 - audit_events.seq)
         WHERE seq IN (4, 5);",
    )
    .await;
    let report = store.verify_audit().await.unwrap();
    for problem in [
        AuditProblem::Modified { seq: 4 },
        AuditProblem::Modified { seq: 5 },
        AuditProblem::Broken { seq: 4, after: 3 },
        AuditProblem::Broken { seq: 6, after: 5 },
    ] {
        assert!(
            report.problems.contains(&problem),
            "{problem:?} not in {:?}",
            report.problems
        );
    }
    assert!(report.problems.iter().all(|p| match p {
        AuditProblem::Modified { seq } | AuditProblem::Broken { seq, .. } => (4..=6).contains(seq),
        AuditProblem::Gap { .. } => false,
    }));
}

#[tokio::test]
async fn a_failed_batch_fails_its_callers_and_the_chain_recovers() {
    let db = Db::new();
    let store = db.open().await;
    append_n(&store, 4).await;
    let mut conn = raw(&db.path).await;
    sqlx::raw_sql(
        "CREATE TRIGGER fail_insert BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let results = futures_join(&store, 8).await;
    for result in results {
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("while appending to the audit log: "), "{err}");
        assert!(err.contains("disk on fire"), "{err}");
    }
    sqlx::raw_sql("DROP TRIGGER fail_insert")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.append(&event(5)).await.unwrap().seq, 5);
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events, 5);
}

async fn futures_join(store: &Store, n: usize) -> Vec<Result<portcullis_store::AppendReceipt, StoreError>> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append(&event(100 + i)).await })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---------- schema ----------

#[tokio::test]
async fn a_newer_schema_is_refused_with_a_clear_error() {
    let db = Db::new();
    drop(db.open().await);
    let mut conn = raw(&db.path).await;
    sqlx::query("UPDATE schema_version SET version = 99")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = Store::open(&db.url()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: portcullis_store::SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the store at `{}` has schema version 99, but this build knows only up to {}: upgrade \
             Portcullis, or restore a backup made by this version",
            db.path.display(),
            portcullis_store::SCHEMA_VERSION
        )
    );
}

#[tokio::test]
async fn other_url_schemes_are_refused_without_echoing_credentials() {
    let err = Store::open("postgres://admin:hunter2@db.internal/portcullis")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "unsupported store URL scheme `postgres`: this build supports `sqlite://PATH`"
    );
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
    append_n(&store, 3).await;
    assert!(store.verify_audit().await.unwrap().ok);
}

// ---------- agents ----------

#[tokio::test]
async fn agents_are_stored_by_token_hash() {
    let db = Db::new();
    let store = db.open().await;
    let bot = AgentId::new("triage-bot").unwrap();
    let hash = sha256_hex(b"token-1");
    store.add_agent(&bot, &hash).await.unwrap();

    let err = store.add_agent(&bot, &sha256_hex(b"token-2")).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(err.to_string(), "agent `triage-bot` already exists");

    let other = AgentId::new("other").unwrap();
    let err = store.add_agent(&other, &hash).await.unwrap_err();
    assert_eq!(err.to_string(), "an agent with the same token already exists");

    let err = store.add_agent(&other, "token-in-plain-text").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");

    assert_eq!(store.agent_for_token_hash(&hash).await.unwrap(), Some(bot.clone()));
    assert_eq!(store.agent_for_token_hash(&sha256_hex(b"nope")).await.unwrap(), None);
    let listed = store.list_agents().await.unwrap();
    assert_eq!(listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["triage-bot"]);

    assert!(store.remove_agent(&bot).await.unwrap());
    assert!(!store.remove_agent(&bot).await.unwrap());
    assert_eq!(store.agent_for_token_hash(&hash).await.unwrap(), None);
}

// ---------- secrets ----------

#[tokio::test]
async fn secrets_are_stored_sealed_and_listed_without_values() {
    let db = Db::new();
    let store = db.open().await;
    let key = MasterKey::from_bytes([9; 32]);
    let sealed = seal(&key, "github", b"ghp_supersecret").unwrap();
    store.put_secret(&sealed).await.unwrap();

    let fetched = store.get_secret("github").await.unwrap().unwrap();
    assert_eq!(fetched, sealed);
    assert_eq!(open(&key, &fetched).unwrap().expose_secret(), "ghp_supersecret");
    assert_eq!(store.get_secret("nope").await.unwrap(), None);

    let listed = store.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    let listed_json = serde_json::to_value(&listed).unwrap();
    assert_eq!(
        listed_json[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["name", "created_at", "updated_at"]
    );

    // The file holds no plaintext.
    let bytes = std::fs::read(&db.path).unwrap();
    let wal = std::fs::read(db.path.with_extension("db-wal")).unwrap_or_default();
    for hay in [&bytes, &wal] {
        assert!(!hay.windows(15).any(|w| w == b"ghp_supersecret"));
    }

    // Replacing keeps created_at and moves updated_at.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let resealed = seal(&key, "github", b"ghp_rotated").unwrap();
    store.put_secret(&resealed).await.unwrap();
    let after = store.list_secrets().await.unwrap();
    assert_eq!(after[0].created_at, listed[0].created_at);
    assert!(after[0].updated_at > listed[0].updated_at);
    let fetched = store.get_secret("github").await.unwrap().unwrap();
    assert_eq!(open(&key, &fetched).unwrap().expose_secret(), "ghp_rotated");

    assert!(store.remove_secret("github").await.unwrap());
    assert!(!store.remove_secret("github").await.unwrap());
    assert!(store.list_secrets().await.unwrap().is_empty());
}

// ---------- intents ----------

fn new_intent(id: u8, agent: &str, key: Option<&str>) -> NewIntent {
    NewIntent {
        id: IntentId::from_random([id; 16]),
        agent: AgentId::new(agent).unwrap(),
        action: ActionName::new("billing.refund").unwrap(),
        payload_sha256: sha256_hex(&[id]),
        idempotency_key: key.map(str::to_owned),
        status: "executing".into(),
        response: serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_begins_with_one_key_start_exactly_once() {
    let db = Db::new();
    let store = db.open().await;
    let handles: Vec<_> = (0..16u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.begin_intent(&new_intent(i, "bot", Some("refund-42"))).await })
        })
        .collect();
    let mut started = 0;
    let mut existing_ids = HashSet::new();
    for h in handles {
        match h.await.unwrap().unwrap() {
            Begin::Started => started += 1,
            Begin::Existing(record) => {
                assert_eq!(record.idempotency_key.as_deref(), Some("refund-42"));
                existing_ids.insert(record.id);
            }
        }
    }
    assert_eq!(started, 1);
    // Every loser saw the one winner.
    assert_eq!(existing_ids.len(), 1);
}

#[tokio::test]
async fn idempotency_keys_are_per_agent_and_optional() {
    let db = Db::new();
    let store = db.open().await;
    assert_eq!(
        store.begin_intent(&new_intent(1, "bot-a", Some("k"))).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin_intent(&new_intent(2, "bot-b", Some("k"))).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin_intent(&new_intent(3, "bot-a", None)).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin_intent(&new_intent(4, "bot-a", None)).await.unwrap(),
        Begin::Started
    );

    let Begin::Existing(record) = store.begin_intent(&new_intent(5, "bot-a", Some("k"))).await.unwrap() else {
        panic!("the key was already used");
    };
    assert_eq!(record.id, IntentId::from_random([1; 16]));
    assert_eq!(record.payload_sha256, sha256_hex(&[1]));

    let err = store.begin_intent(&new_intent(1, "bot-c", None)).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
}

#[tokio::test]
async fn finishing_an_intent_records_its_outcome() {
    let db = Db::new();
    let store = db.open().await;
    let new = new_intent(7, "bot", Some("k"));
    store.begin_intent(&new).await.unwrap();
    let begun = store.get_intent(&new.id).await.unwrap().unwrap();
    assert_eq!(begun.status, "executing");
    assert_eq!(begun.response, serde_json::Value::Null);

    let response = json!({"status": 201, "body": {"number": 12}});
    store.finish_intent(&new.id, "executed", &response).await.unwrap();
    let done = store.get_intent(&new.id).await.unwrap().unwrap();
    assert_eq!(done.status, "executed");
    assert_eq!(done.response, response);
    assert_eq!(done.created_at, begun.created_at);
    assert!(done.updated_at >= begun.updated_at);

    let missing = IntentId::from_random([99; 16]);
    assert_eq!(store.get_intent(&missing).await.unwrap(), None);
    let err = store.finish_intent(&missing, "executed", &response).await.unwrap_err();
    assert_eq!(err.to_string(), format!("intent `{missing}` does not exist"));
}
