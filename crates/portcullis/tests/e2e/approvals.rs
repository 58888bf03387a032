//! Human approval (issue 3, DESIGN §1 invariant 7): a held intent is bound to its payload
//! hash, decided by people (never by the agent), executed by the gateway exactly once, and
//! expires; every approval, denial and expiry is audited; every new hold is announced by a
//! signed webhook that never blocks or loses it.
//!
//! People are `alice` and `bob` (approvers, group `finance`), `carol` (approver, group
//! `ops`) and `root` (admin). High-priority tickets need one `finance` approval, urgent ones
//! two.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::{AGENT, TICKETS, assert_no_secret};
use crate::harness::{Env, Gateway, Output, random_secret, recorded_headers};
use crate::http::{self, Response};

const CONFIG: &str = r#"
listen: 127.0.0.1:8080
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  support-bot:
    groups: [support]
admins:
  alice: {role: approver, groups: [finance]}
  bob: {role: approver, groups: [finance]}
  carol: {role: approver, groups: [ops]}
  root: {role: admin}
credentials:
  tracker: {kind: bearer, secret: tracker_token}
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 5000
"#;

const POLICIES: &str = r#"
@id("support-creates-tickets")
@reason("support bots may create tickets")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource);

@id("high-needs-finance")
@hold("high-priority tickets need a finance approver")
@approvers("finance")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "high" };

@id("urgent-needs-two")
@hold("urgent tickets need two finance approvers")
@approvers("finance")
@approvals("2")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "urgent" };
"#;

const HIGH_REASON: &str = "high-priority tickets need a finance approver";

/// The input every test holds, and its RFC 8785 canonical form (keys sorted, no spaces),
/// written out by hand: the hash an approver must name is the SHA-256 of these bytes.
fn refund() -> Value {
    json!({"project": "payments", "title": "Refund order 1042", "priority": "high"})
}
const REFUND_CANONICAL: &str = r#"{"priority":"high","project":"payments","title":"Refund order 1042"}"#;
/// `printf '%s' "$REFUND_CANONICAL" | sha256sum`
const REFUND_SHA256: &str = "a784f9f9b41da0a2757c316ee3447a8db3c2ca3284946c7b901c8c185a199907";
/// The same for the title `Refund order 9999`: a well-formed hash of another payload.
const OTHER_SHA256: &str = "c6277b532cf14f22bce0a5a4ad533c2f4090033b5dd59cd524de117a90c6be3f";

/// One test's approvals world: its own directory, store, upstream and gateway.
#[derive(Debug)]
struct World {
    // Dropped before `env`, whose directory and upstream it uses.
    gateway: Gateway,
    env: Env,
    /// The support bot's token.
    token: String,
    /// The upstream credential.
    secret: String,
    alice: String,
    bob: String,
    carol: String,
    root: String,
}

/// Writes the files (with `extra` appended to the config), stores the secrets, creates the
/// agent and the people's login tokens; the gateway is not started.
fn prepare(extra: &str) -> (Env, [String; 6]) {
    let env = Env::new();
    env.write("portcullis.yaml", &format!("{CONFIG}{extra}"));
    env.write("actions/tickets.yaml", TICKETS);
    env.write("policies/policies.cedar", POLICIES);
    let secret = random_secret("tracker");
    env.set_secret("tracker_token", &secret);
    let token = env.add_agent(AGENT);
    let people = ["alice", "bob", "carol", "root"].map(|p| env.person_token(p));
    let [alice, bob, carol, root] = people;
    (env, [token, secret, alice, bob, carol, root])
}

fn world(extra: &str) -> World {
    let (env, [token, secret, alice, bob, carol, root]) = prepare(extra);
    let gateway = env.serve();
    World {
        gateway,
        env,
        token,
        secret,
        alice,
        bob,
        carol,
        root,
    }
}

