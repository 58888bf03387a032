//! The audit log through the CLI: tampering is detected and named, the append-only triggers
//! hold, and a gateway whose audit log (or store) can't be written refuses to act: `/readyz`
//! names the failing check and new intents are refused until it passes again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::standard;
use crate::harness::Gateway;

/// Polls `/readyz` until it answers `ready` (200) or not (503), at most `limit`; its body.
pub(crate) fn wait_for_readiness(gateway: &Gateway, ready: bool, limit: Duration) -> Value {
    let want = if ready { 200 } else { 503 };
    let deadline = Instant::now() + limit;
    loop {
        let r = gateway.get("/readyz", None);
        if r.status == want {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {}: {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The checks a `/readyz` body lists as failing, with their details.
pub(crate) fn failing_checks(body: &Value) -> Vec<(String, String)> {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            let detail = c["detail"].as_str().unwrap_or_default().to_owned();
            (c["name"].as_str().unwrap().to_owned(), detail)
        })
        .collect()
}

/// Asserts `r` is a `503 not_ready` naming `check`.
#[track_caller]
pub(crate) fn assert_not_ready(r: &crate::http::Response, check: &str) {
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert_eq!(body["error"]["details"]["check"], check, "{body}");
}

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
    // From the failed write on, the gateway is not ready and says why; it takes no intents
    // (not even dry runs) rather than failing each one after it started.
    let ready = s.gateway.get("/readyz", None);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["status"], "not ready");
    let failing = failing_checks(&ready.json());
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].0, "audit", "{failing:?}");
    let dry = s.intent(&json!({
        "action": "tickets.create",
        "input": {"project": "website", "title": "dry"},
        "dry_run": true
    }));
    assert_not_ready(&dry, "audit");
    let refused = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "refused"}}));
    assert_not_ready(&refused, "audit");
    assert_eq!(
        s.env.upstream.requests().len(),
        1,
        "nothing ran after the audit log broke"
    );

    // Failing closed is not failing forever: once the log is writable, readiness comes back
    // (10 s after the failed write at most) and intents run again.
    assert!(s.env.sqlite(REPAIR_AUDIT).success());
    wait_for_readiness(&s.gateway, true, Duration::from_secs(20));
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
    wait_for_readiness(&s.gateway, true, Duration::from_secs(20));

    let retry = s.intent(&intent);
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.json()["status"], "executed", "{}", retry.text());
    assert_eq!(s.env.upstream.requests().len(), 1);
    let again = s.intent(&intent);
    assert_eq!(again.json(), retry.json());
    assert_eq!(s.env.upstream.requests().len(), 1);
}

/// Hides the `secrets` table, which the store check reads, so that the store stops answering
/// it as a lost database would; `RESTORE_STORE` puts it back.
const BREAK_STORE: &str = "import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
db.execute('ALTER TABLE secrets RENAME TO secrets_hidden')
db.commit()";

const RESTORE_STORE: &str = "import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
db.execute('ALTER TABLE secrets_hidden RENAME TO secrets')
db.commit()";

/// A dry run of a ticket: decided, but never sent.
fn dry_run() -> Value {
    json!({"action": "tickets.create", "input": {"project": "website", "title": "probe"}, "dry_run": true})
}

#[test]
fn a_store_that_does_not_answer_makes_the_gateway_unready_and_refuse_intents_until_it_answers() {
    let s = standard();
    let ok = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "before"}}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(s.env.sqlite(BREAK_STORE).success());

    // Nobody asks `/readyz`: the gateway's own check (every second) stops admission.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = s.intent(&dry_run());
        if r.json()["error"]["code"] == "not_ready" {
            break r;
        }
        assert!(Instant::now() < deadline, "intents are still admitted: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_not_ready(&refused, "store");
    assert!(
        refused.text().contains("retry"),
        "the agent is told to retry: {}",
        refused.text()
    );
    let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "during"}}));
    assert_not_ready(&r, "store");

    let ready = s.gateway.get("/readyz", None);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(
        failing_checks(&ready.json()),
        [("store".to_owned(), "the store did not answer".to_owned())]
    );
    assert!(
        !ready.text().contains("secrets"),
        "the store's error stays in the gateway: {}",
        ready.text()
    );
    assert_eq!(
        s.env.upstream.requests().len(),
        1,
        "nothing ran while the store was down"
    );

    // Back again: the next check admits intents, still without anyone asking `/readyz`.
    assert!(s.env.sqlite(RESTORE_STORE).success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.intent(&dry_run());
        if r.status == 200 {
            assert_eq!(r.json()["status"], "dry_run", "{}", r.text());
            break;
        }
        assert_not_ready(&r, "store");
        assert!(Instant::now() < deadline, "intents are still refused: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.gateway.get("/readyz", None).status, 200);
    let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "after"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.env.upstream.requests().len(), 2);
    assert!(
        s.gateway.log().contains("the store check failed"),
        "{}",
        s.gateway.log()
    );
    assert_eq!(s.env.audit_verify().code, Some(0));
}
