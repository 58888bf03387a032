//! The hash-chained audit log: appends, reads, tamper detection, and several store
//! handles (separate gateway instances) extending one chain.

use portcullis_store::{AppendReceipt, AuditProblem, Backend, GENESIS_HASH, Store, StoreError};
use serde_json::json;

use crate::support::{TestDb, append_n, event};

/// Checks that `seqs` are exactly 1..=n and that the stored log is one linked, verified
/// chain of n events.
async fn assert_one_chain(store: &Store, mut seqs: Vec<i64>, n: i64) {
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n).collect::<Vec<i64>>(), "every seq once, none skipped");
    let stored = store.audit_events(0, 5000).await.unwrap();
    assert_eq!(i64::try_from(stored.len()).unwrap(), n);
    assert_eq!(stored[0].prev_hash, GENESIS_HASH);
    assert!(
        stored
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash)
    );
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events, u64::try_from(n).unwrap());
}

/// Spawns `tasks` tasks on each store, each appending `per_task` events in turn, and
/// returns every receipt's seq.
async fn append_concurrently(stores: &[Store], tasks: usize, per_task: usize) -> Vec<i64> {
    let mut handles = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..tasks {
            let store = store.clone();
            let first = (s * tasks + t) * per_task;
            handles.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..per_task {
                    seqs.push(store.append(&event(first + i)).await.unwrap().seq);
                }
                seqs
            }));
        }
    }
    let mut seqs = Vec::new();
    for handle in handles {
        seqs.extend(handle.await.unwrap());
    }
    seqs
}

async fn a_thousand_concurrent_appends_form_one_contiguous_verified_chain(db: TestDb) {
    let store = db.open().await;
    let seqs = append_concurrently(std::slice::from_ref(&store), 50, 20).await;
    assert_one_chain(&store, seqs, 1000).await;
}
on_both!(a_thousand_concurrent_appends_form_one_contiguous_verified_chain);

/// Each handle has its own pool and audit writer, so their batches interleave only
/// through the database's own locking (SQLite's write lock, PostgreSQL's advisory lock).
async fn separate_store_handles_extend_one_chain(db: TestDb) {
    let handles = match db.backend() {
        Backend::Sqlite => 2,
        Backend::Postgres => 4,
    };
    let mut stores = Vec::new();
    for _ in 0..handles {
        stores.push(db.open().await);
    }
    let seqs = append_concurrently(&stores, 10, 25).await;
    let total = i64::try_from(handles * 10 * 25).unwrap();
    assert_one_chain(&stores[0], seqs, total).await;
    // Every handle sees the same head and continues it.
    for (i, store) in stores.iter().enumerate() {
        let receipt = store.append(&event(9000 + i)).await.unwrap();
        assert_eq!(receipt.seq, total + 1 + i64::try_from(i).unwrap());
    }
    assert!(stores[handles - 1].verify_audit().await.unwrap().ok);
}
on_both!(separate_store_handles_extend_one_chain);

async fn reading_pages_and_the_tail(db: TestDb) {
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
on_both!(reading_pages_and_the_tail);

/// What `audit verify` and `audit export` size and move their progress bars with: the log's
/// length from one lookup, and the count after each page of the verification.
async fn the_length_and_verification_progress_page_by_page(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.audit_len().await.unwrap(), 0);
    let mut calls = Vec::new();
    assert!(store.verify_audit_with(|n| calls.push(n)).await.unwrap().ok);
    assert_eq!(calls, [0], "an empty log is one empty page");
    let seqs = append_concurrently(std::slice::from_ref(&store), 25, 100).await;
    assert_eq!(seqs.len(), 2500);
    assert_eq!(store.audit_len().await.unwrap(), 2500);
    let mut calls = Vec::new();
    let report = store.verify_audit_with(|n| calls.push(n)).await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(calls, [1000, 2000, 2500], "one call per page of 1000");
    assert_eq!(
        report,
        store.verify_audit().await.unwrap(),
        "the same check without progress"
    );
}
on_both!(the_length_and_verification_progress_page_by_page);

async fn the_chain_continues_across_reopening(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 3).await;
    drop(store);
    let store = db.open().await;
    assert_eq!(store.append(&event(4)).await.unwrap().seq, 4);
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok);
    assert_eq!(report.events, 4);
}
on_both!(the_chain_continues_across_reopening);

async fn update_and_delete_are_refused_by_triggers(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 2).await;
    let mut raw = db.raw().await;
    for sql in [
        "UPDATE audit_events SET event = '{}' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
    ] {
        let err = raw.exec(sql).await.unwrap_err();
        assert!(err.to_string().contains("audit log is append-only"), "{err}");
    }
    raw.close().await;
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events, 2);
}
on_both!(update_and_delete_are_refused_by_triggers);

/// Row triggers don't fire on TRUNCATE; PostgreSQL has a statement trigger for it (SQLite
/// has no TRUNCATE).
#[tokio::test]
async fn postgres_refuses_truncate() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.open().await;
    append_n(&store, 3).await;
    let mut raw = db.raw().await;
    let err = raw.exec("TRUNCATE audit_events").await.unwrap_err();
    assert!(err.to_string().contains("audit log is append-only"), "{err}");
    raw.close().await;
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events, 3);
}

