//! The audit log through the CLI: tampering is detected and named, the append-only triggers
//! hold, and a gateway whose audit log can't be written refuses to act.

use serde_json::json;

use crate::fixtures::standard;

/// Drops every trigger on `audit_events` (found by name in `sqlite_master`), then runs `sql`.
const TAMPER: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
names = [r[0] for r in db.execute(
    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")]
assert names, "no triggers on audit_events"
for n in names:
    db.execute('DROP TRIGGER "%s"' % n.replace('"', '""'))
db.execute(SQL)
db.commit()
print(len(names))
"#;

fn tamper(sql: &str) -> String {
    format!("SQL = {sql:?}\n{TAMPER}")
}

#[test]
fn tampering_with_the_audit_log_is_detected_and_named() {
    let s = standard();
    for title in ["one", "two"] {
        let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": title}}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let gateway = s.gateway;
    let env = s.env;
    drop(gateway);
    let events = env.audit_tail(50);
    assert_eq!(events.len(), 4, "decided + outcome for each intent: {events:#?}");
    let ok = env.audit_verify();
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(ok.stdout.contains("4 event(s)"), "{ok:?}");

    // `audit export --format jsonl` writes the same events, one per line, to stdout or a file.
    let exported = env.cli(&["audit", "export", "--format", "jsonl"], None);
    assert!(exported.success(), "{exported:?}");
    let lines: Vec<serde_json::Value> = exported
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, events, "export and tail agree");
    let file = env.dir.path().join("audit.jsonl");
    let to_file = env.cli(
        &["audit", "export", "--format", "jsonl", "--out", file.to_str().unwrap()],
        None,
    );
    assert!(to_file.success(), "{to_file:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), exported.stdout);

    // With the triggers in place the log is append-only, even for the file's owner.
    for sql in [
        "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 3",
    ] {
        let script = format!(
            "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1], timeout=10)\ndb.execute({sql:?})\ndb.commit()"
        );
        let out = env.sqlite(&script);
        assert_ne!(out.code, Some(0), "`{sql}` must fail: {out:?}");
        assert!(out.stderr.contains("append-only"), "{out:?}");
    }
    assert_eq!(env.audit_verify().code, Some(0));

    // Dropping the triggers lets an attacker with the file change an event: verify names it.
    let original = env.audit_tail(50)[1]["event"].clone();
    assert_eq!(original["kind"], "outcome");
    let out = env.sqlite(&tamper(
        "UPDATE audit_events SET event = replace(event, '\"executed\"', '\"failed\"') WHERE seq = 2",
    ));
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "2", "both triggers were found by name: {out:?}");
    assert_ne!(env.audit_tail(50)[1]["event"], original, "the event really changed");
    let verify = env.audit_verify();
    assert_eq!(verify.code, Some(1), "{verify:?}");
    assert!(verify.stdout.contains("event 2 was modified"), "{verify:?}");
    assert!(
        !verify.stdout.contains("event 1 "),
        "only the modified event is named: {verify:?}"
    );
}

#[test]
fn deleting_an_audit_event_is_detected_and_named() {
    let s = standard();
    for title in ["one", "two"] {
        let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": title}}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    drop(s.gateway);
    let env = s.env;
    let out = env.sqlite(&tamper("DELETE FROM audit_events WHERE seq = 3"));
    assert!(out.success(), "{out:?}");
    assert_eq!(env.audit_tail(50).len(), 3);
    let verify = env.audit_verify();
    assert_eq!(verify.code, Some(1), "{verify:?}");
    assert!(
        verify.stdout.contains("event 3"),
        "the deleted event is named: {verify:?}"
    );
}

pub(crate) const BREAK_AUDIT: &str = "import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
db.execute(\"CREATE TRIGGER audit_events_broken BEFORE INSERT ON audit_events \\
BEGIN SELECT RAISE(ABORT, 'disk on fire'); END\")
db.commit()";

pub(crate) const REPAIR_AUDIT: &str = "import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
db.execute('DROP TRIGGER audit_events_broken')
db.commit()";

#[test]
fn an_unwritable_audit_log_fails_closed_with_503_and_nothing_is_sent() {
    let s = standard();
    let ok = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "before"}}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(s.env.upstream.requests().len(), 1);

    let out = s.env.sqlite(BREAK_AUDIT);
    assert!(out.success(), "{out:?}");

    let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "after"}}));
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        !r.text().contains("disk on fire"),
        "the store's error text stays in the gateway: {body}"
    );
    let dry = s.intent(&json!({
        "action": "tickets.create",
        "input": {"project": "website", "title": "dry"},
        "dry_run": true
    }));
    assert_eq!(dry.status, 503, "{}", dry.text());
    assert_eq!(
        s.env.upstream.requests().len(),
        1,
        "nothing ran after the audit log broke"
    );

    // Failing closed is not failing forever: once the log is writable, intents run again.
    assert!(s.env.sqlite(REPAIR_AUDIT).success());
    let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "again"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.env.upstream.requests().len(), 2);
    assert_eq!(s.env.audit_verify().code, Some(0));
}

/// A 503 says the action did not run, so retrying with the same idempotency key must run
/// it (once). Today the failed attempt is stored under the key and every retry replays a
/// `failed` result with HTTP 200: the key is burned by an outage the agent can't see.
#[test]
fn a_retry_after_an_audit_outage_runs_the_action_once() {
    let s = standard();
    let intent = json!({
        "action": "tickets.create",
        "input": {"project": "website", "title": "retry me"},
        "idempotency_key": "retry-1"
    });
    assert!(s.env.sqlite(BREAK_AUDIT).success());
    let r = s.intent(&intent);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(s.env.sqlite(REPAIR_AUDIT).success());

    let retry = s.intent(&intent);
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.json()["status"], "executed", "{}", retry.text());
    assert_eq!(s.env.upstream.requests().len(), 1);
    let again = s.intent(&intent);
    assert_eq!(again.json(), retry.json());
    assert_eq!(s.env.upstream.requests().len(), 1);
}