impl World {
    /// Submits `input` to `tickets.create` and expects a hold: HTTP 202, `pending_approval`.
    fn hold(&self, input: &Value) -> (String, Value) {
        let r = self
            .gateway
            .post_intent(&self.token, &json!({"action": "tickets.create", "input": input}));
        assert_eq!(r.status, 202, "{}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "pending_approval", "{body}");
        assert_eq!(body["decision"]["effect"], "hold", "{body}");
        let id = body["id"].as_str().expect("intent id").to_owned();
        (id, body)
    }

    fn intent(&self, id: &str) -> Response {
        self.gateway.get(&format!("/v1/intents/{id}"), Some(&self.token))
    }

    /// `approvals ARGS…` through the CLI, as the person whose login token is `token`.
    fn approvals_cli(&self, token: &str, args: &[&str]) -> Output {
        let mut all = vec!["approvals"];
        all.extend_from_slice(args);
        let url = self.gateway.url();
        self.env
            .cli_env(&all, &[("PORTCULLIS_URL", &url), ("PORTCULLIS_TOKEN", token)])
    }

    /// The requests the upstream got for `tickets.create`.
    fn tickets(&self) -> Vec<Value> {
        self.env
            .upstream
            .requests()
            .into_iter()
            .filter(|r| r["path"] == "/tickets")
            .collect()
    }
}

fn show(gateway: &Gateway, token: &str, id: &str) -> Response {
    gateway.get(&format!("/v1/approvals/{id}"), Some(token))
}

fn vote(gateway: &Gateway, token: &str, id: &str, verdict: &str, reason: &str, sha: &str) -> Response {
    let body = json!({"reason": reason, "payload_sha256": sha}).to_string();
    http::post_json(
        gateway.addr,
        &format!("/v1/approvals/{id}/{verdict}"),
        Some(token),
        body.as_bytes(),
    )
}

fn error_code(r: &Response) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Starts `GET /v1/intents/{id}?wait=SECONDS` in a thread; joins to the response and the
/// time it was received.
fn long_poll(gateway: &Gateway, token: &str, id: &str, seconds: u32) -> std::thread::JoinHandle<(Response, Instant)> {
    let addr = gateway.addr;
    let token = token.to_owned();
    let path = format!("/v1/intents/{id}?wait={seconds}");
    std::thread::spawn(move || {
        let r = http::get(addr, &path, Some(&token));
        (r, Instant::now())
    })
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

/// The audit events (the `event` objects) of one intent, in order.
fn audit_of(env: &Env, id: &str) -> Vec<Value> {
    env.audit_tail(1000)
        .into_iter()
        .map(|line| line["event"].clone())
        .filter(|e| e["intent_id"] == id)
        .collect()
}

/// Asserts the log verifies and that `id` has exactly the events `expected` (kind, actor),
/// in this order.
fn assert_audit(env: &Env, id: &str, expected: &[(&str, Option<&str>)]) -> Vec<Value> {
    let verify = env.audit_verify();
    assert!(verify.success(), "audit verify: {verify:?}");
    let events = audit_of(env, id);
    let got: Vec<(String, Option<String>)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["actor"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let want: Vec<(String, Option<String>)> = expected
        .iter()
        .map(|(k, a)| ((*k).to_owned(), a.map(str::to_owned)))
        .collect();
    assert_eq!(got, want, "audit events of {id}: {events:#?}");
    events
}

#[test]
fn hold_then_approve_via_the_cli_resumes_the_agents_long_poll_with_the_result() {
    let w = world("");
    let started = Instant::now();
    // The constants are the canonical form of the input and its SHA-256.
    assert_eq!(serde_json::from_str::<Value>(REFUND_CANONICAL).expect("JSON"), refund());
    assert_eq!(python_sha256(REFUND_CANONICAL.as_bytes()), REFUND_SHA256);
    let (id, held) = w.hold(&refund());
    let sha = REFUND_SHA256.to_owned();
    assert_eq!(held["approval"]["payload_sha256"], sha.as_str(), "{held}");
    assert_eq!(held["approval"]["approver_group"], "finance", "{held}");
    assert_eq!(held["approval"]["required"], 1, "{held}");
    assert_eq!(held["decision"]["reasons"], json!([HIGH_REASON]), "{held}");
    assert!(held.get("result").is_none(), "{held}");
    w.env.upstream.assert_untouched("a held intent");

    // The agent sees it pending; an approver sees the exact payload and its hash.
    let pending = w.intent(&id);
    assert_eq!(pending.status, 202, "{}", pending.text());
    assert_eq!(pending.json()["status"], "pending_approval");
    let listed = w.approvals_cli(&w.alice, &["list"]);
    assert!(listed.success(), "{listed:?}");
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("tickets.create"),
        "{listed:?}"
    );
    let hold = show(&w.gateway, &w.alice, &id);
    assert_eq!(hold.status, 200, "{}", hold.text());
    let hold = hold.json();
    assert_eq!(hold["payload"], refund());
    assert_eq!(hold["payload_sha256"], sha.as_str());
    assert_eq!(hold["agent"], AGENT);
    assert_eq!(hold["state"], "pending");
    assert_no_secret(&hold.to_string(), &w.secret, "the approvals API");

    let poll = long_poll(&w.gateway, &w.token, &id, 15);
    // Let the long-poll reach the gateway before deciding.
    std::thread::sleep(Duration::from_millis(300));
    let approved_at = Instant::now();
    let out = w.approvals_cli(&w.alice, &["approve", &id, "--reason", "customer verified"]);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains(&sha),
        "the CLI shows the payload hash first: {out:?}"
    );
    assert!(out.stdout.contains("\"executed\""), "{out:?}");
    assert_no_secret(&out.stdout, &w.secret, "approvals approve");

    let (r, received) = poll.join().expect("long-poll thread");
    assert!(received >= approved_at, "the long-poll returned before the approval");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "executed", "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["result"]["status"], 201, "{body}");
    let kept: BTreeSet<&str> = body["result"]["body"]
        .as_object()
        .expect("result body")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(kept, BTreeSet::from(["number", "title", "state", "url"]), "{body}");
    assert_eq!(body["result"]["body"]["title"], "Refund order 1042");
    let reasons = body["decision"]["reasons"].to_string();
    assert!(reasons.contains("approved by alice"), "{body}");
    assert_no_secret(&r.raw, &w.secret, "the long-poll");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the long-poll ended with the decision, not its timeout"
    );

    let got = w.tickets();
    assert_eq!(got.len(), 1, "exactly one upstream call: {got:#?}");
    assert_eq!(
        recorded_headers(&got[0], "authorization"),
        vec![format!("Bearer {}", w.secret)]
    );
    let sent: Value = serde_json::from_str(got[0]["body"].as_str().expect("body")).expect("JSON body");
    assert_eq!(sent, refund(), "the approved payload is the payload sent");

    // Single use: the decided hold can't be approved again, by anyone.
    let again = vote(&w.gateway, &w.bob, &id, "approve", "again", &sha);
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(error_code(&again), "not_pending");
    assert_eq!(w.tickets().len(), 1);
    assert_eq!(show(&w.gateway, &w.alice, &id).json()["state"], "executed");

    let events = assert_audit(
        &w.env,
        &id,
        &[
            ("decided", None),
            ("approval", Some("alice")),
            ("decided", None),
            ("outcome", None),
        ],
    );
    assert_eq!(events[1]["payload_sha256"], sha.as_str());
    assert_eq!(events[1]["detail"]["reason"], "customer verified");
    assert_no_secret(&w.gateway.log(), &w.secret, "the gateway's log");
}

