//! The egress guard: without `egress.allow`, loopback destinations are refused, whether
//! written as an address or as a name, and nothing is sent.

use serde_json::json;

use crate::fixtures::{AGENT, assert_no_secret};
use crate::harness::{Env, random_secret};

const CONFIG: &str = r#"
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  support-bot: {groups: [support]}
credentials:
  tracker: {kind: bearer, secret: tracker_token}
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  connect_timeout_ms: 2000
  timeout_ms: 5000
"#;

const ACTIONS: &str = r#"
name: ping.loopback
description: An address-literal loopback URL, no credential
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/ping
---
name: ping.localhost
description: A loopback name, with a credential
input: {type: object, properties: {}}
request:
  method: GET
  url: http://localhost:UPSTREAM_PORT/ping
credential: tracker
"#;

const POLICY: &str = r#"
@id("support-pings")
@reason("support may ping")
permit (principal in AgentGroup::"support", action, resource);
"#;

#[test]
fn loopback_destinations_are_refused_without_egress_allow() {
    let env = Env::new();
    env.write("portcullis.yaml", CONFIG);
    env.write("actions/ping.yaml", ACTIONS);
    env.write("policies/p.cedar", POLICY);
    let secret = random_secret("egress");
    env.set_secret("tracker_token", &secret);
    let token = env.add_agent(AGENT);
    let gw = env.serve();

    for (action, host) in [("ping.loopback", "127.0.0.1"), ("ping.localhost", "localhost")] {
        let r = gw.post_intent(&token, &json!({"action": action, "input": {}}));
        assert_eq!(r.status, 200, "{action}: {}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "failed", "{action}: {body}");
        assert_eq!(body["decision"]["effect"], "allow", "{action}: {body}");
        let error = body["error"].as_str().expect("error");
        assert!(
            error.contains("not allowed"),
            "{action}: the error says the destination is not allowed: {error}"
        );
        assert!(
            !error.contains(host),
            "{action}: the agent is not told internal host names: {error}"
        );
        assert!(body.get("result").is_none(), "{body}");
        assert_no_secret(&r.raw, &secret, action);
    }
    env.upstream.assert_untouched("egress guard");
    // The operator sees which destination was refused, in the audit log.
    let audit = env.audit_tail(20);
    let refused: Vec<String> = audit
        .iter()
        .filter(|e| e["event"]["kind"] == "outcome")
        .map(|e| e["event"]["detail"]["error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(refused.len(), 2, "{audit:?}");
    assert!(
        refused[0].contains("127.0.0.1") && refused[1].contains("localhost"),
        "{refused:?}"
    );
    assert_no_secret(&gw.log(), &secret, "the gateway's log");
}
