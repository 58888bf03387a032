//! A hostile upstream (`GET /leak`) echoes the credential back in its body and in an
//! `X-Echo` header; the agent must get `<redacted>` and never the secret in any spelling.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::fixtures::{BASIC_USER, assert_no_secret, form_decode, standard};
use crate::harness::recorded_headers;

fn leak(s: &crate::fixtures::Standard, action: &str) -> Value {
    let r = s.intent(&json!({"action": action, "input": {}}));
    assert_eq!(r.status, 200, "{action}: {}", r.text());
    assert_no_secret(&r.raw, &s.secret, action);
    let body = r.json();
    assert_eq!(body["status"], "executed", "{action}: {body}");
    assert_eq!(body["result"]["status"], 200, "{action}: {body}");
    body
}

#[test]
fn bearer_credential_echoed_in_body_and_header_is_redacted() {
    let s = standard();
    let body = leak(&s, "leak.bearer");
    let echo = body["result"]["body"]["echo"].as_str().expect("echo");
    assert!(echo.contains("<redacted>"), "{body}");
    let header = body["result"]["headers"]["x-echo"].as_str().expect("x-echo exposed");
    assert!(header.contains("<redacted>"), "{body}");

    let got = s.env.upstream.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        recorded_headers(&got[0], "authorization"),
        vec![format!("Bearer {}", s.secret)]
    );
}

#[test]
fn query_credential_reaches_the_upstream_and_never_the_agent() {
    let s = standard();
    let body = leak(&s, "leak.query");
    let query = body["result"]["body"]["query"].as_str().expect("query");
    assert!(query.contains("<redacted>"), "{body}");

    let got = s.env.upstream.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    let sent = got[0]["query"].as_str().expect("query");
    let pairs: Vec<(String, String)> = sent
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    assert_eq!(
        pairs,
        vec![("api_key".to_owned(), s.secret.clone())],
        "query was `{sent}`"
    );
    assert!(
        recorded_headers(&got[0], "authorization").is_empty(),
        "a query credential adds no Authorization header"
    );
}

#[test]
fn basic_credential_is_sent_as_base64_user_colon_secret_and_redacted_in_the_echo() {
    let s = standard();
    let body = leak(&s, "leak.basic");
    assert!(
        body["result"]["body"]["echo"]
            .as_str()
            .is_some_and(|e| e.contains("<redacted>")),
        "{body}"
    );
    assert!(
        body["result"]["headers"]["x-echo"]
            .as_str()
            .is_some_and(|e| e.contains("<redacted>")),
        "{body}"
    );

    let got = s.env.upstream.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{}", s.secret));
    assert_eq!(
        recorded_headers(&got[0], "authorization"),
        vec![format!("Basic {expected}")]
    );
}
