//! Intents and idempotency keys.

use std::collections::HashSet;

use portcullis_core::{ActionName, AgentId, IntentId, sha256_hex};
use portcullis_store::{Begin, EXECUTING_INTENTS, NewIntent, StoreError};
use serde_json::json;
use sqlx::AssertSqlSafe;

use crate::support::{Raw, TestDb};

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

/// Two store handles, as two gateway instances behind a load balancer would have.
async fn concurrent_begins_with_one_key_start_exactly_once(db: TestDb) {
    let stores = [db.open().await, db.open().await];
    let handles: Vec<_> = (0..16u8)
        .map(|i| {
            let store = stores[usize::from(i % 2)].clone();
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
on_both!(concurrent_begins_with_one_key_start_exactly_once);

async fn idempotency_keys_are_per_agent_and_optional(db: TestDb) {
    let store = db.open().await;
    for (id, agent, key) in [
        (1, "bot-a", Some("k")),
        (2, "bot-b", Some("k")),
        (3, "bot-a", None),
        (4, "bot-a", None),
    ] {
        assert_eq!(
            store.begin_intent(&new_intent(id, agent, key)).await.unwrap(),
            Begin::Started
        );
    }

    let begun = store.begin_intent(&new_intent(5, "bot-a", Some("k"))).await.unwrap();
    let Begin::Existing(record) = begun else {
        panic!("the key was already used: {begun:?}");
    };
    assert_eq!(record.id, IntentId::from_random([1; 16]));
    assert_eq!(record.payload_sha256, sha256_hex(&[1]));

    let err = store.begin_intent(&new_intent(1, "bot-c", None)).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
}
on_both!(idempotency_keys_are_per_agent_and_optional);

/// On SQLite intent writes share the audit writer's batches: a duplicate id refused in a
/// batch fails only its own caller; the appends and the other intents of the batch commit.
async fn a_refused_intent_fails_alone_in_a_batch_shared_with_appends(db: TestDb) {
    let store = db.open().await;
    store.begin_intent(&new_intent(1, "bot", None)).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..64u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match n % 3 {
                0 => store.begin_intent(&new_intent(1, "bot", None)).await.map(|_| "dup"),
                1 => store
                    .begin_intent(&new_intent(n + 2, "bot", None))
                    .await
                    .map(|_| "begun"),
                _ => store
                    .append(&crate::support::event(usize::from(n)))
                    .await
                    .map(|_| "appended"),
            }
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    for (n, outcome) in outcomes.iter().enumerate() {
        match n % 3 {
            0 => assert!(matches!(outcome, Err(StoreError::AlreadyExists { .. })), "{outcome:?}"),
            1 => assert_eq!(outcome.as_ref().ok(), Some(&"begun")),
            _ => assert_eq!(outcome.as_ref().ok(), Some(&"appended")),
        }
    }
    for n in (1..64u8).step_by(3) {
        assert!(
            store
                .get_intent(&new_intent(n + 2, "bot", None).id)
                .await
                .unwrap()
                .is_some()
        );
    }
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events, 21);
}
on_both!(a_refused_intent_fails_alone_in_a_batch_shared_with_appends);

async fn finishing_an_intent_records_its_outcome(db: TestDb) {
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
on_both!(finishing_an_intent_records_its_outcome);

fn decided_event(intent: &NewIntent) -> portcullis_core::AuditEvent {
    portcullis_core::AuditEvent {
        actor: None,
        kind: portcullis_core::AuditKind::Decided,
        intent_id: intent.id.clone(),
        agent: intent.agent.clone(),
        action: Some(intent.action.clone()),
        payload_sha256: Some(intent.payload_sha256.clone()),
        decision: None,
        dry_run: false,
        detail: json!({}),
    }
}

/// An intent's first record and its `decided` event are written together, or neither when
/// the key is taken; racing retries on two instances still start exactly once, and the
/// chain holds exactly the winners' events.
async fn an_intent_and_its_decision_are_recorded_together_or_not_at_all(db: TestDb) {
    use portcullis_store::Began;
    let stores = [db.open().await, db.open().await];
    let handles: Vec<_> = (0..16u8)
        .map(|i| {
            let store = stores[usize::from(i % 2)].clone();
            tokio::spawn(async move {
                let new = new_intent(i, "bot", Some("refund-7"));
                let event = decided_event(&new);
                (new.id.clone(), store.begin_decided_intent(&new, &event).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut held_by = HashSet::new();
    for h in handles {
        match h.await.unwrap() {
            (id, Ok(Began::Decided(receipt))) => {
                assert!(receipt.seq >= 1);
                winners.push(id);
            }
            (_, Ok(Began::Existing(record))) => {
                held_by.insert(record.id);
            }
            (_, other) => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one retry starts");
    assert_eq!(held_by.len(), 1);
    assert!(held_by.contains(&winners[0]));
    // A key-less intent always starts.
    let free = new_intent(100, "bot", None);
    assert!(matches!(
        stores[0]
            .begin_decided_intent(&free, &decided_event(&free))
            .await
            .unwrap(),
        Began::Decided(_)
    ));
    let store = &stores[0];
    for id in [&winners[0], &free.id] {
        assert_eq!(store.audit_events_of(id).await.unwrap().len(), 1, "{id}");
        assert!(store.get_intent(id).await.unwrap().is_some());
    }
    // The losers left no event and no record.
    for i in 0..16u8 {
        let id = new_intent(i, "bot", None).id;
        if id != winners[0] {
            assert!(store.audit_events_of(&id).await.unwrap().is_empty());
            assert!(store.get_intent(&id).await.unwrap().is_none());
        }
    }
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok && report.events == 2, "{report:?}");
}
on_both!(an_intent_and_its_decision_are_recorded_together_or_not_at_all);

/// The outcome event and the final state, queued back to back, both land.
async fn an_outcome_and_the_final_state_are_recorded_in_order(db: TestDb) {
    let store = db.open().await;
    let new = new_intent(1, "bot", Some("k"));
    assert_eq!(store.begin_intent(&new).await.unwrap(), Begin::Started);
    let mut outcome = decided_event(&new);
    outcome.kind = portcullis_core::AuditKind::Outcome;
    let (appended, finished) = store
        .append_then_finish_intent(&outcome, "executed", r#"{"status": "executed"}"#)
        .await;
    assert_eq!(appended.unwrap().seq, 1);
    finished.unwrap();
    let record = store.get_intent(&new.id).await.unwrap().unwrap();
    assert_eq!(record.status, "executed");
    assert_eq!(record.response, json!({"status": "executed"}));
    // An intent that doesn't exist: the event is still appended, the update finds nothing.
    let ghost = new_intent(2, "bot", None);
    let mut outcome = decided_event(&ghost);
    outcome.kind = portcullis_core::AuditKind::Outcome;
    let (appended, finished) = store.append_then_finish_intent(&outcome, "executed", "{}").await;
    assert_eq!(appended.unwrap().seq, 2);
    assert!(matches!(finished, Err(StoreError::NotFound { .. })), "{finished:?}");
}
on_both!(an_outcome_and_the_final_state_are_recorded_in_order);

/// A final state given as JSON text is stored as that object; text that isn't an object's
/// is refused and changes nothing.
async fn a_final_state_given_as_text_must_be_an_object(db: TestDb) {
    let store = db.open().await;
    let new = new_intent(1, "bot", None);
    assert_eq!(store.begin_intent(&new).await.unwrap(), Begin::Started);
    for bad in ["[1]", "\"executed\"", "", "null"] {
        let refused = store.finish_intent_json(&new.id, "executed", bad).await;
        assert!(matches!(refused, Err(StoreError::Encode(_))), "{bad}: {refused:?}");
        let mut outcome = decided_event(&new);
        outcome.kind = portcullis_core::AuditKind::Outcome;
        let (_, finished) = store.append_then_finish_intent(&outcome, "executed", bad).await;
        assert!(matches!(finished, Err(StoreError::Encode(_))), "{bad}: {finished:?}");
    }
    assert_eq!(store.get_intent(&new.id).await.unwrap().unwrap().status, "executing");
    store
        .finish_intent_json(&new.id, "executed", r#"{"id": "x", "status": "executed"}"#)
        .await
        .unwrap();
    let record = store.get_intent(&new.id).await.unwrap().unwrap();
    assert_eq!(record.status, "executed");
    assert_eq!(record.response, json!({"id": "x", "status": "executed"}));
}
on_both!(a_final_state_given_as_text_must_be_an_object);

/// An interrupted intent found by every surviving instance at once is settled once: of
/// many concurrent settles, on two store handles (two instances), exactly one moves it out
/// of `executing` and appends its `outcome` event; the others write nothing.
async fn concurrent_settles_of_one_intent_write_exactly_one_outcome(db: TestDb) {
    const SETTLERS: usize = 12;
    let stores = [db.open().await, db.open().await];
    let new = new_intent(1, "bot", Some("nightly"));
    let decided = decided_event(&new);
    assert!(matches!(
        stores[0].begin_decided_intent(&new, &decided).await.unwrap(),
        portcullis_store::Began::Decided(_)
    ));
    let mut outcome = decided_event(&new);
    outcome.kind = portcullis_core::AuditKind::Outcome;
    outcome.detail = json!({"status": "outcome_unknown"});
    let handles: Vec<_> = (0..SETTLERS)
        .map(|i| {
            let store = stores[i % 2].clone();
            let outcome = outcome.clone();
            tokio::spawn(async move {
                store
                    .settle_intent(&outcome, "outcome_unknown", &json!({"settled_by": i}))
                    .await
            })
        })
        .collect();
    let mut settled_by = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if h.await.unwrap().unwrap().is_some() {
            settled_by.push(i);
        }
    }
    assert_eq!(settled_by.len(), 1, "exactly one settle took: {settled_by:?}");
    let record = stores[1].get_intent(&new.id).await.unwrap().unwrap();
    assert_eq!(record.status, "outcome_unknown");
    assert_eq!(
        record.response,
        json!({"settled_by": settled_by[0]}),
        "the winner's response"
    );
    let events = stores[1].audit_events_of(&new.id).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [portcullis_core::AuditKind::Decided, portcullis_core::AuditKind::Outcome],
        "one decision, one outcome"
    );
    // Settled is final: a later settle (a survivor whose list was stale) writes nothing.
    assert!(
        stores[0]
            .settle_intent(&outcome, "outcome_unknown", &json!({}))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(stores[0].audit_events_of(&new.id).await.unwrap().len(), 2);
    let report = stores[0].verify_audit().await.unwrap();
    assert!(report.ok && report.events == 2, "{report:?}");
}
on_both!(concurrent_settles_of_one_intent_write_exactly_one_outcome);

/// A settle of an intent that already left `executing` (its own instance finished it) writes
/// nothing and keeps the stored result.
async fn a_settle_never_replaces_a_finished_intent(db: TestDb) {
    let store = db.open().await;
    let new = new_intent(2, "bot", None);
    assert_eq!(store.begin_intent(&new).await.unwrap(), Begin::Started);
    store
        .finish_intent(&new.id, "executed", &json!({"ok": true}))
        .await
        .unwrap();
    let mut outcome = decided_event(&new);
    outcome.kind = portcullis_core::AuditKind::Outcome;
    assert!(
        store
            .settle_intent(&outcome, "outcome_unknown", &json!({}))
            .await
            .unwrap()
            .is_none()
    );
    let record = store.get_intent(&new.id).await.unwrap().unwrap();
    assert_eq!(
        (record.status.as_str(), record.response),
        ("executed", json!({"ok": true}))
    );
    assert!(store.audit_events_of(&new.id).await.unwrap().is_empty());
    assert_eq!(store.audit_len().await.unwrap(), 0);
}
on_both!(a_settle_never_replaces_a_finished_intent);

/// A conditional move of an intent's status: of concurrent moves out of one status (a
/// start-up failing a claimed hold's intent, the claiming instance marking it `executing`),
/// exactly one takes.
async fn concurrent_conditional_moves_take_once(db: TestDb) {
    let stores = [db.open().await, db.open().await];
    let mut new = new_intent(3, "bot", None);
    new.status = "pending_approval".into();
    assert_eq!(stores[0].begin_intent(&new).await.unwrap(), Begin::Started);
    let handles: Vec<_> = (0..10usize)
        .map(|i| {
            let store = stores[i % 2].clone();
            let id = new.id.clone();
            let to = if i % 2 == 0 { "failed" } else { "executing" };
            tokio::spawn(async move {
                let moved = store
                    .finish_intent_if(&id, "pending_approval", to, &json!({"by": i}))
                    .await;
                (i, to, moved.unwrap())
            })
        })
        .collect();
    let mut moved = Vec::new();
    for h in handles {
        let (i, to, took) = h.await.unwrap();
        if took {
            moved.push((i, to));
        }
    }
    assert_eq!(moved.len(), 1, "{moved:?}");
    let record = stores[1].get_intent(&new.id).await.unwrap().unwrap();
    assert_eq!(record.status, moved[0].1);
    assert_eq!(record.response, json!({"by": moved[0].0}));
}
on_both!(concurrent_conditional_moves_take_once);

/// Only intents executing now are listed (the recovery loop's query), oldest first, and the
/// query is answered from the partial index `intents_executing`, not by a scan of every
/// intent ever recorded.
async fn executing_intents_are_listed_from_their_index(db: TestDb) {
    let store = db.open().await;
    let mut ids = Vec::new();
    for (i, status) in [
        (10u8, "executing"),
        (11, "pending_approval"),
        (12, "executing"),
        (13, "denied"),
        (14, "executing"),
    ] {
        let mut new = new_intent(i, "bot", None);
        new.status = status.into();
        assert_eq!(store.begin_intent(&new).await.unwrap(), Begin::Started);
        ids.push(new.id);
    }
    // One leaves `executing`, one enters it.
    store
        .finish_intent(&ids[2], "executed", &json!({"done": true}))
        .await
        .unwrap();
    assert!(
        store
            .finish_intent_if(&ids[1], "pending_approval", "executing", &json!({}))
            .await
            .unwrap()
    );

    let listed = store.executing_intents().await.unwrap();
    let got: HashSet<_> = listed.iter().map(|r| r.id.clone()).collect();
    assert_eq!(got, HashSet::from([ids[0].clone(), ids[1].clone(), ids[4].clone()]));
    assert_eq!(listed.len(), 3);
    let order: Vec<_> = listed
        .iter()
        .map(|r| (r.created_at.clone(), r.id.to_string()))
        .collect();
    assert!(order.is_sorted(), "oldest first: {order:?}");
    assert!(listed.iter().all(|r| r.status == "executing"));

    let mut raw = db.raw().await;
    let plan = match &mut raw {
        Raw::Sqlite(conn) => sqlx::query_as::<_, (i64, i64, i64, String)>(AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {EXECUTING_INTENTS}"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect(),
        Raw::Postgres(conn) => {
            // With sequential scans priced out, the plan names the index if the query can
            // use it at all (its condition must imply the index's).
            sqlx::raw_sql("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query_scalar::<_, String>(AssertSqlSafe(format!("EXPLAIN {EXECUTING_INTENTS}")))
                .fetch_all(&mut *conn)
                .await
                .unwrap()
        }
    };
    raw.close().await;
    assert!(plan.iter().any(|line| line.contains("intents_executing")), "{plan:?}");
}
on_both!(executing_intents_are_listed_from_their_index);
