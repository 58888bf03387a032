//! Detection and redaction through the real binary: an upstream that returns a customer
//! record full of personal data and a pasted access key (`GET /customer`), one that echoes
//! whatever it is sent (`POST /echo`), per-action `mask`, `drop` and `block`, allow-lists,
//! outbound redaction, findings in the policy context, an operator's own rule, and every
//! builtin rule's true examples kept out of responses, errors, the audit log and the log.

use serde_json::{Value, json};

use portcullis_redact::detect::{Detector, builtin_rules};

use crate::harness::{Env, Gateway};

const CONFIG: &str = r#"
listen: 127.0.0.1:8080
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  crm-bot: {}
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 5000
limits:
  max_body_bytes: 65536
redaction:
  rules:
    - id: employee-id
      category: pii
      description: Acme employee number
      keywords: [emp-]
      regex: '\bEMP-\d{6}\b'
      examples_true: ["assigned to EMP-123456"]
      examples_false: ["EMP-12"]
"#;

const ACTIONS: &str = r#"
name: customer.get
input: {type: object, properties: {}}
request: {method: GET, url: "http://127.0.0.1:UPSTREAM_PORT/customer"}
response: {headers: [x-contact]}
---
name: customer.get_dropped
input: {type: object, properties: {}}
request: {method: GET, url: "http://127.0.0.1:UPSTREAM_PORT/customer"}
response: {redact: drop, headers: [x-contact]}
---
name: customer.get_blocked
input: {type: object, properties: {}}
request: {method: GET, url: "http://127.0.0.1:UPSTREAM_PORT/customer"}
response: {redact: block}
---
name: customer.contact
description: Returning the customer's email is this action's purpose
input: {type: object, properties: {}}
request: {method: GET, url: "http://127.0.0.1:UPSTREAM_PORT/customer"}
response: {keep: [/name, /email, /phone], allow: [email]}
---
name: echo.send
input:
  type: object
  required: [text]
  properties:
    text: {type: string, maxLength: 60000}
    mode: {type: string, pattern: "^(plain|rich)$"}
request: {method: POST, url: "http://127.0.0.1:UPSTREAM_PORT/echo", body: {text: "{text}"}}
---
name: notes.send
input:
  type: object
  required: [text]
  properties:
    text: {type: string, maxLength: 2000}
request:
  method: POST
  url: "http://127.0.0.1:UPSTREAM_PORT/echo"
  body: {text: "{text}"}
  redact: true
"#;

const POLICIES: &str = r#"
@id("crm")
permit (principal == Agent::"crm-bot", action, resource);

@id("no-cards-in-notes")
@reason("notes must not carry card numbers")
forbid (principal, action == Action::"notes.send", resource)
when { context.findings.at.contains({kind: "payment-card", pointer: "/text"}) };
"#;

const AGENT: &str = "crm-bot";

struct Setup {
    env: Env,
    gateway: Gateway,
    token: String,
}

fn setup() -> Setup {
    let env = Env::new();
    env.write("portcullis.yaml", CONFIG);
    env.write("actions/crm.yaml", ACTIONS);
    env.write("policies/crm.cedar", POLICIES);
    let token = env.add_agent(AGENT);
    let gateway = env.serve_logging(Some("debug"));
    Setup { env, gateway, token }
}

impl Setup {
    fn intent(&self, action: &str, input: Value) -> Value {
        let r = self
            .gateway
            .post_intent(&self.token, &json!({"action": action, "input": input}));
        let body = r.json();
        assert!(matches!(r.status, 200 | 400 | 403), "{action}: {} {body}", r.status);
        body
    }
}

