//! Held intents and approval votes: quorum by distinct people, payload binding, final
//! denials, expiry, and the one-time claim to execute.

use portcullis_core::{ActionName, AgentId, IntentId, sha256_hex};
use portcullis_store::{NewHold, NewIntent, NewVote, Store, VoteOutcome};
use serde_json::json;

use crate::support::TestDb;

/// "Now" for every hold in these tests, Unix seconds.
const NOW: i64 = 1_700_000_000;

/// When the holds made by [`hold`] expire, unless a test says otherwise.
const EXPIRES: i64 = NOW + 3600;

fn payload(n: u8) -> String {
    sha256_hex(&[n])
}

fn new_hold(n: u8, required: u32, expires_unix: i64) -> NewHold {
    NewHold {
        intent_id: IntentId::from_random([n; 16]),
        agent: "billing-bot".into(),
        action: "billing.refund".into(),
        payload_sha256: payload(n),
        input: json!({"amount": n}).to_string(),
        decision: json!({"effect": "hold", "reasons": ["refunds need finance"]}),
        approver_group: Some("finance".into()),
        required,
        expires_at: "2023-11-14T23:13:20Z".into(),
        expires_unix,
    }
}

/// Records intent `n` and holds it for `required` approvals.
async fn hold(store: &Store, n: u8, required: u32, expires_unix: i64) -> IntentId {
    let hold = new_hold(n, required, expires_unix);
    store
        .begin_intent(&NewIntent {
            id: hold.intent_id.clone(),
            agent: AgentId::new("billing-bot").unwrap(),
            action: ActionName::new("billing.refund").unwrap(),
            payload_sha256: payload(n),
            idempotency_key: None,
            status: "pending_approval".into(),
            response: serde_json::Value::Null,
        })
        .await
        .unwrap();
    store.put_hold(&hold).await.unwrap();
    hold.intent_id
}

/// Claims an approved hold for execution, marking its intent `executing`.
async fn claim(store: &Store, id: &IntentId) -> bool {
    store
        .claim_execution(
            id,
            "pending_approval",
            "executing",
            &serde_json::json!({"status": "executing"}),
        )
        .await
        .unwrap()
}

async fn vote(store: &Store, id: &IntentId, approver: &str, approve: bool, payload_sha256: &str) -> VoteOutcome {
    vote_at(store, id, approver, approve, payload_sha256, NOW).await
}

async fn vote_at(
    store: &Store,
    id: &IntentId,
    approver: &str,
    approve: bool,
    payload_sha256: &str,
    now_unix: i64,
) -> VoteOutcome {
    store
        .vote(&NewVote {
            intent_id: id,
            approver,
            approve,
            reason: "checked the ticket",
            payload_sha256,
            now_unix,
        })
        .await
        .unwrap()
}

async fn state(store: &Store, id: &IntentId) -> String {
    store.get_hold(id).await.unwrap().unwrap().state
}

async fn a_hold_is_stored_as_given_and_needs_its_intent(db: TestDb) {
    let store = db.open().await;
    let id = hold(&store, 1, 2, EXPIRES).await;
    let stored = store.get_hold(&id).await.unwrap().unwrap();
    assert_eq!(stored.intent_id, id.as_str());
    assert_eq!(stored.state, "pending");
    assert_eq!(stored.input, json!({"amount": 1}));
    assert_eq!(stored.decision["reasons"], json!(["refunds need finance"]));
    assert_eq!(stored.approver_group.as_deref(), Some("finance"));
    assert_eq!((stored.required, stored.expires_unix), (2, EXPIRES));
    assert_eq!(stored.decided_at, None);
    assert!(stored.votes.is_empty());
    assert_eq!(store.list_holds(&["pending"], 10).await.unwrap().len(), 1);
    assert!(store.list_holds(&["approved"], 10).await.unwrap().is_empty());

    // The foreign key to `intents` is enforced on both backends.
    store.put_hold(&new_hold(2, 1, EXPIRES)).await.unwrap_err();
    assert!(store.get_hold(&IntentId::from_random([2; 16])).await.unwrap().is_none());
}
on_both!(a_hold_is_stored_as_given_and_needs_its_intent);

