//! Issue 10's adversarial tests that the other files don't already make (see
//! `docs/adversarial-coverage.md` for the whole map): SSRF through address spellings,
//! redirects and input values; JSON type confusion and huge numbers; an upstream that hands
//! the credential back in every encoding, in errors and in redirects; one agent probing
//! another's intents and keys; clients and upstreams that stall, flood or hold connections;
//! and a gateway killed in the middle of a burst of audit appends.
//!
//! Everything listens on loopback only: the demo upstream on 127.0.0.1, hostile servers on
//! 127.0.0.1, and "internal" catchers on 127.0.0.2 and [::1] that must never be reached.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::fixtures::{
    self, AGENT, OTHER, Standard, assert_no_secret, form_decode, percent_decode, percent_encode, standard,
    write_standard_files,
};
use crate::harness::{Env, Gateway, concurrently, random_secret, recorded_headers};
use crate::http::{self, Response};
use crate::otlp::{Receiver, all_text};

// ---------------------------------------------------------------------------------------
// Loopback servers: hostile upstreams, and catchers standing in for internal services.

/// Most connections one server accepts (every test here makes a few dozen at most).
const MAX_CONNECTIONS: usize = 200;

/// What a server does with one request.
enum Reply {
    /// Writes these bytes and closes the connection.
    Bytes(Vec<u8>),
    /// Writes `head`, then one byte of body every `every`, at most `count` bytes.
    Trickle {
        head: Vec<u8>,
        every: Duration,
        count: usize,
    },
    /// Writes `head`, then body as fast as it is read, at most `total` bytes.
    Flood { head: Vec<u8>, total: usize },
    /// Says nothing for this long, then closes.
    Silent(Duration),
    /// Closes at once without a word.
    HangUp,
}