#[test]
fn responses_are_masked_dropped_blocked_or_allowed_per_action() {
    let s = setup();

    let masked = s.intent("customer.get", json!({}));
    assert_eq!(masked["status"], "executed", "{masked}");
    assert_eq!(
        masked["result"]["body"],
        json!({
            "id": 42,
            "name": "Jane Doe",
            "email": "[REDACTED:email]",
            "phone": "[REDACTED:phone-e164]",
            "card": {"number": "[REDACTED:payment-card]", "brand": "visa"},
            "ssn": "[REDACTED:us-ssn]",
            "employee": "[REDACTED:employee-id]",
            "notes": "rotated key [REDACTED:aws-access-key-id] yesterday",
            "password": "[REDACTED:sensitive-key]",
            "plan": "pro",
        })
    );
    assert_eq!(masked["result"]["headers"]["x-contact"], "[REDACTED:email]");

    let dropped = s.intent("customer.get_dropped", json!({}));
    assert_eq!(
        dropped["result"]["body"],
        json!({"id": 42, "name": "Jane Doe", "card": {"brand": "visa"}, "plan": "pro"}),
        "{dropped}"
    );
    assert!(dropped["result"]["headers"].get("x-contact").is_none(), "{dropped}");

    let blocked = s.intent("customer.get_blocked", json!({}));
    assert_eq!(blocked["status"], "withheld", "{blocked}");
    assert!(blocked.get("result").is_none(), "{blocked}");
    let error = blocked["error"].as_str().unwrap();
    assert!(
        error.starts_with("the action was executed, but its response was withheld"),
        "{error}"
    );
    for kind in [
        "payment-card at /card/number",
        "email at /email",
        "sensitive-key at /password",
    ] {
        assert!(error.contains(kind), "{error}");
    }

    let contact = s.intent("customer.contact", json!({}));
    assert_eq!(
        contact["result"]["body"],
        json!({"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "[REDACTED:phone-e164]"}),
        "{contact}"
    );
    // Four actions, four upstream calls: `block` withholds the result, not the call.
    assert_eq!(s.env.upstream.requests().len(), 4);

    // The audit log says what was found where, and never the values.
    let events = s.env.audit_tail(20);
    let outcomes: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"]["kind"] == "outcome")
        .map(|e| &e["event"]["detail"])
        .collect();
    assert_eq!(outcomes.len(), 4, "{events:#?}");
    assert_eq!(outcomes[2]["response_redaction"], "block");
    let found = outcomes[2]["response_findings"].as_array().unwrap();
    assert!(
        found.contains(&json!({"kind": "us-ssn", "category": "pii", "pointer": "/ssn"})),
        "{found:?}"
    );
    let audit = serde_json::to_string(&events).unwrap();
    for value in [
        "jane.doe@example.com",
        "4111 1111 1111 1111",
        "123-45-6789",
        "AKIAZ7Q3XKJ5VW2MLP4N",
    ] {
        assert!(!audit.contains(value), "{value} in the audit log");
    }
    assert!(s.env.audit_verify().success());
}

#[test]
fn inbound_findings_drive_policy_and_outbound_redaction() {
    let s = setup();

    let refused = s.intent("notes.send", json!({"text": "card 4111-1111-1111-1111, call me"}));
    assert_eq!(refused["status"], "denied", "{refused}");
    assert_eq!(
        refused["decision"]["reasons"],
        json!(["notes must not carry card numbers"])
    );
    assert!(s.env.upstream.requests().is_empty(), "a denied intent sends nothing");
    let decided = s
        .env
        .audit_tail(5)
        .into_iter()
        .find(|e| e["event"]["kind"] == "decided")
        .unwrap();
    assert_eq!(
        decided["event"]["detail"]["input_findings"],
        json!([{"kind": "payment-card", "category": "pii", "pointer": "/text"}])
    );

    // `request.redact: true`: the upstream gets the note with the address masked.
    let sent = s.intent("notes.send", json!({"text": "reach me at ops@example.com"}));
    assert_eq!(sent["status"], "executed", "{sent}");
    let got = s.env.upstream.requests();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"text": "reach me at [REDACTED:email]"}));
    // The audit log hashes the input as decided, and the outcome names what was sent instead.
    let events = s.env.audit_tail(2);
    let (decided, outcome) = (&events[0]["event"], &events[1]["event"]);
    assert_eq!(outcome["kind"], "outcome", "{events:?}");
    let sent = outcome["detail"]["request_redacted"]["sent_payload_sha256"]
        .as_str()
        .unwrap();
    assert_eq!(sent.len(), 64, "{outcome}");
    assert_ne!(Some(sent), decided["payload_sha256"].as_str(), "{events:?}");

    // Without it, the upstream gets the input as sent.
    s.intent("echo.send", json!({"text": "reach me at ops@example.com"}));
    let got = s.env.upstream.requests();
    let body: Value = serde_json::from_str(got[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"text": "reach me at ops@example.com"}));
}

