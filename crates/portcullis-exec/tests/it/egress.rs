//! The guarded client against real loopback servers.
//!
//! Proxy variables are not tested here: setting `HTTP_PROXY` would race with the other tests in
//! this process (and `std::env::set_var` is unsafe in edition 2024, which the workspace
//! forbids). The client is built with `.no_proxy()`, which makes reqwest ignore them.

use std::time::{Duration, Instant};

use portcullis_exec::{Egress, EgressConfig, ExecError, OutboundRequest};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

use crate::server::{self, Server};

/// An egress with short limits: every network test here ends within about two seconds.
fn egress(allow: &[&str]) -> Egress {
    Egress::new(EgressConfig {
        allow: allow.iter().map(|net| net.parse().unwrap()).collect(),
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        max_response_bytes: 1024,
        ..EgressConfig::default()
    })
    .unwrap()
}

fn get(url: Url) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        url,
        headers: Vec::new(),
        body: None,
    }
}

fn ok_response() -> Vec<u8> {
    server::response("200 OK", &[], b"ok")
}

#[track_caller]
fn assert_denied(result: Result<impl std::fmt::Debug, ExecError>, host: &str, reason: &str) {
    match result {
        Err(ExecError::EgressDenied { host: h, reason: r }) => {
            assert_eq!((h.as_str(), r.as_str()), (host, reason));
        }
        other => panic!("expected EgressDenied({host}, {reason}), got {other:?}"),
    }
}

#[tokio::test]
async fn ip_literals_in_exotic_notations_are_refused() {
    let egress = egress(&[]);
    let cases = [
        ("http://2130706433/", "127.0.0.1", "loopback"),
        ("http://0x7f.1/", "127.0.0.1", "loopback"),
        ("http://0177.0.0.1/", "127.0.0.1", "loopback"),
        ("http://127.1/", "127.0.0.1", "loopback"),
        ("http://%31%32%37.0.0.1/", "127.0.0.1", "loopback"),
        ("http://１２７.０.０.１/", "127.0.0.1", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]", "loopback"),
        ("http://[::ffff:7f00:1]/", "[::ffff:7f00:1]", "loopback"),
        ("http://[::127.0.0.1]/", "[::7f00:1]", "loopback"),
        ("http://[64:ff9b::7f00:1]/", "[64:ff9b::7f00:1]", "loopback"),
        ("http://[2002:7f00:1::]/", "[2002:7f00:1::]", "loopback"),
        ("http://[2001::1]/", "[2001::1]", "Teredo tunnel"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
        ("http://0/", "0.0.0.0", "unspecified"),
        ("http://[::]/", "[::]", "unspecified"),
        ("http://[::1]/", "[::1]", "loopback"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            "link-local",
        ),
        ("http://0xa9fea9fe/", "169.254.169.254", "link-local"),
        ("http://10.0.0.1:8080/", "10.0.0.1", "private"),
        ("http://localhost/", "localhost", "loopback"),
        ("http://LocalHost/", "localhost", "loopback"),
    ];
    for (input, host, reason) in cases {
        let url = Url::parse(input).unwrap();
        assert_denied(egress.check_destination(&url).await, host, reason);
        assert_denied(egress.dangerous().send(get(url)).await, host, reason);
    }
}

#[tokio::test]
async fn public_addresses_pass_the_destination_check() {
    let egress = egress(&[]);
    for input in [
        "https://93.184.215.14/x",
        "http://[2606:4700:4700::1111]/",
        "http://8.8.8.8/",
    ] {
        egress.check_destination(&Url::parse(input).unwrap()).await.unwrap();
    }
}

#[tokio::test]
async fn only_http_and_https_are_sent() {
    let egress = egress(&[]);
    for input in ["ftp://93.184.215.14/", "file:///etc/passwd", "ws://93.184.215.14/"] {
        let url = Url::parse(input).unwrap();
        let err = egress.dangerous().send(get(url)).await.unwrap_err();
        assert!(matches!(err, ExecError::UnsupportedScheme(_)), "{input}: {err:?}");
    }
}

#[tokio::test]
async fn a_loopback_server_is_refused_by_default_and_reachable_when_allowed() {
    let head = "HTTP/1.1 201 Created\r\nX-Custom: Value\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n";
    let mut raw = format!("{head}X-Bin: caf").into_bytes();
    raw.extend_from_slice(b"\xe9\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
    let mut server = Server::start(raw).await;
    let request = || OutboundRequest {
        method: Method::POST,
        url: server.url("/submit?q=1"),
        headers: vec![(HeaderName::from_static("x-request"), HeaderValue::from_static("yes"))],
        body: Some(b"payload".to_vec()),
    };

    assert_denied(egress(&[]).dangerous().send(request()).await, "127.0.0.1", "loopback");

    let response = egress(&["127.0.0.1/32"]).dangerous().send(request()).await.unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.body, b"hello");
    let header = |name: &str| -> Vec<&str> {
        let values = response.headers.iter().filter(|(n, _)| n == name);
        values.map(|(_, v)| v.as_str()).collect()
    };
    assert_eq!(header("x-custom"), ["Value"]);
    assert_eq!(header("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(header("x-bin"), ["caf\u{fffd}"]);

    // Exactly one request reached the server: the refused one never left.
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        received[0].starts_with("POST /submit?q=1 HTTP/1.1\r\n"),
        "{}",
        received[0]
    );
    assert!(received[0].contains("\r\nx-request: yes\r\n"), "{}", received[0]);
    assert!(received[0].ends_with("\r\n\r\npayload"), "{}", received[0]);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
    let mut server = Server::start(ok_response()).await;
    let url = server.url_as("localhost", "/");

    assert_denied(
        egress(&[]).dangerous().send(get(url.clone())).await,
        "localhost",
        "loopback",
    );
    assert!(server.received().is_empty());

    let response = egress(&["127.0.0.1/32", "::1/128"])
        .dangerous()
        .send(get(url))
        .await
        .unwrap();
    assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]));
}

