//! Redirects through the real client and real loopback servers: off unless the action sets
//! `request.redirects`, every hop past the guard, and the credential only ever sent to its
//! realm. Two ports on 127.0.0.1 are two origins.
//!
//! Every request here is built the way the gateway builds one: an action file, a permit from
//! the policy engine, `prepare` with the credential, then `Egress::execute`.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use portcullis_catalog::Catalog;
use portcullis_core::json::Limits;
use portcullis_core::{AgentId, RawResponse, Secret};
use portcullis_exec::prepare::{Credential, Injection, PreparedRequest, prepare};
use portcullis_exec::{Egress, EgressConfig, ExecError, RedirectError};
use serde_json::json;
use url::Url;

use crate::prepare::permit_all;
use crate::server::{self, Bound, Server};

/// A secret whose encodings all differ from it.
const SECRET: &str = "s3cr3t/+=&:v4lue";
const USER: &str = "demo-user";

fn egress() -> Egress {
    Egress::new(EgressConfig {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(3),
        max_response_bytes: 4096,
        ..EgressConfig::default()
    })
    .unwrap()
}

/// An action `t.call` with `method` to `url`; `extra` is more YAML under `request:`.
fn action(method: &str, url: &Url, extra: &str) -> String {
    let body = if method == "GET" {
        ""
    } else {
        "\n  body: {n: 1, text: hello}"
    };
    format!(
        "name: t.call\ninput: {{type: object, properties: {{}}}}\nrequest:\n  method: {method}\n  url: \"{url}\"{body}\n{extra}"
    )
}

/// The permitted, prepared request for the action in `yaml`, as the gateway would send it.
fn prepared(yaml: &str, credential: Option<&Credential>) -> PreparedRequest {
    let catalog = Catalog::from_source(Path::new("t.yaml"), yaml, Limits::default()).unwrap();
    let action = catalog.get("t.call").unwrap();
    let (_dir, engine) = permit_all(&catalog);
    let input = action.validate(json!({})).unwrap();
    let permitted = engine
        .decide(
            &AgentId::new("bot").unwrap(),
            action,
            input,
            &[],
            &[],
            time::OffsetDateTime::now_utc(),
        )
        .into_permitted()
        .unwrap();
    prepare(permitted, action, credential).unwrap()
}

async fn run(yaml: &str, credential: Option<&Credential>) -> Result<RawResponse, ExecError> {
    egress().execute(prepared(yaml, credential)).await
}

/// Every way a credential is injected, for the realm of `url`.
fn credentials(url: &Url) -> Vec<(&'static str, Credential)> {
    let realm = url.origin().ascii_serialization();
    let make = |injection| Credential::new(injection, Secret::new(SECRET.to_owned()), realm.clone());
    vec![
        ("bearer", make(Injection::Bearer)),
        (
            "header",
            make(Injection::Header {
                name: "X-Api-Key".into(),
                prefix: "Token ".into(),
            }),
        ),
        ("basic", make(Injection::Basic { username: USER.into() })),
        (
            "query",
            make(Injection::Query {
                param: "api_key".into(),
            }),
        ),
    ]
}

/// Every spelling of the secret a request could carry it in.
fn spellings() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let encode = |upper: bool| {
        SECRET
            .bytes()
            .map(|b| match b {
                b if b.is_ascii_alphanumeric() => char::from(b).to_string(),
                b if upper => format!("%{b:02X}"),
                b => format!("%{b:02x}"),
            })
            .collect::<String>()
    };
    vec![
        SECRET.to_owned(),
        encode(true),
        encode(false),
        url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect(),
        b64.encode(SECRET),
        b64.encode(format!("{USER}:{SECRET}")),
        "s3cr3t".to_owned(),
    ]
}

#[track_caller]
fn assert_no_credential(request: &str, context: &str) {
    for spelling in spellings() {
        assert!(!request.contains(&spelling), "{context}: `{spelling}` in:\n{request}");
    }
    for name in ["authorization", "x-api-key", "cookie", "proxy-authorization"] {
        assert!(headers(request, name).is_empty(), "{context}: `{name}` in:\n{request}");
    }
}

