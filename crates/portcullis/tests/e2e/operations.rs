//! Reload (SIGHUP and `portcullis reload`) and graceful shutdown (SIGTERM), through the real
//! binary.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixtures::{AGENT, CONFIG, HOLD_POLICY, write_standard_files};
use crate::harness::{Env, Gateway};
use crate::http;

/// An upstream call that succeeds after two seconds.
const SLOW_OK: &str = r#"
name: slow.ok
description: Answers after two seconds
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/slow?seconds=2
credential: tracker
"#;

const SLOW_OK_POLICY: &str = r#"
@id("support-waits")
permit (principal in AgentGroup::"support", action == Action::"slow.ok", resource);
"#;

/// Tickets are forbidden from now on.
const NO_TICKETS: &str = r#"
@id("ticket-freeze")
@reason("ticket creation is frozen")
forbid (principal, action == Action::"tickets.create", resource);
"#;

const ADMINS: &str = "admins:\n  root: {role: admin}\n  alice: {role: approver, groups: [ops]}\n";

fn ticket(title: &str) -> serde_json::Value {
    json!({"action": "tickets.create", "input": {"project": "web", "title": title}})
}

/// Waits until the upstream has received `n` requests.
fn wait_for_upstream(env: &Env, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.upstream.requests().len() < n {
        assert!(Instant::now() < deadline, "the upstream never got call {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `body` as an intent on a thread of its own; the thread returns the response, or
/// `None` when the connection ended without one.
fn in_background(
    gateway: &Gateway,
    token: &str,
    body: &serde_json::Value,
) -> std::thread::JoinHandle<Option<http::Response>> {
    let (addr, token, body) = (gateway.addr, token.to_owned(), body.to_string());
    std::thread::spawn(move || {
        std::panic::catch_unwind(|| http::post_json(addr, "/v1/intents", Some(&token), body.as_bytes())).ok()
    })
}

#[test]
fn sighup_applies_a_good_configuration_and_keeps_serving_the_old_one_when_the_new_one_is_broken() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("portcullis.yaml", &format!("{CONFIG}metrics: {{enabled: true}}\n"));
    let token = env.add_agent(AGENT);
    let gateway = env.serve();
    assert_eq!(gateway.post_intent(&token, &ticket("before")).status, 200);

    env.write("policies/freeze.cedar", NO_TICKETS);
    gateway.signal("HUP");
    gateway.wait_for_log("configuration reloaded", 1, Duration::from_secs(15));
    let frozen = gateway.post_intent(&token, &ticket("after"));
    assert_eq!(frozen.status, 403, "{}", frozen.text());
    assert!(frozen.text().contains("ticket creation is frozen"), "{}", frozen.text());
    assert_eq!(gateway.get("/readyz", None).json()["generation"], 2);

    // A policy that doesn't parse, and an action naming a credential that doesn't exist.
    env.write("policies/broken.cedar", "permit (principal, action, resource) when {");
    env.write(
        "actions/broken.yaml",
        "name: broken.get\ndescription: x\ninput: {type: object}\nrequest: {method: GET, url: 'http://127.0.0.1:1/x'}\ncredential: nowhere\n",
    );
    gateway.signal("HUP");
    gateway.wait_for_log("configuration reload refused", 1, Duration::from_secs(15));
    let log = gateway.log();
    assert!(log.contains("broken.cedar"), "the log names the broken file:\n{log}");
    assert!(log.contains("nowhere"), "the log names the missing credential:\n{log}");
    // Still generation 2: tickets frozen, files readable, nothing new.
    assert_eq!(gateway.post_intent(&token, &ticket("still")).status, 403);
    let read = gateway.post_intent(&token, &json!({"action": "files.get", "input": {"name": "a.txt"}}));
    assert_eq!(read.status, 200, "{}", read.text());
    let unknown = gateway.post_intent(&token, &json!({"action": "broken.get", "input": {}}));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(gateway.get("/readyz", None).json()["generation"], 2);
    let metrics = gateway.get("/metrics", None).text();
    assert!(
        metrics.contains("portcullis_config_reloads_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_config_reloads_total{outcome=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(env.audit_verify().success());
}

#[test]
fn portcullis_reload_goes_through_the_admin_api_for_admins_only() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("portcullis.yaml", &format!("{CONFIG}{ADMINS}"));
    let token = env.add_agent(AGENT);
    let root = env.person_token("root");
    let alice = env.person_token("alice");
    let gateway = env.serve();
    let url = gateway.url();
    let reload = |login: &str| env.cli_env(&["reload"], &[("PORTCULLIS_URL", &url), ("PORTCULLIS_TOKEN", login)]);

    let by_approver = reload(&alice);
    assert!(!by_approver.success(), "{by_approver:?}");
    assert!(by_approver.stderr.contains("403"), "{by_approver:?}");
    let by_agent = reload(&token);
    assert!(!by_agent.success(), "{by_agent:?}");
    assert!(by_agent.stderr.contains("401"), "{by_agent:?}");

    env.write("policies/freeze.cedar", NO_TICKETS);
    let applied = reload(&root);
    assert!(applied.success(), "{applied:?}");
    assert!(applied.stdout.contains("generation 2"), "{applied:?}");
    assert_eq!(gateway.post_intent(&token, &ticket("frozen")).status, 403);

    env.write(
        "policies/broken.cedar",
        "forbid (principal, action == Action::\"no.such\", resource);",
    );
    let refused = reload(&root);
    assert!(!refused.success(), "{refused:?}");
    assert!(refused.stderr.contains("reload refused (422)"), "{refused:?}");
    assert!(
        refused.stderr.contains("broken.cedar"),
        "each problem is printed: {refused:?}"
    );
    assert_eq!(gateway.get("/readyz", None).json()["generation"], 2);
}

#[test]
fn a_broken_portcullis_yaml_is_refused_by_sighup_and_by_portcullis_reload_and_the_old_one_keeps_serving() {
    let env = Env::new();
    write_standard_files(&env);
    let good = format!("{CONFIG}{ADMINS}metrics: {{enabled: true}}\n");
    env.write("portcullis.yaml", &good);
    let token = env.add_agent(AGENT);
    let root = env.person_token("root");
    let gateway = env.serve();
    let url = gateway.url();
    assert_eq!(gateway.post_intent(&token, &ticket("before")).status, 200);
    // Applied, this would freeze tickets: every reload below must leave them running.
    env.write("policies/freeze.cedar", NO_TICKETS);

    // YAML that doesn't parse.
    env.write("portcullis.yaml", &format!("{good}agents: [support-bot\n"));
    gateway.signal("HUP");
    gateway.wait_for_log("configuration reload refused", 1, Duration::from_secs(15));
    let log = gateway.log();
    assert!(
        log.lines()
            .any(|l| l.contains("reload refused") && l.contains("portcullis.yaml")),
        "the log names the broken file:\n{log}"
    );
    let still = gateway.post_intent(&token, &ticket("after bad yaml"));
    assert_eq!(still.status, 200, "{}", still.text());

    // Valid YAML, but a change a running gateway can't make: another store.
    env.write(
        "portcullis.yaml",
        &good.replace("sqlite://portcullis.db", "sqlite://elsewhere.db"),
    );
    let refused = env.cli_env(&["reload"], &[("PORTCULLIS_URL", &url), ("PORTCULLIS_TOKEN", &root)]);
    assert!(!refused.success(), "{refused:?}");
    assert!(refused.stderr.contains("reload refused (422)"), "{refused:?}");
    assert!(refused.stderr.contains("`store` changed"), "{refused:?}");
    gateway.wait_for_log("configuration reload refused", 2, Duration::from_secs(15));
    assert!(gateway.log().contains("`store` changed"), "{}", gateway.log());
    let still = gateway.post_intent(&token, &ticket("after store change"));
    assert_eq!(still.status, 200, "{}", still.text());
    assert!(
        !env.path("elsewhere.db").exists(),
        "the refused configuration's store was never opened"
    );

    let ready = gateway.get("/readyz", None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["generation"], 1, "nothing was applied");
    let metrics = gateway.get("/metrics", None).text();
    assert!(
        metrics.contains("portcullis_config_reloads_total{outcome=\"rejected\"} 2"),
        "{metrics}"
    );
    assert_eq!(env.upstream.requests().len(), 3);

    // Fixed, the same file reloads, and the freeze it was waiting with applies.
    env.write("portcullis.yaml", &good);
    gateway.signal("HUP");
    gateway.wait_for_log("configuration reloaded", 1, Duration::from_secs(15));
    assert_eq!(gateway.post_intent(&token, &ticket("frozen")).status, 403);
    assert_eq!(gateway.get("/readyz", None).json()["generation"], 2);
}

#[test]
fn an_intent_in_flight_during_a_reload_finishes_under_the_configuration_it_started_with() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("actions/slow.yaml", SLOW_OK);
    env.write("policies/slow.cedar", SLOW_OK_POLICY);
    let token = env.add_agent(AGENT);
    let gateway = env.serve();
    let slow = json!({"action": "slow.ok", "input": {}});
    let call = in_background(&gateway, &token, &slow);
    wait_for_upstream(&env, 1);

    // The action goes away while its call is at the upstream.
    std::fs::remove_file(env.path("actions/slow.yaml")).unwrap();
    std::fs::remove_file(env.path("policies/slow.cedar")).unwrap();
    gateway.signal("HUP");
    gateway.wait_for_log("configuration reloaded", 1, Duration::from_secs(15));
    let gone = gateway.post_intent(&token, &slow);
    assert_eq!(gone.status, 404, "{}", gone.text());

    let finished = call.join().unwrap().expect("the call in flight got its answer");
    assert_eq!(finished.status, 200, "{}", finished.text());
    let body = finished.json();
    assert_eq!(body["status"], "executed", "{body}");
    assert_eq!(body["result"]["status"], 200, "{body}");
    let id = body["id"].as_str().unwrap();
    let kinds: Vec<_> = env
        .audit_tail(20)
        .into_iter()
        .filter(|e| e["event"]["intent_id"] == id)
        .map(|e| e["event"]["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("decided"), json!("outcome")]);
    assert_eq!(env.upstream.requests().len(), 1);
}

#[test]
fn sigterm_lets_intents_in_flight_finish_flushes_the_audit_log_and_leaves_holds_held() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("portcullis.yaml", &format!("{CONFIG}{ADMINS}"));
    env.write("actions/slow.yaml", SLOW_OK);
    env.write("policies/slow.cedar", SLOW_OK_POLICY);
    env.write("policies/hold.cedar", HOLD_POLICY);
    let token = env.add_agent(AGENT);
    let mut gateway = env.serve();
    let held = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "h", "priority": "high"}}),
    );
    assert_eq!(held.status, 202, "{}", held.text());
    let held_id = held.json()["id"].as_str().unwrap().to_owned();

    let call = in_background(&gateway, &token, &json!({"action": "slow.ok", "input": {}}));
    wait_for_upstream(&env, 1);
    gateway.signal("TERM");
    gateway.wait_for_log("portcullis stopping", 1, Duration::from_secs(10));
    // No new intent starts once shutdown has begun (refused, or the listener is closed).
    let addr = gateway.addr;
    let late = std::panic::catch_unwind(|| {
        http::post_json(addr, "/v1/intents", Some(&token), ticket("late").to_string().as_bytes())
    });
    if let Ok(late) = late {
        assert_eq!(late.status, 503, "{}", late.text());
        assert_eq!(late.json()["error"]["code"], "not_ready");
    }

    let finished = call.join().unwrap().expect("the intent in flight was answered");
    assert_eq!(finished.status, 200, "{}", finished.text());
    assert_eq!(finished.json()["status"], "executed");
    let id = finished.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gateway.wait_exit(Duration::from_secs(20)),
        Some(Some(0)),
        "{}",
        gateway.log()
    );
    assert!(gateway.log().contains("portcullis stopped"));
    assert_eq!(env.upstream.requests().len(), 1, "the late intent never ran");

    // Its outcome is in the audit log, which verifies; the hold is still waiting. (An
    // intent is answered only once its events committed, so the flush at shutdown is a
    // backstop this can't tell from a no-op; what shows is that nothing was lost or cut.)
    let outcome = env
        .audit_tail(20)
        .into_iter()
        .any(|e| e["event"]["intent_id"] == id.as_str() && e["event"]["kind"] == "outcome");
    assert!(outcome, "the finished intent's outcome was flushed");
    assert!(env.audit_verify().success());
    let restarted = env.serve();
    let pending = restarted.get(&format!("/v1/intents/{held_id}"), Some(&token));
    assert_eq!(pending.json()["status"], "pending_approval", "{}", pending.text());
}