#[test]
fn a_denial_is_final_and_nothing_is_sent() {
    let w = world("");
    let (id, _) = w.hold(&refund());
    let out = w.approvals_cli(&w.alice, &["deny", &id, "--reason", "duplicate refund"]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("denied"), "{out:?}");

    let r = w.intent(&id);
    assert_eq!(r.status, 403, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "denied", "{body}");
    assert_eq!(body["decision"]["effect"], "deny", "{body}");
    let reasons: Vec<&str> = body["decision"]["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(reasons.contains(&"denied by alice: duplicate refund"), "{reasons:?}");
    assert!(body.get("result").is_none(), "{body}");
    // A long-poll on a decided intent answers at once.
    let t = Instant::now();
    let polled = w.gateway.get(&format!("/v1/intents/{id}?wait=10"), Some(&w.token));
    assert_eq!(polled.status, 403);
    assert!(t.elapsed() < Duration::from_secs(5));

    let sha = REFUND_SHA256.to_owned();
    let late = vote(&w.gateway, &w.bob, &id, "approve", "overrule", &sha);
    assert_eq!(late.status, 409, "{}", late.text());
    assert_eq!(error_code(&late), "not_pending");
    let late_cli = w.approvals_cli(&w.root, &["approve", &id, "--reason", "overrule"]);
    assert!(!late_cli.success(), "{late_cli:?}");
    assert!(late_cli.stderr.contains("409"), "{late_cli:?}");
    assert_eq!(show(&w.gateway, &w.alice, &id).json()["state"], "denied");
    w.env.upstream.assert_untouched("a denied hold");

    assert_audit(&w.env, &id, &[("decided", None), ("denial", Some("alice"))]);
}

#[test]
fn an_expired_hold_is_reported_expired_and_cannot_be_approved() {
    let w = world("approvals: {expiry_seconds: 1}\n");
    let (id, held) = w.hold(&refund());
    assert!(held["approval"]["expires_at"].is_string(), "{held}");
    let sha = REFUND_SHA256.to_owned();

    // The agent's long-poll ends with the expiry.
    let (r, _) = long_poll(&w.gateway, &w.token, &id, 15)
        .join()
        .expect("long-poll thread");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["status"], "expired", "{}", r.text());
    let body = eventually(Duration::from_secs(10), "the hold to expire", || {
        let r = w.intent(&id);
        let body = r.json();
        (body["status"] == "expired").then(|| {
            assert_eq!(r.status, 403, "{}", r.text());
            body
        })
    });
    assert!(body.get("result").is_none(), "{body}");

    let late = vote(&w.gateway, &w.alice, &id, "approve", "too late", &sha);
    assert!(matches!(late.status, 409 | 410), "{}", late.text());
    assert!(late.text().contains("expired"), "{}", late.text());
    let late_cli = w.approvals_cli(&w.root, &["approve", &id, "--reason", "too late"]);
    assert!(!late_cli.success(), "{late_cli:?}");
    assert!(late_cli.stderr.contains("expired"), "{late_cli:?}");
    assert_eq!(show(&w.gateway, &w.alice, &id).json()["state"], "expired");
    w.env.upstream.assert_untouched("an expired hold");
    // Expired holds are no longer pending, and still in the history.
    let pending = w.gateway.get("/v1/approvals", Some(&w.alice)).json();
    assert_eq!(pending["approvals"], json!([]), "{pending}");
    let all = w.gateway.get("/v1/approvals?state=all", Some(&w.alice)).json();
    assert_eq!(all["approvals"][0]["id"], id.as_str(), "{all}");

    let events = assert_audit(&w.env, &id, &[("decided", None), ("expiry", Some("gateway"))]);
    assert_eq!(events[1]["payload_sha256"], sha.as_str());
}

#[test]
fn agents_cannot_approve_and_a_config_making_an_agent_an_admin_is_refused() {
    let w = world("");
    let (id, _) = w.hold(&refund());
    let sha = REFUND_SHA256.to_owned();
    for r in [
        w.gateway.get("/v1/approvals", Some(&w.token)),
        w.gateway.get(&format!("/v1/approvals/{id}"), Some(&w.token)),
        vote(&w.gateway, &w.token, &id, "approve", "I approve myself", &sha),
        vote(&w.gateway, &w.token, &id, "deny", "never mind", &sha),
        w.gateway.get("/v1/approvals", None),
        vote(&w.gateway, "not-a-token", &id, "approve", "guess", &sha),
    ] {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(error_code(&r), "unauthenticated");
    }
    let cli = w.approvals_cli(&w.token, &["approve", &id, "--reason", "self", "--sha256", &sha]);
    assert!(!cli.success(), "{cli:?}");
    assert!(cli.stderr.contains("401"), "{cli:?}");
    // A login token is no agent token either.
    let r = w
        .gateway
        .post_intent(&w.alice, &json!({"action": "tickets.create", "input": refund()}));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(w.intent(&id).json()["status"], "pending_approval");
    w.env.upstream.assert_untouched("refused approvals");
    // Only people in `admins` get login tokens.
    let agent_login = w.env.cli(&["approvals", "token", AGENT], None);
    assert!(!agent_login.success(), "{agent_login:?}");
    // A new login token replaces the old one.
    let fresh = w.env.person_token("alice");
    let old = w.gateway.get("/v1/approvals", Some(&w.alice));
    assert_eq!(old.status, 401, "{}", old.text());
    assert_eq!(w.gateway.get("/v1/approvals", Some(&fresh)).status, 200);
    drop(w.gateway);

    // The same id as an agent and as an approver: `check` refuses the config.
    let both = CONFIG.replace(
        "  root: {role: admin}\n",
        "  root: {role: admin}\n  support-bot: {role: approver, groups: [finance]}\n",
    );
    assert_ne!(both, CONFIG);
    w.env.write("portcullis.yaml", &both);
    let out = w.env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("`support-bot` is both an agent and an admin"),
        "{out:?}"
    );
}