async fn an_edited_event_is_named(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 20).await;
    db.tamper(r#"UPDATE audit_events SET event = replace(event, '"n":7', '"n":8') WHERE seq = 7"#)
        .await;
    assert_eq!(
        store.audit_events(6, 1).await.unwrap()[0].event["detail"],
        json!({"n": 8})
    );
    let report = store.verify_audit().await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.problems, [AuditProblem::Modified { seq: 7 }]);
    assert_eq!(report.problems[0].to_string(), "event 7 was modified");
}
on_both!(an_edited_event_is_named);

async fn an_edit_with_a_recomputed_hash_breaks_the_next_link(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 5).await;
    // A forger who rewrites the hash of event 3 still cannot make event 4 point at it.
    db.tamper("UPDATE audit_events SET hash = (SELECT hash FROM audit_events WHERE seq = 1) WHERE seq = 3")
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
on_both!(an_edit_with_a_recomputed_hash_breaks_the_next_link);

async fn a_deleted_event_is_named(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 20).await;
    db.tamper("DELETE FROM audit_events WHERE seq = 17").await;
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
on_both!(a_deleted_event_is_named);

async fn swapped_events_are_named(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 10).await;
    // Swap everything but the sequence numbers of events 4 and 5 (the same SQL runs on
    // both backends).
    db.tamper(
        "CREATE TEMP TABLE t AS SELECT * FROM audit_events WHERE seq IN (4, 5);
         UPDATE audit_events SET (ts, event, prev_hash, hash) =
             (SELECT ts, event, prev_hash, hash FROM t WHERE t.seq = 9 - audit_events.seq)
         WHERE seq IN (4, 5);",
    )
    .await;
    let page = store.audit_events(3, 2).await.unwrap();
    assert_eq!(
        (&page[0].event["detail"], &page[1].event["detail"]),
        (&json!({"n": 5}), &json!({"n": 4}))
    );
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
on_both!(swapped_events_are_named);

async fn a_failed_batch_fails_its_callers_and_the_chain_recovers(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 4).await;
    let mut raw = db.raw().await;
    let (fail, unfail) = match db.backend() {
        Backend::Sqlite => (
            "CREATE TRIGGER fail_insert BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
            "DROP TRIGGER fail_insert",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'disk on fire'; END; $$; \
             CREATE TRIGGER fail_insert BEFORE INSERT ON audit_events \
             FOR EACH ROW EXECUTE FUNCTION fail_insert();",
            "DROP TRIGGER fail_insert ON audit_events",
        ),
    };
    raw.exec(fail).await.unwrap();
    for result in append_each(&store, 8).await {
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("while appending to the audit log: "), "{err}");
        assert!(err.contains("disk on fire"), "{err}");
    }
    raw.exec(unfail).await.unwrap();
    raw.close().await;
    assert_eq!(store.append(&event(5)).await.unwrap().seq, 5);
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events, 5);
}
on_both!(a_failed_batch_fails_its_callers_and_the_chain_recovers);

/// `n` concurrent appends, each with its own result.
async fn append_each(store: &Store, n: usize) -> Vec<Result<AppendReceipt, StoreError>> {
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

async fn an_intents_events_are_found_by_its_id_in_log_order(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 300).await;
    // `event(n)` gives intent ids by `n % 256`: 7 and 263 belong to one intent.
    let mine = event(7).intent_id;
    let found = store.audit_events_of(&mine).await.unwrap();
    assert_eq!(found, vec![event(7), event(263)]);
    let none = portcullis_core::IntentId::from_random([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    assert!(store.audit_events_of(&none).await.unwrap().is_empty());
}
on_both!(an_intents_events_are_found_by_its_id_in_log_order);

/// During a rolling upgrade a gateway of schema version 6 or older, still running after
/// `portcullis migrate`, appends events with no `intent_id` column. Crash recovery must still
/// find them: missing an intent's `decided` event would make it free the idempotency key of
/// an intent that may have run, and a retry would run it again.
async fn an_intents_events_written_by_an_older_instance_are_still_found(db: TestDb) {
    let store = db.open().await;
    append_n(&store, 300).await;
    let mine = event(7).intent_id;
    // Another intent whose id differs from this one only where `LIKE` sees a wildcard.
    let mut twin = event(7);
    twin.intent_id = portcullis_core::IntentId::new(mine.as_str().replacen('_', "-", 1)).unwrap();
    store.append(&twin).await.unwrap();
    // What an older instance writes: the column left NULL, here on every row.
    db.tamper("UPDATE audit_events SET intent_id = NULL").await;
    assert_eq!(store.audit_events_of(&mine).await.unwrap(), vec![event(7), event(263)]);
    assert_eq!(store.audit_events_of(&twin.intent_id).await.unwrap(), vec![twin]);
    // Mixed: the older instance wrote the decision, a newer one the outcome.
    let mut outcome = event(7);
    outcome.kind = portcullis_core::AuditKind::Outcome;
    store.append(&outcome).await.unwrap();
    assert_eq!(
        store.audit_events_of(&mine).await.unwrap(),
        vec![event(7), event(263), outcome]
    );
    // An id that is a prefix of another's matches nothing.
    let prefix = portcullis_core::IntentId::new(&mine.as_str()[..10]).unwrap();
    assert!(store.audit_events_of(&prefix).await.unwrap().is_empty());
}
on_both!(an_intents_events_written_by_an_older_instance_are_still_found);