/// Whether `request` carries the credential injected as `kind`, exactly once.
#[track_caller]
fn assert_credential(request: &str, kind: &str, context: &str) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (name, expected) = match kind {
        "bearer" => ("authorization", format!("Bearer {SECRET}")),
        "header" => ("x-api-key", format!("Token {SECRET}")),
        "basic" => (
            "authorization",
            format!("Basic {}", b64.encode(format!("{USER}:{SECRET}"))),
        ),
        _ => {
            let query = target(request)
                .split_once('?')
                .map(|(_, q)| q.to_owned())
                .unwrap_or_default();
            let keys: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "api_key")
                .map(|(_, v)| v.into_owned())
                .collect();
            assert_eq!(keys, [SECRET], "{context}: {request}");
            return;
        }
    };
    assert_eq!(headers(request, name), [expected], "{context}: {request}");
}

/// The request line's target (path and query).
fn target(request: &str) -> &str {
    request.split(' ').nth(1).unwrap()
}

fn method(request: &str) -> &str {
    request.split(' ').next().unwrap()
}

fn body(request: &str) -> &str {
    request.split_once("\r\n\r\n").unwrap().1
}

fn headers(request: &str, name: &str) -> Vec<String> {
    let head = request.split_once("\r\n\r\n").map_or(request, |(h, _)| h);
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn ok(body: &str) -> Vec<u8> {
    server::response("200 OK", &[("content-type", "text/plain")], body.as_bytes())
}

#[track_caller]
fn assert_redirect_error(result: Result<RawResponse, ExecError>, expected: &RedirectError) {
    match result {
        Err(ExecError::Redirect(e)) => assert_eq!(&e, expected),
        other => panic!("expected {expected}, got {other:?}"),
    }
}

#[tokio::test]
async fn redirects_are_off_by_default() {
    let second = Bound::on("127.0.0.1").await.unwrap();
    let location = second.url("/final").to_string();
    let mut second = second.serve(|_| ok("second"));
    let redirect = server::redirect(302, &location);
    let mut first = Server::start(redirect).await;
    let url = first.url("/start");
    let (_, bearer) = credentials(&url).swap_remove(0);

    for extra in ["", "  redirects: 0\n"] {
        let response = run(&action("GET", &url, extra), Some(&bearer)).await.unwrap();
        assert_eq!(response.status, 302, "{extra:?}");
        assert!(
            response.headers.contains(&("location".to_owned(), location.clone())),
            "{extra:?}: {response:?}"
        );
    }
    let received = first.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_credential(&received[0], "bearer", "the realm");
    assert!(second.received().is_empty(), "nothing follows the Location");
}

#[tokio::test]
async fn a_same_origin_redirect_keeps_the_credential() {
    let first = Bound::on("127.0.0.1").await.unwrap();
    let url = first.url("/start?a=1");
    let mut first = first.serve(|target| {
        if target.starts_with("/start") {
            // Relative, with a stale copy of the query credential the gateway must replace.
            server::redirect(307, "next?keep=1&api_key=stale")
        } else {
            ok("done")
        }
    });
    for (kind, credential) in credentials(&url) {
        let yaml = action("GET", &url, "  redirects: 2\n");
        let response = run(&yaml, Some(&credential)).await.unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"done"[..]),
            "{kind}"
        );
        let received = first.received();
        assert_eq!(received.len(), 2, "{kind}: {received:?}");
        assert!(
            target(&received[1]).starts_with("/next?keep=1"),
            "{kind}: {}",
            received[1]
        );
        if kind == "query" {
            assert!(
                !received[1].contains("stale"),
                "the gateway's credential, not the upstream's: {}",
                received[1]
            );
        }
        for request in &received {
            assert_credential(request, kind, kind);
        }
    }
}

