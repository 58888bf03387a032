//! Structural request assembly: values fill exactly their slot, and the credential goes
//! only to its realm.

use std::collections::BTreeMap;
use std::path::Path;

use portcullis_catalog::Catalog;
use portcullis_core::json::Limits;
use portcullis_core::{AgentId, Secret};
use portcullis_exec::prepare::{Credential, Injection, PrepareError, dry_run_view, prepare, render};
use portcullis_policy::{PolicyEngine, PolicyInputs};
use proptest::prelude::*;
use serde_json::{Value, json};

const ACTIONS: &str = r#"
name: repo.get
input:
  type: object
  required: [owner, repo]
  properties:
    owner: {type: string}
    repo: {type: string}
    state: {type: string}
    per_page: {type: integer}
    labels: {type: array, items: {type: string}}
    note: {type: string}
    count: {type: integer}
    flag: {type: boolean}
request:
  method: POST
  url: https://api.example.com/repos/{owner}/{repo}/issues?state={state}&fixed=a b
  headers: {X-Note: "note: {note}"}
  body: {labels: "{labels}", count: "{count}", flag: "{flag}", title: "for {owner}", nested: [{n: "{count}"}]}
"#;

fn catalog() -> Catalog {
    Catalog::from_source(Path::new("a.yaml"), ACTIONS, Limits::default()).unwrap()
}

fn url_of(input: Value) -> Result<String, PrepareError> {
    let c = catalog();
    render(c.get("repo.get").unwrap(), &input).map(|r| r.url.to_string())
}

#[test]
fn path_values_fill_exactly_one_encoded_segment() {
    let u = url_of(json!({"owner": "a/b?c#d%e;f", "repo": "r s"})).unwrap();
    assert_eq!(
        u,
        "https://api.example.com/repos/a%2Fb%3Fc%23d%25e%3Bf/r%20s/issues?fixed=a+b"
    );
    let u = url_of(json!({"owner": "%2e%2e", "repo": "x"})).unwrap();
    assert!(u.starts_with("https://api.example.com/repos/%252e%252e/x/"), "{u}");
    let u = url_of(json!({"owner": "a\r\nb\tc", "repo": "x"})).unwrap();
    assert!(
        u.contains("/a%0D%0Ab%09c/"),
        "control characters are encoded, not dropped: {u}"
    );
}

#[test]
fn dot_segments_and_empty_values_are_refused() {
    for bad in [".", "..", ""] {
        let err = url_of(json!({"owner": bad, "repo": "x"})).unwrap_err();
        assert!(matches!(err, PrepareError::PathSegment { .. }), "{bad:?}: {err}");
    }
    assert!(
        url_of(json!({"owner": "...", "repo": "x"})).is_ok(),
        "three dots are an ordinary name"
    );
    assert!(matches!(
        url_of(json!({"owner": ["a"], "repo": "x"})),
        Err(PrepareError::PathSegment { .. })
    ));
}

#[test]
fn query_values_are_encoded_and_cannot_add_parameters() {
    let u = url_of(json!({"owner": "o", "repo": "r", "state": "open&admin=true#x"})).unwrap();
    assert_eq!(
        u,
        "https://api.example.com/repos/o/r/issues?state=open%26admin%3Dtrue%23x&fixed=a+b"
    );
}

#[test]
fn header_values_with_line_breaks_are_refused() {
    let c = catalog();
    let a = c.get("repo.get").unwrap();
    let err = render(a, &json!({"owner": "o", "repo": "r", "note": "x\r\nX-Evil: 1"})).unwrap_err();
    assert_eq!(err, PrepareError::Header("x-note".into()));
    let ok = render(a, &json!({"owner": "o", "repo": "r", "note": "fine"})).unwrap();
    assert!(ok.headers.contains(&("x-note".into(), "note: fine".into())));
}

#[test]
fn bodies_keep_json_types_and_drop_missing_optionals() {
    let c = catalog();
    let a = c.get("repo.get").unwrap();
    let r = render(
        a,
        &json!({"owner": "o", "repo": "r", "labels": ["x", "y"], "count": 3, "flag": false}),
    )
    .unwrap();
    assert_eq!(
        r.body.unwrap(),
        json!({"labels": ["x", "y"], "count": 3, "flag": false, "title": "for o", "nested": [{"n": 3}]})
    );
    let r = render(a, &json!({"owner": "o", "repo": "r"})).unwrap();
    assert_eq!(r.body.unwrap(), json!({"title": "for o", "nested": [{}]}));
}

pub(crate) fn permit_all(c: &Catalog) -> (tempfile::TempDir, PolicyEngine) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.cedar");
    std::fs::write(&file, "permit (principal, action, resource);").unwrap();
    let engine = PolicyEngine::load(PolicyInputs {
        catalog: c,
        agents: &BTreeMap::new(),
        entities: &[],
        policy_files: std::slice::from_ref(&file),
        counters: &std::collections::BTreeMap::new(),
        claim_attributes: &[],
    })
    .unwrap();
    (dir, engine)
}

#[test]
fn the_credential_goes_only_to_its_realm() {
    let c = catalog();
    let a = c.get("repo.get").unwrap();
    let (_dir, engine) = permit_all(&c);
    let decide = || {
        let input = a.validate(json!({"owner": "o", "repo": "r"})).unwrap();
        engine
            .decide(
                &AgentId::new("bot").unwrap(),
                a,
                input,
                &[],
                &[],
                time::OffsetDateTime::now_utc(),
            )
            .into_permitted()
            .unwrap()
    };
    let secret = || Secret::new("s3cr3t-value".to_owned());
    let wrong = Credential::new(Injection::Bearer, secret(), "https://evil.example.com".into());
    let err = prepare(decide(), a, Some(&wrong)).unwrap_err();
    assert!(matches!(err, PrepareError::RealmMismatch { .. }), "{err}");
    assert!(!err.to_string().contains("s3cr3t"));
    let right = Credential::new(
        Injection::Query { param: "key".into() },
        secret(),
        "https://api.example.com".into(),
    );
    assert!(prepare(decide(), a, Some(&right)).is_ok());
    let view = dry_run_view(render(a, &json!({"owner": "o", "repo": "r"})).unwrap(), Some(&right)).unwrap();
    assert!(view.url.as_str().ends_with("&key=%3Credacted%3E"), "{}", view.url);
}

proptest! {
    /// Whatever string an agent sends as a path value, the URL keeps the template's
    /// segments and decoding the segment gives back exactly the value.
    #[test]
    fn any_path_value_round_trips_in_one_segment(owner in "\\PC{1,30}") {
        prop_assume!(owner != "." && owner != "..");
        let u = url::Url::parse(&url_of(json!({"owner": owner, "repo": "r"})).unwrap()).unwrap();
        prop_assert_eq!(u.host_str(), Some("api.example.com"));
        let segs: Vec<&str> = u.path_segments().unwrap().collect();
        prop_assert_eq!(segs.len(), 4);
        prop_assert_eq!(segs[0], "repos");
        let decoded = percent_encoding::percent_decode_str(segs[1]).decode_utf8().unwrap();
        prop_assert_eq!(decoded.as_ref(), owner.as_str());
        prop_assert_eq!(segs[2], "r");
    }
}