async fn a_quorum_needs_distinct_people(db: TestDb) {
    let store = db.open().await;
    let id = hold(&store, 1, 2, EXPIRES).await;
    let sha = payload(1);
    assert_eq!(
        vote(&store, &id, "lena", true, &sha).await,
        VoteOutcome::Recorded { have: 1, need: 2 }
    );
    assert_eq!(vote(&store, &id, "lena", true, &sha).await, VoteOutcome::AlreadyVoted);
    assert_eq!(state(&store, &id).await, "pending");
    assert_eq!(
        vote(&store, &id, "omar", true, &sha).await,
        VoteOutcome::Approved(vec!["lena".into(), "omar".into()])
    );
    let approved = store.get_hold(&id).await.unwrap().unwrap();
    assert_eq!(approved.state, "approved");
    assert!(approved.decided_at.is_some());
    assert_eq!(
        approved.votes.iter().map(|v| v.approver.as_str()).collect::<Vec<_>>(),
        ["lena", "omar"]
    );
    assert!(
        approved
            .votes
            .iter()
            .all(|v| v.verdict == "approve" && v.payload_sha256 == sha)
    );
    assert_eq!(
        vote(&store, &id, "nora", true, &sha).await,
        VoteOutcome::NotPending("approved".into())
    );
    assert_eq!(store.holds_in_state("approved").await.unwrap().len(), 1);
}
on_both!(a_quorum_needs_distinct_people);

async fn a_vote_for_another_payload_is_refused(db: TestDb) {
    let store = db.open().await;
    let id = hold(&store, 1, 1, EXPIRES).await;
    assert_eq!(
        vote(&store, &id, "lena", true, &payload(2)).await,
        VoteOutcome::PayloadMismatch
    );
    let after = store.get_hold(&id).await.unwrap().unwrap();
    assert_eq!(after.state, "pending");
    assert!(after.votes.is_empty(), "{:?}", after.votes);
    assert_eq!(
        vote(&store, &id, "lena", true, &payload(1)).await,
        VoteOutcome::Approved(vec!["lena".into()])
    );
}
on_both!(a_vote_for_another_payload_is_refused);

async fn a_denial_is_final(db: TestDb) {
    let store = db.open().await;
    let id = hold(&store, 1, 2, EXPIRES).await;
    let sha = payload(1);
    assert_eq!(
        vote(&store, &id, "lena", true, &sha).await,
        VoteOutcome::Recorded { have: 1, need: 2 }
    );
    assert_eq!(vote(&store, &id, "omar", false, &sha).await, VoteOutcome::Denied);
    assert_eq!(state(&store, &id).await, "denied");
    assert_eq!(
        vote(&store, &id, "nora", true, &sha).await,
        VoteOutcome::NotPending("denied".into())
    );
    assert!(!claim(&store, &id).await);
}
on_both!(a_denial_is_final);

async fn an_expired_hold_cannot_be_approved(db: TestDb) {
    let store = db.open().await;
    let id = hold(&store, 1, 1, EXPIRES).await;
    let sha = payload(1);
    assert_eq!(
        vote_at(&store, &id, "lena", true, &sha, EXPIRES).await,
        VoteOutcome::Expired
    );
    let expired = store.get_hold(&id).await.unwrap().unwrap();
    assert_eq!(expired.state, "expired");
    assert!(expired.votes.is_empty());
    assert_eq!(
        vote(&store, &id, "lena", true, &sha).await,
        VoteOutcome::NotPending("expired".into())
    );
    let missing = IntentId::from_random([9; 16]);
    assert_eq!(vote(&store, &missing, "lena", true, &sha).await, VoteOutcome::NotFound);
}
on_both!(an_expired_hold_cannot_be_approved);

