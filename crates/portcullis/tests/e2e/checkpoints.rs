//! Signed audit checkpoints through the real binary: signed while serving, exported out of
//! the database (file and webhook), inclusion proofs checked without the store, and the
//! tail of the log cut off by someone with database access: invisible to the hash chain,
//! caught by the checkpoints.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::{AGENT, CONFIG, write_standard_files};
use crate::harness::Env;

/// Removes the audit tables' append-only triggers and runs `sql`, as someone with write
/// access to the database file would.
fn tamper(env: &Env, sql: &str) {
    let script = format!(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         for t in ['audit_events_no_update', 'audit_events_no_delete', 'audit_checkpoints_no_delete']:\n    db.execute('DROP TRIGGER IF EXISTS ' + t)\n\
         db.executescript({sql:?})\n\
         db.commit()\n"
    );
    let out = env.sqlite(&script);
    assert!(out.success(), "{out:?}");
}

fn lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn checkpoints_are_signed_exported_and_catch_a_tail_cut_off_the_log() {
    let env = Env::new();
    write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &format!("{CONFIG}audit: {{checkpoint_every: 4, checkpoint_seconds: 1}}\n"),
    );
    let token = env.add_agent(AGENT);
    let mut gateway = env.serve();
    for i in 0..5 {
        let r = gateway.post_intent(
            &token,
            &json!({"action": "tickets.create", "input": {"project": "web", "title": format!("t{i}")}}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Ten events (decided + outcome per intent): signed within a tick or two.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = env.cli(&["audit", "checkpoint", "export"], None);
        assert!(out.success(), "{out:?}");
        if lines(&out.stdout).iter().any(|c| c["tree_size"] == 10) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of all 10 events: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    gateway.signal("TERM");
    assert_eq!(
        gateway.wait_exit(Duration::from_secs(20)),
        Some(Some(0)),
        "{}",
        gateway.log()
    );

    let verify = env.cli(&["audit", "verify"], None);
    assert!(verify.success(), "{verify:?}");
    assert!(verify.stdout.contains("checkpoints intact"), "{verify:?}");
    assert!(verify.stdout.contains("covering 10 of 10 event(s)"), "{verify:?}");

    // Exported to a file and to a webhook (the demo upstream records what it gets).
    let exported = env.cli(&["audit", "checkpoint", "export", "--out", "kept.jsonl"], None);
    assert!(exported.success(), "{exported:?}");
    let kept = lines(&std::fs::read_to_string(env.path("kept.jsonl")).unwrap());
    assert!(!kept.is_empty());
    let key = kept[0]["public_key"].as_str().unwrap().to_owned();
    assert!(kept.iter().all(|c| c["public_key"] == key.as_str()), "one signing key");
    let webhook = format!("http://127.0.0.1:{}/echo", env.upstream.port);
    let posted = env.cli(&["audit", "checkpoint", "export", "--webhook", &webhook], None);
    assert!(posted.success(), "{posted:?}");
    let received = env.upstream.requests();
    let body: Value = serde_json::from_str(received.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["checkpoints"].as_array().unwrap().len(), kept.len());

    // A proof of event 3 checks out without the store, and only for the right key.
    let proof = env.cli(&["audit", "prove", "3"], None);
    assert!(proof.success(), "{proof:?}");
    env.write("proof.json", &proof.stdout);
    let checked = env.cli(&["audit", "verify-proof", "proof.json", "--public-key", &key], None);
    assert!(checked.success(), "{checked:?}");
    assert!(checked.stdout.contains("proof valid: event 3"), "{checked:?}");
    let mut forged: Value = serde_json::from_str(&proof.stdout).unwrap();
    forged["seq"] = json!(4);
    env.write("forged.json", &forged.to_string());
    let refused = env.cli(&["audit", "verify-proof", "forged.json"], None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stdout.contains("INVALID"), "{refused:?}");
    let other_key = env.cli(
        &["audit", "verify-proof", "proof.json", "--public-key", &"ab".repeat(32)],
        None,
    );
    assert_eq!(other_key.code, Some(1), "{other_key:?}");
    let missing = env.cli(&["audit", "prove", "11"], None);
    assert!(!missing.success(), "{missing:?}");
    assert!(missing.stderr.contains("no checkpoint covers event 11"), "{missing:?}");

    // The last two events are cut off: the chain that is left is valid, the checkpoint
    // says the log was longer.
    tamper(&env, "DELETE FROM audit_events WHERE seq > 8;");
    let cut = env.cli(&["audit", "verify"], None);
    assert_eq!(cut.code, Some(1), "{cut:?}");
    assert!(cut.stdout.contains("audit log intact: 8 event(s)"), "{cut:?}");
    assert!(
        cut.stdout
            .contains("checkpoint at 10 events: the log holds only 8: events after 8 were cut off"),
        "{cut:?}"
    );

    // Deleting the checkpoints too hides it from the database alone, not from the copy
    // kept outside.
    tamper(&env, "DELETE FROM audit_checkpoints;");
    let hidden = env.cli(&["audit", "verify"], None);
    assert!(hidden.success(), "{hidden:?}");
    assert!(hidden.stdout.contains("no checkpoint yet"), "{hidden:?}");
    let caught = env.cli(&["audit", "verify", "--checkpoints", "kept.jsonl"], None);
    assert_eq!(caught.code, Some(1), "{caught:?}");
    assert!(caught.stdout.contains("missing from the database"), "{caught:?}");
    assert!(caught.stdout.contains("were cut off"), "{caught:?}");
}

#[test]
fn checkpoint_commands_without_a_master_key_or_with_bad_files_fail_clearly() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("portcullis.yaml", &CONFIG.replace("master_key: file:master.key\n", ""));
    let created = env.cli(&["audit", "checkpoint", "create"], None);
    assert_eq!(created.code, Some(1), "{created:?}");
    assert!(created.stderr.contains("need a `master_key`"), "{created:?}");
    env.write("junk.jsonl", "{\"tree_size\": 1}\n");
    let junk = env.cli(&["audit", "verify", "--checkpoints", "junk.jsonl"], None);
    assert_eq!(junk.code, Some(1), "{junk:?}");
    assert!(junk.stderr.contains("junk.jsonl` line 1: not a checkpoint"), "{junk:?}");
    env.write("proof.json", "not json");
    let proof = env.cli(&["audit", "verify-proof", "proof.json"], None);
    assert_eq!(proof.code, Some(1), "{proof:?}");
    assert!(proof.stderr.contains("not a proof"), "{proof:?}");
    let zero = env.cli(&["audit", "prove", "0"], None);
    assert!(zero.stderr.contains("numbered from 1"), "{zero:?}");
}