#[test]
fn approvers_outside_the_policy_group_cannot_see_or_decide_a_hold_but_an_admin_can() {
    let w = world("");
    let (id, _) = w.hold(&refund());
    let sha = REFUND_SHA256.to_owned();

    let seen = show(&w.gateway, &w.carol, &id);
    assert_eq!(seen.status, 404, "{}", seen.text());
    assert_eq!(error_code(&seen), "not_found");
    for verdict in ["approve", "deny"] {
        let r = vote(&w.gateway, &w.carol, &id, verdict, "not my call", &sha);
        assert_eq!(r.status, 404, "{verdict}: {}", r.text());
    }
    let listed = w.gateway.get("/v1/approvals?state=all", Some(&w.carol));
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["approvals"], json!([]));
    let cli = w.approvals_cli(&w.carol, &["approve", &id, "--reason", "x", "--sha256", &sha]);
    assert!(!cli.success() && cli.stderr.contains("404"), "{cli:?}");
    assert_eq!(show(&w.gateway, &w.alice, &id).json()["votes"], json!([]));
    w.env.upstream.assert_untouched("a refused approver");

    // `root` is an admin: it sees every hold and may decide it.
    let listed = w.gateway.get("/v1/approvals", Some(&w.root)).json();
    assert_eq!(listed["approvals"][0]["id"], id.as_str(), "{listed}");
    let r = vote(&w.gateway, &w.root, &id, "approve", "admin override", &sha);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["state"], "executed", "{body}");
    assert_eq!(body["intent"]["status"], "executed", "{body}");
    assert_eq!(w.tickets().len(), 1);
    assert_audit(
        &w.env,
        &id,
        &[
            ("decided", None),
            ("approval", Some("root")),
            ("decided", None),
            ("outcome", None),
        ],
    );
}

#[test]
fn an_approval_naming_another_payload_hash_is_refused_and_changes_nothing() {
    let w = world("");
    let (id, _) = w.hold(&refund());
    let sha = REFUND_SHA256.to_owned();
    let other = OTHER_SHA256;
    for wrong in [other, "", "not-a-hash", &sha.to_uppercase()] {
        let r = vote(&w.gateway, &w.alice, &id, "approve", "looks fine", wrong);
        assert_eq!(r.status, 409, "{wrong:?}: {}", r.text());
        assert_eq!(error_code(&r), "payload_mismatch", "{wrong:?}");
    }
    for reason in ["", "   "] {
        let r = vote(&w.gateway, &w.alice, &id, "approve", reason, &sha);
        assert_eq!(r.status, 400, "a reason is required: {}", r.text());
        assert_eq!(error_code(&r), "invalid_request");
    }
    let cli = w.approvals_cli(&w.bob, &["approve", &id, "--reason", "ok", "--sha256", other]);
    assert!(!cli.success() && cli.stderr.contains("409"), "{cli:?}");
    let hold = show(&w.gateway, &w.alice, &id).json();
    assert_eq!(hold["state"], "pending", "{hold}");
    assert_eq!(hold["votes"], json!([]), "a refused vote is not recorded: {hold}");
    assert_eq!(w.intent(&id).json()["status"], "pending_approval");
    w.env.upstream.assert_untouched("a mismatched approval");
    assert_audit(&w.env, &id, &[("decided", None)]);

    // The refused attempt did not use up alice's vote: with the right hash it executes.
    let r = vote(&w.gateway, &w.alice, &id, "approve", "looks fine", &sha);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "executed");
    assert_eq!(w.tickets().len(), 1);
}

#[test]
fn a_quorum_needs_distinct_approvers_and_executes_once() {
    let w = world("");
    let input = json!({"project": "payments", "title": "Refund everyone", "priority": "urgent"});
    let (id, held) = w.hold(&input);
    assert_eq!(held["approval"]["required"], 2, "{held}");
    let sha = held["approval"]["payload_sha256"].as_str().expect("sha").to_owned();
    let poll = long_poll(&w.gateway, &w.token, &id, 15);

    let first = vote(&w.gateway, &w.alice, &id, "approve", "first look", &sha);
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    assert_eq!(first["state"], "pending", "{first}");
    assert_eq!(first["approvals"], 1, "{first}");
    assert_eq!(first["required"], 2, "{first}");
    assert!(first.get("intent").is_none(), "{first}");
    w.env.upstream.assert_untouched("one of two approvals");
    assert_eq!(w.intent(&id).json()["status"], "pending_approval");

    let again = vote(&w.gateway, &w.alice, &id, "approve", "really sure", &sha);
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(error_code(&again), "already_voted");
    let cli_again = w.approvals_cli(&w.alice, &["approve", &id, "--reason", "third try"]);
    assert!(
        !cli_again.success() && cli_again.stderr.contains("409"),
        "{cli_again:?}"
    );
    w.env.upstream.assert_untouched("the same approver twice");
    let hold = show(&w.gateway, &w.bob, &id).json();
    assert_eq!(hold["state"], "pending");
    assert_eq!(hold["votes"].as_array().map(Vec::len), Some(1), "{hold}");

    let out = w.approvals_cli(&w.bob, &["approve", &id, "--reason", "second look"]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("\"executed\""), "{out:?}");
    let (r, _) = poll.join().expect("long-poll thread");
    let body = r.json();
    assert_eq!(body["status"], "executed", "{body}");
    assert!(
        body["decision"]["reasons"]
            .to_string()
            .contains("approved by alice, bob"),
        "{body}"
    );
    assert_eq!(w.tickets().len(), 1, "executed once");
    let late = vote(&w.gateway, &w.root, &id, "approve", "third", &sha);
    assert_eq!(late.status, 409, "{}", late.text());
    assert_eq!(w.tickets().len(), 1);
    assert_audit(
        &w.env,
        &id,
        &[
            ("decided", None),
            ("approval", Some("alice")),
            ("approval", Some("bob")),
            ("decided", None),
            ("outcome", None),
        ],
    );

    // One approval, then a denial: the denial is final.
    let (id, _) = w.hold(&input);
    let first = vote(&w.gateway, &w.alice, &id, "approve", "fine by me", &sha);
    assert_eq!(first.json()["state"], "pending", "{}", first.text());
    let denied = vote(&w.gateway, &w.bob, &id, "deny", "not by me", &sha);
    assert_eq!(denied.status, 200, "{}", denied.text());
    assert_eq!(denied.json()["state"], "denied", "{}", denied.text());
    let late = vote(&w.gateway, &w.root, &id, "approve", "overrule", &sha);
    assert_eq!(late.status, 409, "{}", late.text());
    assert_eq!(error_code(&late), "not_pending");
    let r = w.intent(&id);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("denied by bob: not by me"), "{}", r.text());
    assert_eq!(w.tickets().len(), 1, "the denied hold did not run");
    assert_audit(
        &w.env,
        &id,
        &[("decided", None), ("approval", Some("alice")), ("denial", Some("bob"))],
    );
}

