//! The happy path and its neighbours: allow, deny, dry run, lookups, idempotency.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::fixtures::{AGENT, assert_no_secret, standard};
use crate::harness::recorded_headers;

#[test]
fn allowed_intent_injects_the_credential_once_and_returns_only_the_projection() {
    let s = standard();
    let r = s.intent(&json!({
        "action": "tickets.create",
        "input": {"project": "website", "title": "Login page is slow"}
    }));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "executed");
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(body["decision"]["effect"], "allow");
    assert_eq!(body["decision"]["reasons"], json!(["support bots may create tickets"]));
    assert_eq!(body["result"]["status"], 201);
    // `response.keep` is [/number, /title, /state, /url]: the upstream also sent
    // `internal_notes` and `debug_auth` (the credential, echoed back), and both are gone.
    let kept: BTreeSet<&str> = body["result"]["body"]
        .as_object()
        .expect("result body object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(kept, BTreeSet::from(["number", "title", "state", "url"]));
    assert_eq!(body["result"]["body"]["title"], "Login page is slow");
    assert_no_secret(&r.raw, &s.secret, "the agent's response");

    let got = s.env.upstream.requests();
    assert_eq!(got.len(), 1, "exactly one upstream request: {got:#?}");
    let req = &got[0];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["path"], "/tickets");
    assert_eq!(
        recorded_headers(req, "authorization"),
        vec![format!("Bearer {}", s.secret)],
        "exactly one Authorization header, carrying the stored secret"
    );
    // The payload decided on is the payload sent; absent optional fields are left out.
    let sent: Value = serde_json::from_str(req["body"].as_str().expect("body")).expect("JSON body");
    assert_eq!(sent, json!({"project": "website", "title": "Login page is slow"}));

    // The secret reaches no log line either (the gateway runs with `-v`).
    let log = s.gateway.log();
    assert!(log.contains("executed"), "the gateway logs at info level: {log}");
    assert_no_secret(&log, &s.secret, "the gateway's log");
}

#[test]
fn denied_intent_is_403_with_the_forbid_reason_and_nothing_is_sent() {
    let s = standard();
    let r = s.intent(&json!({
        "action": "tickets.create",
        "input": {"project": "website", "title": "Everything is down", "priority": "urgent"}
    }));
    assert_eq!(r.status, 403, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "denied");
    assert_eq!(body["decision"]["effect"], "deny");
    assert_eq!(
        body["decision"]["reasons"],
        json!(["agents may not open urgent tickets; page a human instead"])
    );
    assert!(body.get("result").is_none(), "{body}");
    s.env.upstream.assert_untouched("denied intent");
}

#[test]
fn dry_run_shows_the_request_with_the_credential_redacted_and_sends_nothing() {
    let s = standard();
    let r = s.intent(&json!({
        "action": "tickets.create",
        "input": {"project": "docs", "title": "Typo"},
        "dry_run": true
    }));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "dry_run");
    assert_eq!(body["decision"]["effect"], "allow");
    let request = &body["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(
        request["url"],
        format!("http://127.0.0.1:{}/tickets", s.env.upstream.port)
    );
    assert_eq!(request["headers"]["authorization"], "Bearer <redacted>");
    assert_eq!(request["body"], json!({"project": "docs", "title": "Typo"}));
    assert_no_secret(&r.raw, &s.secret, "the dry run");
    s.env.upstream.assert_untouched("dry run");
}

#[test]
fn an_intent_can_be_read_back_by_its_agent_only() {
    let s = standard();
    let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "website", "title": "Hello"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    let posted = r.json();
    let id = posted["id"].as_str().expect("id");

    let mine = s.gateway.get(&format!("/v1/intents/{id}"), Some(&s.token));
    assert_eq!(mine.status, 200, "{}", mine.text());
    assert_eq!(mine.json(), posted, "the stored result is what the agent got");
    assert_no_secret(&mine.raw, &s.secret, "a stored intent");

    let theirs = s.gateway.get(&format!("/v1/intents/{id}"), Some(&s.other_token));
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    assert_eq!(theirs.json()["error"]["code"], "not_found");
    let missing = s
        .gateway
        .get("/v1/intents/int_00000000000000000000000000000000", Some(&s.token));
    assert_eq!(missing.status, 404);
    assert_eq!(
        theirs.json(),
        missing.json(),
        "another agent's intent looks exactly like one that doesn't exist"
    );
    let anonymous = s.gateway.get(&format!("/v1/intents/{id}"), None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(s.env.upstream.requests().len(), 1);
}

#[test]
fn actions_lists_only_what_each_agent_may_call_with_schemas() {
    let s = standard();
    let names = |token: &str| -> BTreeSet<String> {
        let r = s.gateway.get("/v1/actions", Some(token));
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        let actions = body["actions"].as_array().expect("actions").clone();
        for a in &actions {
            assert_eq!(a["input_schema"]["type"], "object", "{a}");
        }
        actions
            .iter()
            .map(|a| a["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let support = names(&s.token);
    assert_eq!(
        support,
        [
            "files.get",
            "leak.basic",
            "leak.bearer",
            "leak.query",
            "search",
            "tickets.create"
        ]
        .map(String::from)
        .into(),
        "admin.purge exists but no permit makes it visible to {AGENT}"
    );
    assert_eq!(names(&s.other_token), BTreeSet::from(["tickets.create".to_owned()]));

    let r = s.gateway.get("/v1/actions", Some(&s.token));
    let body = r.json();
    let create = body["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["name"] == "tickets.create")
        .expect("tickets.create")
        .clone();
    assert_eq!(create["description"], "Create a ticket in the demo tracker");
    assert_eq!(create["input_schema"]["required"], json!(["project", "title"]));
    assert_eq!(
        create["input_schema"]["properties"]["project"]["pattern"],
        "^[a-z0-9-]{1,40}$"
    );

    assert_eq!(s.gateway.get("/v1/actions", None).status, 401);
    s.env.upstream.assert_untouched("listing actions");
}

#[test]
fn idempotency_key_replays_the_same_result_and_refuses_a_different_payload() {
    let s = standard();
    let first_intent = json!({
        "action": "tickets.create",
        "input": {"project": "website", "title": "Once only"},
        "idempotency_key": "create-once-1"
    });
    let first = s.intent(&first_intent);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["status"], "executed");
    let again = s.intent(&first_intent);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        again.json(),
        first.json(),
        "a replay returns the stored result, same id"
    );
    assert_eq!(s.env.upstream.requests().len(), 1, "a replay is never executed again");

    let conflict = s.intent(&json!({
        "action": "tickets.create",
        "input": {"project": "website", "title": "Something else"},
        "idempotency_key": "create-once-1"
    }));
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    let err = conflict.json();
    assert_eq!(err["error"]["code"], "idempotency_conflict");
    assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(s.env.upstream.requests().len(), 1);

    // Keys belong to an agent: another agent's identical key is a new intent.
    let other = s.gateway.post_intent(&s.other_token, &first_intent);
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(other.json()["status"], "executed");
    assert_ne!(other.json()["id"], first.json()["id"]);
    assert_eq!(s.env.upstream.requests().len(), 2);
}