#[test]
fn the_shutdown_deadline_bounds_an_intent_that_would_run_too_long() {
    let env = Env::new();
    write_standard_files(&env);
    let config = CONFIG.replace("timeout_ms: 5000", "timeout_ms: 12000");
    env.write(
        "portcullis.yaml",
        &format!("{config}shutdown: {{deadline_seconds: 1}}\n"),
    );
    env.write("actions/slow.yaml", &SLOW_OK.replace("seconds=2", "seconds=10"));
    env.write("policies/slow.cedar", SLOW_OK_POLICY);
    let token = env.add_agent(AGENT);
    let mut gateway = env.serve();

    let call = in_background(&gateway, &token, &json!({"action": "slow.ok", "input": {}}));
    wait_for_upstream(&env, 1);
    gateway.signal("TERM");
    // The upstream answers after 10 s; the gateway leaves after its 1 s deadline.
    assert_eq!(
        gateway.wait_exit(Duration::from_secs(8)),
        Some(Some(0)),
        "{}",
        gateway.log()
    );
    let log = gateway.log();
    assert!(log.contains("still running at the deadline"), "{log}");
    let answer = call.join().unwrap();
    assert!(
        answer.is_none_or(|r| r.status != 200),
        "the intent could not have finished"
    );
    assert!(env.audit_verify().success());
}