#[test]
fn no_true_example_of_any_rule_survives_into_responses_errors_the_audit_log_or_the_log() {
    let s = setup();
    let detector = Detector::builtin();
    let examples: Vec<&str> = builtin_rules()
        .flat_map(|rule| rule.examples_true.iter().copied())
        .collect();
    // What the detector finds in each example, by itself: the values that must not appear.
    let mut values: Vec<String> = Vec::new();
    for example in &examples {
        for finding in detector.find(example) {
            values.push(example[finding.range].to_owned());
        }
    }
    assert!(values.len() >= examples.len(), "every example has a finding");
    let text = examples.join("\n");

    // The upstream echoes them all back: the agent's result is masked.
    let echoed = s.intent("echo.send", json!({"text": text}));
    assert_eq!(echoed["status"], "executed", "{echoed}");
    // A rejected input: its error (and audit event) name the field, never the value.
    let rejected = s.intent("echo.send", json!({"text": "x", "mode": text}));
    assert_eq!(rejected["error"]["code"], "invalid_input", "{rejected}");

    let responses = format!("{echoed}\n{rejected}");
    let audit = s.env.cli(&["audit", "export", "--format", "jsonl"], None).stdout;
    let log = s.gateway.log();
    assert!(log.contains("validated"), "the debug log shows payloads: {log}");
    for value in &values {
        for (place, text) in [("a response", &responses), ("the audit log", &audit), ("the log", &log)] {
            assert!(!text.contains(value.as_str()), "{value:?} survived into {place}");
        }
    }
    // And it was all there to find: the upstream did receive the plain text.
    let sent = s.env.upstream.requests();
    let body: Value = serde_json::from_str(sent[0]["body"].as_str().unwrap()).unwrap();
    let received = body["text"].as_str().unwrap();
    assert!(values.iter().all(|v| received.contains(v.as_str())));
}

#[test]
fn check_validates_operator_rules_against_their_examples() {
    let env = Env::new();
    let broken = CONFIG.replace(
        "redaction:\n  rules:",
        r#"redaction:
  disable: [ipv4, no-such-rule]
  rules:
    - id: ticket-ref
      category: secret
      keywords: [tkt]
      regex: 'TKT-(\d{4}'
      examples_true: ["TKT-1234"]
    - id: badge
      category: pii
      keywords: [badge]
      regex: '\bbadge \d{5}\b'
      examples_true: ["badge 12345", "badge 1234"]
      examples_false: ["badge 99999"]"#,
    );
    env.write("portcullis.yaml", &broken);
    env.write(
        "actions/crm.yaml",
        &ACTIONS.replace("allow: [email]", "allow: [email, no-such-kind]"),
    );
    env.write("policies/crm.cedar", POLICIES);
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    for expected in [
        "`no-such-rule` is not a builtin rule",
        "`ticket-ref` has a regex that does not compile",
        "`badge` finds nothing in its true example \"badge 1234\"",
        "`badge` finds something in its false example \"badge 99999\"",
        "`response.allow` names `no-such-kind`",
    ] {
        assert!(out.stderr.contains(expected), "missing {expected:?} in {}", out.stderr);
    }
    assert_eq!(out.stderr.matches("problem(s) found").count(), 1, "{}", out.stderr);
    // The gateway refuses to start on it, too.
    let serve = env.cli(&["serve", "--listen", "127.0.0.1:0"], None);
    assert_eq!(serve.code, Some(1), "{serve:?}");

    env.write("portcullis.yaml", CONFIG);
    env.write("actions/crm.yaml", ACTIONS);
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    let rules = Detector::builtin().rule_ids().count() + 1;
    assert!(
        out.stderr.contains(&format!("{rules} redaction rule(s)")),
        "{}",
        out.stderr
    );
    env.upstream.assert_untouched("check");
}
