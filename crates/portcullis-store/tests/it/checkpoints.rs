//! Signed audit checkpoints: Merkle roots recomputed from the log, truncation of the tail
//! found against the last checkpoint (which the hash chain alone can't see), deleted or
//! forged checkpoints, and inclusion proofs.

use portcullis_store::merkle::Frontier;
use portcullis_store::{Backend, Checkpoint, CheckpointKey, CheckpointProblem, Store};

use crate::support::{TestDb, append_n, event};

const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const OTHER_SEED: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

/// Appends events `from..from + count` to a log that holds `from - 1`.
async fn append_more(store: &Store, from: usize, count: usize) {
    for i in from..from + count {
        assert_eq!(store.append(&event(i)).await.unwrap().seq, i64::try_from(i).unwrap());
    }
}

/// Signs and stores a checkpoint of the whole log as it is now.
async fn checkpoint(store: &Store, key: &CheckpointKey) -> Checkpoint {
    let mut frontier = Frontier::default();
    store.extend_frontier(&mut frontier, None).await.unwrap();
    let c = key.sign(frontier.size(), &frontier.root());
    assert!(c.signature_valid());
    assert!(store.add_checkpoint(&c).await.unwrap());
    c
}

async fn checkpoints_verify_against_the_log_and_prove_every_event(db: TestDb) {
    let store = db.open().await;
    let key = CheckpointKey::from_seed_hex(SEED).unwrap();
    append_n(&store, 10).await;
    let first = checkpoint(&store, &key).await;
    assert_eq!(first.tree_size, 10);
    // The same size twice: the first one stands.
    assert!(!store.add_checkpoint(&key.sign(10, &[0; 32])).await.unwrap());
    append_more(&store, 11, 5).await;
    let second = checkpoint(&store, &key).await;
    assert_eq!(second.tree_size, 15);
    assert_eq!(store.checkpoints().await.unwrap(), vec![first.clone(), second]);

    let report = store.verify_checkpoints(&[], Some(&key.public_key())).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(
        (report.checkpoints, report.events, report.verified_up_to),
        (2, 15, Some(15))
    );

    for seq in 1..=15 {
        let proof = store.prove(seq).await.unwrap().unwrap();
        assert!(proof.valid(), "event {seq}");
        let expected = if seq <= 10 { 10 } else { 15 };
        assert_eq!(
            proof.checkpoint.tree_size, expected,
            "the smallest checkpoint covering it"
        );
        let mut wrong = proof.clone();
        wrong.seq = if seq == 1 { 2 } else { seq - 1 };
        assert!(!wrong.valid(), "a proof for another position");
        let mut forged = proof;
        forged.checkpoint.root = first.root.clone();
        if forged.checkpoint.tree_size != 10 {
            assert!(!forged.valid(), "a root the signature doesn't cover");
        }
    }
    append_more(&store, 16, 1).await;
    assert!(
        store.prove(16).await.unwrap().is_none(),
        "no checkpoint covers event 16 yet"
    );
}
on_both!(checkpoints_verify_against_the_log_and_prove_every_event);

async fn cutting_off_the_tail_passes_the_chain_check_but_not_the_checkpoint(db: TestDb) {
    let store = db.open().await;
    let key = CheckpointKey::from_seed_hex(SEED).unwrap();
    append_n(&store, 20).await;
    let kept = checkpoint(&store, &key).await;
    db.tamper("DELETE FROM audit_events WHERE seq > 15").await;

    let chain = store.verify_audit().await.unwrap();
    assert!(
        chain.ok,
        "the shorter chain is still a valid chain: {:?}",
        chain.problems
    );
    let report = store.verify_checkpoints(&[kept], None).await.unwrap();
    assert_eq!(
        report.problems,
        vec![CheckpointProblem::Truncated {
            tree_size: 20,
            events: 15
        }]
    );
    assert_eq!(
        report.problems[0].to_string(),
        "checkpoint at 20 events: the log holds only 15: events after 15 were cut off"
    );
}
on_both!(cutting_off_the_tail_passes_the_chain_check_but_not_the_checkpoint);

async fn deleted_edited_and_foreign_checkpoints_are_reported(db: TestDb) {
    let store = db.open().await;
    let key = CheckpointKey::from_seed_hex(SEED).unwrap();
    append_n(&store, 8).await;
    let kept = checkpoint(&store, &key).await;

    // Someone with the database deletes the checkpoints (and then the tail).
    let mut raw = db.raw().await;
    raw.exec(match db.backend() {
        Backend::Sqlite => "DROP TRIGGER audit_checkpoints_no_delete; DELETE FROM audit_checkpoints;",
        Backend::Postgres => "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER; DELETE FROM audit_checkpoints;",
    })
    .await
    .unwrap();
    raw.close().await;
    assert!(
        store.verify_checkpoints(&[], None).await.unwrap().ok(),
        "nothing left to check against"
    );
    let report = store
        .verify_checkpoints(std::slice::from_ref(&kept), None)
        .await
        .unwrap();
    assert_eq!(report.problems, vec![CheckpointProblem::Missing { tree_size: 8 }]);

    // An edited root breaks the signature; a checkpoint by another key is not trusted.
    let mut edited = kept.clone();
    edited.root = "00".repeat(32);
    let foreign = CheckpointKey::from_seed_hex(OTHER_SEED).unwrap().sign(8, &{
        let mut f = Frontier::default();
        store.extend_frontier(&mut f, None).await.unwrap();
        f.root()
    });
    assert!(store.add_checkpoint(&foreign).await.unwrap());
    let report = store
        .verify_checkpoints(std::slice::from_ref(&edited), Some(&key.public_key()))
        .await
        .unwrap();
    assert!(
        report.problems.contains(&CheckpointProblem::Diverged { tree_size: 8 }),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .contains(&CheckpointProblem::BadSignature { tree_size: 8 }),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .contains(&CheckpointProblem::UntrustedKey { tree_size: 8 }),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .contains(&CheckpointProblem::RootMismatch { tree_size: 8 }),
        "{:?}",
        report.problems
    );

    // Rewriting an event changes every root after it.
    db.tamper(r#"UPDATE audit_events SET hash = (SELECT hash FROM audit_events WHERE seq = 1) WHERE seq = 3"#)
        .await;
    let report = store.verify_checkpoints(&[kept], None).await.unwrap();
    assert!(
        report
            .problems
            .contains(&CheckpointProblem::RootMismatch { tree_size: 8 }),
        "{:?}",
        report.problems
    );
}
on_both!(deleted_edited_and_foreign_checkpoints_are_reported);
