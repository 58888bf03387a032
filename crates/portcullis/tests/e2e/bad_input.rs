//! Bad input of every kind gets the right status and a structured error, sends nothing
//! upstream, and (when the agent authenticated) leaves a `rejected` audit event.

use serde_json::{Value, json};

use crate::fixtures::{AGENT, assert_no_secret, standard};
use crate::http::{self, Response};

/// Asserts `{"error": {"code": CODE, "message": non-empty, "details"?}}` and nothing else.
fn assert_error(r: &Response, status: u16, code: &str, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: {:?}",
        r.headers
    );
    let body = r.json();
    let top: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(top, vec!["error"], "{what}: {body}");
    let err = &body["error"];
    assert_eq!(err["code"], code, "{what}: {body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    for key in err.as_object().expect("error object").keys() {
        assert!(matches!(key.as_str(), "code" | "message" | "details"), "{what}: {body}");
    }
    err.clone()
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn bad_input_of_every_kind_is_refused_with_a_structured_error_and_nothing_is_sent() {
    let s = standard();
    let gw = s.gateway.addr;
    let token = s.token.as_str();
    let auth = format!("Bearer {token}");
    let post = |body: &[u8]| http::post_json(gw, "/v1/intents", Some(token), body);
    let ticket = |input: Value| json!({"action": "tickets.create", "input": input}).to_string();

    let malformed = post(br#"{"action": "tickets.create", "input": {"#);
    assert_error(&malformed, 400, "malformed_request", "malformed JSON");

    let dup_top =
        post(br#"{"action": "admin.purge", "action": "tickets.create", "input": {"project": "a", "title": "t"}}"#);
    let err = assert_error(&dup_top, 400, "malformed_request", "duplicate top-level key");
    assert!(err["message"].as_str().expect("message").contains("action"), "{err}");
    let dup_input = post(br#"{"action": "tickets.create", "input": {"project": "a", "title": "x", "title": "y"}}"#);
    assert_error(&dup_input, 400, "malformed_request", "duplicate input key");

    let wrong_type = http::send(
        gw,
        "POST",
        "/v1/intents",
        &[("Content-Type", "text/plain"), ("Authorization", &auth)],
        ticket(json!({"project": "a", "title": "t"})).as_bytes(),
    );
    assert_error(&wrong_type, 415, "unsupported_media_type", "wrong content type");

    let unknown = post(json!({"action": "nope.nothing", "input": {}}).to_string().as_bytes());
    let unknown_err = assert_error(&unknown, 404, "unknown_action", "unknown action");
    let invisible = post(json!({"action": "admin.purge", "input": {}}).to_string().as_bytes());
    let invisible_err = assert_error(&invisible, 404, "unknown_action", "action not visible to the agent");
    assert_eq!(
        invisible_err["message"].as_str().map(|m| m.replace("admin.purge", "X")),
        unknown_err["message"].as_str().map(|m| m.replace("nope.nothing", "X")),
        "an action the agent may not see looks exactly like one that doesn't exist"
    );
    assert_eq!(
        invisible_err.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        unknown_err.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())
    );

    let schema = post(ticket(json!({"project": "Not Valid!", "title": "t"})).as_bytes());
    let err = assert_error(&schema, 400, "invalid_input", "schema violation");
    let details = err["details"].as_array().expect("details");
    assert!(
        details
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.contains("project"))),
        "details name the field: {err}"
    );
    let extra = post(ticket(json!({"project": "a", "title": "t", "assignee": "me"})).as_bytes());
    let err = assert_error(&extra, 400, "invalid_input", "unknown input field");
    assert!(err["details"].to_string().contains("assignee"), "{err}");

    let no_token = http::post_json(
        gw,
        "/v1/intents",
        None,
        ticket(json!({"project": "a", "title": "t"})).as_bytes(),
    );
    assert_error(&no_token, 401, "unauthenticated", "missing token");
    assert!(
        no_token
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer"))
    );
    let wrong_token = http::post_json(
        gw,
        "/v1/intents",
        Some("pcl_0000000000000000000000000000000000000000000000000000000000000000"),
        ticket(json!({"project": "a", "title": "t"})).as_bytes(),
    );
    assert_error(&wrong_token, 401, "unauthenticated", "wrong token");
    assert!(
        wrong_token
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer"))
    );
    assert_eq!(
        no_token.json(),
        wrong_token.json(),
        "a wrong token and no token look the same"
    );

    // limits.max_body_bytes is 4096.
    let big = ticket(json!({"project": "a", "title": "t", "body": "x".repeat(6000)}));
    let oversized = post(big.as_bytes());
    assert_error(&oversized, 413, "payload_too_large", "oversized body");

    let dotdot = post(
        json!({"action": "files.get", "input": {"name": ".."}})
            .to_string()
            .as_bytes(),
    );
    let err = assert_error(&dotdot, 400, "invalid_input", "`..` as a path segment");
    assert!(err.to_string().contains("name"), "the error names the field: {err}");
    let dot = post(
        json!({"action": "files.get", "input": {"name": "."}})
            .to_string()
            .as_bytes(),
    );
    assert_error(&dot, 400, "invalid_input", "`.` as a path segment");

    // limits.max_depth is 8.
    let deep = format!(
        r#"{{"action": "tickets.create", "input": {{"project": "a", "title": "t", "body": {}}}}}"#,
        nested(20)
    );
    let r = post(deep.as_bytes());
    assert_eq!(r.status, 400, "deep nesting: {}", r.text());
    assert!(r.json()["error"]["code"].is_string());

    let all = [
        &malformed,
        &dup_top,
        &dup_input,
        &wrong_type,
        &unknown,
        &invisible,
        &schema,
        &extra,
        &no_token,
        &wrong_token,
        &oversized,
        &dotdot,
        &dot,
        &r,
    ];
    for resp in all {
        assert_no_secret(&resp.raw, &s.secret, "an error response");
    }
    s.env.upstream.assert_untouched("bad input");
    assert!(
        s.gateway.get("/healthz", None).status == 200,
        "the gateway survived all of it"
    );

    // Twelve of those requests came with a valid token; each left a `rejected` event and
    // none reached a decision.
    let events = s.env.audit_tail(50);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "rejected").count(),
        12,
        "one `rejected` event per authenticated rejection: {events:#?}"
    );
    assert!(kinds.iter().all(|k| *k == "rejected"), "nothing was decided: {kinds:?}");
    for e in &events {
        assert_eq!(e["event"]["agent"], AGENT, "{e}");
    }
    let text: String = events.iter().map(ToString::to_string).collect();
    assert!(
        text.contains("invalid_input") && text.contains("unknown_action"),
        "{text}"
    );
    assert_no_secret(&text, &s.secret, "the audit log");

    let verify = s.env.audit_verify();
    assert_eq!(verify.code, Some(0), "{verify:?}");
}

