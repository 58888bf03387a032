//! Loading action files and validating input, as `portcullis check` and the gateway do.

// `cfg(test)` makes clippy treat the helpers as test code (unwrap allowed, as in every test).
#![cfg(test)]

use std::path::Path;

use portcullis_catalog::Catalog;
use portcullis_core::json::Limits;
use serde_json::json;

const GOOD: &str = r#"
name: github.create_issue
description: Create an issue
input:
  type: object
  required: [owner, repo, title]
  properties:
    owner: {type: string, pattern: "^[A-Za-z0-9-]{1,39}$"}
    repo: {type: string}
    title: {type: string, maxLength: 20}
    assignee: {type: string, format: email}
    labels: {type: array, items: {type: string}}
resource: {type: Repo, id: "{owner}/{repo}"}
request:
  method: POST
  url: https://api.github.com/repos/{owner}/{repo}/issues
  body: {title: "{title}", labels: "{labels}"}
credential: github
response:
  keep: [/number]
---
name: github.list_issues
input: {type: object, properties: {state: {type: string}}}
request:
  method: GET
  url: https://api.github.com/issues?state={state}
"#;

fn load(src: &str) -> Result<Catalog, Vec<String>> {
    Catalog::from_source(Path::new("actions.yaml"), src, Limits::default())
        .map_err(|d| d.into_iter().map(|d| d.to_string()).collect())
}

#[test]
fn a_valid_file_loads_every_document() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.len(), 2);
    let a = c.get("github.create_issue").unwrap();
    assert_eq!(a.realm(), "https://api.github.com");
    assert_eq!(a.credential.as_deref(), Some("github"));
    assert!(!a.hints.read_only);
    assert!(c.get("github.list_issues").unwrap().hints.read_only);
    assert_eq!(
        a.input_schema["additionalProperties"],
        json!(false),
        "closed by default"
    );
}

#[test]
fn every_problem_is_listed_with_file_and_line() {
    let src = r#"
name: a.bad_schema
input: {type: object, properties: {n: {type: nope}}}
request: {method: GET, url: "https://x.test/"}
---
name: a.missing_field
input: {type: object, properties: {id: {type: string}}}
request:
  method: GET
  url: "https://x.test/items/{item}"
---
name: a.templated_host
input: {type: object, required: [h], properties: {h: {type: string}}}
request: {method: GET, url: "https://{h}.example.com/"}
---
name: a.optional_path
input: {type: object, properties: {id: {type: string}}}
request: {method: GET, url: "https://x.test/items/{id}"}
"#;
    let errs = load(src).unwrap_err();
    let all = errs.join("\n");
    assert_eq!(errs.len(), 4, "{all}");
    assert!(
        all.contains("actions.yaml:3: action `a.bad_schema`: `input` is not a valid JSON Schema"),
        "{all}"
    );
    assert!(all.contains("actions.yaml:10: action `a.missing_field`: the URL path uses `{item}`, but the input schema has no field `item`"), "{all}");
    assert!(all.contains("has a placeholder in its origin"), "{all}");
    assert!(all.contains("`{id}`, which must be listed in `required`"), "{all}");
}

#[test]
fn unknown_keys_and_duplicates_are_errors() {
    let unknown = "name: a.b\ninput: {type: object}\nrequest: {method: GET, url: \"https://x.test/\"}\nretries: 3\n";
    let errs = load(unknown).unwrap_err();
    assert!(errs[0].starts_with("actions.yaml:4:"), "{errs:?}");
    assert!(errs[0].contains("retries"), "{errs:?}");
    let dup = "name: a.b\ninput: {type: object}\nrequest: {method: GET, url: \"https://x.test/\"}\n---\nname: a.b\ninput: {type: object}\nrequest: {method: GET, url: \"https://x.test/\"}\n";
    let errs = load(dup).unwrap_err();
    assert_eq!(errs, vec!["actions.yaml:5: action `a.b` is defined twice"]);
}