#[test]
fn two_approvers_clicking_at_the_same_moment_execute_the_intent_once() {
    let w = world("");
    let sha = REFUND_SHA256.to_owned();
    // The same refund held three times (three intents), each raced by alice and bob.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(w.hold(&refund()).0);
    }
    for (round, id) in ids.iter().enumerate() {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [&w.alice, &w.bob]
            .into_iter()
            .map(|token| {
                let (addr, token, id, sha) = (w.gateway.addr, token.clone(), id.clone(), sha.clone());
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let body = json!({"reason": "race", "payload_sha256": sha}).to_string();
                    barrier.wait();
                    http::post_json(
                        addr,
                        &format!("/v1/approvals/{id}/approve"),
                        Some(&token),
                        body.as_bytes(),
                    )
                })
            })
            .collect();
        let answers: Vec<Response> = racers.into_iter().map(|t| t.join().expect("racer")).collect();
        let executed: Vec<&Response> = answers
            .iter()
            .filter(|r| r.status == 200 && r.json()["intent"]["status"] == "executed")
            .collect();
        assert_eq!(executed.len(), 1, "round {round}: one approval executes: {answers:#?}");
        for r in &answers {
            let ok = r.status == 200 || (r.status == 409 && error_code(r) == "not_pending");
            assert!(ok, "round {round}: {} {}", r.status, r.text());
        }
        let r = w.intent(id);
        assert_eq!(r.json()["status"], "executed", "round {round}");
        assert_eq!(w.tickets().len(), round + 1, "round {round}: exactly one upstream call");
        let approvals = audit_of(&w.env, id)
            .into_iter()
            .filter(|e| e["kind"] == "approval")
            .count();
        assert_eq!(approvals, 1, "round {round}: the losing vote is not recorded");
    }
    assert!(w.env.audit_verify().success());
}

#[test]
fn a_hold_survives_a_restart_and_executes_once_on_the_new_instance() {
    let w = world("");
    let World {
        gateway,
        env,
        token,
        secret,
        alice,
        ..
    } = w;
    let r = gateway.post_intent(&token, &json!({"action": "tickets.create", "input": refund()}));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    drop(gateway);

    let gateway = env.serve();
    let r = gateway.get(&format!("/v1/intents/{id}"), Some(&token));
    assert_eq!(r.json()["status"], "pending_approval", "{}", r.text());
    let poll = long_poll(&gateway, &token, &id, 15);
    std::thread::sleep(Duration::from_millis(300));
    let url = gateway.url();
    let out = env.cli_env(
        &["approvals", "approve", &id, "--reason", "after the restart"],
        &[("PORTCULLIS_URL", &url), ("PORTCULLIS_TOKEN", &alice)],
    );
    assert!(out.success(), "{out:?}");
    let (r, _) = poll.join().expect("long-poll thread");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_no_secret(&r.raw, &secret, "the long-poll");
    drop(gateway);

    // Another restart executes nothing again.
    let gateway = env.serve();
    let r = gateway.get(&format!("/v1/intents/{id}"), Some(&token));
    assert_eq!(r.json()["status"], "executed");
    let tickets: Vec<Value> = env
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/tickets")
        .collect();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(
        recorded_headers(&tickets[0], "authorization"),
        vec![format!("Bearer {secret}")]
    );
    drop(gateway);
    assert_audit(
        &env,
        &id,
        &[
            ("decided", None),
            ("approval", Some("alice")),
            ("decided", None),
            ("outcome", None),
        ],
    );
}

/// Marks hold `ID` with `STATE` (and, for `approved`, records alice's approving vote)
/// directly in the store, as a gateway that stopped at that point would have left it.
const SET_HOLD_STATE: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
(sha,) = db.execute("SELECT payload_sha256 FROM holds WHERE intent_id = ?", (ID,)).fetchone()
if STATE == "approved":
    db.execute("INSERT INTO approval_votes VALUES (?, 'alice', 'approve', 'ok', ?, '2024-01-01T00:00:00Z')", (ID, sha))
n = db.execute("UPDATE holds SET state = ? WHERE intent_id = ? AND state = 'pending'", (STATE, ID)).rowcount
db.commit()
print(n)
"#;

#[test]
fn at_start_up_an_approved_hold_is_executed_and_an_interrupted_one_is_not_run_again() {
    let (env, [token, ..]) = prepare("");
    let gateway = env.serve();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = gateway.post_intent(&token, &json!({"action": "tickets.create", "input": refund()}));
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.json()["id"].as_str().expect("id").to_owned());
    }
    drop(gateway);
    for (id, state) in ids.iter().zip(["approved", "executing"]) {
        let out = env.sqlite(&format!("ID = {id:?}\nSTATE = {state:?}\n{SET_HOLD_STATE}"));
        assert!(out.success() && out.stdout.trim() == "1", "{out:?}");
    }

    let gateway = env.serve();
    let approved = gateway.get(&format!("/v1/intents/{}?wait=10", ids[0]), Some(&token));
    assert_eq!(approved.json()["status"], "executed", "{}", approved.text());
    let interrupted = gateway.get(&format!("/v1/intents/{}?wait=10", ids[1]), Some(&token));
    assert_eq!(interrupted.json()["status"], "failed", "{}", interrupted.text());
    assert_eq!(env.upstream.requests().len(), 1, "only the approved hold ran");
}