/// Sixteen workers on two gateway instances race to execute one approved hold.
async fn an_approved_hold_is_claimed_for_execution_exactly_once(db: TestDb) {
    let stores = [db.open().await, db.open().await];
    let id = hold(&stores[0], 1, 1, EXPIRES).await;
    assert_eq!(
        vote(&stores[1], &id, "lena", true, &payload(1)).await,
        VoteOutcome::Approved(vec!["lena".into()])
    );
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let claims: Vec<_> = (0..16)
        .map(|i| {
            let (store, id, barrier) = (stores[i % 2].clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                claim(&store, &id).await
            })
        })
        .collect();
    let mut won = 0;
    for claim in claims {
        won += usize::from(claim.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(state(&stores[0], &id).await, "executing");
    let intent = stores[1].get_intent(&id).await.unwrap().unwrap();
    assert_eq!(
        intent.status, "executing",
        "the claim marks the intent in the same transaction"
    );
    stores[1].finish_hold(&id, "executed").await.unwrap();
    assert_eq!(state(&stores[0], &id).await, "executed");
    assert!(!claim(&stores[0], &id).await);
}
on_both!(an_approved_hold_is_claimed_for_execution_exactly_once);

/// A hold approved while its intent has left `pending_approval` (failed by an earlier
/// build's recovery) is never claimed: the claim fails the hold instead, in one transaction.
async fn a_hold_whose_intent_moved_on_is_failed_not_claimed(db: TestDb) {
    let store = db.open().await;
    let id = hold(&store, 1, 1, EXPIRES).await;
    vote(&store, &id, "lena", true, &payload(1)).await;
    assert!(
        store
            .finish_intent_if(
                &id,
                "pending_approval",
                "failed",
                &serde_json::json!({"status": "failed"})
            )
            .await
            .unwrap()
    );
    assert!(!claim(&store, &id).await);
    assert_eq!(state(&store, &id).await, "failed");
    assert_eq!(store.get_intent(&id).await.unwrap().unwrap().status, "failed");
    assert!(!claim(&store, &id).await);
}
on_both!(a_hold_whose_intent_moved_on_is_failed_not_claimed);

async fn a_retracted_vote_returns_the_hold_to_pending(db: TestDb) {
    let store = db.open().await;
    let sha = payload(1);
    let id = hold(&store, 1, 2, EXPIRES).await;
    vote(&store, &id, "lena", true, &sha).await;
    assert!(matches!(
        vote(&store, &id, "omar", true, &sha).await,
        VoteOutcome::Approved(_)
    ));
    store.retract_vote(&id, "omar").await.unwrap();
    let pending = store.get_hold(&id).await.unwrap().unwrap();
    assert_eq!(pending.state, "pending");
    assert_eq!(pending.decided_at, None);
    assert_eq!(
        pending.votes.iter().map(|v| v.approver.as_str()).collect::<Vec<_>>(),
        ["lena"]
    );
    // The retracted approver may vote again, and the quorum is reached again.
    assert_eq!(
        vote(&store, &id, "omar", true, &sha).await,
        VoteOutcome::Approved(vec!["lena".into(), "omar".into()])
    );

    // A retracted denial is no longer final.
    let denied = hold(&store, 2, 1, EXPIRES).await;
    assert_eq!(
        vote(&store, &denied, "lena", false, &payload(2)).await,
        VoteOutcome::Denied
    );
    store.retract_vote(&denied, "lena").await.unwrap();
    assert_eq!(state(&store, &denied).await, "pending");
    assert!(matches!(
        vote(&store, &denied, "omar", true, &payload(2)).await,
        VoteOutcome::Approved(_)
    ));
}
on_both!(a_retracted_vote_returns_the_hold_to_pending);

async fn due_pending_holds_expire_and_are_returned(db: TestDb) {
    let store = db.open().await;
    let soon = hold(&store, 1, 1, NOW + 10).await;
    let later = hold(&store, 2, 1, NOW + 100).await;
    let approved = hold(&store, 3, 1, NOW + 10).await;
    vote(&store, &approved, "lena", true, &payload(3)).await;

    assert!(store.expire_due(NOW + 9).await.unwrap().is_empty());
    let expired = store.expire_due(NOW + 50).await.unwrap();
    assert_eq!(
        expired.iter().map(|h| h.intent_id.as_str()).collect::<Vec<_>>(),
        [soon.as_str()]
    );
    assert_eq!(expired[0].state, "expired");
    assert!(expired[0].decided_at.is_some());
    assert_eq!(state(&store, &soon).await, "expired");
    assert_eq!(state(&store, &later).await, "pending");
    assert_eq!(state(&store, &approved).await, "approved");
    assert!(store.expire_due(NOW + 50).await.unwrap().is_empty());
    assert_eq!(store.expire_due(NOW + 100).await.unwrap().len(), 1);
}
on_both!(due_pending_holds_expire_and_are_returned);

async fn listing_by_state_finds_older_holds_behind_newer_ones(db: TestDb) {
    let store = db.open().await;
    let old = hold(&store, 1, 1, EXPIRES).await;
    // Five newer holds, all approved: a listing that filtered after a global limit would
    // see only these.
    for n in 2..=6 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let id = hold(&store, n, 1, EXPIRES).await;
        assert!(matches!(
            vote(&store, &id, "lena", true, &payload(n)).await,
            VoteOutcome::Approved(_)
        ));
    }
    let pending = store.list_holds(&["pending"], 1).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].intent_id, old.as_str());
    let both = store.list_holds(&["pending", "approved"], 3).await.unwrap();
    let ids: Vec<&str> = both.iter().map(|h| h.intent_id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&old.as_str()), "newest first: {ids:?}");
    assert_eq!(store.list_holds(&[], 10).await.unwrap().len(), 6);
}
on_both!(listing_by_state_finds_older_holds_behind_newer_ones);