#[tokio::test]
async fn a_cross_origin_redirect_drops_every_kind_of_credential() {
    let second = Bound::on("127.0.0.1").await.unwrap();
    let elsewhere = second.url("/final");
    let mut second = second.serve(|_| ok("from the second server"));
    let first = Bound::on("127.0.0.1").await.unwrap();
    let url = first.url("/start");
    // An upstream that copies the query string into its redirect, credential included.
    let copied: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let location = format!("{elsewhere}?keep=1&api_key={copied}&after=2");
    let mut first = first.serve(move |_| server::redirect(302, &location));

    for (kind, credential) in credentials(&url) {
        let yaml = action("GET", &url, "  redirects: 3\n");
        let response = run(&yaml, Some(&credential)).await;
        let received = first.received();
        assert_eq!(received.len(), 1, "{kind}");
        assert_credential(&received[0], kind, "the realm");
        if kind != "query" {
            // The copied value sits in a parameter that is not this credential's.
            let expected = RedirectError::CarriesCredential {
                host: "127.0.0.1".into(),
            };
            assert_redirect_error(response, &expected);
            assert!(second.received().is_empty(), "{kind}");
            continue;
        }
        let response = response.unwrap();
        assert_eq!(
            response.body, b"from the second server",
            "{kind}: the result is the last hop's"
        );
        let received = second.received();
        assert_eq!(received.len(), 1, "{kind}");
        assert_eq!(target(&received[0]), "/final?keep=1&after=2", "{kind}");
        assert_no_credential(&received[0], kind);
    }

    // Without a copy in the Location, every kind is simply dropped.
    let clean = Bound::on("127.0.0.1").await.unwrap();
    let url = clean.url("/start");
    let location = elsewhere.to_string();
    let mut clean = clean.serve(move |_| server::redirect(301, &location));
    for (kind, credential) in credentials(&url) {
        let response = run(&action("GET", &url, "  redirects: 1\n"), Some(&credential))
            .await
            .unwrap();
        assert_eq!(response.body, b"from the second server", "{kind}");
        assert_credential(&clean.received()[0], kind, "the realm");
        let received = second.received();
        assert_eq!(received.len(), 1, "{kind}");
        assert_eq!(target(&received[0]), "/final", "{kind}");
        assert_no_credential(&received[0], kind);
    }
}

#[tokio::test]
async fn authorization_and_cookies_from_the_template_stay_in_the_origin() {
    let second = Bound::on("127.0.0.1").await.unwrap();
    let elsewhere = second.url("/final").to_string();
    let mut second = second.serve(|_| ok("second"));
    let first = Bound::on("127.0.0.1").await.unwrap();
    let url = first.url("/start");
    let mut first = first.serve(move |target| match target {
        "/start" => server::redirect(302, "/same"),
        _ => server::redirect(302, &elsewhere),
    });
    let extra = "  headers: {Authorization: Token literal, Cookie: session=abc, X-Trace: t1}\n  redirects: 2\n";
    let response = run(&action("GET", &url, extra), None).await.unwrap();
    assert_eq!(response.body, b"second");

    let received = first.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for request in &received {
        assert_eq!(headers(request, "authorization"), ["Token literal"], "{request}");
        assert_eq!(headers(request, "cookie"), ["session=abc"], "{request}");
    }
    let received = second.received();
    assert_eq!(received.len(), 1);
    assert!(headers(&received[0], "authorization").is_empty(), "{}", received[0]);
    assert!(headers(&received[0], "cookie").is_empty(), "{}", received[0]);
    assert_eq!(headers(&received[0], "x-trace"), ["t1"], "other headers go on");
}

#[tokio::test]
async fn a_dropped_credential_is_not_restored_on_the_way_back() {
    let first = Bound::on("127.0.0.1").await.unwrap();
    let second = Bound::on("127.0.0.1").await.unwrap();
    let url = first.url("/start");
    let back = first.url("/back?x=1").to_string();
    let away = second.url("/away").to_string();
    let mut first = first.serve(move |target| {
        if target.starts_with("/start") {
            server::redirect(302, &away)
        } else {
            ok("back home")
        }
    });
    let mut second = second.serve(move |_| server::redirect(307, &back));

    for (kind, credential) in credentials(&url) {
        let response = run(&action("GET", &url, "  redirects: 2\n"), Some(&credential))
            .await
            .unwrap();
        assert_eq!(response.body, b"back home", "{kind}");
        let received = first.received();
        assert_eq!(received.len(), 2, "{kind}: {received:?}");
        assert_credential(&received[0], kind, "the first hop");
        assert_eq!(target(&received[1]), "/back?x=1", "{kind}");
        assert_no_credential(&received[1], kind);
        assert_no_credential(&second.received()[0], kind);
    }
}