type Route = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A server on a loopback address that records every request it reads, as text.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    /// A server on a free port of 127.0.0.1.
    fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        Self::bind("127.0.0.1:0", route).expect("bind 127.0.0.1")
    }

    /// A server on `addr`, or `None` when it can't be bound (no IPv6 loopback, say).
    fn bind(addr: &str, route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Option<Self> {
        let listener = TcpListener::bind(addr).ok()?;
        let addr = listener.local_addr().ok()?;
        let route: Route = Arc::new(route);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (sink, count) = (Arc::clone(&requests), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_CONNECTIONS) {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (route, sink) = (Arc::clone(&route), Arc::clone(&sink));
                std::thread::spawn(move || answer(stream, &route, &sink));
            }
        });
        Some(Self {
            addr,
            requests,
            connections,
        })
    }

    /// A catcher: any connection to it is a request the gateway must not have made.
    fn catcher(addr: &str) -> Option<Self> {
        Self::bind(addr, |_| Reply::Bytes(reply("200 OK", &[], r#"{"caught":true}"#)))
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, route: &Route, sink: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let reply = route(&request);
    sink.lock().unwrap().push(request);
    match reply {
        Reply::Bytes(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        Reply::Trickle { head, every, count } => {
            if stream.write_all(&head).is_ok() {
                for _ in 0..count {
                    std::thread::sleep(every);
                    if stream.write_all(b"x").is_err() {
                        break;
                    }
                }
            }
        }
        Reply::Flood { head, total } => {
            let chunk = [b'a'; 16 * 1024];
            let mut sent = 0;
            if stream.write_all(&head).is_ok() {
                while sent < total && stream.write_all(&chunk).is_ok() {
                    sent += chunk.len();
                }
            }
        }
        Reply::Silent(how_long) => std::thread::sleep(how_long),
        Reply::HangUp => {}
    }
}

/// Reads one request (head and a `Content-Length` body) as text.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&buf[..n]);
        if data.len() > 1024 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length.min(1024 * 1024) {
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&data).into_owned())
}

/// A complete HTTP/1.1 response that closes the connection.
fn reply(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The request target of a request read by [`Server`]: `/path?query`.
fn target(request: &str) -> &str {
    request.split(' ').nth(1).unwrap_or_default()
}

/// The first path segment of a request.
fn route_of(request: &str) -> &str {
    let path = target(request).split('?').next().unwrap_or_default();
    path.trim_start_matches('/').split('/').next().unwrap_or_default()
}

/// The credential the gateway sent: the bearer token, or the `api_key` query parameter.
fn credential_in(request: &str) -> Option<String> {
    let bearer = request.lines().find_map(|l| {
        l.strip_prefix("authorization: Bearer ")
            .or_else(|| l.strip_prefix("Authorization: Bearer "))
    });
    if let Some(token) = bearer {
        return Some(token.trim().to_owned());
    }
    let query = target(request).split_once('?')?.1;
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "api_key")
        .map(|(_, v)| form_decode(v))
}

fn hex(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") })
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn b64url(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// [`assert_no_secret`], and the hex spellings it doesn't look for.
fn assert_clean(text: &str, secret: &str, context: &str) {
    assert_no_secret(text, secret, context);
    for spelling in [hex(secret, false), hex(secret, true)] {
        assert!(
            !text.contains(&spelling),
            "{context}: found the secret in hex in:\n{text}"
        );
    }
}

/// The resident memory of the `portcullis serve` started for `env`, in MiB.
fn gateway_rss_mib(env: &Env) -> u64 {
    let config = env.config().to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.contains(&config.as_bytes()) || !args.contains(&&b"serve"[..]) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).expect("status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        return kib / 1024;
    }
    panic!("no `portcullis serve` process for {config}");
}

/// The `event` objects of the audit log, oldest first.
fn audit_events(env: &Env) -> Vec<Value> {
    env.audit_tail(10_000)
        .into_iter()
        .map(|line| line["event"].clone())
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A config with the standard agents and credential but no `egress.allow`.
const NO_ALLOW: &str = r#"
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

const PERMIT_SUPPORT: &str = r#"
@id("support-may-try")
@reason("the support bot may try anything here")
permit (principal in AgentGroup::"support", action, resource);
"#;

/// One action per `(name, host)`: `GET http://HOST:UPSTREAM_PORT/ping` with the bearer
/// credential.
fn ping_actions(hosts: &[(&str, &str)]) -> String {
    hosts
        .iter()
        .map(|(name, host)| {
            format!(
                "name: ping.{name}\ninput: {{type: object, properties: {{}}}}\nrequest:\n  method: GET\n  url: \"http://{host}:UPSTREAM_PORT/ping\"\ncredential: tracker\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Catchers on the upstream's port of 127.0.0.2 and [::1]: addresses that spellings of
/// loopback can reach, and that the gateway must not.
fn catchers(port: u16) -> Vec<Server> {
    [format!("127.0.0.2:{port}"), format!("[::1]:{port}")]
        .iter()
        .filter_map(|a| Server::catcher(a))
        .collect()
}

fn assert_uncaught(catchers: &[Server], context: &str) {
    for c in catchers {
        assert_eq!(
            c.connections(),
            0,
            "{context}: {} was reached: {:?}",
            c.addr,
            c.requests()
        );
    }
}

/// The `error` of each `outcome` audit event, oldest first.
fn outcome_errors(env: &Env) -> Vec<String> {
    audit_events(env)
        .iter()
        .filter(|e| e["kind"] == "outcome")
        .map(|e| e["detail"]["error"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. SSRF

/// Every spelling of a loopback or unspecified address `url` turns into an address; each
/// must be refused by default. `(action, host as written, the reason the audit log gives)`.
///
/// `[::127.0.0.1]` (IPv4-compatible, deprecated) is left out: it is not loopback to the
/// kernel, so were the guard to regress, the gateway would connect off this machine. The
/// refusal is shown one level down, by `exec-it/egress.rs::ip_literals_in_exotic_notations_are_refused`,
/// through the same guard and egress the gateway uses.
const LOOPBACK_SPELLINGS: [(&str, &str, &str); 18] = [
    ("dotted", "127.0.0.1", "loopback"),
    ("decimal", "2130706433", "loopback"),
    ("hex", "0x7f000001", "loopback"),
    ("hex-parts", "0x7f.0x0.0x0.0x1", "loopback"),
    ("octal", "0177.0.0.01", "loopback"),
    ("short", "127.1", "loopback"),
    ("short-hex", "0x7f.1", "loopback"),
    ("percent", "%31%32%37.0.0.1", "loopback"),
    ("fullwidth", "１２７.０.０.１", "loopback"),
    ("other-loopback", "127.0.0.2", "loopback"),
    ("mapped", "[::ffff:127.0.0.1]", "loopback"),
    ("mapped-hex", "[::ffff:7f00:1]", "loopback"),
    ("v6-loopback", "[::1]", "loopback"),
    ("any", "0.0.0.0", "unspecified"),
    ("zero", "0", "unspecified"),
    ("v6-any", "[::]", "unspecified"),
    ("name", "localhost", "loopback"),
    ("name-upper", "LOCALHOST", "loopback"),
];

#[test]
fn loopback_in_every_ip_notation_and_by_name_is_refused_and_nothing_is_sent() {
    let env = Env::new();
    env.write("portcullis.yaml", NO_ALLOW);
    let hosts: Vec<(&str, &str)> = LOOPBACK_SPELLINGS.iter().map(|(n, h, _)| (*n, *h)).collect();
    env.write("actions/ping.yaml", &ping_actions(&hosts));
    env.write("policies/p.cedar", PERMIT_SUPPORT);
    let secret = random_secret("ssrf");
    env.set_secret("tracker_token", &secret);
    let token = env.add_agent(AGENT);
    let catchers = catchers(env.upstream.port);
    let gw = env.serve();

    for (name, host, _) in LOOPBACK_SPELLINGS {
        let r = gw.post_intent(&token, &json!({"action": format!("ping.{name}"), "input": {}}));
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "failed", "{host}: {body}");
        assert!(body.get("result").is_none(), "{host}: {body}");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains("not allowed"), "{host}: {error}");
        for internal in [host, "127.0.0.1", "::1", "localhost"] {
            assert!(
                !error.contains(internal),
                "{host}: the agent is told `{internal}`: {error}"
            );
        }
        assert_no_secret(&r.raw, &secret, host);
    }
    env.upstream.assert_untouched("loopback spellings");
    assert_uncaught(&catchers, "loopback spellings");

    // The operator reads, for each, why: the address was judged after parsing, not as text.
    let errors = outcome_errors(&env);
    assert_eq!(errors.len(), LOOPBACK_SPELLINGS.len(), "{errors:#?}");
    for ((_, host, reason), error) in LOOPBACK_SPELLINGS.iter().zip(&errors) {
        assert!(
            error.starts_with("destination `") && error.ends_with(&format!("is not allowed: {reason}")),
            "{host}: {error}"
        );
    }
    assert_no_secret(&gw.log(), &secret, "the gateway's log");
}

#[test]
fn an_allow_list_entry_matches_the_parsed_address_whatever_its_spelling() {
    let env = Env::new();
    env.write(
        "portcullis.yaml",
        &NO_ALLOW.replace("egress:\n", "egress:\n  allow: [\"127.0.0.1/32\"]\n"),
    );
    // Spellings of the allowed 127.0.0.1, then of addresses next to it that are not allowed.
    let allowed = [
        ("decimal", "2130706433"),
        ("hex", "0x7f000001"),
        ("octal", "0177.0.0.01"),
        ("short", "127.1"),
        ("percent", "%31%32%37.0.0.1"),
        ("fullwidth", "１２７.０.０.１"),
    ];
    let refused = [
        ("next-decimal", "2130706434", "loopback"),
        ("next-hex", "0x7f000002", "loopback"),
        ("next-octal", "0177.0.0.02", "loopback"),
        ("next-short", "127.2", "loopback"),
        ("mapped", "[::ffff:127.0.0.1]", "loopback"),
        ("v6-loopback", "[::1]", "loopback"),
        ("any", "0.0.0.0", "unspecified"),
        ("v6-any", "[::]", "unspecified"),
    ];
    let mut hosts: Vec<(&str, &str)> = allowed.to_vec();
    hosts.extend(refused.iter().map(|(n, h, _)| (*n, *h)));
    env.write("actions/ping.yaml", &ping_actions(&hosts));
    env.write("policies/p.cedar", PERMIT_SUPPORT);
    let secret = random_secret("allow");
    env.set_secret("tracker_token", &secret);
    let token = env.add_agent(AGENT);
    let catchers = catchers(env.upstream.port);
    let gw = env.serve();
    let canonical = format!("127.0.0.1:{}", env.upstream.port);

    for (i, (name, host)) in allowed.iter().enumerate() {
        let r = gw.post_intent(&token, &json!({"action": format!("ping.{name}"), "input": {}}));
        assert_eq!(r.json()["status"], "executed", "{host}: {}", r.text());
        let got = env.upstream.requests();
        assert_eq!(got.len(), i + 1, "{host}: {got:#?}");
        // The credential goes to the realm as the operator allowed it, named canonically.
        let last = got.last().unwrap();
        assert_eq!(recorded_headers(last, "host"), [canonical.as_str()], "{host}");
        assert_eq!(
            recorded_headers(last, "authorization"),
            [format!("Bearer {secret}")],
            "{host}"
        );
    }
    for (name, host, _) in refused {
        let r = gw.post_intent(&token, &json!({"action": format!("ping.{name}"), "input": {}}));
        let body = r.json();
        assert_eq!(body["status"], "failed", "{host}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("not allowed"),
            "{host}: {body}"
        );
    }
    assert_eq!(env.upstream.requests().len(), allowed.len());
    assert_uncaught(&catchers, "addresses next to the allowed one");
    let errors = outcome_errors(&env);
    for ((_, host, reason), error) in refused.iter().zip(&errors[allowed.len()..]) {
        assert!(error.ends_with(&format!("is not allowed: {reason}")), "{host}: {error}");
    }
}

/// Asks the demo upstream to redirect to `to`, followed for up to two hops.
const HOP_ACTION: &str = r#"
name: hop
description: Asks the demo upstream to redirect to `to`
input:
  type: object
  required: [to]
  properties:
    to: {type: string, maxLength: 200}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/redirect?to={to}&status=302
  redirects: 2
credential: tracker
"#;

#[test]
fn a_redirect_into_an_internal_address_in_any_spelling_is_refused() {
    let env = Env::new();
    env.write(
        "portcullis.yaml",
        &NO_ALLOW.replace("egress:\n", "egress:\n  allow: [\"127.0.0.1/32\"]\n"),
    );
    env.write("actions/hop.yaml", HOP_ACTION);
    env.write("policies/p.cedar", PERMIT_SUPPORT);
    let secret = random_secret("hop");
    env.set_secret("tracker_token", &secret);
    let token = env.add_agent(AGENT);
    let port = env.upstream.port;
    let catchers = catchers(port);
    let gw = env.serve();
    let hop = |to: &str| {
        let r = gw.post_intent(&token, &json!({"action": "hop", "input": {"to": to}}));
        assert_eq!(r.status, 200, "{to}: {}", r.text());
        assert_no_secret(&r.raw, &secret, to);
        r.json()
    };

    // Redirects are followed: one to a spelling of the realm itself arrives, credential and all.
    let followed = hop(&format!("http://127.1:{port}/leak?spelled=1"));
    assert_eq!(followed["status"], "executed", "{followed}");
    let got = env.upstream.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1]["path"], "/leak");

    let internal = [
        format!("http://127.0.0.2:{port}/x"),
        format!("http://0x7f000002:{port}/x"),
        format!("http://2130706434:{port}/x"),
        format!("http://127.2:{port}/x"),
        format!("http://[::1]:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://[::]:{port}/x"),
        format!("http://0.0.0.0:{port}/x"),
        // Scheme-relative, and the backslash spellings WHATWG URLs read as `//`.
        format!("//127.0.0.2:{port}/x"),
        format!("/\\127.0.0.2:{port}/x"),
        format!("http:\\\\127.0.0.2:{port}\\x"),
        // User info naming the realm in front of another host.
        format!("http://127.0.0.1:{port}@127.0.0.2:{port}/x"),
    ];
    for to in &internal {
        let body = hop(to);
        assert_eq!(body["status"], "failed", "{to}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(!error.contains("127.0.0.2") && !error.contains("::1"), "{to}: {error}");
    }
    // Each asked the realm once (its `/redirect`), and nothing went anywhere else.
    let paths: Vec<Value> = env.upstream.requests().iter().map(|r| r["path"].clone()).collect();
    assert_eq!(paths.len(), 2 + internal.len(), "{paths:?}");
    assert!(paths[2..].iter().all(|p| p == "/redirect"), "{paths:?}");
    assert_uncaught(&catchers, "redirects");
    assert_no_secret(&gw.log(), &secret, "the gateway's log");
}

/// `egress` with 127.0.0.1 allowed and names pinned in `egress.hosts`, the test's stand-in
/// for DNS: one name per kind of answer. The allowed 127.0.0.1 comes first in every list, so a
/// guard that took the first usable address of a mixed answer would connect to the demo
/// upstream (which the test watches), never to 10.0.0.5 or the catcher on 127.0.0.2.
const PINNED_HOSTS: &str = r#"egress:
  allow: ["127.0.0.1/32"]
  hosts:
    ok.test: [127.0.0.1]
    internal.test: [127.0.0.2]
    private.test: [127.0.0.1, 10.0.0.5]
    mixed.test: [127.0.0.1, 127.0.0.2]
"#;

/// `(action, name, the reason the audit log gives)` for each pinned name that must be refused.
const REFUSED_NAMES: [(&str, &str, &str); 3] = [
    ("internal", "internal.test", "loopback"),
    ("private", "private.test", "private"),
    ("mixed", "mixed.test", "loopback"),
];

#[test]
fn names_resolving_to_internal_addresses_or_mixing_them_with_allowed_ones_are_refused_as_a_whole() {
    let env = Env::new();
    env.write("portcullis.yaml", &NO_ALLOW.replace("egress:\n", PINNED_HOSTS));
    let mut hosts = vec![("ok", "ok.test")];
    hosts.extend(REFUSED_NAMES.iter().map(|(n, h, _)| (*n, *h)));
    env.write("actions/ping.yaml", &format!("{}---{HOP_ACTION}", ping_actions(&hosts)));
    env.write("policies/p.cedar", PERMIT_SUPPORT);
    let secret = random_secret("pinned");
    env.set_secret("tracker_token", &secret);
    let token = env.add_agent(AGENT);
    let port = env.upstream.port;
    let catchers = catchers(port);
    assert!(!catchers.is_empty(), "a catcher on 127.0.0.2");
    let gw = env.serve();
    let call = |action: &str, input: Value| {
        let r = gw.post_intent(&token, &json!({"action": action, "input": input}));
        assert_eq!(r.status, 200, "{action}: {}", r.text());
        assert_no_secret(&r.raw, &secret, action);
        r.json()
    };

    // The allowed name is resolved from the map and reached, credential and all.
    let ok = call("ping.ok", json!({}));
    assert_eq!(ok["status"], "executed", "{ok}");
    let got = env.upstream.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(recorded_headers(&got[0], "host"), [format!("ok.test:{port}")]);

    for (name, host, _) in REFUSED_NAMES {
        let body = call(&format!("ping.{name}"), json!({}));
        assert_eq!(body["status"], "failed", "{host}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("not allowed"), "{host}: {error}");
        assert!(
            !error.contains("127.0.0.2") && !error.contains("10.0.0.5"),
            "{host}: {error}"
        );
    }
    assert_eq!(env.upstream.requests().len(), 1, "a refused name reached the upstream");

    // Redirects resolve names the same way: to the allowed name the hop is followed (without
    // the credential: another origin), to any of the others it is refused.
    let followed = call("hop", json!({"to": format!("http://ok.test:{port}/leak")}));
    assert_eq!(followed["status"], "executed", "{followed}");
    let got = env.upstream.requests();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(
        (got[2]["path"].as_str(), recorded_headers(&got[2], "host")),
        (Some("/leak"), vec![format!("ok.test:{port}")])
    );
    assert!(recorded_headers(&got[2], "authorization").is_empty(), "{:#?}", got[2]);
    for (_, host, _) in REFUSED_NAMES {
        let body = call("hop", json!({"to": format!("http://{host}:{port}/x")}));
        assert_eq!(body["status"], "failed", "{host}: {body}");
    }
    let paths: Vec<Value> = env.upstream.requests().iter().map(|r| r["path"].clone()).collect();
    assert_eq!(paths.len(), 3 + REFUSED_NAMES.len(), "{paths:?}");
    assert!(paths[3..].iter().all(|p| p == "/redirect"), "{paths:?}");
    assert_uncaught(&catchers, "pinned names");

    // The operator reads why: the name, and what its answer held.
    let errors = outcome_errors(&env);
    assert_eq!(errors.len(), 2 + 2 * REFUSED_NAMES.len(), "{errors:#?}");
    let refused: Vec<&String> = errors.iter().filter(|e| !e.is_empty()).collect();
    let expected: Vec<String> = REFUSED_NAMES
        .iter()
        .chain(REFUSED_NAMES.iter())
        .map(|(_, host, reason)| format!("destination `{host}` is not allowed: {reason}"))
        .collect();
    assert_eq!(refused, expected.iter().collect::<Vec<_>>(), "{errors:#?}");
    assert_no_secret(&gw.log(), &secret, "the gateway's log");
}

#[test]
fn input_values_cannot_move_the_request_to_another_host() {
    let s = standard();
    let port = s.env.upstream.port;
    let catcher = Server::catcher(&format!("127.0.0.2:{port}"));
    let host = format!("127.0.0.1:{port}");
    let other = format!("127.0.0.2:{port}");

    let names = [
        format!("@{other}"),
        format!("x@{other}"),
        format!("//{other}/x"),
        format!("\\\\{other}\\x"),
        format!("http://{other}/x"),
        format!("%2F%2F{other}"),
        other.clone(),
    ];
    let mut sent = 0;
    for name in &names {
        let Some(req) = send(&s, "files.get", &json!({"name": name})) else {
            continue;
        };
        sent += 1;
        assert_eq!(recorded_headers(&req, "host"), [host.as_str()], "{name:?}: {req}");
        let path = req["path"].as_str().unwrap();
        let segment = path.strip_prefix("/files/").expect("under /files/");
        assert!(!segment.contains('/'), "{name:?}: {path}");
        assert_eq!(percent_decode(segment), *name, "{name:?}: {path}");
    }
    assert!(sent >= names.len() - 1, "odd names are still names");

    let inputs = [
        json!({"q": format!("@{other}")}),
        json!({"q": format!("http://{other}/")}),
        json!({"q": format!("x&host={other}")}),
        json!({"q": "x", "label": other}),
        json!({"q": "x", "label": format!("{other}\r\nHost: {other}")}),
    ];
    for input in inputs {
        let Some(req) = send(&s, "search", &input) else {
            continue;
        };
        assert_eq!(recorded_headers(&req, "host"), [host.as_str()], "{input}: {req}");
        assert_eq!(req["path"], "/search", "{input}");
    }
    if let Some(c) = &catcher {
        assert_uncaught(std::slice::from_ref(c), "input values");
    }
}

/// Sends `action` with `input`; the new upstream request, or `None` when the gateway refused
/// the input with a 400 (and sent nothing).
fn send(s: &Standard, action: &str, input: &Value) -> Option<Value> {
    let before = s.env.upstream.requests().len();
    let r = s.intent(&json!({"action": action, "input": input}));
    let got = s.env.upstream.requests();
    if r.status == 400 {
        assert_eq!(got.len(), before, "{input}: refused, yet sent: {got:#?}");
        return None;
    }
    assert_eq!(r.json()["status"], "executed", "{input}: {}", r.text());
    assert_eq!(got.len(), before + 1, "{input}: {got:#?}");
    got.last().cloned()
}

#[test]
fn check_refuses_action_urls_with_user_info_backslashes_fragments_or_a_templated_host() {
    let env = Env::new();
    write_standard_files(&env);
    let urls = [
        (
            "userinfo",
            "http://127.0.0.1:UPSTREAM_PORT@127.0.0.2/x",
            "must not contain user info",
        ),
        (
            "backslash",
            "http://127.0.0.2\\\\@127.0.0.1:UPSTREAM_PORT/x",
            "must not contain user info",
        ),
        (
            "fragment",
            "http://127.0.0.1:UPSTREAM_PORT#@127.0.0.2/x",
            "must not contain user info or a fragment",
        ),
        ("templated", "http://{host}/x", "has a placeholder in its origin"),
        (
            "templated-port",
            "http://127.0.0.1:{port}/x",
            "has a placeholder in its origin",
        ),
        ("file", "file:///etc/passwd", "must start with `http://` or `https://`"),
    ];
    let actions: Vec<String> = urls
        .iter()
        .map(|(name, url, _)| {
            format!(
                "name: bad.{name}\ninput: {{type: object, properties: {{host: {{type: string}}, port: {{type: string}}}}}}\nrequest: {{method: GET, url: \"{url}\"}}\n"
            )
        })
        .collect();
    env.write("actions/bad.yaml", &actions.join("---\n"));
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let port = env.upstream.port.to_string();
    for (name, url, message) in urls {
        let url = url.replace("UPSTREAM_PORT", &port).replace("\\\\", "\\");
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("`{url}`")))
            .unwrap_or_else(|| panic!("{name}: `{url}` is not named:\n{}", out.stderr));
        assert!(line.contains(message), "{name}: {line}");
    }
    let serve = env.cli(&["serve", "--listen", "127.0.0.1:0"], None);
    assert_eq!(serve.code, Some(1), "{serve:?}");
    env.upstream.assert_untouched("check");
}

// ---------------------------------------------------------------------------------------
// 2. Template escapes: JSON type confusion and huge numbers

const TYPED: &str = r#"
name: typed.send
description: Sends typed fields to the echo endpoint
input:
  type: object
  required: [amount]
  properties:
    amount: {type: integer}
    note: {type: string, maxLength: 100}
    tags: {type: array, items: {type: string}, maxItems: 5}
    urgent: {type: boolean}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/echo
  body: {amount: "{amount}", note: "{note}", tags: "{tags}", urgent: "{urgent}"}
"#;

const TYPED_POLICY: &str = r#"
@id("support-sends-typed")
permit (principal in AgentGroup::"support", action == Action::"typed.send", resource);
"#;

/// The standard world with `typed.send`, running; the support bot's token.
fn typed_world() -> (Env, Gateway, String) {
    let env = Env::new();
    write_standard_files(&env);
    env.write("actions/typed.yaml", TYPED);
    env.write("policies/typed.cedar", TYPED_POLICY);
    let token = env.add_agent(AGENT);
    let gw = env.serve();
    (env, gw, token)
}

/// Posts `typed.send` with `input` written out as JSON text.
fn post_typed(gw: &Gateway, token: &str, input: &str) -> Response {
    let body = format!(r#"{{"action": "typed.send", "input": {input}}}"#);
    http::post_json(gw.addr, "/v1/intents", Some(token), body.as_bytes())
}

#[test]
fn json_type_confusion_and_huge_numbers_are_refused_and_types_reach_the_upstream_intact() {
    let (env, gw, token) = typed_world();
    let post = |input: &str| post_typed(&gw, &token, input);

    let confused = [
        r#"{"amount": "7"}"#,
        r#"{"amount": 7.5}"#,
        r#"{"amount": [7]}"#,
        r#"{"amount": {"value": 7}}"#,
        r#"{"amount": true}"#,
        r#"{"amount": null}"#,
        r#"{"amount": "9007199254740993"}"#,
        r#"{"amount": 7, "note": 7}"#,
        r#"{"amount": 7, "note": ["x"]}"#,
        r#"{"amount": 7, "note": {"x": "y"}}"#,
        r#"{"amount": 7, "tags": "x"}"#,
        r#"{"amount": 7, "tags": [1]}"#,
        r#"{"amount": 7, "tags": [["x"]]}"#,
        r#"{"amount": 7, "urgent": "true"}"#,
        r#"{"amount": 7, "urgent": 1}"#,
    ];
    for input in confused {
        let r = post(input);
        assert_eq!(r.status, 400, "{input}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_input", "{input}: {}", r.text());
    }
    let huge = [
        r#"{"amount": 1e400}"#,
        r#"{"amount": -1e400}"#,
        r#"{"amount": 1.5e300}"#,
        r#"{"amount": 18446744073709551616}"#,
        r#"{"amount": -9223372036854775809}"#,
        r#"{"amount": 9007199254740994.5}"#,
        r#"{"amount": 100000000000000000000000000000000000000000000000000}"#,
    ];
    for input in huge {
        let r = post(input);
        assert_eq!(r.status, 400, "{input}: {}", r.text());
        let code = r.json()["error"]["code"].as_str().unwrap_or_default().to_owned();
        assert!(
            code == "malformed_request" || code == "invalid_input",
            "{input}: {}",
            r.text()
        );
    }
    env.upstream.assert_untouched("confused types and huge numbers");

    // What passes arrives with its JSON types, and a large integer arrives exactly.
    let r = post(r#"{"amount": 9007199254740993, "note": "7", "tags": ["a", "1"], "urgent": false}"#);
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    let got = env.upstream.requests();
    let sent: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["amount"].as_u64(), Some(9_007_199_254_740_993), "{sent}");
    assert_eq!(sent["note"], "7", "{sent}");
    assert_eq!(sent["tags"], json!(["a", "1"]), "{sent}");
    assert_eq!(sent["urgent"], false, "{sent}");

    // The 64-bit extremes are either refused or sent exactly; never rounded, never a 500.
    for (input, exact) in [
        (r#"{"amount": -9223372036854775808}"#, "-9223372036854775808"),
        (r#"{"amount": 9223372036854775807}"#, "9223372036854775807"),
        (r#"{"amount": 18446744073709551615}"#, "18446744073709551615"),
    ] {
        let before = env.upstream.requests().len();
        let r = post(input);
        let got = env.upstream.requests();
        if r.status == 200 && r.json()["status"] == "executed" {
            let body = got.last().unwrap()["body"].as_str().unwrap().to_owned();
            assert!(body.contains(exact), "{input}: sent {body}");
        } else {
            assert!(matches!(r.status, 400 | 403), "{input}: {} {}", r.status, r.text());
            assert_eq!(got.len(), before, "{input}: refused, yet sent");
        }
    }
    assert!(env.audit_verify().success());
}

#[test]
fn a_whole_number_written_as_a_float_is_refused_as_invalid_input_or_sent_as_decided() {
    let (env, gw, token) = typed_world();
    let r = post_typed(&gw, &token, r#"{"amount": 7.0}"#);
    if r.status == 400 {
        assert_eq!(r.json()["error"]["code"], "invalid_input", "{}", r.text());
        env.upstream.assert_untouched("a refused float");
    } else {
        assert_eq!(r.json()["status"], "executed", "{}", r.text());
        let got = env.upstream.requests();
        let sent: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(sent["amount"].as_f64(), Some(7.0), "{sent}");
    }
}

// ---------------------------------------------------------------------------------------
// 3. Credential exfiltration

/// A hostile upstream: each route hands back the credential it received in another form.
fn echoing_upstream() -> Server {
    Server::start(|request| {
        let s = credential_in(request).unwrap_or_default();
        let json = |body: Value| Reply::Bytes(reply("200 OK", &[], &body.to_string()));
        match route_of(request) {
            "plain" => json(json!({"echo": s, "kept": "visible"})),
            "base64" => json(json!({"std": b64(&s), "url": b64url(&s), "kept": "visible"})),
            "percent" => json(json!({"upper": percent_encode(&s, false), "lower": percent_encode(&s, true)})),
            "hex" => json(json!({"lower": hex(&s, false), "upper": hex(&s, true)})),
            "escaped" => {
                let escaped: String = s.chars().map(|c| format!("\\u{:04x}", u32::from(c))).collect();
                Reply::Bytes(reply("200 OK", &[], &format!(r#"{{"echo": "{escaped}"}}"#)))
            }
            "key" => {
                let mut body = serde_json::Map::new();
                body.insert(s.clone(), json!(1));
                body.insert("deep".to_owned(), json!({"list": [{"v": format!("x{s}y")}]}));
                json(Value::Object(body))
            }
            "text" => Reply::Bytes(reply(
                "200 OK",
                &[("Content-Type", "text/plain")],
                &format!("your token is {s}, base64 {}", b64(&s)),
            )),
            "headers" => Reply::Bytes(reply(
                "200 OK",
                &[
                    ("X-Echo", &s),
                    ("X-Echo-B64", &b64(&s)),
                    ("X-Echo-Hex", &hex(&s, false)),
                    ("Set-Cookie", &format!("session={}", percent_encode(&s, false))),
                ],
                r#"{"ok": true}"#,
            )),
            "error" => Reply::Bytes(reply(
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate",
                    &format!("Bearer error=\"invalid_token\", token=\"{s}\""),
                )],
                &json!({"error": format!("token {s} is not valid"), "hint": b64(&s)}).to_string(),
            )),
            "crash" => Reply::Bytes(reply(
                "500 Internal Server Error",
                &[],
                &format!("panic: bad token {s}"),
            )),
            "redirect" => Reply::Bytes(reply(
                "302 Found",
                &[(
                    "Location",
                    &format!("https://elsewhere.invalid/cb?token={}", percent_encode(&s, false)),
                )],
                &json!({"next": format!("https://elsewhere.invalid/cb?token={s}")}).to_string(),
            )),
            _ => Reply::Bytes(reply("404 Not Found", &[], "{}")),
        }
    })
}

const ECHO_ROUTES: [&str; 11] = [
    "plain", "base64", "percent", "hex", "escaped", "key", "text", "headers", "error", "crash", "redirect",
];

fn echo_actions(port: u16) -> String {
    let action = |name: &str, credential: &str| {
        format!(
            r#"
name: {name}
description: A hostile upstream handing the credential back
input:
  type: object
  required: [route]
  properties:
    route: {{type: string, pattern: "^[a-z0-9]{{1,20}}$"}}
request:
  method: GET
  url: http://127.0.0.1:{port}/{{route}}
credential: {credential}
response:
  headers: [x-echo, x-echo-b64, x-echo-hex, set-cookie, www-authenticate, location]
"#
        )
    };
    [action("echo.bearer", "tracker"), action("echo.query", "tracker_query")].join("---\n")
}

/// The strings of a JSON value in document order, object keys included when `keys`.
fn strings_of(v: &Value, keys: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings_of(x, keys, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            if keys {
                out.push(k.clone());
            }
            strings_of(x, keys, out);
        }),
        _ => {}
    }
}

/// Stops the gateway with SIGTERM (which flushes the trace exporter) and checks that nothing
/// it wrote or exported, nor the audit log, holds `secret` in any spelling.
fn assert_nothing_recorded_holds(env: &Env, gateway: Gateway, receiver: &Receiver, secret: &str, spans: usize) {
    assert_nothing_recorded_holds_any(env, gateway, receiver, &[secret], spans);
}

/// [`assert_nothing_recorded_holds`] for each of `secrets` (a secret and pieces of it).
fn assert_nothing_recorded_holds_any(
    env: &Env,
    mut gateway: Gateway,
    receiver: &Receiver,
    secrets: &[&str],
    spans: usize,
) {
    gateway.signal("TERM");
    assert_eq!(
        gateway.wait_exit(Duration::from_secs(20)),
        Some(Some(0)),
        "{}",
        gateway.log()
    );
    let exported = receiver.wait_for(Duration::from_secs(10), |s| {
        s.iter().filter(|s| s.name == "intent").count() >= spans
    });
    let bodies = receiver.bodies();
    let log = gateway.log();
    assert!(log.contains("DEBUG"), "the gateway logged at debug level:\n{log}");
    let audit = env.cli(&["audit", "export", "--format", "jsonl"], None);
    assert!(audit.success(), "{audit:?}");
    for secret in secrets {
        for span in &exported {
            assert_clean(&all_text(span), secret, &format!("span `{}`", span.name));
        }
        for body in &bodies {
            assert_clean(&String::from_utf8_lossy(body), secret, "an OTLP request");
        }
        assert_clean(&log, secret, "the gateway's log");
        assert_clean(&audit.stdout, secret, "the audit log");
    }
    assert!(env.audit_verify().success());
}

/// The standard files, `extra` actions, the echo policy, tracing to `receiver` with payloads,
/// and a gateway logging at debug level.
fn hostile_world(extra: &str, config: &str, receiver: &Receiver) -> (Env, Gateway, String, String) {
    let env = Env::new();
    let secret = write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &format!(
            "{config}tracing:\n  otlp_endpoint: {}\n  payloads: true\n",
            receiver.endpoint()
        ),
    );
    env.write("actions/hostile.yaml", extra);
    env.write("policies/hostile.cedar", PERMIT_SUPPORT);
    let token = env.add_agent(AGENT);
    let gateway = env.serve_logging(Some("debug"));
    (env, gateway, token, secret)
}

#[test]
fn a_credential_handed_back_in_any_encoding_reaches_neither_agent_nor_log_trace_or_audit() {
    let upstream = echoing_upstream();
    let receiver = Receiver::start();
    let (env, gateway, token, secret) = hostile_world(&echo_actions(upstream.port()), fixtures::CONFIG, &receiver);

    let mut intents = 0;
    for action in ["echo.bearer", "echo.query"] {
        for route in ECHO_ROUTES {
            let r = gateway.post_intent(&token, &json!({"action": action, "input": {"route": route}}));
            intents += 1;
            let what = format!("{action} /{route}");
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            assert_clean(&r.raw, &secret, &what);
            let body = r.json();
            assert_eq!(body["status"], "executed", "{what}: {body}");
            // The hostile value was there, and was replaced rather than the answer withheld.
            let mut strings = Vec::new();
            strings_of(&body["result"], true, &mut strings);
            assert!(
                strings.iter().any(|s| s.contains("<redacted>")),
                "{what}: nothing was redacted, so nothing was echoed: {body}"
            );
            let mut values = Vec::new();
            strings_of(&body["result"]["body"], false, &mut values);
            assert_clean(&values.concat(), &secret, &what);
        }
    }
    // The hostile upstream did get the credential every time.
    let got = upstream.requests();
    assert_eq!(got.len(), intents);
    assert!(got.iter().all(|r| credential_in(r).as_deref() == Some(secret.as_str())));
    assert_nothing_recorded_holds(&env, gateway, &receiver, &secret, intents);
}

/// An upstream that fails in every way a connection can, for a query credential: the one
/// spelled inside the URL that error messages like to quote.
fn failing_upstream() -> Server {
    Server::start(|request| {
        let head = |length: &str| {
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n")
                .into_bytes()
        };
        match route_of(request) {
            "hangup" => Reply::HangUp,
            "garbage" => Reply::Bytes(format!("NOT HTTP {}\r\n\r\n", target(request)).into_bytes()),
            "badheader" => Reply::Bytes(
                format!(
                    "HTTP/1.1 200 OK\r\nX-Bad: \u{1}{}\r\nContent-Length: 2\r\n\r\n{{}}",
                    target(request)
                )
                .into_bytes(),
            ),
            "silent" => Reply::Silent(Duration::from_secs(5)),
            // 25 bytes, one every 200 ms: longer than the two-second timeout.
            "trickle" => Reply::Trickle {
                head: head("Content-Length: 25\r\n"),
                every: Duration::from_millis(200),
                count: 25,
            },
            // A body without a length, until the gateway stops reading.
            "flood" => Reply::Flood {
                head: head(""),
                total: 16 * 1024 * 1024,
            },
            // Promises 100 bytes, sends 10 and hangs up.
            "short" => Reply::Bytes([head("Content-Length: 100\r\n"), b"{\"a\": \"xx".to_vec()].concat()),
            "loop" => Reply::Bytes(reply("302 Found", &[("Location", target(request))], "{}")),
            "badlocation" => Reply::Bytes(reply("302 Found", &[("Location", "http://[::1")], "{}")),
            _ => Reply::Bytes(reply("404 Not Found", &[], "{}")),
        }
    })
}

const FAIL_ROUTES: [&str; 9] = [
    "hangup",
    "garbage",
    "badheader",
    "silent",
    "trickle",
    "flood",
    "short",
    "loop",
    "badlocation",
];

#[test]
fn errors_from_a_failing_upstream_never_carry_a_query_credential() {
    let upstream = failing_upstream();
    let receiver = Receiver::start();
    let action = format!(
        r#"
name: fail.get
description: An upstream failing in every way, called with a query credential
input:
  type: object
  required: [route]
  properties:
    route: {{type: string, pattern: "^[a-z0-9]{{1,20}}$"}}
request:
  method: GET
  url: http://127.0.0.1:{}/{{route}}?page=1
  redirects: 1
credential: tracker_query
"#,
        upstream.port()
    );
    let config = fixtures::CONFIG.replace(
        "timeout_ms: 5000",
        "timeout_ms: 2000\n  connect_timeout_ms: 1000\n  max_response_bytes: 65536",
    );
    let (env, gateway, token, secret) = hostile_world(&action, &config, &receiver);

    let answers: Vec<(String, Response)> = FAIL_ROUTES
        .iter()
        .map(|route| {
            let r = gateway.post_intent(&token, &json!({"action": "fail.get", "input": {"route": route}}));
            ((*route).to_owned(), r)
        })
        .collect();
    for (route, r) in &answers {
        assert_eq!(r.status, 200, "{route}: {}", r.text());
        assert_clean(&r.raw, &secret, route);
        let body = r.json();
        assert_eq!(body["status"], "failed", "{route}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{route}: a failure says what happened: {body}");
        assert!(
            !error.contains("api_key") && !error.contains("page=1"),
            "{route}: {error}"
        );
    }
    assert!(
        upstream
            .requests()
            .iter()
            .any(|r| credential_in(r).as_deref() == Some(secret.as_str())),
        "the credential was sent"
    );
    assert_nothing_recorded_holds(&env, gateway, &receiver, &secret, FAIL_ROUTES.len());
}

#[test]
fn a_credential_split_across_fields_reaches_neither_agent_nor_log_trace_or_audit() {
    let upstream = Server::start(|request| {
        let s = credential_in(request).unwrap_or_default();
        let (first, second) = s.split_at(s.len() / 2);
        Reply::Bytes(reply(
            "200 OK",
            &[],
            &json!({"first": first, "second": second}).to_string(),
        ))
    });
    let receiver = Receiver::start();
    let action = format!(
        "name: split.get\ninput: {{type: object, properties: {{}}}}\nrequest: {{method: GET, url: \"http://127.0.0.1:{}/split\"}}\ncredential: tracker\n",
        upstream.port()
    );
    let (env, gateway, token, secret) = hostile_world(&action, fixtures::CONFIG, &receiver);
    let r = gateway.post_intent(&token, &json!({"action": "split.get", "input": {}}));
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_clean(&r.raw, &secret, "the response");
    let mut values = Vec::new();
    strings_of(&r.json()["result"]["body"], false, &mut values);
    assert_eq!(values.len(), 2, "{}", r.text());
    assert_clean(&values.concat(), &secret, "the halves put together");
    // The upstream did send both halves; neither is in the log, a span or the audit log.
    assert_eq!(upstream.requests().len(), 1);
    let (first, second) = secret.split_at(secret.len() / 2);
    for half in [first, second] {
        assert_clean(&r.raw, half, "the response");
    }
    assert_nothing_recorded_holds_any(&env, gateway, &receiver, &[&secret, first, second], 1);
}

/// A realm that redirects to `second` with the credential it received in the URL, spelled
/// as the `enc` query parameter says.
fn redirecting_realm(second: u16) -> Server {
    Server::start(move |request| {
        let s = credential_in(request).unwrap_or_default();
        let enc = target(request).split("enc=").nth(1).unwrap_or_default();
        let token = match enc {
            "plain" => s.clone(),
            "percent" => percent_encode(&s, false),
            "base64" => b64(&s),
            "base64url" => b64url(&s),
            "hex" => hex(&s, false),
            _ => String::new(),
        };
        let location = format!("http://127.0.0.1:{second}/callback?t={token}");
        Reply::Bytes(reply("302 Found", &[("Location", &location)], "{}"))
    })
}

fn redirect_world(second: &Server) -> (Server, Env, Gateway, String, String) {
    let realm = redirecting_realm(second.port());
    let env = Env::new();
    let secret = write_standard_files(&env);
    env.write(
        "actions/away.yaml",
        &format!(
            r#"
name: away.get
input:
  type: object
  required: [enc]
  properties:
    enc: {{type: string, enum: [plain, percent, base64, base64url, hex]}}
request:
  method: GET
  url: http://127.0.0.1:{}/start?enc={{enc}}
  redirects: 1
credential: tracker
"#,
            realm.port()
        ),
    );
    env.write(
        "policies/away.cedar",
        "@id(\"away\")\npermit (principal in AgentGroup::\"support\", action == Action::\"away.get\", resource);\n",
    );
    let token = env.add_agent(AGENT);
    let gateway = env.serve();
    (realm, env, gateway, token, secret)
}

fn assert_redirect_refused(second: &Server, gateway: &Gateway, token: &str, secret: &str, encodings: &[&str]) {
    for enc in encodings {
        let r = gateway.post_intent(token, &json!({"action": "away.get", "input": {"enc": enc}}));
        assert_clean(&r.raw, secret, enc);
        assert_eq!(r.json()["status"], "failed", "{enc}: {}", r.text());
    }
    let got = second.requests();
    assert!(got.is_empty(), "another origin got the credential in its URL: {got:#?}");
}

#[test]
fn a_redirect_carrying_the_credential_in_its_url_to_another_origin_is_not_followed() {
    let second = Server::start(|_| Reply::Bytes(reply("200 OK", &[], "{}")));
    let (realm, _env, gateway, token, secret) = redirect_world(&second);
    assert_redirect_refused(&second, &gateway, &token, &secret, &["plain", "percent"]);
    assert_eq!(realm.requests().len(), 2);
}

#[test]
fn a_redirect_carrying_the_credential_encoded_to_another_origin_is_not_followed() {
    let second = Server::start(|_| Reply::Bytes(reply("200 OK", &[], "{}")));
    let (_realm, _env, gateway, token, secret) = redirect_world(&second);
    assert_redirect_refused(&second, &gateway, &token, &secret, &["base64", "base64url", "hex"]);
}

// ---------------------------------------------------------------------------------------
// 4. Authorization between agents

const HOLD_HIGH: &str = r#"
@id("high-needs-a-person")
@hold("high-priority tickets need a person")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "high" };
"#;

#[test]
fn an_agent_can_neither_wait_on_another_agents_intent_nor_learn_its_idempotency_keys() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("policies/hold.cedar", HOLD_HIGH);
    let token = env.add_agent(AGENT);
    let other = env.add_agent(OTHER);
    let gw = env.serve();

    let held = gw.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "mine", "priority": "high"}}),
    );
    assert_eq!(held.status, 202, "{}", held.text());
    let held_id = held.json()["id"].as_str().unwrap().to_owned();
    let mine = json!({
        "action": "tickets.create",
        "input": {"project": "web", "title": "A's ticket"},
        "idempotency_key": "shared-key"
    });
    let first = gw.post_intent(&token, &mine);
    assert_eq!(first.json()["status"], "executed", "{}", first.text());

    // Long-polling another agent's held intent looks like long-polling one that doesn't exist.
    let theirs = gw.get(&format!("/v1/intents/{held_id}?wait=1"), Some(&other));
    let missing = gw.get("/v1/intents/int_00000000000000000000000000000000?wait=1", Some(&other));
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    assert_eq!(theirs.json(), missing.json());

    // The same key with another payload is a new intent for the other agent, not a conflict
    // (which would say the key is taken) and not the first agent's stored result.
    let reuse = json!({
        "action": "tickets.create",
        "input": {"project": "web", "title": "B's ticket"},
        "idempotency_key": "shared-key"
    });
    let r = gw.post_intent(&other, &reuse);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "executed", "{body}");
    assert_ne!(body["id"], first.json()["id"]);
    assert!(!r.text().contains("A's ticket"), "{body}");

    // Neither agent's key was disturbed: both replay their own result.
    assert_eq!(gw.post_intent(&token, &mine).json(), first.json());
    assert_eq!(gw.post_intent(&other, &reuse).json(), body);
    let tickets = env
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/tickets")
        .count();
    assert_eq!(tickets, 2);
    // The held intent is still its agent's, and still held.
    let still = gw.get(&format!("/v1/intents/{held_id}"), Some(&token));
    assert_eq!(still.json()["status"], "pending_approval", "{}", still.text());
}

// ---------------------------------------------------------------------------------------
// 5. Resource exhaustion

/// `n` connections to `addr`: a third send nothing, a third stop in the middle of their
/// headers, a third send complete headers for a 1000-byte body and stop after 10 bytes.
fn stalled_connections(addr: SocketAddr, token: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let partial = match i % 3 {
                0 => String::new(),
                1 => format!("POST /v1/intents HTTP/1.1\r\nHost: {addr}\r\nAuthoriz"),
                _ => format!(
                    "POST /v1/intents HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"action\":"
                ),
            };
            stream.write_all(partial.as_bytes()).expect("send");
            stream
        })
        .collect()
}

#[test]
fn hundreds_of_stalled_clients_do_not_stop_the_gateway_serving_others() {
    let s = standard();
    let stalled = stalled_connections(s.gateway.addr, &s.token, 300);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        let r = s.intent(&json!({"action": "tickets.create", "input": {"project": "web", "title": format!("t{i}")}}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "executed");
    }
    assert_eq!(s.gateway.get("/healthz", None).status, 200);
    assert_eq!(s.env.upstream.requests().len(), 3);
    drop(stalled);
    assert!(s.env.audit_verify().success());
}

#[test]
fn a_client_that_stalls_its_request_is_disconnected_in_bounded_time() {
    let s = standard();
    let stalled = stalled_connections(s.gateway.addr, &s.token, 3);
    let limit = Duration::from_secs(60);
    let outcomes: Vec<(usize, Result<Vec<u8>, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = stalled
            .into_iter()
            .enumerate()
            .map(|(i, mut stream)| {
                scope.spawn(move || {
                    stream.set_read_timeout(Some(limit)).unwrap();
                    let mut got = Vec::new();
                    let result = match stream.read_to_end(&mut got) {
                        Ok(_) => Ok(got),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
                        Err(e) => Err(e.to_string()),
                    };
                    (i, result)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, outcome) in outcomes {
        let kind = ["sent nothing", "stopped in its headers", "stopped in its body"][i];
        let got = outcome.unwrap_or_else(|e| panic!("a client that {kind} was still connected after {limit:?}: {e}"));
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"),
            "{kind}: {text}"
        );
    }
    s.env.upstream.assert_untouched("stalled clients");
}

#[test]
fn slow_silent_and_endless_upstreams_fail_in_bounded_time_while_others_are_served() {
    let upstream = failing_upstream();
    let env = Env::new();
    write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &fixtures::CONFIG.replace("timeout_ms: 5000", "timeout_ms: 2000\n  max_response_bytes: 65536"),
    );
    env.write(
        "actions/fail.yaml",
        &format!(
            "name: fail.get\ninput: {{type: object, required: [route], properties: {{route: {{type: string}}}}}}\nrequest: {{method: GET, url: \"http://127.0.0.1:{}/{{route}}\"}}\ncredential: tracker\n",
            upstream.port()
        ),
    );
    env.write("policies/fail.cedar", PERMIT_SUPPORT);
    let token = env.add_agent(AGENT);
    let gw = env.serve();

    let bad = ["silent", "trickle", "flood", "short"];
    let (addr, limit) = (gw.addr, Duration::from_secs(15));
    let answers = std::thread::scope(|scope| {
        let slow: Vec<_> = bad
            .iter()
            .map(|route| {
                let token = token.clone();
                scope.spawn(move || {
                    let started = Instant::now();
                    let body = json!({"action": "fail.get", "input": {"route": route}}).to_string();
                    let r = http::post_json(addr, "/v1/intents", Some(&token), body.as_bytes());
                    (*route, r, started.elapsed())
                })
            })
            .collect();
        // Meanwhile, other intents are served as usual.
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..5 {
            let r = gw.post_intent(
                &token,
                &json!({"action": "tickets.create", "input": {"project": "web", "title": format!("meanwhile {i}")}}),
            );
            assert_eq!(r.json()["status"], "executed", "{}", r.text());
        }
        slow.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    for (route, r, took) in answers {
        assert!(took < limit, "{route}: answered after {took:?}");
        assert_eq!(r.status, 200, "{route}: {}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "failed", "{route}: {body}");
        let error = body["error"].as_str().unwrap();
        let expected = match route {
            "flood" => "exceeded the gateway's size limit",
            "short" => "failed",
            _ => "timed out",
        };
        assert!(error.contains(expected), "{route}: a clear error: {error}");
    }
    assert!(env.audit_verify().success());
}

#[test]
fn a_thousand_held_intents_with_their_agents_waiting_stay_within_the_memory_budget() {
    const HELD: usize = 1000;
    let env = Env::new();
    write_standard_files(&env);
    env.write("policies/hold.cedar", HOLD_HIGH);
    let token = env.add_agent(AGENT);
    let gw = env.serve();
    let ids: Vec<String> = concurrently(4, |t| {
        (0..HELD / 4)
            .map(|i| {
                let title = format!("held {t}-{i}");
                let r = gw.post_intent(
                    &token,
                    &json!({"action": "tickets.create", "input": {"project": "web", "title": title, "priority": "high"}}),
                );
                assert_eq!(r.status, 202, "{}", r.text());
                r.json()["id"].as_str().unwrap().to_owned()
            })
            .collect::<Vec<_>>()
    })
    .concat();
    assert_eq!(ids.len(), HELD);

    // Every agent long-polls its held intent, all at once.
    let waiting: Vec<TcpStream> = ids
        .iter()
        .map(|id| {
            let mut stream = TcpStream::connect(gw.addr).expect("connect");
            let request = format!(
                "GET /v1/intents/{id}?wait=30 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
                gw.addr
            );
            stream.write_all(request.as_bytes()).expect("send");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // Still serving, and within DESIGN §7's 200 MiB for 1,000 concurrent held intents.
    let r = gw.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "not held"}}),
    );
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    let rss = gateway_rss_mib(&env);
    assert!(
        rss <= 200,
        "the gateway uses {rss} MiB with {HELD} held intents waited on"
    );
    drop(waiting);
    assert_eq!(env.upstream.requests().len(), 1, "no held intent ran");
}

// ---------------------------------------------------------------------------------------
// 6. Crash safety during audit appends

const BURST: usize = 80;

fn burst_intent(i: usize) -> Value {
    json!({
        "action": "tickets.create",
        "input": {"project": "burst", "title": format!("burst {i}")},
        "idempotency_key": format!("burst-{i}")
    })
}

/// A burst of intents, each with its own idempotency key, and the gateway killed with
/// SIGKILL once a third of them reached the upstream. The upstream answers each call after
/// 300 ms, so that the burst is still on its way when the kill lands: the killer learns of
/// the upstream's requests by polling it, and without the delay a gateway fast enough
/// answered the whole burst before the kill arrived, three times in a row.
struct Burst {
    env: Env,
    token: String,
    /// What each agent got before the kill, if anything.
    before: Vec<Option<Response>>,
}

impl Burst {
    /// Runs bursts until the kill lands inside one: now and then the whole burst is answered
    /// before the signal arrives.
    fn run() -> Self {
        for _ in 0..3 {
            let burst = Self::attempt();
            if burst.before.iter().flatten().filter(|r| r.status == 200).count() < BURST {
                return burst;
            }
        }
        panic!("three bursts in a row were answered before the kill arrived");
    }

    fn attempt() -> Self {
        let env = Env::new();
        write_standard_files(&env);
        env.write(
            "portcullis.yaml",
            &fixtures::CONFIG.replace("timeout_ms: 5000", "timeout_ms: 2000\n  connect_timeout_ms: 500"),
        );
        let slow = fixtures::TICKETS.replace("UPSTREAM_PORT/tickets\n", "UPSTREAM_PORT/tickets?delay=0.3\n");
        assert_ne!(slow, fixtures::TICKETS, "the tickets action's URL changed");
        env.write("actions/tickets.yaml", &slow);
        let token = env.add_agent(AGENT);
        let gateway = env.serve();
        let before = std::thread::scope(|scope| {
            // Polled tightly: the whole burst takes a fraction of a second.
            let killer = scope.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(30);
                while env.upstream.requests().len() < BURST / 3 {
                    assert!(Instant::now() < deadline, "the burst never reached the upstream");
                    std::thread::sleep(Duration::from_millis(2));
                }
                gateway.signal("KILL");
            });
            let answers = concurrently(BURST, |i| {
                std::panic::catch_unwind(|| gateway.post_intent(&token, &burst_intent(i))).ok()
            });
            killer.join().unwrap();
            answers
        });
        drop(gateway);
        Self { env, token, before }
    }

    /// Every agent retries with its key until its intent settles; the answers in burst order.
    fn retry(&self, gateway: &Gateway) -> Vec<Value> {
        let answers = concurrently(8, |t| {
            (t..BURST)
                .step_by(8)
                .map(|i| {
                    let r = eventually(Duration::from_secs(60), "the retry to settle", || {
                        let r = gateway.post_intent(&self.token, &burst_intent(i));
                        (r.status != 409).then_some(r)
                    });
                    assert_eq!(r.status, 200, "burst {i}: {}", r.text());
                    (i, r.json())
                })
                .collect::<Vec<_>>()
        });
        let by_index: BTreeMap<usize, Value> = answers.concat().into_iter().collect();
        by_index.into_values().collect()
    }

    /// The kinds of the audit events of intent `id`, in order.
    fn kinds(events: &[Value], id: &str) -> Vec<String> {
        events
            .iter()
            .filter(|e| e["intent_id"] == id)
            .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[test]
fn a_gateway_killed_in_a_burst_loses_no_audit_event_and_runs_nothing_twice() {
    let burst = Burst::run();
    let env = &burst.env;
    // Nothing half-written: the chain verifies, and what an agent saw executed is recorded.
    let verify = env.audit_verify();
    assert!(verify.success(), "{verify:?}");
    let events = audit_events(env);
    for r in burst.before.iter().flatten() {
        let body = r.json();
        if body["status"] == "executed" {
            let id = body["id"].as_str().unwrap();
            assert_eq!(Burst::kinds(&events, id), ["decided", "outcome"], "{body}");
        }
    }

    let gateway = env.serve();
    let after = burst.retry(&gateway);
    // Give a wrongly repeated call time to arrive.
    std::thread::sleep(Duration::from_millis(500));
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for request in env.upstream.requests() {
        let sent: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
        *runs.entry(sent["title"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let events = audit_events(env);
    for (i, body) in after.iter().enumerate() {
        let title = format!("burst {i}");
        let ran = runs.get(&title).copied().unwrap_or(0);
        assert!(ran <= 1, "`{title}` ran {ran} times");
        let status = body["status"].as_str().unwrap();
        assert!(matches!(status, "executed" | "outcome_unknown"), "{title}: {body}");
        if status == "executed" {
            assert_eq!(ran, 1, "{title}: executed, yet the upstream never got it");
        }
        if let Some(Some(r)) = burst.before.get(i)
            && r.status == 200
        {
            assert_eq!(&r.json(), body, "{title}: the retry replays what the agent saw");
        }
        // Whatever reached the upstream was decided, on the record, first (invariant 5).
        if ran == 1 {
            let kinds = Burst::kinds(&events, body["id"].as_str().unwrap());
            assert_eq!(kinds.first().map(String::as_str), Some("decided"), "{title}: {kinds:?}");
        }
    }
    let verify = env.audit_verify();
    assert!(verify.success(), "{verify:?}");
}

/// Each settled intent has its decision and its outcome on the record, once each.
#[test]
fn after_a_crash_every_settled_intent_has_its_decision_and_its_outcome_in_the_audit_log() {
    let burst = Burst::run();
    let gateway = burst.env.serve();
    let after = burst.retry(&gateway);
    let events = audit_events(&burst.env);
    for (i, body) in after.iter().enumerate() {
        let kinds = Burst::kinds(&events, body["id"].as_str().unwrap());
        assert_eq!(
            kinds,
            ["decided", "outcome"],
            "burst {i} ({}): its audit events",
            body["status"]
        );
    }
}
