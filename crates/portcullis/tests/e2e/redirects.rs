//! Redirects through the real gateway: the demo upstream answers `GET /redirect?to=URL` with a
//! redirect, here to a second demo upstream on another port of 127.0.0.1 (another origin). With
//! `request.redirects` the gateway follows it without the credential, in any of its kinds; by
//! default the agent gets the 3xx and nothing follows.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::{AGENT, assert_no_secret, form_decode, percent_encode};
use crate::harness::{Env, Gateway, random_secret, recorded_headers};
use crate::http;

const CONFIG: &str = r#"
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  support-bot: {groups: [support]}
credentials:
  tracker: {kind: bearer, secret: tracker_token}
  tracker_query: {kind: query, param: api_key, secret: tracker_token}
  tracker_basic: {kind: basic, username: demo-user, secret: tracker_token}
  tracker_header: {kind: header, header: X-Api-Key, prefix: "Token ", secret: tracker_token}
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 5000
"#;

/// `hop.KIND` follows up to two redirects; `hop.default` (no `redirects`) and `hop.once`
/// (`redirects: 1`) use the bearer credential.
fn actions() -> String {
    let hop = |name: &str, credential: &str, redirects: &str| {
        format!(
            r#"
name: {name}
description: Asks the demo upstream to redirect
input:
  type: object
  required: [to]
  properties:
    to: {{type: string}}
    status: {{type: string, pattern: "^3[0-9][0-9]$"}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/redirect?to={{to}}&status={{status}}
{redirects}credential: {credential}
response:
  headers: [location, x-echo]
"#
        )
    };
    [
        hop("hop.bearer", "tracker", "  redirects: 2\n"),
        hop("hop.query", "tracker_query", "  redirects: 2\n"),
        hop("hop.basic", "tracker_basic", "  redirects: 2\n"),
        hop("hop.header", "tracker_header", "  redirects: 2\n"),
        hop("hop.default", "tracker", ""),
        hop("hop.once", "tracker", "  redirects: 1\n"),
    ]
    .join("---\n")
}

const POLICY: &str = r#"
@id("support-hops")
@reason("support may follow redirects")
permit (principal in AgentGroup::"support", action, resource);
"#;

/// A second demo upstream, on its own port, killed on drop.
struct SecondUpstream {
    child: Child,
    port: u16,
}

impl SecondUpstream {
    fn start(dir: &Path) -> Self {
        let port_file = dir.join("second-upstream.port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo-upstream/upstream.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the demo upstream");
        let mut second = Self { child, port: 0 };
        let deadline = Instant::now() + Duration::from_secs(120);
        while second.port == 0 {
            if let Ok(port) = std::fs::read_to_string(&port_file).unwrap_or_default().trim().parse() {
                second.port = port;
            }
            assert!(Instant::now() < deadline, "the second upstream did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        second
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Value> {
        let r = http::get(SocketAddr::from(([127, 0, 0, 1], self.port)), "/__requests", None);
        assert_eq!(r.status, 200);
        match r.json() {
            Value::Array(a) => a,
            other => panic!("unexpected /__requests answer: {other}"),
        }
    }
}

impl Drop for SecondUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    second: SecondUpstream,
    gateway: Gateway,
    token: String,
    secret: String,
    env: Env,
}

fn setup() -> Setup {
    let env = Env::new();
    env.write("portcullis.yaml", CONFIG);
    env.write("actions/hops.yaml", &actions());
    env.write("policies/p.cedar", POLICY);
    let secret = random_secret("redirect");
    env.set_secret("tracker_token", &secret);
    let token = env.add_agent(AGENT);
    let second = SecondUpstream::start(env.dir.path());
    let gateway = env.serve();
    Setup {
        second,
        gateway,
        token,
        secret,
        env,
    }
}

impl Setup {
    /// Runs `action` to `to` with `status`; returns the agent's answer, checked for the secret.
    fn hop(&self, action: &str, to: &str, status: &str) -> Value {
        let input = json!({"to": to, "status": status});
        let r = self
            .gateway
            .post_intent(&self.token, &json!({"action": action, "input": input}));
        assert_eq!(r.status, 200, "{action}: {}", r.text());
        assert_no_secret(&r.raw, &self.secret, action);
        r.json()
    }
}

#[test]
fn a_cross_origin_redirect_never_carries_the_credential() {
    let s = setup();
    let kinds = [
        ("hop.bearer", "302"),
        ("hop.query", "307"),
        ("hop.basic", "301"),
        ("hop.header", "308"),
    ];
    for (action, status) in kinds {
        let to = s.second.url(&format!("/leak?via={action}"));
        let body = s.hop(action, &to, status);
        assert_eq!(body["status"], "executed", "{action}: {body}");
        // The agent's result is the last hop's: the second upstream's /leak, which echoes an
        // Authorization header it never got.
        let result = &body["result"];
        assert_eq!(result["status"], 200, "{action}: {body}");
        assert_eq!(
            result["body"],
            json!({"echo": "", "query": format!("via={action}")}),
            "{action}"
        );
    }

    // The first upstream (the credential's realm) got the credential each time.
    let first = s.env.upstream.requests();
    assert_eq!(first.len(), kinds.len(), "{first:#?}");
    assert_eq!(
        recorded_headers(&first[0], "authorization"),
        [format!("Bearer {}", s.secret)]
    );
    let query = first[1]["query"].as_str().unwrap();
    let keys: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "api_key")
        .map(|(_, v)| form_decode(v))
        .collect();
    assert_eq!(keys, [s.secret.as_str()], "{query}");
    assert_eq!(recorded_headers(&first[2], "authorization").len(), 1);
    assert_eq!(
        recorded_headers(&first[3], "x-api-key"),
        [format!("Token {}", s.secret)]
    );

    // The second upstream never did, in any spelling, header or query.
    let second = s.second.requests();
    assert_eq!(second.len(), kinds.len(), "{second:#?}");
    for (request, (action, _)) in second.iter().zip(kinds) {
        assert_eq!(request["path"], "/leak", "{action}");
        assert_eq!(request["query"], format!("via={action}"), "{action}");
        for name in ["authorization", "x-api-key", "cookie", "proxy-authorization"] {
            assert!(recorded_headers(request, name).is_empty(), "{action}: {name}");
        }
    }
    assert_no_secret(&Value::Array(second).to_string(), &s.secret, "the second upstream");
    assert_no_secret(&s.gateway.log(), &s.secret, "the gateway's log");
}

#[test]
fn a_same_origin_redirect_keeps_the_credential_and_the_result_is_scrubbed() {
    let s = setup();
    let body = s.hop("hop.bearer", "/leak?same=1", "303");
    assert_eq!(body["status"], "executed", "{body}");
    // The realm's /leak got the credential and echoed it; the agent sees it scrubbed.
    let echo = body["result"]["body"]["echo"].as_str().expect("echo");
    assert!(echo.contains("<redacted>"), "{body}");
    assert!(
        body["result"]["headers"]["x-echo"]
            .as_str()
            .unwrap()
            .contains("<redacted>")
    );

    let first = s.env.upstream.requests();
    let paths: Vec<&str> = first.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/redirect", "/leak"]);
    for request in &first {
        assert_eq!(
            recorded_headers(request, "authorization"),
            [format!("Bearer {}", s.secret)]
        );
    }
    assert!(s.second.requests().is_empty());
}

#[test]
fn without_redirects_the_agent_gets_the_3xx_and_nothing_follows() {
    let s = setup();
    let to = s.second.url("/leak");
    let body = s.hop("hop.default", &to, "302");
    assert_eq!(body["status"], "executed", "{body}");
    assert_eq!(body["result"]["status"], 302, "{body}");
    assert_eq!(body["result"]["headers"]["location"], to, "{body}");
    assert_eq!(body["result"]["body"], json!({"redirect": to}));
    assert_eq!(s.env.upstream.requests().len(), 1);
    assert!(s.second.requests().is_empty(), "the Location was not followed");
}

#[test]
fn too_many_or_forbidden_redirects_fail_naming_hosts_only() {
    let s = setup();
    // Two redirects for an action that follows one.
    let inner = s.second.url("/leak?private=path");
    let to = format!(
        "http://127.0.0.1:{}/redirect?to={}",
        s.env.upstream.port,
        percent_encode(&inner, false)
    );
    let body = s.hop("hop.once", &to, "302");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(
        body["error"], "the upstream redirected too many times, or to a location the gateway does not follow",
        "{body}"
    );
    // A redirect into the cloud metadata service is refused by the egress guard.
    let body = s.hop("hop.bearer", "http://169.254.169.254/latest/meta-data/", "302");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["error"].as_str().unwrap().contains("not allowed"), "{body}");
    assert!(s.second.requests().is_empty());
    assert_eq!(s.env.upstream.requests().len(), 3);

    // The operator reads why in the audit log, which names hosts and never a path or query.
    let errors: Vec<String> = s
        .env
        .audit_tail(20)
        .iter()
        .filter(|e| e["event"]["kind"] == "outcome")
        .map(|e| e["event"]["detail"]["error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        "too many redirects: the action follows at most 1, and `127.0.0.1` redirected again"
    );
    // (The audit log's detector masks the metadata service's address.)
    assert!(
        errors[1].starts_with("destination `") && errors[1].ends_with("` is not allowed: link-local"),
        "{errors:?}"
    );
    for error in &errors {
        for part in ["private", "path", "latest", "meta-data", "leak"] {
            assert!(!error.contains(part), "{error}");
        }
    }
}