#[test]
fn malformed_intent_envelopes_are_refused_before_anything_runs() {
    let s = standard();
    let cases: [(&str, &[u8]); 8] = [
        ("empty body", b""),
        ("not an object", b"[1, 2]"),
        ("input not an object", br#"{"action": "tickets.create", "input": [1]}"#),
        ("missing action", br#"{"input": {"project": "a", "title": "t"}}"#),
        (
            "unknown envelope field",
            br#"{"action": "tickets.create", "input": {"project": "a", "title": "t"}, "as_agent": "root"}"#,
        ),
        (
            "dry_run not a boolean",
            br#"{"action": "tickets.create", "input": {"project": "a", "title": "t"}, "dry_run": "yes"}"#,
        ),
        (
            "integer beyond 64 bits",
            br#"{"action": "tickets.create", "input": {"project": "a", "title": "t", "n": 123456789012345678901234567890}}"#,
        ),
        (
            "invalid UTF-8",
            b"{\"action\": \"tickets.create\", \"input\": {\"project\": \"a\", \"title\": \"\xff\"}}",
        ),
    ];
    for (what, body) in cases {
        let r = http::post_json(s.gateway.addr, "/v1/intents", Some(&s.token), body);
        assert_error(&r, 400, "malformed_request", what);
    }
    let r = http::get(s.gateway.addr, "/v1/nothing-here", Some(&s.token));
    assert_error(&r, 404, "not_found", "unknown endpoint");
    s.env.upstream.assert_untouched("malformed envelopes");
}