#[test]
fn check_refuses_malformed_approval_annotations_naming_file_and_line() {
    let env = Env::new();
    env.write("portcullis.yaml", CONFIG);
    env.write("actions/tickets.yaml", TICKETS);
    env.write("policies/policies.cedar", POLICIES);
    let ok = env.cli(&["check"], None);
    assert!(ok.success(), "the approvals setup itself passes check: {ok:?}");

    let bad = r#"
@id("zero-approvals")
@hold("needs nobody")
@approvals("0")
permit (principal, action == Action::"tickets.create", resource);

@id("approvers-without-hold")
@approvers("finance")
permit (principal, action == Action::"tickets.create", resource);

@id("hold-on-forbid")
@hold("makes no sense")
forbid (principal, action == Action::"tickets.create", resource);
"#;
    env.write("policies/bad.cedar", bad);
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let line_of = |needle: &str| {
        bad.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .expect("needle in the policy file")
    };
    for (id, message, line) in [
        ("zero-approvals", "@approvals(\"0\")", line_of("zero-approvals")),
        (
            "approvers-without-hold",
            "only applies with `@hold`",
            line_of("approvers-without-hold"),
        ),
        ("hold-on-forbid", "only applies to `permit`", line_of("hold-on-forbid")),
    ] {
        let at = format!("bad.cedar:{line}");
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(&at) && l.contains(id) && l.contains(message)),
            "`{id}`: `{message}` reported at {at}; stderr:\n{}",
            out.stderr
        );
    }

    // A group no person in `admins` belongs to could never approve anything. (This is
    // checked only once every policy parses, so it gets a file of its own.)
    env.write(
        "policies/bad.cedar",
        r#"
@id("unknown-group")
@hold("who?")
@approvers("nobody-has-this-group")
permit (principal, action == Action::"tickets.create", resource);
"#,
    );
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("unknown-group") && out.stderr.contains("nobody-has-this-group"),
        "an approver group no person belongs to: {}",
        out.stderr
    );
}

/// One request a webhook receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON webhook body")
    }
}

/// How a webhook receiver answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// HTTP 500 to the first N deliveries, 200 afterwards.
    FailFirst(usize),
    /// Reads the request and never answers.
    Never,
}

/// A webhook receiver on 127.0.0.1, recording every request, in a thread of the test.
#[derive(Debug)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut held_open = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(delivery) = read_request(&mut stream) else {
                    continue;
                };
                let n = {
                    let mut got = sink.lock().expect("receiver lock");
                    got.push(delivery);
                    got.len()
                };
                match answer {
                    Answer::Never => held_open.push(stream),
                    Answer::FailFirst(k) => {
                        let status = if n <= k { "500 Internal Server Error" } else { "200 OK" };
                        let _ = stream.write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                        );
                    }
                }
            }
        });
        Self { addr, got }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().expect("receiver lock").clone()
    }

    fn wait_for(&self, n: usize, limit: Duration) -> Vec<Delivery> {
        eventually(limit, &format!("{n} webhook deliveries"), || {
            let got = self.deliveries();
            (got.len() >= n).then_some(got)
        })
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Delivery> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Delivery {
        at: Instant::now(),
        path,
        headers,
        body,
    })
}

fn webhook_config(url: &str, format: &str, attempts: u32) -> String {
    format!("approvals:\n  webhook: {{url: \"{url}\", secret: hook_key, format: {format}, max_attempts: {attempts}}}\n")
}

/// `sha256=HEX` of HMAC-SHA256(`key`, `body`), computed by Python's `hmac` module.
fn hmac_hex(key: &str, body: &[u8]) -> String {
    python_digest(
        "print('sha256=' + hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
        key,
        body,
    )
}

/// SHA-256 (hex) of `body`, computed by Python's `hashlib`.
fn python_sha256(body: &[u8]) -> String {
    python_digest("print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())", "", body)
}

fn python_digest(line: &str, arg: &str, body: &[u8]) -> String {
    let script = format!("import hashlib, hmac, sys\n{line}");
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script, arg])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().expect("stdin").write_all(body).expect("write body");
    let out = child.wait_with_output().expect("python3 hmac");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// A world whose gateway announces holds to `url`, signed with a new `hook_key`.
fn webhook_world(url: &str, format: &str, attempts: u32) -> (World, String) {
    let (env, [token, secret, alice, bob, carol, root]) = prepare(&webhook_config(url, format, attempts));
    let key = random_secret("hook");
    env.set_secret("hook_key", &key);
    let gateway = env.serve();
    let w = World {
        gateway,
        env,
        token,
        secret,
        alice,
        bob,
        carol,
        root,
    };
    (w, key)
}