#[tokio::test]
async fn a_redirect_to_a_forbidden_address_is_refused_by_the_guard() {
    // 127.0.0.2 is loopback like 127.0.0.1, but `egress.allow` covers only 127.0.0.1/32.
    let internal = Bound::on("127.0.0.2").await;
    let internal_port = internal.as_ref().map_or(9, |b| b.addr.port());
    let mut internal = internal.map(|b| b.serve(|_| ok("internal")));
    let first = Bound::on("127.0.0.1").await.unwrap();
    let url = first.url("/start");
    let targets = [
        (
            format!("http://127.0.0.2:{internal_port}/internal?token=abc"),
            "127.0.0.2",
            "loopback",
        ),
        (
            "http://169.254.169.254/latest/meta-data/iam".to_owned(),
            "169.254.169.254",
            "link-local",
        ),
        (
            format!("http://[::ffff:127.0.0.2]:{internal_port}/internal"),
            "[::ffff:7f00:2]",
            "loopback",
        ),
        ("http://10.0.0.1/internal".to_owned(), "10.0.0.1", "private"),
    ];
    let routes: Vec<String> = targets.iter().map(|(t, _, _)| t.clone()).collect();
    let mut first = first.serve(move |target| {
        let i: usize = target.trim_start_matches("/start").parse().unwrap_or(0);
        server::redirect(302, &routes[i])
    });

    for (i, (_, host, reason)) in targets.iter().enumerate() {
        let url = Url::parse(&format!("{url}{i}")).unwrap();
        let (_, bearer) = credentials(&url).swap_remove(0);
        let err = run(&action("GET", &url, "  redirects: 3\n"), Some(&bearer))
            .await
            .unwrap_err();
        match &err {
            ExecError::EgressDenied { host: h, reason: r } => assert_eq!((h.as_str(), r.as_str()), (*host, *reason)),
            other => panic!("{host}: expected a refusal, got {other:?}"),
        }
        for text in [err.to_string(), format!("{err:?}")] {
            for part in ["internal", "token", "meta-data", "iam"] {
                assert!(!text.contains(part), "the error names the host only: {text}");
            }
        }
    }
    assert_eq!(first.received().len(), targets.len());
    if let Some(internal) = &mut internal {
        assert!(internal.received().is_empty(), "nothing reached 127.0.0.2");
    }
}

#[tokio::test]
async fn too_many_redirects_fail_without_naming_the_location() {
    let first = Bound::on("127.0.0.1").await.unwrap();
    let url = first.url("/start");
    let mut first = first.serve(|_| server::redirect(302, "/loop?secret=hunter2"));
    let result = run(&action("GET", &url, "  redirects: 2\n"), None).await;
    let expected = RedirectError::TooMany {
        max: 2,
        host: "127.0.0.1".into(),
    };
    assert_eq!(
        expected.to_string(),
        "too many redirects: the action follows at most 2, and `127.0.0.1` redirected again"
    );
    assert_redirect_error(result, &expected);
    let received = first.received();
    let targets: Vec<&str> = received.iter().map(|r| target(r)).collect();
    assert_eq!(targets, ["/start", "/loop?secret=hunter2", "/loop?secret=hunter2"]);

    // Exactly at the limit is fine.
    let ending = Bound::on("127.0.0.1").await.unwrap();
    let url = ending.url("/0");
    let _ending = ending.serve(|target| match target {
        "/0" => server::redirect(302, "/1"),
        "/1" => server::redirect(302, "/2"),
        _ => ok("end"),
    });
    let response = run(&action("GET", &url, "  redirects: 2\n"), None).await.unwrap();
    assert_eq!(response.body, b"end");
}