/// Names pinned in `egress.hosts` go through the client's resolver like DNS answers: the
/// allowed one is connected to at the pinned address, and an answer holding a forbidden
/// address is refused whole. 127.0.0.1 comes first in each, so a guard that let a mixed
/// answer through would connect to this server and the test would see it.
#[tokio::test]
async fn pinned_names_are_answered_from_the_map_and_checked_as_a_whole() {
    let mut server = Server::start(ok_response()).await;
    let pin = |ips: &[&str]| ips.iter().map(|ip| ip.parse().unwrap()).collect::<Vec<_>>();
    let egress = Egress::new(EgressConfig {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        hosts: [
            ("ok.test".to_owned(), pin(&["127.0.0.1"])),
            ("private.test".to_owned(), pin(&["127.0.0.1", "10.0.0.5"])),
            ("mixed.test".to_owned(), pin(&["127.0.0.1", "127.0.0.2"])),
        ]
        .into(),
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        ..EgressConfig::default()
    })
    .unwrap();
    for (name, reason) in [("private.test", "private"), ("mixed.test", "loopback")] {
        let url = server.url_as(name, "/");
        assert_denied(egress.dangerous().send(get(url.clone())).await, name, reason);
        assert_denied(egress.check_destination(&url).await, name, reason);
    }
    assert!(server.received().is_empty());
    let response = egress
        .dangerous()
        .send(get(server.url_as("OK.test", "/")))
        .await
        .unwrap();
    assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn ipv6_loopback_is_refused_by_default_and_reachable_when_allowed() {
    let Some(server) = Server::start_on("::1", ok_response()).await else {
        return; // no IPv6 loopback on this machine
    };
    assert_denied(
        egress(&[]).dangerous().send(get(server.url("/"))).await,
        "[::1]",
        "loopback",
    );
    let response = egress(&["::1/128"])
        .dangerous()
        .send(get(server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let mut elsewhere = Server::start(ok_response()).await;
    let location = elsewhere.url("/elsewhere").to_string();
    let redirect = server::response("302 Found", &[("location", &location)], b"");
    let server = Server::start(redirect).await;

    let response = egress(&["127.0.0.1/32"])
        .dangerous()
        .send(get(server.url("/start")))
        .await
        .unwrap();
    assert_eq!(response.status, 302);
    assert!(response.headers.contains(&("location".to_owned(), location)));
    assert!(elsewhere.received().is_empty());
}

#[tokio::test]
async fn a_response_over_the_cap_is_refused() {
    let egress = egress(&["127.0.0.1/32"]);
    let announced = Server::start(server::response("200 OK", &[], &[b'a'; 1025])).await;
    let streamed = Server::start(server::chunked(8, 200)).await;
    for server in [&announced, &streamed] {
        let err = egress.dangerous().send(get(server.url("/big"))).await.unwrap_err();
        assert!(matches!(err, ExecError::ResponseTooLarge { limit: 1024 }), "{err:?}");
    }

    let exact = Server::start(server::response("200 OK", &[], &[b'a'; 1024])).await;
    let exact_streamed = Server::start(server::chunked(4, 256)).await;
    for server in [&exact, &exact_streamed] {
        let response = egress.dangerous().send(get(server.url("/fits"))).await.unwrap();
        assert_eq!(response.body.len(), 1024);
    }
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let addr = server::silent().await;
    let egress = Egress::new(EgressConfig {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        connect_timeout: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        ..EgressConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let url = Url::parse(&format!("http://{addr}/slow")).unwrap();
    let err = egress.dangerous().send(get(url)).await.unwrap_err();
    assert!(matches!(err, ExecError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let addr = server::closed_port().await;
    let url = Url::parse(&format!("http://{addr}/")).unwrap();
    let err = egress(&["127.0.0.1/32"]).dangerous().send(get(url)).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Connect { host } if host == "127.0.0.1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failed_tls_handshake_is_a_connect_error() {
    let addr = server::hanging_up().await;
    let url = Url::parse(&format!("https://{addr}/")).unwrap();
    let err = egress(&["127.0.0.1/32"]).dangerous().send(get(url)).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Connect { host } if host == "127.0.0.1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn errors_name_the_host_but_never_the_path_or_query() {
    const PATH: &str = "/private/path?secret=hunter2";
    let allowed = egress(&["127.0.0.1/32"]);
    let at = |addr: std::net::SocketAddr| Url::parse(&format!("http://{addr}{PATH}")).unwrap();
    let big = Server::start(server::response("200 OK", &[], &[b'a'; 2048])).await;

    let errors = [
        egress(&[]).dangerous().send(get(at(big.addr))).await.unwrap_err(),
        allowed
            .dangerous()
            .send(get(at(server::closed_port().await)))
            .await
            .unwrap_err(),
        allowed.dangerous().send(get(big.url(PATH))).await.unwrap_err(),
        Egress::new(EgressConfig {
            timeout: Duration::from_millis(200),
            ..config_allowing()
        })
        .unwrap()
        .dangerous()
        .send(get(at(server::silent().await)))
        .await
        .unwrap_err(),
    ];
    for err in &errors {
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("hunter2") && !text.contains("secret"), "{text}");
            assert!(!text.contains("/private"), "{text}");
        }
    }
    assert!(errors[0].to_string().contains("`127.0.0.1`"), "{}", errors[0]);
    assert!(errors[1].to_string().contains("`127.0.0.1`"), "{}", errors[1]);
}

#[tokio::test]
async fn a_safe_request_on_a_connection_the_server_closed_is_sent_once_more_and_nothing_else_is() {
    use std::sync::atomic::Ordering;
    let (addr, seen) = server::forgetful().await;
    let url = Url::parse(&format!("http://{addr}/item")).unwrap();
    let client = egress(&["127.0.0.1/32"]);

    // The second GET goes out on the pooled connection, which the server closes unanswered;
    // it is sent again on a fresh connection and succeeds.
    for _ in 0..2 {
        let answer = client.dangerous().send(get(url.clone())).await.unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (200, b"ok".as_slice()));
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "one request seen twice, on two connections"
    );

    // A POST meeting the same closed connection is not resent: the server might have acted
    // on it. The agent gets the transport error.
    let (addr, seen) = server::forgetful().await;
    let url = Url::parse(&format!("http://{addr}/item")).unwrap();
    let post = || OutboundRequest {
        method: Method::POST,
        body: Some(b"{}".to_vec()),
        ..get(url.clone())
    };
    client.dangerous().send(post()).await.unwrap();
    let second = client.dangerous().send(post()).await;
    assert!(matches!(second, Err(ExecError::Upstream(_))), "{second:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 2, "the POST was sent exactly once");
}

fn config_allowing() -> EgressConfig {
    EgressConfig {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        ..EgressConfig::default()
    }
}
