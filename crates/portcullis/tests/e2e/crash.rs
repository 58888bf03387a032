//! A gateway killed (SIGKILL) while an intent is executing: after a restart the intent is
//! `outcome_unknown`, never run again, its idempotency key stays taken, and the audit log
//! says so and still verifies.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixtures::{AGENT, SLOW, SLOW_POLICY, write_standard_files};
use crate::harness::Env;
use crate::http;

#[test]
fn an_intent_interrupted_by_a_crash_is_outcome_unknown_and_never_rerun() {
    let env = Env::new();
    write_standard_files(&env);
    let config = crate::fixtures::CONFIG.replace("timeout_ms: 5000", "timeout_ms: 2000\n  connect_timeout_ms: 500");
    env.write("portcullis.yaml", &config);
    env.write("actions/slow.yaml", SLOW);
    env.write("policies/slow.cedar", SLOW_POLICY);
    let token = env.add_agent(AGENT);
    let intent = json!({"action": "slow.get", "input": {}, "idempotency_key": "nightly-1"});

    let gateway = env.serve();
    let (addr, agent_token, body) = (gateway.addr, token.clone(), intent.to_string());
    // The agent's call never gets an answer: the gateway dies under it.
    let call = std::thread::spawn(move || http::post_json(addr, "/v1/intents", Some(&agent_token), body.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.upstream.requests().is_empty() {
        assert!(Instant::now() < deadline, "the upstream never got the call");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(gateway); // SIGKILL, mid-call
    let _ = call.join();

    // Egress timeouts of 0.5 s + 2 s plus a 15 s margin: younger than that, the intent could
    // still be executing on another instance, and a retry is told it is in progress.
    let gateway = env.serve();
    let early = gateway.post_intent(&token, &intent);
    assert_eq!(early.status, 409, "{}", early.text());
    assert_eq!(early.json()["error"]["code"], "idempotency_in_progress");
    let deadline = Instant::now() + Duration::from_secs(40);
    let retried = loop {
        let r = gateway.post_intent(&token, &intent);
        if r.status != 409 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(retried.status, 200, "{}", retried.text());
    let body = retried.json();
    assert_eq!(body["status"], "outcome_unknown", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("will not be run again"), "{error}");
    let id = body["id"].as_str().unwrap();
    let read = gateway.get(&format!("/v1/intents/{id}"), Some(&token));
    assert_eq!(read.json()["status"], "outcome_unknown");

    // Give a wrongly re-run call time to arrive: there is none.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        env.upstream.requests().len(),
        1,
        "the interrupted intent was not run again"
    );

    let events: Vec<_> = env
        .audit_tail(50)
        .into_iter()
        .filter(|e| e["event"]["intent_id"] == id)
        .map(|e| (e["event"]["kind"].clone(), e["event"]["detail"].clone()))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "decided");
    assert_eq!(events[1], (json!("outcome"), json!({"status": "outcome_unknown"})));
    assert!(env.audit_verify().success());
}
