//! Credential sources other than the encrypted store: an environment variable (for
//! development, with a warning at start).

use serde_json::json;

use crate::fixtures::{AGENT, CONFIG, LEAKS, POLICIES, TICKETS};
use crate::harness::{Env, recorded_headers};

#[test]
fn an_environment_variable_secret_is_injected_with_a_warning_at_start() {
    // The gateway inherits this process's environment; `HOME` is set wherever tests run.
    let home = std::env::var("HOME").expect("HOME is set");
    let env = Env::new();
    env.write("actions/tickets.yaml", TICKETS);
    env.write("actions/leaks.yaml", LEAKS);
    env.write("policies/policies.cedar", POLICIES);
    env.write(
        "portcullis.yaml",
        &CONFIG.replace(
            "  tracker:\n    kind: bearer\n    secret: tracker_token",
            "  tracker:\n    kind: bearer\n    secret: env:HOME",
        ),
    );
    let token = env.add_agent(AGENT);
    let gateway = env.serve();
    let r = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "dev", "title": "From the environment"}}),
    );
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    let requests = env.upstream.requests();
    assert_eq!(
        recorded_headers(requests.last().expect("a request"), "authorization"),
        [format!("Bearer {home}")]
    );
    let log = gateway.log();
    assert!(
        log.contains("credential reads a secret from an environment variable: for development only")
            && log.contains("env:HOME"),
        "{log}"
    );
}
