//! Agent input that tries to escape its slot: a path parameter that would add segments or
//! a query, a query value that would add a parameter, a header value that would add a
//! header. Each is either refused (400, nothing sent) or arrives as exactly the value that
//! was decided on, inside its slot.

use serde_json::{Value, json};

use crate::fixtures::{Standard, form_decode, percent_decode, standard};
use crate::harness::recorded_headers;

/// Sends `action` with `input`; returns the new upstream request, or `None` when the
/// gateway refused the input (after checking the refusal and that nothing was sent).
fn send(s: &Standard, action: &str, input: &Value) -> Option<Value> {
    let before = s.env.upstream.requests().len();
    let r = s.intent(&json!({"action": action, "input": input}));
    let got = s.env.upstream.requests();
    if r.status == 400 {
        assert_eq!(r.json()["error"]["code"], "invalid_input", "{input}: {}", r.text());
        assert_eq!(got.len(), before, "{input}: refused, yet something was sent: {got:#?}");
        return None;
    }
    assert_eq!(r.status, 200, "{input}: {}", r.text());
    assert_eq!(r.json()["status"], "executed", "{input}: {}", r.text());
    assert_eq!(got.len(), before + 1, "{input}: {got:#?}");
    got.last().cloned()
}

#[test]
fn a_path_parameter_fills_exactly_one_segment_with_exactly_its_value() {
    let s = standard();
    let values = [
        "plain-name.txt",
        "a/b",
        "../etc/passwd",
        "%2e%2e",
        "..%2f..%2fadmin",
        "a?b=c#d",
        "a;jsessionid=x",
        "a\tb",
        "a\r\nb",
        "é ü",
    ];
    for v in values {
        let Some(req) = send(&s, "files.get", &json!({"name": v})) else {
            continue;
        };
        let path = req["path"].as_str().expect("path");
        let segment = path
            .strip_prefix("/files/")
            .unwrap_or_else(|| panic!("{v:?}: path `{path}` left /files/"));
        assert!(!segment.contains('/'), "{v:?}: `{path}` has more than one segment");
        assert!(!segment.contains(';'), "{v:?}: `;` must be encoded: `{path}`");
        assert_eq!(req["query"], "", "{v:?}: a query appeared: {req}");
        assert_eq!(
            percent_decode(segment),
            v,
            "{v:?}: the segment sent differs from the value decided on"
        );
    }
    assert!(s.env.upstream.requests().len() >= 2, "ordinary names are not refused");
}

#[test]
fn a_query_value_cannot_add_parameters_or_replace_the_credential() {
    let s = standard();
    let q = "x&api_key=attacker&q=y#frag";
    let req = send(&s, "search", &json!({"q": q})).expect("an odd query value is still a valid search");
    let sent = req["query"].as_str().expect("query");
    let pairs: Vec<(String, String)> = sent
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    assert_eq!(
        pairs,
        vec![("q".to_owned(), q.to_owned()), ("api_key".to_owned(), s.secret.clone())],
        "query was `{sent}`"
    );
}

#[test]
fn a_header_value_cannot_add_a_header() {
    let s = standard();
    let req = send(&s, "search", &json!({"q": "x", "label": "fine"})).expect("a plain label");
    assert_eq!(recorded_headers(&req, "x-search-label"), vec!["fine".to_owned()]);

    for label in ["a\r\nAuthorization: Bearer attacker", "a\nX-Injected: 1", "a\0b"] {
        let sent = send(&s, "search", &json!({"q": "x", "label": label}));
        if let Some(req) = sent {
            assert!(recorded_headers(&req, "x-injected").is_empty(), "{label:?}: {req}");
            assert!(recorded_headers(&req, "authorization").is_empty(), "{label:?}: {req}");
            assert_eq!(recorded_headers(&req, "x-search-label"), vec![label.to_owned()]);
        }
    }
}