#[test]
fn every_new_hold_is_announced_by_a_signed_webhook_retried_without_delaying_the_agent() {
    let receiver = Receiver::start(Answer::FailFirst(2));
    let url = format!("http://{}/hook", receiver.addr);
    let (w, key) = webhook_world(&url, "json", 5);
    let (id, _) = w.hold(&refund());
    let answered = Instant::now();

    let got = receiver.wait_for(3, Duration::from_secs(15));
    assert!(
        answered < got[2].at,
        "the agent's 202 came before the successful delivery"
    );
    // Backoff: 500 ms, then 1 s.
    assert!(got[1].at - got[0].at >= Duration::from_millis(400), "{got:#?}");
    assert!(got[2].at - got[1].at >= Duration::from_millis(900), "{got:#?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.deliveries().len(), 3, "no delivery after the success");
    for d in &got {
        assert_eq!(d.path, "/hook");
        assert_eq!(d.body, got[0].body, "every attempt sends the same body");
        assert_eq!(
            d.header("x-portcullis-signature"),
            Some(hmac_hex(&key, &d.body).as_str()),
            "HMAC-SHA256 of the raw body under the stored key"
        );
        assert_eq!(d.header("x-portcullis-intent"), Some(id.as_str()));
        assert_eq!(d.header("content-type"), Some("application/json"));
        let raw = String::from_utf8_lossy(&d.body);
        assert_no_secret(&raw, &w.secret, "the webhook body");
        assert_no_secret(&raw, &key, "the webhook body");
        assert!(!format!("{:?}", d.headers).contains(&key), "{d:?}");
    }
    let body = got[2].json();
    assert_eq!(body["event"], "hold.created", "{body}");
    assert_eq!(body["hold"]["id"], id.as_str(), "{body}");
    assert_eq!(body["hold"]["action"], "tickets.create", "{body}");
    assert_eq!(body["hold"]["agent"], AGENT, "{body}");
    assert_eq!(body["hold"]["payload_sha256"], REFUND_SHA256.to_owned().as_str());
    assert_eq!(body["hold"]["reasons"], json!([HIGH_REASON]), "{body}");
    // A signature under another key does not match.
    assert_ne!(
        got[2].header("x-portcullis-signature"),
        Some(hmac_hex("another key", &got[2].body).as_str())
    );
    assert_eq!(w.intent(&id).json()["status"], "pending_approval");

    // The webhook leaves the gateway for a chat or ticketing system: personal data in the
    // payload is masked there; approvers see it whole in the UI and the approvals API.
    let mut with_email = refund();
    with_email["title"] = json!("Refund order 1042 for jane.doe@example.com");
    let (second, _) = w.hold(&with_email);
    let got = receiver.wait_for(4, Duration::from_secs(15));
    let body = got[3].json();
    assert_eq!(body["hold"]["id"], second.as_str(), "{body}");
    assert_eq!(
        body["hold"]["payload"]["title"], "Refund order 1042 for [REDACTED:email]",
        "{body}"
    );
    let full = w.approvals_cli(&w.alice, &["show", &second]);
    assert!(full.stdout.contains("jane.doe@example.com"), "{full:?}");
}

#[test]
fn the_slack_format_posts_a_text_message_naming_the_action() {
    let receiver = Receiver::start(Answer::FailFirst(0));
    let url = format!("http://{}/slack", receiver.addr);
    let (w, key) = webhook_world(&url, "slack", 3);
    let (id, _) = w.hold(&refund());
    let got = receiver.wait_for(1, Duration::from_secs(10));
    let body = got[0].json();
    let object = body.as_object().expect("a JSON object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["text"], "{body}");
    let text = body["text"].as_str().expect("text");
    assert!(text.contains("tickets.create"), "{text}");
    assert!(text.contains(&id), "{text}");
    assert!(text.contains(AGENT), "{text}");
    assert!(text.contains(HIGH_REASON), "{text}");
    assert_eq!(
        got[0].header("x-portcullis-signature"),
        Some(hmac_hex(&key, &got[0].body).as_str())
    );
}

#[test]
fn a_hung_or_missing_webhook_receiver_neither_blocks_nor_loses_the_hold() {
    let hung = Receiver::start(Answer::Never);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    for (what, addr) in [("hung", hung.addr), ("down", closed)] {
        let (w, _) = webhook_world(&format!("http://{addr}/hook"), "json", 2);
        let sent = Instant::now();
        let (id, _) = w.hold(&refund());
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "{what}: the hold waited for the webhook ({:?})",
            sent.elapsed()
        );
        if what == "hung" {
            // The delivery is stuck in flight while the approver decides.
            hung.wait_for(1, Duration::from_secs(10));
        }
        let hold = show(&w.gateway, &w.alice, &id);
        assert_eq!(hold.status, 200, "{what}: {}", hold.text());
        let sha = hold.json()["payload_sha256"].as_str().expect("sha").to_owned();
        let r = vote(&w.gateway, &w.alice, &id, "approve", "webhook or not", &sha);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(r.json()["intent"]["status"], "executed", "{what}: {}", r.text());
        assert_eq!(w.tickets().len(), 1, "{what}");
    }
}

#[test]
fn two_gateway_instances_on_one_store_execute_a_raced_approval_once() {
    let w = world("");
    let second = w.env.serve();
    let sha = REFUND_SHA256.to_owned();
    for round in 0..3 {
        let (id, _) = w.hold(&refund());
        let poll = long_poll(&second, &w.token, &id, 15);
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [(w.gateway.addr, &w.alice), (second.addr, &w.bob)]
            .into_iter()
            .map(|(addr, token)| {
                let (token, id, sha) = (token.clone(), id.clone(), sha.clone());
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let body = json!({"reason": "race", "payload_sha256": sha}).to_string();
                    barrier.wait();
                    http::post_json(
                        addr,
                        &format!("/v1/approvals/{id}/approve"),
                        Some(&token),
                        body.as_bytes(),
                    )
                })
            })
            .collect();
        let answers: Vec<Response> = racers.into_iter().map(|t| t.join().expect("racer")).collect();
        let executed = answers
            .iter()
            .filter(|r| r.status == 200 && r.json()["intent"]["status"] == "executed")
            .count();
        assert_eq!(executed, 1, "round {round}: {answers:#?}");
        let (r, _) = poll.join().expect("long-poll thread");
        assert_eq!(
            r.json()["status"],
            "executed",
            "round {round}: the other instance sees it"
        );
        assert_eq!(w.tickets().len(), round + 1, "round {round}: exactly one upstream call");
    }
    let verify = w.env.audit_verify();
    assert!(verify.success(), "one audit chain for both instances: {verify:?}");
}

/// An upstream on 127.0.0.1 that answers `{"ok": true}` after `delay`, counting requests.
fn slow_upstream(delay: Duration) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the slow upstream");
    let addr = listener.local_addr().expect("address");
    let hits = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                if read_request(&mut stream).is_none() {
                    return;
                }
                *counter.lock().expect("lock") += 1;
                std::thread::sleep(delay);
                let body = br#"{"ok":true}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            });
        }
    });
    (addr, hits)
}

/// Adds `slow.refund` against `upstream` (held when `hold`, else allowed) to a prepared env.
fn add_slow_action(env: &Env, upstream: SocketAddr, hold: bool) {
    env.write(
        "actions/slow.yaml",
        &format!(
            r#"
name: slow.refund
description: A refund at an upstream that takes its time
input: {{type: object, required: [amount], properties: {{amount: {{type: integer}}}}}}
request:
  method: POST
  url: http://{upstream}/refund
  body: {{amount: "{{amount}}"}}
"#
        ),
    );
    let annotation = if hold { "@hold(\"refunds need a human\")\n" } else { "" };
    env.write(
        "policies/slow.cedar",
        &format!(
            "@id(\"slow-refunds\")\n{annotation}permit (principal in AgentGroup::\"support\", action == Action::\"slow.refund\", resource);\n"
        ),
    );
}

/// Sends `POST path` with `body` and hangs up 300 ms later, without reading the answer.
fn post_and_hang_up(addr: SocketAddr, path: &str, token: &str, body: &Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    std::thread::sleep(Duration::from_millis(300));
}