#[test]
fn remote_refs_are_refused_at_load() {
    let src = "name: a.b\ninput: {type: object, properties: {x: {$ref: \"https://example.com/s.json\"}}}\nrequest: {method: GET, url: \"https://x.test/\"}\n";
    let errs = load(src).unwrap_err();
    assert!(errs[0].contains("does not compile"), "{errs:?}");
}

#[test]
fn reserved_headers_and_credential_headers_are_refused() {
    let src = "name: a.b\ninput: {type: object, properties: {t: {type: string}}}\nrequest:\n  method: GET\n  url: \"https://x.test/\"\n  headers: {Authorization: \"Bearer {t}\"}\n";
    assert!(load(src).unwrap_err()[0].contains("can't take input values"));
    let src = "name: a.b\ninput: {type: object}\nrequest:\n  method: GET\n  url: \"https://x.test/\"\n  headers: {Host: evil.test}\n";
    assert!(load(src).unwrap_err()[0].contains("set by the gateway"));
}

#[test]
fn validation_names_every_offending_field() {
    let c = load(GOOD).unwrap();
    let a = c.get("github.create_issue").unwrap();
    let err = a
        .validate(json!({"owner": "bad owner!", "repo": 5, "title": "t", "extra": 1}))
        .unwrap_err();
    let problems = err.problems().join("\n");
    assert!(problems.contains("/owner"), "{problems}");
    assert!(problems.contains("/repo"), "{problems}");
    assert!(problems.contains("extra"), "{problems}");
    assert!(
        a.validate(json!({"owner": "o", "repo": "r", "title": "t", "assignee": "not-an-email"}))
            .is_err(),
        "formats are checked"
    );
}

#[test]
fn canonical_input_is_what_is_hashed() {
    let c = load(GOOD).unwrap();
    let a = c.get("github.create_issue").unwrap();
    let one = a
        .validate(json!({"title": "t", "owner": "o", "repo": "r", "assignee": "  Dev@Example.COM "}))
        .unwrap();
    let two = a
        .validate(json!({"assignee": "dev@example.com", "repo": "r", "owner": "o", "title": "t"}))
        .unwrap();
    assert_eq!(
        one.value()["assignee"],
        json!("dev@example.com"),
        "emails are trimmed and lowercased before validation"
    );
    assert_eq!(one.sha256(), two.sha256());
    assert_eq!(
        one.canonical_json(),
        r#"{"assignee":"dev@example.com","owner":"o","repo":"r","title":"t"}"#
    );
}

#[test]
fn whole_floats_become_integers_where_the_schema_says_integer_and_nowhere_else() {
    let src = r#"
name: pay
description: Pay
input:
  type: object
  properties:
    amount: {type: integer}
    ratio: {type: number}
    counts: {type: array, items: {type: integer}}
request: {method: POST, url: "https://api.example.test/pay", body: {amount: "{amount}"}}
"#;
    let c = load(src).unwrap();
    let a = c.get("pay").unwrap();
    let v = a
        .validate(json!({"amount": 7.0, "ratio": 2.0, "counts": [1.0, -3.0]}))
        .unwrap();
    assert!(v.value()["amount"].is_i64(), "{}", v.value());
    assert!(v.value()["ratio"].is_f64(), "a `number` keeps its form: {}", v.value());
    assert!(v.value()["counts"][1].is_i64(), "{}", v.value());
    assert_eq!(
        v.sha256(),
        a.validate(json!({"amount": 7, "ratio": 2.0, "counts": [1, -3]}))
            .unwrap()
            .sha256()
    );
    assert!(a.validate(json!({"amount": 7.5})).is_err(), "7.5 is no integer");
}

#[test]
fn deep_input_is_refused() {
    let c = load(GOOD).unwrap();
    let a = c.get("github.create_issue").unwrap();
    let mut deep = json!("x");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let err = a
        .validate(json!({"owner": "o", "repo": "r", "title": "t", "labels": deep}))
        .unwrap_err();
    assert!(err.to_string().contains("deeper"), "{err}");
}

