//! The OAuth2 token broker against a real provider: npm `oidc-provider` on loopback
//! (`tests/oidc/server.mjs`), with its protected API `/api/echo` as the upstream. Client
//! credentials with basic and post client authentication, scopes, `resource` and `audience`;
//! one token request for 50 concurrent intents and one more for 50 after expiry; the refresh-token
//! grant with rotation, across a restart; a 401 refreshed and retried for idempotent actions
//! only; a wrong client secret; a client secret from an environment variable; agents
//! authenticated by the provider's JWTs, their claims deciding intents. Nothing secret reaches
//! the agent, the log or the audit log.
//!
//! They run when `node` and `tests/oidc/node_modules` are there, and must when
//! `PORTCULLIS_OIDC_TESTS=1` (as `.ci/run` sets it); otherwise they say they are skipped.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::fixtures::{AGENT, forbidden_spellings, percent_encode};
use crate::harness::{Env, Gateway, KillOnDrop, concurrently, random_secret};
use crate::http;

/// What the agent is told when a credential can't be had.
const UNAVAILABLE: &str = "the action's credential is unavailable; an operator must fix the gateway's configuration";

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

/// `tests/oidc/server.mjs` on a free loopback port.
struct Provider {
    _child: KillOnDrop,
    port: u16,
    /// Client id → client secret, as the provider knows them.
    secrets: Vec<(&'static str, String)>,
    /// Its standard error (it must log nothing secret).
    log: PathBuf,
}

/// Whether the provider can run: `false` (after saying so) when node or the npm packages are
/// missing and the tests are not required.
fn provider_available() -> bool {
    let required = std::env::var("PORTCULLIS_OIDC_TESTS").is_ok_and(|v| v == "1");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let installed = oidc_dir().join("node_modules/oidc-provider").is_dir();
    if node && installed {
        return true;
    }
    let what = if node {
        "tests/oidc/node_modules is missing (npm ci in tests/oidc)"
    } else {
        "`node` is not installed"
    };
    assert!(!required, "PORTCULLIS_OIDC_TESTS=1 but {what}");
    eprintln!("skipped: {what}; PORTCULLIS_OIDC_TESTS=1 requires it");
    false
}

impl Provider {
    /// Starts the provider in `env`'s directory. Its access tokens live `ttl` seconds, and
    /// its token endpoint answers after `token_delay`.
    fn start(env: &Env, ttl: u64, token_delay: Duration) -> Self {
        let secrets: Vec<(&'static str, String)> = ["cc-basic", "cc-post", "crm-app", "agent-bot", "agent-guest"]
            .into_iter()
            .map(|id| (id, random_secret(id)))
            .collect();
        let secrets_file = env.path("oidc-secrets.json");
        let map: serde_json::Map<String, Value> = secrets.iter().map(|(id, s)| ((*id).to_owned(), json!(s))).collect();
        std::fs::write(&secrets_file, Value::Object(map).to_string()).expect("write the secrets file");
        let port_file = env.path("oidc.port");
        let log = env.path("oidc.log");
        let child = Command::new("node")
            .arg(oidc_dir().join("server.mjs"))
            .arg(&port_file)
            .args(["--ttl", &ttl.to_string()])
            .args(["--token-delay-ms", &token_delay.as_millis().to_string()])
            .arg("--secrets")
            .arg(&secrets_file)
            .current_dir(env.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("oidc.log"))
            .spawn()
            .expect("start node");
        let child = KillOnDrop(child);
        // Generous: with the whole suite running on two cores, node loading the provider
        // took over 30 s once.
        let deadline = Instant::now() + Duration::from_secs(120);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse()
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "the OIDC provider did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            _child: child,
            port,
            secrets,
            log,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn secret(&self, client: &str) -> &str {
        &self
            .secrets
            .iter()
            .find(|(id, _)| *id == client)
            .expect("a known client")
            .1
    }

    fn get(&self, path: &str) -> Value {
        let r = http::get(self.addr(), path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    fn post(&self, path: &str) -> Value {
        let r = http::send(self.addr(), "POST", path, &[], b"");
        assert_eq!(r.status, 200, "POST {path}: {}", r.text());
        r.json()
    }

    /// Every request to the token endpoint, in order.
    fn token_requests(&self) -> Vec<Value> {
        self.get("/__token_requests")["requests"]
            .as_array()
            .expect("requests")
            .clone()
    }

    /// The status of every call to `/api/echo`, in order.
    fn api_statuses(&self) -> Vec<u64> {
        let calls = self.get("/__api_calls");
        calls
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| c["status"].as_u64().expect("status"))
            .collect()
    }

    /// Every token the provider issued (access and refresh tokens).
    fn issued_tokens(&self) -> Vec<String> {
        let issued = self.get("/__issued_tokens");
        issued
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t["value"].as_str().expect("value").to_owned())
            .collect()
    }

    /// A refresh token for `crm-app`, minted directly by the provider.
    fn mint_refresh_token(&self) -> String {
        self.post("/__mint_refresh")["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned()
    }
}

/// The gateway's config: one OAuth2 credential per case, all against the provider.
const CONFIG: &str = r#"
listen: 127.0.0.1:8080
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  support-bot:
    groups: [support]
credentials:
  echo_basic:
    kind: oauth2_client_credentials
    token_url: http://127.0.0.1:OIDC_PORT/token
    client_id: cc-basic
    client_secret: cc_basic_secret
    client_auth: basic
    scopes: ["echo:read"]
    resource: urn:portcullis:echo
  echo_post:
    kind: oauth2_client_credentials
    token_url: http://127.0.0.1:OIDC_PORT/token
    client_id: cc-post
    client_secret: store:cc_post_secret
    client_auth: post
    scopes: ["echo:read", "echo:write"]
    audience: urn:portcullis:echo
  echo_wrong:
    kind: oauth2_client_credentials
    token_url: http://127.0.0.1:OIDC_PORT/token
    client_id: cc-basic
    client_secret: wrong_secret
    scopes: ["echo:read"]
    resource: urn:portcullis:echo
  crm:
    kind: oauth2_refresh_token
    token_url: http://127.0.0.1:OIDC_PORT/token
    client_id: crm-app
    client_secret: crm_secret
    scopes: ["echo:read"]
    resource: urn:portcullis:echo
    refresh_token: crm_refresh
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 5000
"#;

const ACTIONS: &str = r#"
name: echo.read
description: Read through the provider's protected API (idempotent)
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:OIDC_PORT/api/echo
credential: echo_basic
hints: {idempotent: true}
---
name: echo.read_post_auth
description: The same with the client authenticating in the form body
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:OIDC_PORT/api/echo
credential: echo_post
---
name: echo.reflect
description: A hostile answer that sends the Authorization header back
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:OIDC_PORT/api/echo?reflect=1
credential: echo_post
---
name: echo.write
description: Write through the protected API (not idempotent)
input: {type: object, properties: {}}
request:
  method: POST
  url: http://127.0.0.1:OIDC_PORT/api/echo
  body: {note: "written once"}
credential: echo_basic
hints: {idempotent: false}
---
name: echo.wrong_secret
description: A credential whose client secret is wrong
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:OIDC_PORT/api/echo
credential: echo_wrong
---
name: crm.read
description: Read with a user's delegated access (refresh-token grant)
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:OIDC_PORT/api/echo
credential: crm
"#;

const POLICY: &str = r#"
@id("support-uses-the-api")
@reason("support bots may call the protected API")
permit (principal in AgentGroup::"support", action, resource);
"#;

/// A test's world: the provider, the gateway's files and client secrets in the store, and the
/// agent's token.
struct World {
    provider: Provider,
    token: String,
    env: Env,
}

/// `None` when the provider can't run here (see [`provider_available`]).
fn world(ttl: u64, token_delay: Duration) -> Option<World> {
    if !provider_available() {
        return None;
    }
    let env = Env::new();
    let provider = Provider::start(&env, ttl, token_delay);
    let port = provider.port.to_string();
    env.write("portcullis.yaml", &CONFIG.replace("OIDC_PORT", &port));
    env.write("actions/echo.yaml", &ACTIONS.replace("OIDC_PORT", &port));
    env.write("policies/policy.cedar", POLICY);
    env.set_secret("cc_basic_secret", provider.secret("cc-basic"));
    env.set_secret("cc_post_secret", provider.secret("cc-post"));
    env.set_secret("crm_secret", provider.secret("crm-app"));
    let token = env.add_agent(AGENT);
    Some(World { provider, token, env })
}

fn intent(gateway: &Gateway, token: &str, action: &str) -> http::Response {
    gateway.post_intent(token, &json!({"action": action, "input": {}}))
}

/// Asserts the intent ran and the API accepted the token; its answer.
fn executed_ok(r: &http::Response) -> Value {
    let body = r.json();
    assert_eq!(body["status"], "executed", "{body}");
    assert_eq!(body["result"]["status"], 200, "the API refused the token: {body}");
    body["result"]["body"].clone()
}

/// Asserts that no client secret and none of the `issued` tokens the provider handed out (nor
/// `extra` values) appears, in any spelling, in the agent's answers, the gateway's log, the
/// audit log or the provider's own log.
fn assert_nothing_leaked(w: &World, issued: usize, answers: &[&http::Response], logs: &[String], extra: &[&str]) {
    let audit = w.env.cli(&["audit", "tail", "-n", "10000"], None);
    assert!(audit.success(), "audit tail failed: {audit:?}");
    let provider_log = std::fs::read_to_string(&w.provider.log).expect("the provider's log");
    let mut haystacks: Vec<(&str, &str)> = answers
        .iter()
        .map(|r| ("an answer to the agent", r.raw.as_str()))
        .collect();
    haystacks.extend(logs.iter().map(|l| ("the gateway's log", l.as_str())));
    haystacks.push(("the audit log", &audit.stdout));
    haystacks.push(("the provider's log", &provider_log));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut secrets: Vec<(String, Vec<String>)> = Vec::new();
    for (client, secret) in &w.provider.secrets {
        let mut spellings = forbidden_spellings(secret);
        // As `Authorization: Basic` carries it, form-encoded or not.
        spellings.push(b64.encode(format!("{client}:{secret}")));
        spellings.push(b64.encode(format!("{client}:{}", form_encode(secret))));
        secrets.push((format!("the client secret of `{client}`"), spellings));
    }
    let tokens = w.provider.issued_tokens();
    assert_eq!(tokens.len(), issued, "tokens handed out");
    for token in tokens.iter().map(String::as_str).chain(extra.iter().copied()) {
        secrets.push(("a token".to_owned(), forbidden_spellings(token)));
    }
    for (what, spellings) in &secrets {
        for spelling in spellings {
            for (place, text) in &haystacks {
                assert!(
                    !text.contains(spelling.as_str()),
                    "{what} (as `{spelling}`) is in {place}:\n{text}"
                );
            }
        }
    }
}

/// `application/x-www-form-urlencoded` encoding, as in a token request.
fn form_encode(s: &str) -> String {
    percent_encode(s, false).replace("%20", "+")
}

#[test]
fn client_credentials_with_basic_and_post_client_auth_reach_the_api_and_leak_nothing() {
    let Some(w) = world(60, Duration::ZERO) else { return };
    let gateway = w.env.serve();

    let basic = intent(&gateway, &w.token, "echo.read");
    let seen = executed_ok(&basic);
    assert_eq!(seen["kind"], "ClientCredentials", "{seen}");
    assert_eq!(seen["client_id"], "cc-basic", "{seen}");
    assert_eq!(seen["scope"], "echo:read", "the requested scope: {seen}");
    assert_eq!(seen["aud"], "urn:portcullis:echo", "the requested resource: {seen}");

    let post = intent(&gateway, &w.token, "echo.read_post_auth");
    let seen = executed_ok(&post);
    assert_eq!(seen["client_id"], "cc-post", "{seen}");
    assert_eq!(seen["scope"], "echo:read echo:write", "{seen}");
    assert_eq!(seen["aud"], "urn:portcullis:echo", "the requested audience: {seen}");

    // Cached: no second token request for either credential. An API that sends the
    // token back gets it scrubbed.
    let again = intent(&gateway, &w.token, "echo.read");
    executed_ok(&again);
    let reflected = intent(&gateway, &w.token, "echo.reflect");
    let seen = executed_ok(&reflected);
    assert_eq!(seen["echo"], "Bearer <redacted>", "{seen}");

    let requests = w.provider.token_requests();
    let summary: Vec<_> = requests
        .iter()
        .map(|r| {
            (
                r["grant_type"].clone(),
                r["client_id"].clone(),
                r["auth"].clone(),
                r["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!("client_credentials"),
                json!("cc-basic"),
                json!("basic"),
                json!(200)
            ),
            (json!("client_credentials"), json!("cc-post"), json!("post"), json!(200)),
        ],
        "one token request per credential, each client authenticating its own way"
    );
    assert_eq!(w.provider.api_statuses(), [200, 200, 200, 200]);
    let log = gateway.log();
    assert!(
        log.contains("fetched an OAuth2 access token") && log.contains("echo_basic") && log.contains("echo_post"),
        "{log}"
    );
    assert_nothing_leaked(&w, 2, &[&basic, &post, &again, &reflected], &[log], &[]);
}

#[test]
fn fifty_concurrent_intents_cause_one_token_request_and_expiry_one_more() {
    const TTL: u64 = 6;
    // A slow token endpoint: every intent of a burst needs the token before the first
    // request for it is answered, so anything but a single flight would send many.
    let delay = Duration::from_secs(1);
    let Some(w) = world(TTL, delay) else { return };
    let gateway = w.env.serve();

    let started = Instant::now();
    let burst = concurrently(50, |_| intent(&gateway, &w.token, "echo.read"));
    let took = started.elapsed();
    for r in &burst {
        executed_ok(r);
    }
    // Everyone waited for the one token. It is refreshed 10 % before it expires: a burst
    // that took longer than that would rightly need a second one.
    assert!(
        took >= delay,
        "the burst took {took:?}: the token endpoint was not waited for"
    );
    assert!(
        took < Duration::from_secs(TTL) * 9 / 10,
        "the burst took {took:?}, longer than the token lives: this test can't tell"
    );
    let requests = w.provider.token_requests();
    assert_eq!(
        requests.len(),
        1,
        "50 concurrent intents, one token request: {requests:#?}"
    );
    assert_eq!(w.provider.api_statuses().len(), 50);

    // Once the token has expired, the next burst of 50 fetches exactly one more. The token
    // was requested after `started`, so by this point the gateway's copy is past its refresh
    // time (10 % before expiry) whatever the machine's speed; the slow endpoint again makes
    // every intent of the burst need the token while the one request for it is in flight.
    std::thread::sleep((Duration::from_secs(TTL) + Duration::from_millis(500)).saturating_sub(started.elapsed()));
    let again = Instant::now();
    let burst = concurrently(50, |_| intent(&gateway, &w.token, "echo.read"));
    let took = again.elapsed();
    for r in &burst {
        executed_ok(r);
    }
    assert!(
        took >= delay,
        "the second burst took {took:?}: the expired token was not refreshed"
    );
    let requests = w.provider.token_requests();
    assert_eq!(
        requests.len(),
        2,
        "after expiry, 50 concurrent intents, one more token request: {requests:#?}"
    );
    assert!(requests.iter().all(|r| r["status"] == 200), "{requests:#?}");
    assert_eq!(w.provider.api_statuses(), vec![200; 100]);
}

#[test]
fn a_rotated_refresh_token_is_stored_and_used_after_expiry_and_a_restart() {
    const TTL: u64 = 3;
    let Some(w) = world(TTL, Duration::ZERO) else { return };
    let minted = w.provider.mint_refresh_token();
    w.env.set_secret("crm_refresh", &minted);
    let gateway = w.env.serve();

    let first = intent(&gateway, &w.token, "crm.read");
    let seen = executed_ok(&first);
    assert_eq!(seen["kind"], "AccessToken", "{seen}");
    assert_eq!(seen["client_id"], "crm-app", "{seen}");
    assert_eq!(seen["sub"], "user-1", "the user who granted access: {seen}");
    assert_eq!(seen["aud"], "urn:portcullis:echo", "{seen}");

    // After expiry the gateway refreshes with the token the provider rotated to. The
    // provider rotates on every use and treats a second use of a refresh token as theft
    // (it revokes the whole grant), so this succeeds only if the rotated one was stored.
    std::thread::sleep(Duration::from_secs(TTL) + Duration::from_millis(300));
    let second = intent(&gateway, &w.token, "crm.read");
    executed_ok(&second);
    let log = gateway.log();
    assert!(log.contains("stored a rotated OAuth2 refresh token"), "{log}");
    drop(gateway);

    // A fresh process with an empty cache starts from the stored, rotated token.
    let gateway = w.env.serve();
    let third = intent(&gateway, &w.token, "crm.read");
    executed_ok(&third);

    let requests = w.provider.token_requests();
    let presented: Vec<_> = requests
        .iter()
        .map(|r| {
            (
                r["grant_type"].clone(),
                r["status"].clone(),
                r["presented_rotations"].clone(),
            )
        })
        .collect();
    assert_eq!(
        presented,
        [
            (json!("refresh_token"), json!(200), json!(0)),
            (json!("refresh_token"), json!(200), json!(1)),
            (json!("refresh_token"), json!(200), json!(2)),
        ],
        "each refresh presents the refresh token the previous one rotated to"
    );
    assert_eq!(w.provider.api_statuses(), [200, 200, 200]);
    // The minted refresh token, then an access and a refresh token for each refresh.
    assert_nothing_leaked(&w, 7, &[&first, &second, &third], &[log, gateway.log()], &[]);
}

#[test]
fn a_401_refreshes_and_retries_an_idempotent_action_once_and_nothing_else() {
    let Some(w) = world(60, Duration::ZERO) else { return };
    let gateway = w.env.serve();
    executed_ok(&intent(&gateway, &w.token, "echo.read"));
    assert_eq!(w.provider.token_requests().len(), 1);
    assert_eq!(w.provider.post("/__revoke_all")["revoked"], 1);

    // Not idempotent: no retry. The agent gets the API's 401; no token is fetched.
    let write = intent(&gateway, &w.token, "echo.write");
    let body = write.json();
    assert_eq!(body["status"], "executed", "{body}");
    assert_eq!(body["result"]["status"], 401, "{body}");
    assert_eq!(body["result"]["body"]["error"], "invalid_token", "{body}");
    assert_eq!(
        w.provider.token_requests().len(),
        1,
        "no token request for a non-idempotent action"
    );
    assert_eq!(w.provider.api_statuses(), [200, 401]);

    // Idempotent: one refresh, one retry, and the agent sees only the success.
    let read = intent(&gateway, &w.token, "echo.read");
    let seen = executed_ok(&read);
    assert_eq!(seen["client_id"], "cc-basic", "{seen}");
    assert_eq!(w.provider.token_requests().len(), 2, "one refresh");
    assert_eq!(
        w.provider.api_statuses(),
        [200, 401, 401, 200],
        "one call refused, one retry"
    );
    let log = gateway.log();
    assert!(
        log.contains("the upstream refused the OAuth2 token: refreshing it and retrying once"),
        "{log}"
    );
    assert_nothing_leaked(&w, 2, &[&write, &read], &[log], &[]);
}

#[test]
fn a_wrong_client_secret_fails_with_the_generic_message_and_a_log_naming_invalid_client() {
    let Some(w) = world(60, Duration::ZERO) else { return };
    let wrong = random_secret("wrong");
    w.env.set_secret("wrong_secret", &wrong);
    let gateway = w.env.serve();

    let r = intent(&gateway, &w.token, "echo.wrong_secret");
    let body = r.json();
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["error"], UNAVAILABLE, "{body}");
    assert!(w.provider.api_statuses().is_empty(), "no token, no call");
    let requests = w.provider.token_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["error"], "invalid_client", "{requests:#?}");

    let log = gateway.log();
    assert!(
        log.contains("credential `echo_wrong`") && log.contains("invalid_client"),
        "the log names the credential and the provider's error:\n{log}"
    );
    assert_nothing_leaked(&w, 0, &[&r], &[log], &[&wrong]);
}

/// A JWT access token for the agent client `client`, issued by the provider for Portcullis
/// itself.
fn agent_jwt(provider: &Provider, client: &str) -> String {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{client}:{}", form_encode(provider.secret(client))));
    let auth = format!("Basic {basic}");
    let r = http::send(
        provider.addr(),
        "POST",
        "/token",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials&scope=agent&resource=urn%3Aportcullis",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().expect("access_token").to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    token
}

/// Agents can present the provider's JWTs instead of static tokens: verified against the
/// provider's JWKS, the `client_id` claim is the agent id and `groups`-less agents get the
/// configured groups; a tampered token is refused; after the provider rotates its keys (and
/// drops the old one), old tokens are refused and new ones accepted once the cached key set
/// is stale.
#[test]
fn agents_authenticate_with_the_providers_jwts_and_key_rotation_is_picked_up() {
    let Some(w) = world(300, Duration::ZERO) else { return };
    let port = w.provider.port;
    let config = CONFIG.replace("OIDC_PORT", &port.to_string()).replace(
        "  support-bot:\n    groups: [support]",
        "  support-bot:\n    groups: [support]\n  agent-bot:\n    groups: [support]",
    );
    w.env.write(
        "portcullis.yaml",
        &format!(
            "{config}oidc:\n  issuer: http://127.0.0.1:{port}\n  audience: urn:portcullis\n  \
             jwks_url: http://127.0.0.1:{port}/jwks\n  agent_claim: client_id\n  jwks_cache_seconds: 1\n"
        ),
    );
    let gateway = w.env.serve();
    let jwt = agent_jwt(&w.provider, "agent-bot");
    let r = gateway.post_intent(&jwt, &json!({"action": "echo.read", "input": {}}));
    executed_ok(&r);
    let audit = w.env.audit_tail(5);
    assert!(
        audit.iter().any(|e| e["event"]["agent"] == "agent-bot"),
        "the intent is the JWT's agent's: {audit:?}"
    );
    // The static token still works beside JWTs.
    executed_ok(&intent(&gateway, &w.token, "echo.read"));

    // A flipped signature byte, and no signature at all: 401.
    let (head, sig) = jwt.rsplit_once('.').expect("three parts");
    let flipped = format!("{head}.{}{}", if sig.starts_with('A') { "B" } else { "A" }, &sig[1..]);
    for bad in [flipped, format!("{head}.")] {
        let r = gateway.post_intent(&bad, &json!({"action": "echo.read", "input": {}}));
        assert_eq!(r.status, 401, "{}", r.text());
    }

    // The provider rotates to a new key and stops publishing the old one.
    w.provider.post("/__rotate_keys?drop_previous=1");
    std::thread::sleep(Duration::from_millis(1200));
    let r = gateway.post_intent(&jwt, &json!({"action": "echo.read", "input": {}}));
    assert_eq!(r.status, 401, "a token signed by a dropped key: {}", r.text());
    let fresh = agent_jwt(&w.provider, "agent-bot");
    executed_ok(&gateway.post_intent(&fresh, &json!({"action": "echo.read", "input": {}})));
    assert!(!gateway.log().contains(&fresh), "the token is never logged");
}

// The group a claim gives is in the scope (it decides what the agent is shown and may call);
// the attribute a claim gives is in the condition (it decides the intent).
const CLAIMS_POLICY: &str = r#"
@id("helpdesk-reads")
@reason("the helpdesk team may call the protected API")
permit (principal in AgentGroup::"helpdesk", action == Action::"echo.read", resource)
when { principal has team && principal.team == "helpdesk" };
"#;

/// The claims of the provider's JWTs reach policy through the REST API: `agent-bot` and
/// `agent-guest` are configured alike (not at all), their tokens differ only in the claims
/// `team` and `groups`. The group a claim gives is in the permit's scope, so it decides what
/// the agent is shown and may call at all; the attribute decides the intent. Without the
/// group mapping the action doesn't exist for the same token; without the attribute mapping
/// it is denied.
#[test]
fn jwt_claims_become_cedar_attributes_and_groups_that_decide_an_intent_over_rest() {
    let Some(w) = world(300, Duration::ZERO) else { return };
    let port = w.provider.port;
    let oidc = format!(
        "oidc:\n  issuer: http://127.0.0.1:{port}\n  audience: urn:portcullis\n  \
         jwks_url: http://127.0.0.1:{port}/jwks\n  agent_claim: client_id\n"
    );
    let attributes = "  attributes: {team: team}\n";
    let groups = "  groups_claim: groups\n";
    let config = CONFIG.replace("OIDC_PORT", &port.to_string());
    w.env
        .write("portcullis.yaml", &format!("{config}{oidc}{attributes}{groups}"));
    w.env.write("policies/policy.cedar", CLAIMS_POLICY);
    let read = json!({"action": "echo.read", "input": {}});
    let helpdesk = agent_jwt(&w.provider, "agent-bot");
    let guest = agent_jwt(&w.provider, "agent-guest");
    let denied = |r: &http::Response| {
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["status"], "denied", "{}", r.text());
    };
    let unknown = |r: &http::Response| {
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "unknown_action", "{}", r.text());
    };
    let listed = |gateway: &Gateway, token: &str| -> Vec<Value> {
        let r = gateway.get("/v1/actions", Some(token));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["actions"]
            .as_array()
            .map(|a| a.iter().map(|x| x["name"].clone()).collect())
            .unwrap_or_default()
    };

    let gateway = w.env.serve();
    assert_eq!(listed(&gateway, &helpdesk), [json!("echo.read")]);
    assert_eq!(listed(&gateway, &guest), Vec::<Value>::new());
    let seen = executed_ok(&gateway.post_intent(&helpdesk, &read));
    assert_eq!(seen["client_id"], "cc-basic", "{seen}");
    unknown(&gateway.post_intent(&guest, &read));
    // The static token of `support-bot` (no attributes, not in `helpdesk`) sees nothing either.
    unknown(&intent(&gateway, &w.token, "echo.read"));
    assert_eq!(
        w.provider.api_statuses(),
        [200],
        "only the helpdesk agent's intent is sent"
    );
    let audit = w.env.audit_tail(20);
    let recorded: Vec<_> = audit
        .iter()
        .filter(|e| matches!(e["event"]["kind"].as_str(), Some("decided" | "rejected")))
        .map(|e| (e["event"]["agent"].clone(), e["event"]["kind"].clone()))
        .collect();
    assert_eq!(
        recorded,
        [
            (json!("agent-bot"), json!("decided")),
            (json!("agent-guest"), json!("rejected")),
            (json!(AGENT), json!("rejected")),
        ],
        "the audit log records each JWT's agent and what became of its intent: {audit:#?}"
    );
    let mut logs = vec![gateway.log()];
    drop(gateway);

    // The same token with only the attribute mapped is not in the group: the action doesn't
    // exist for it. With only the group mapped it is shown the action and denied.
    w.env.write("portcullis.yaml", &format!("{config}{oidc}{attributes}"));
    let gateway = w.env.serve();
    assert_eq!(listed(&gateway, &helpdesk), Vec::<Value>::new());
    unknown(&gateway.post_intent(&helpdesk, &read));
    logs.push(gateway.log());
    drop(gateway);
    w.env.write("portcullis.yaml", &format!("{config}{oidc}{groups}"));
    let gateway = w.env.serve();
    assert_eq!(listed(&gateway, &helpdesk), [json!("echo.read")]);
    denied(&gateway.post_intent(&helpdesk, &read));
    logs.push(gateway.log());
    drop(gateway);
    assert_eq!(w.provider.api_statuses(), [200]);
    for log in &logs {
        for token in [&helpdesk, &guest] {
            assert!(!log.contains(token.as_str()), "the token is never logged");
        }
    }
}

/// A client secret from an environment variable of the gateway (for development) reaches the
/// provider: the one in the store is removed first, so only the variable can have supplied it.
#[test]
fn a_client_secret_from_an_environment_variable_gets_a_token() {
    let Some(w) = world(60, Duration::ZERO) else { return };
    let config = CONFIG.replace("OIDC_PORT", &w.provider.port.to_string()).replace(
        "    client_secret: cc_basic_secret\n",
        "    client_secret: env:PORTCULLIS_TEST_CC_BASIC_SECRET\n",
    );
    w.env.write("portcullis.yaml", &config);
    let removed = w.env.cli(&["secret", "rm", "cc_basic_secret"], None);
    assert!(removed.success(), "{removed:?}");
    let gateway = w.env.serve_env(
        None,
        &[("PORTCULLIS_TEST_CC_BASIC_SECRET", w.provider.secret("cc-basic"))],
    );
    let r = intent(&gateway, &w.token, "echo.read");
    let seen = executed_ok(&r);
    assert_eq!(seen["client_id"], "cc-basic", "{seen}");
    let requests = w.provider.token_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["auth"], "basic", "{requests:#?}");
    assert_eq!(requests[0]["status"], 200, "{requests:#?}");
    let log = gateway.log();
    assert!(
        log.contains("credential reads a secret from an environment variable: for development only")
            && log.contains("echo_basic"),
        "a warning at start names the credential: {log}"
    );
    assert_nothing_leaked(&w, 1, &[&r], &[log], &[]);
}