/// Regression: the approve handler ran the execution in the request's future, which hyper
/// drops when the client disconnects: the upstream got the call but the outcome was never
/// recorded (hold stuck `executing`, intent stuck `pending_approval`, no `outcome` audit
/// event; after a restart it was reported `failed`). Fixed in `portcullis-server/src/admin.rs`.
#[test]
fn an_approver_hanging_up_during_execution_does_not_lose_the_outcome() {
    let (upstream, hits) = slow_upstream(Duration::from_millis(1500));
    let (env, [token, _, alice, ..]) = prepare("");
    add_slow_action(&env, upstream, true);
    let gateway = env.serve();
    let r = gateway.post_intent(&token, &json!({"action": "slow.refund", "input": {"amount": 7}}));
    assert_eq!(r.status, 202, "{}", r.text());
    let held = r.json();
    let id = held["id"].as_str().expect("id").to_owned();
    let sha = held["approval"]["payload_sha256"].as_str().expect("sha").to_owned();
    let poll = long_poll(&gateway, &token, &id, 15);

    post_and_hang_up(
        gateway.addr,
        &format!("/v1/approvals/{id}/approve"),
        &alice,
        &json!({"reason": "ok", "payload_sha256": sha}),
    );
    let (r, _) = poll.join().expect("long-poll thread");
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(r.json()["result"]["body"], json!({"ok": true}));
    assert_eq!(*hits.lock().expect("lock"), 1);
    assert_eq!(show(&gateway, &alice, &id).json()["state"], "executed");
    assert_audit(
        &env,
        &id,
        &[
            ("decided", None),
            ("approval", Some("alice")),
            ("decided", None),
            ("outcome", None),
        ],
    );
}

/// The same for an allowed intent whose agent hangs up: `POST /v1/intents`
/// (`portcullis-server/src/rest.rs`, `submit`) awaits `Gateway::submit` in the request's
/// future, so the execution is cancelled after the upstream call was sent.
#[test]
fn an_agent_hanging_up_during_execution_does_not_lose_the_outcome() {
    let (upstream, hits) = slow_upstream(Duration::from_millis(1500));
    let (env, [token, ..]) = prepare("");
    add_slow_action(&env, upstream, false);
    let gateway = env.serve();
    let intent = json!({"action": "slow.refund", "input": {"amount": 7}, "idempotency_key": "refund-7"});
    post_and_hang_up(gateway.addr, "/v1/intents", &token, &intent);
    eventually(Duration::from_secs(10), "the upstream call", || {
        (*hits.lock().expect("lock") == 1).then_some(())
    });
    // The retry with the same key gets the stored result once the call finished.
    let answer = eventually(Duration::from_secs(10), "the stored outcome", || {
        let r = gateway.post_intent(&token, &intent);
        (r.status != 409).then_some(r)
    });
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["status"], "executed");
    assert_eq!(*hits.lock().expect("lock"), 1, "executed once");
    let kinds: Vec<Value> = env
        .audit_tail(50)
        .into_iter()
        .map(|e| e["event"]["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("decided"), json!("outcome")]);
}

#[test]
fn the_slack_message_links_to_the_gateway_that_holds_the_intent() {
    let receiver = Receiver::start(Answer::FailFirst(0));
    let (w, _) = webhook_world(&format!("http://{}/slack", receiver.addr), "slack", 1);
    let (id, _) = w.hold(&refund());
    let got = receiver.wait_for(1, Duration::from_secs(10));
    let text = got[0].json()["text"].as_str().expect("text").to_owned();
    let link = format!("{}/ui/approvals/{id}", w.gateway.url());
    assert!(text.contains(&link), "`{link}` in {text}");
}

#[test]
fn retrying_a_held_intent_with_its_idempotency_key_returns_the_same_hold_then_the_result() {
    let w = world("");
    let body = json!({"action": "tickets.create", "input": refund(), "idempotency_key": "refund-1042"});
    let first = w.gateway.post_intent(&w.token, &body);
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.json()["id"].as_str().expect("id").to_owned();
    let retry = w.gateway.post_intent(&w.token, &body);
    assert_eq!(retry.status, 202, "{}", retry.text());
    assert_eq!(retry.json(), first.json(), "the same hold, not a second one");
    let listed = w.gateway.get("/v1/approvals", Some(&w.alice)).json();
    assert_eq!(listed["approvals"].as_array().map(Vec::len), Some(1), "{listed}");

    let r = vote(&w.gateway, &w.alice, &id, "approve", "ok", REFUND_SHA256);
    assert_eq!(r.status, 200, "{}", r.text());
    let after = w.gateway.post_intent(&w.token, &body);
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json()["id"], id.as_str());
    assert_eq!(after.json()["status"], "executed");
    assert_eq!(after.json(), w.intent(&id).json());
    assert_eq!(w.tickets().len(), 1, "executed once");
}

#[test]
fn an_approval_that_cannot_be_audited_is_taken_back_and_nothing_runs() {
    let w = world("");
    let (id, _) = w.hold(&refund());
    // The audit log refuses every new event (as a full disk or a broken database would).
    assert!(w.env.sqlite(crate::audit::BREAK_AUDIT).success());
    let r = vote(&w.gateway, &w.alice, &id, "approve", "looks fine", REFUND_SHA256);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(error_code(&r), "unavailable");
    w.env.upstream.assert_untouched("an unaudited approval");
    assert!(w.env.sqlite(crate::audit::REPAIR_AUDIT).success());
    let hold = show(&w.gateway, &w.alice, &id).json();
    assert_eq!(hold["state"], "pending", "the vote was taken back: {hold}");
    assert_eq!(hold["votes"], json!([]), "{hold}");

    // Once the log is writable again the same person can approve, and it runs once.
    let r = vote(&w.gateway, &w.alice, &id, "approve", "looks fine", REFUND_SHA256);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "executed");
    assert_eq!(w.tickets().len(), 1);
    assert_eq!(w.env.audit_verify().code, Some(0));
}