async fn a_retraction_is_never_counted_by_a_concurrent_vote(db: TestDb) {
    let store = db.open().await;
    let id = hold(&store, 7, 2, EXPIRES).await;
    assert_eq!(
        vote(&store, &id, "lena", true, &payload(7)).await,
        VoteOutcome::Recorded { have: 1, need: 2 }
    );
    // Another session holds lena's vote row, so the retraction stops midway (on SQLite
    // the write lock serializes everything anyway).
    let mut blocker = db.raw().await;
    let postgres = matches!(blocker, crate::support::Raw::Postgres(_));
    if postgres {
        blocker
            .exec("BEGIN; SELECT 1 FROM approval_votes WHERE approver = 'lena' FOR UPDATE")
            .await
            .unwrap();
    }
    let retract = {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move { store.retract_vote(&id, "lena").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move { vote(&store, &id, "omar", true, &payload(7)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    if postgres {
        blocker.exec("COMMIT").await.unwrap();
    }
    retract.await.unwrap().unwrap();
    let outcome = second.await.unwrap();
    let hold = store.get_hold(&id).await.unwrap().unwrap();
    let voters: Vec<&str> = hold.votes.iter().map(|v| v.approver.as_str()).collect();
    // Either order is fine, but the quorum must rest on two votes that still exist.
    if hold.state == "approved" {
        assert_eq!(voters.len(), 2, "approved on {voters:?}");
    } else {
        assert_eq!(outcome, VoteOutcome::Recorded { have: 1, need: 2 });
        assert_eq!(
            (hold.state.as_str(), voters.as_slice()),
            ("pending", ["omar"].as_slice())
        );
    }
    blocker.close().await;
}
on_both!(a_retraction_is_never_counted_by_a_concurrent_vote);