#[test]
fn redirects_are_off_by_default_and_bounded() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.get("github.list_issues").unwrap().http().unwrap().redirects, 0);

    let with = |n: &str| {
        format!(
            "name: a.b\ninput: {{type: object}}\nrequest:\n  method: GET\n  url: \"https://x.test/\"\n  redirects: {n}\n"
        )
    };
    for (n, expected) in [("0", 0), ("2", 2), ("5", 5)] {
        let c = load(&with(n)).unwrap();
        assert_eq!(
            c.get("a.b").unwrap().http().unwrap().redirects,
            expected,
            "redirects: {n}"
        );
    }
    for n in ["6", "-1", "1000"] {
        let errs = load(&with(n)).unwrap_err();
        assert_eq!(
            errs,
            vec![format!(
                "actions.yaml:6: action `a.b`: `request.redirects` is {n}: it must be a whole number from 0 \
                 (the default: redirects are not followed) to 5"
            )],
            "redirects: {n}"
        );
    }
    for n in ["1.5", "yes", "[1]", "{n: 1}"] {
        let errs = load(&with(n)).unwrap_err();
        assert_eq!(errs.len(), 1, "redirects: {n}: {errs:?}");
        assert!(errs[0].starts_with("actions.yaml:6:"), "redirects: {n}: {errs:?}");
    }
    // Reported together with the file's other problems.
    let src = format!("{}  headers: {{Host: evil.test}}\n", with("9"));
    let errs = load(&src).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
}

const SMTP: &str = r#"
name: email.send
input:
  type: object
  required: [to, subject, text]
  properties:
    to: {type: array, items: {type: string, format: email}}
    bcc: {type: string, format: email}
    subject: {type: string}
    text: {type: string}
smtp:
  server: smtp.example.com
  port: 587
  tls: starttls
  from: agent@example.com
  to: "{to}"
  bcc: "{bcc}"
  subject: "[agent] {subject}"
  text: "{text}"
credential: mail
"#;

#[test]
fn an_smtp_action_loads_with_its_realm_and_no_read_only_hint() {
    let c = load(SMTP).unwrap();
    let a = c.get("email.send").unwrap();
    let spec = a.smtp().unwrap();
    assert!(a.http().is_none());
    assert_eq!(spec.port, 587);
    assert_eq!(spec.tls, portcullis_catalog::smtp::SmtpTls::Starttls);
    assert_eq!(a.realm(), "smtp://smtp.example.com:587");
    assert!(!a.hints.read_only && !a.hints.idempotent);
}

#[test]
fn smtp_sections_are_checked_when_loaded() {
    let cases = [
        (
            SMTP.replace("to: \"{to}\"", "to: \"x{to}\""),
            "`smtp.to` must be one literal address or one `{field}`",
        ),
        (
            SMTP.replace("\"{bcc}\"", "\"{nobody}\""),
            "`smtp.bcc` uses `{nobody}`, but the input schema has no field `nobody`",
        ),
        (
            SMTP.replace("port: 587", "port: 70000"),
            "`smtp.port` 70000 is not a port number",
        ),
        (SMTP.replace("tls: starttls", "tls: maybe"), "maybe"),
        (
            SMTP.replace("  text: \"{text}\"\n", ""),
            "needs a `text` or an `html` body",
        ),
        (
            SMTP.replace("  to: \"{to}\"\n  bcc: \"{bcc}\"\n", ""),
            "needs at least one of `to`, `cc` and `bcc`",
        ),
        (
            SMTP.replace("credential: mail", "request: {method: GET, url: \"https://x.test/\"}"),
            "has both `request` and `smtp`",
        ),
        (
            "name: a.b\ninput: {type: object}\n".to_owned(),
            "needs a `request` (HTTP) or an `smtp` section",
        ),
    ];
    for (src, expected) in cases {
        let errs = load(&src).unwrap_err();
        assert!(errs.iter().any(|e| e.contains(expected)), "{expected}: {errs:?}");
    }
}