#[tokio::test]
async fn methods_and_bodies_follow_the_status() {
    let first = Bound::on("127.0.0.1").await.unwrap();
    let base = first.url("/");
    let mut first = first.serve(|target| match target.strip_prefix("/start") {
        Some(status) => server::redirect(status.parse().unwrap(), "/next"),
        None => ok("next"),
    });
    let cases = [
        ("POST", 301, "GET"),
        ("POST", 302, "GET"),
        ("POST", 303, "GET"),
        ("PUT", 303, "GET"),
        ("POST", 307, "POST"),
        ("POST", 308, "POST"),
        ("PUT", 301, "PUT"),
        ("PATCH", 302, "PATCH"),
        ("DELETE", 307, "DELETE"),
    ];
    for (sent, status, then) in cases {
        let url = base.join(&format!("start{status}")).unwrap();
        let yaml = action(sent, &url, "  redirects: 1\n");
        let response = run(&yaml, None).await.unwrap();
        assert_eq!(response.body, b"next");
        let received = first.received();
        let context = format!("{sent} answered {status}");
        assert_eq!(method(&received[0]), sent, "{context}");
        assert_eq!(body(&received[0]), r#"{"n":1,"text":"hello"}"#, "{context}");
        assert_eq!(
            (method(&received[1]), target(&received[1])),
            (then, "/next"),
            "{context}"
        );
        if then == sent {
            assert_eq!(body(&received[1]), r#"{"n":1,"text":"hello"}"#, "{context}");
            assert_eq!(headers(&received[1], "content-type"), ["application/json"], "{context}");
        } else {
            assert_eq!(body(&received[1]), "", "{context}");
            assert!(headers(&received[1], "content-type").is_empty(), "{context}");
            let length = headers(&received[1], "content-length");
            assert!(length.is_empty() || length == ["0"], "{context}: {length:?}");
        }
    }
}

#[tokio::test]
async fn invalid_and_unusual_locations() {
    let second = Bound::on("127.0.0.1").await.unwrap();
    let with_user = format!("http://user:pw@127.0.0.1:{}/x", second.addr.port());
    let mut second = second.serve(|_| ok("second"));
    let first = Bound::on("127.0.0.1").await.unwrap();
    let base = first.url("/");
    let mut first = first.serve(move |target| match target {
        "/invalid" => server::redirect(302, "http://[::1"),
        "/ftp" => server::redirect(302, "ftp://127.0.0.1/file"),
        "/user" => server::redirect(302, &with_user),
        "/two" => server::response("302 Found", &[("location", "/a"), ("location", "/b")], b""),
        "/none" => server::response("302 Found", &[], b"no location"),
        "/not-modified" => server::response("304 Not Modified", &[("location", "/a")], b""),
        _ => ok("followed"),
    });
    let call = |path: &str| {
        let yaml = action("GET", &base.join(path).unwrap(), "  redirects: 5\n");
        async move { run(&yaml, None).await }
    };
    let host = || "127.0.0.1".to_owned();
    assert_redirect_error(call("invalid").await, &RedirectError::InvalidLocation { host: host() });
    assert_redirect_error(call("two").await, &RedirectError::InvalidLocation { host: host() });
    assert_redirect_error(call("user").await, &RedirectError::UserInfo { host: host() });
    assert!(matches!(call("ftp").await, Err(ExecError::UnsupportedScheme(s)) if s == "ftp"));
    let none = call("none").await.unwrap();
    assert_eq!((none.status, none.body.as_slice()), (302, &b"no location"[..]));
    assert_eq!(call("not-modified").await.unwrap().status, 304);
    assert_eq!(first.received().len(), 6);
    assert!(second.received().is_empty());
}

#[tokio::test]
async fn a_redirect_chain_shares_one_timeout() {
    // Each hop answers well within the timeout; six of them don't.
    let first = Bound::on("127.0.0.1").await.unwrap();
    let url = first.url("/start");
    let _first = first.serve_after(Duration::from_millis(200), |_| server::redirect(302, "/again"));
    let egress = Egress::new(EgressConfig {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        timeout: Duration::from_millis(500),
        ..EgressConfig::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = egress
        .execute(prepared(&action("GET", &url, "  redirects: 5\n"), None))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Timeout), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}
