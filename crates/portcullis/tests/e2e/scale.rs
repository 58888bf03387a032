//! Two `portcullis serve` instances sharing one PostgreSQL database and one upstream, hit
//! concurrently: every intent runs once, an idempotency key runs once whichever instance
//! gets it, a quota shared by both never overshoots (a count, and a spend budget summing an
//! input field), a policy on `context.counters` sees one budget across both, and a hold
//! approved twice at once (through both instances) runs once; the audit log both wrote
//! verifies. An instance killed mid-call leaves its intent to the survivor, which settles it
//! `outcome_unknown` and never re-runs it; tampering done directly in the database is named
//! by `audit verify`.
//!
//! These tests need `PORTCULLIS_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`), a role that may create databases: each test
//! creates its own database and drops it at the end. Without the variable they say so and
//! pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::fixtures::{AGENT, REFUND_ACTION, REFUND_HALF_BUDGET_POLICIES, SLOW, SLOW_POLICY, TICKETS};
use crate::harness::{Env, Gateway, concurrently, random_secret};
use crate::http::{self, Response};

const DATABASE_URL: &str = "PORTCULLIS_TEST_DATABASE_URL";

/// One world at a time: each has two gateways with a pool of connections each, and the
/// server's connection slots are shared with every other test using it.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A fresh database on the server of `PORTCULLIS_TEST_DATABASE_URL`, dropped on drop.
#[derive(Debug)]
struct Database {
    admin: String,
    name: String,
    /// The new database's URL.
    url: String,
}

impl Database {
    /// `None` (after saying so) when `PORTCULLIS_TEST_DATABASE_URL` is unset.
    fn create() -> Option<Self> {
        let admin = match std::env::var(DATABASE_URL) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => {
                eprintln!("skipped: {DATABASE_URL} is unset");
                return None;
            }
        };
        let suffix: [u8; 8] = rand::random();
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("portcullis_e2e_{suffix}");
        let url = with_database(&admin, &name);
        psql(&admin, &format!("CREATE DATABASE \"{name}\""));
        Some(Self { admin, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.admin, "-c", &sql])
            .stdin(Stdio::null())
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("could not drop the test database `{}`", self.name);
        }
    }
}

/// `url` with its database (the path) replaced by `name`; the query is kept.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (rest, query) = rest.split_once('?').map_or((rest, None), |(r, q)| (r, Some(q)));
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("psql must be installed to run the PostgreSQL tests");
    assert!(
        out.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CONFIG: &str = r#"
listen: 127.0.0.1:8080
store: STORE_URL
master_key: file:master.key
agents:
  support-bot: {groups: [support]}
admins:
  alice: {role: approver, groups: [finance]}
  bob: {role: approver, groups: [finance]}
credentials:
  tracker: {kind: bearer, secret: tracker_token}
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 10000
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
"#;

/// Two gateways over one database, one upstream, one agent and two approvers.
#[derive(Debug)]
struct Cluster {
    // Dropped first: the gateways use the directory, the upstream and the database.
    gateways: [Gateway; 2],
    env: Env,
    token: String,
    alice: String,
    bob: String,
    db: Database,
    _serial: MutexGuard<'static, ()>,
}

/// Sets up a cluster with `extra` appended to the config; `None` when there is no database.
fn cluster(extra: &str) -> Option<Cluster> {
    cluster_with(extra, &[])
}

/// [`cluster`] with more files (actions, policies) written next to the default ones.
fn cluster_with(extra: &str, files: &[(&str, &str)]) -> Option<Cluster> {
    let serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let db = Database::create()?;
    let env = Env::new();
    env.write(
        "portcullis.yaml",
        &format!("{}{extra}", CONFIG.replace("STORE_URL", &db.url)),
    );
    env.write("actions/tickets.yaml", TICKETS);
    env.write("policies/policies.cedar", POLICIES);
    for (path, text) in files {
        env.write(path, text);
    }
    // `migrate` creates the schema and exits; running it again changes nothing.
    for _ in 0..2 {
        let out = env.cli(&["migrate"], None);
        assert!(out.success(), "migrate: {out:?}");
        assert!(
            out.stdout.contains(&format!("/{} is at schema version", db.name)),
            "{out:?}"
        );
    }
    env.set_secret("tracker_token", &random_secret("tracker"));
    let token = env.add_agent(AGENT);
    let alice = env.person_token("alice");
    let bob = env.person_token("bob");
    let gateways = [env.serve(), env.serve()];
    Some(Cluster {
        gateways,
        env,
        token,
        alice,
        bob,
        db,
        _serial: serial,
    })
}

impl Cluster {
    fn addrs(&self) -> [SocketAddr; 2] {
        [self.gateways[0].addr, self.gateways[1].addr]
    }

    /// The titles of the tickets the upstream received, with how many times each.
    fn tickets(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.env.upstream.requests() {
            assert_eq!(r["path"], "/tickets", "only tickets are created: {r}");
            let body: Value = serde_json::from_str(r["body"].as_str().expect("body")).expect("JSON body");
            let title = body["title"].as_str().expect("title").to_owned();
            *out.entry(title).or_insert(0) += 1;
        }
        out
    }

    /// Verifies the audit log both instances wrote; returns its events (the `event` objects).
    fn verified_audit(&self) -> Vec<Value> {
        let verify = self.env.audit_verify();
        assert!(verify.success(), "audit verify: {verify:?}");
        let events: Vec<Value> = self
            .env
            .audit_tail(10_000)
            .into_iter()
            .map(|l| l["event"].clone())
            .collect();
        assert!(
            verify
                .stdout
                .contains(&format!("audit log intact: {} event(s)", events.len())),
            "verify checked every event: {verify:?}"
        );
        events
    }
}

fn post_intent(addr: SocketAddr, token: &str, body: &Value) -> Response {
    http::post_json(addr, "/v1/intents", Some(token), body.to_string().as_bytes())
}

fn ticket(title: &str) -> Value {
    json!({"action": "tickets.create", "input": {"project": "scale", "title": title}})
}

/// The kinds of the events of each intent, in order.
fn kinds_by_intent(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        let id = e["intent_id"].as_str().expect("intent_id").to_owned();
        let kind = e["kind"].as_str().expect("kind").to_owned();
        out.entry(id).or_default().push(kind);
    }
    out
}

#[test]
fn distinct_intents_spread_over_two_instances_each_run_exactly_once() {
    const N: usize = 40;
    let Some(c) = cluster("") else { return };
    let addrs = c.addrs();
    let responses = concurrently(N, |i| {
        post_intent(addrs[i % 2], &c.token, &ticket(&format!("parallel-{i}")))
    });
    let mut ids = BTreeSet::new();
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.status, 200, "intent {i}: {}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "executed", "intent {i}: {body}");
        assert_eq!(body["result"]["body"]["title"], format!("parallel-{i}"));
        ids.insert(body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), N, "every intent has its own id");
    let expected: BTreeMap<String, usize> = (0..N).map(|i| (format!("parallel-{i}"), 1)).collect();
    assert_eq!(c.tickets(), expected, "the upstream got each intent exactly once");

    // Either instance answers for an intent the other one ran.
    for (i, id) in ids.iter().enumerate() {
        let r = c.gateways[i % 2].get(&format!("/v1/intents/{id}"), Some(&c.token));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "executed");
    }

    let events = c.verified_audit();
    let kinds = kinds_by_intent(&events);
    assert_eq!(kinds.len(), N, "{kinds:#?}");
    for id in &ids {
        assert_eq!(kinds[id], ["decided", "outcome"], "events of {id}");
    }
    assert_eq!(events.len(), 2 * N);
}

#[test]
fn an_idempotency_key_sent_to_both_instances_at_once_runs_exactly_once() {
    const KEYS: usize = 10;
    const TRIES: usize = 4;
    let Some(c) = cluster("") else { return };
    let addrs = c.addrs();
    let intent = |k: usize| {
        let mut i = ticket(&format!("keyed-{k}"));
        i["idempotency_key"] = json!(format!("key-{k}"));
        i
    };
    let responses = concurrently(KEYS * TRIES, |n| {
        let (k, t) = (n / TRIES, n % TRIES);
        post_intent(addrs[(k + t) % 2], &c.token, &intent(k))
    });

    let mut results: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    let mut in_progress = 0;
    for (n, r) in responses.iter().enumerate() {
        let k = n / TRIES;
        match r.status {
            200 => {
                let body = r.json();
                assert_eq!(body["status"], "executed", "key {k}: {body}");
                results.entry(k).or_default().push(body);
            }
            409 => {
                let body = r.json();
                assert_eq!(
                    body["error"]["code"], "idempotency_in_progress",
                    "key {k}: a retry of the same payload is never a conflict: {body}"
                );
                in_progress += 1;
            }
            other => panic!("key {k}: unexpected {other}: {}", r.text()),
        }
    }
    eprintln!("{in_progress} of {} tries were told to retry later", KEYS * TRIES);
    assert_eq!(results.len(), KEYS, "every key got its result at least once");
    for (k, bodies) in &results {
        assert!(
            bodies.iter().all(|b| b == &bodies[0]),
            "key {k}: every answer is the one stored result: {bodies:#?}"
        );
    }
    let expected: BTreeMap<String, usize> = (0..KEYS).map(|k| (format!("keyed-{k}"), 1)).collect();
    assert_eq!(c.tickets(), expected, "each key ran exactly once");

    // Once settled, both instances replay the stored result.
    for (k, bodies) in &results {
        for addr in addrs {
            let r = post_intent(addr, &c.token, &intent(*k));
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(&r.json(), &bodies[0], "key {k} via {addr}");
        }
    }
    assert_eq!(c.tickets(), expected);

    let events = c.verified_audit();
    let kinds = kinds_by_intent(&events);
    assert_eq!(kinds.len(), KEYS, "one intent per key: {kinds:#?}");
    assert!(kinds.values().all(|k| k == &["decided", "outcome"]), "{kinds:#?}");
}

const BURST_QUOTA: &str = r#"
quotas:
  tickets-burst:
    actions: [tickets.create]
    window: 1d
    max: 15
"#;

#[test]
fn a_quota_shared_by_two_instances_admits_exactly_its_maximum() {
    const N: usize = 40;
    const MAX: usize = 15;
    let Some(c) = cluster(BURST_QUOTA) else { return };
    let addrs = c.addrs();
    let responses = concurrently(N, |i| {
        post_intent(addrs[i % 2], &c.token, &ticket(&format!("burst-{i}")))
    });
    let mut executed = BTreeSet::new();
    let mut limited = 0;
    for (i, r) in responses.iter().enumerate() {
        match r.status {
            200 => {
                assert_eq!(r.json()["status"], "executed", "{}", r.text());
                executed.insert(format!("burst-{i}"));
            }
            429 => {
                let body = r.json();
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert_eq!(body["error"]["details"]["quota"], "tickets-burst", "{body}");
                assert_eq!(body["error"]["details"]["used"], "15", "{body}");
                assert_eq!(body["error"]["details"]["max"], "15", "{body}");
                let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
                assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
                limited += 1;
            }
            other => panic!("intent {i}: unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!(executed.len(), MAX, "exactly the maximum ran");
    assert_eq!(limited, N - MAX);
    let sent: BTreeSet<String> = c.tickets().into_keys().collect();
    assert_eq!(sent, executed, "the upstream got exactly the admitted intents");
    assert_eq!(c.env.upstream.requests().len(), MAX, "no overshoot");

    // Used up on both instances.
    for addr in addrs {
        let r = post_intent(addr, &c.token, &ticket("one more"));
        assert_eq!(r.status, 429, "{}", r.text());
    }

    let events = c.verified_audit();
    let outcomes = |status: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == "outcome" && e["detail"]["status"] == status)
            .count()
    };
    assert_eq!(outcomes("executed"), MAX);
    assert_eq!(outcomes("rate_limited"), N - MAX + 2);
    let decided = events.iter().filter(|e| e["kind"] == "decided").count();
    assert_eq!(
        decided,
        N + 2,
        "every intent was decided (allowed) before it was charged"
    );
    assert_eq!(events.len(), 2 * (N + 2));
}

/// A spend budget: refunds sum their `amount`, at most 100.00 per agent per day.
const REFUND_QUOTA: &str = r#"
quotas:
  refunds-per-day:
    actions: ["refunds.*"]
    window: 1d
    max: 100.00
    sum: /amount
"#;

const REFUNDS_ALLOWED: &str = r#"
@id("support-refunds")
@reason("support bots may refund within the day's budget")
permit (principal in AgentGroup::"support", action == Action::"refunds.create", resource);
"#;

fn refund(addr: SocketAddr, token: &str, order: usize, amount: &str) -> Response {
    let body = format!(r#"{{"action": "refunds.create", "input": {{"order": "{order}", "amount": {amount}}}}}"#);
    http::post_json(addr, "/v1/intents", Some(token), body.as_bytes())
}

impl Cluster {
    /// The refunds the upstream received: order number → amount, each order at most once.
    fn refunds(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for r in self.env.upstream.requests() {
            assert_eq!(r["path"], "/echo", "only refunds are made: {r}");
            let body: Value = serde_json::from_str(r["body"].as_str().expect("body")).expect("JSON body");
            let order = body["order"].as_str().expect("order").to_owned();
            let amount = body["amount"].as_f64().expect("amount");
            assert!(
                out.insert(order.clone(), amount).is_none(),
                "order {order} refunded twice"
            );
        }
        out
    }
}

/// Refunds of 7.25 spread over both instances at once, against a budget of 100.00 a day:
/// exactly 13 fit (94.25), the other 27 get 429, and the upstream received exactly the 13
/// admitted ones; then 5.75 fills the budget to the cent on one instance and 0.01 is
/// refused on the other.
#[test]
fn a_spend_budget_shared_by_two_instances_is_never_overshot() {
    const N: usize = 40;
    const FIT: usize = 13;
    let files = [
        ("actions/refunds.yaml", REFUND_ACTION),
        ("policies/refunds.cedar", REFUNDS_ALLOWED),
    ];
    let Some(c) = cluster_with(REFUND_QUOTA, &files) else {
        return;
    };
    let addrs = c.addrs();
    let responses = concurrently(N, |i| refund(addrs[i % 2], &c.token, i, "7.25"));
    let mut executed = BTreeSet::new();
    for (i, r) in responses.iter().enumerate() {
        match r.status {
            200 => {
                assert_eq!(r.json()["status"], "executed", "{}", r.text());
                executed.insert(i.to_string());
            }
            429 => {
                let body = r.json();
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                let details = &body["error"]["details"];
                assert_eq!(details["quota"], "refunds-per-day", "{body}");
                assert_eq!(details["max"], "100", "{body}");
                assert_eq!(details["requested"], "7.25", "{body}");
                // Refused only once the 13 that fit were charged.
                assert_eq!(details["used"], "94.25", "{body}");
            }
            other => panic!("refund {i}: unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!(executed.len(), FIT, "exactly what fits ran");
    let sent = c.refunds();
    assert_eq!(
        sent.keys().cloned().collect::<BTreeSet<_>>(),
        executed,
        "the upstream got exactly the admitted refunds"
    );
    let total: f64 = sent.values().sum();
    assert!((total - 94.25).abs() < 1e-9, "{total}");

    // The rest of the budget, to the cent, through one instance; then nothing through the other.
    let last = refund(addrs[1], &c.token, 1000, "5.75");
    assert_eq!(last.status, 200, "{}", last.text());
    let over = refund(addrs[0], &c.token, 1001, "0.01");
    assert_eq!(over.status, 429, "{}", over.text());
    assert_eq!(over.json()["error"]["details"]["used"], "100", "{}", over.text());
    let total: f64 = c.refunds().values().sum();
    assert!((total - 100.0).abs() < 1e-9, "{total}");
    assert_eq!(c.env.upstream.requests().len(), FIT + 1, "no overshoot");

    let events = c.verified_audit();
    let outcomes = |status: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == "outcome" && e["detail"]["status"] == status)
            .count()
    };
    assert_eq!(outcomes("executed"), FIT + 1);
    assert_eq!(outcomes("rate_limited"), N - FIT + 1);
}

/// A policy on `context.counters` ("hold once half the budget is used") sees one budget
/// across both instances, exactly: refunds charged on one instance count on the other, and
/// of a burst over both, exactly those charged while less than half was used run (each
/// intent sees what those charged before it used, so a burst can't slip past the threshold);
/// every other one is held, and an approval through either instance runs it.
#[test]
fn a_policy_on_counters_sees_one_budget_across_two_instances() {
    const BURST: usize = 10;
    let files = [
        ("actions/refunds.yaml", REFUND_ACTION),
        ("policies/refunds.cedar", REFUND_HALF_BUDGET_POLICIES),
    ];
    let Some(c) = cluster_with(REFUND_QUOTA, &files) else {
        return;
    };
    let addrs = c.addrs();

    // 30 on one instance, then 15 on the other: 45 used, under half.
    for (n, (addr, amount)) in [(addrs[0], "30"), (addrs[1], "15")].into_iter().enumerate() {
        let r = refund(addr, &c.token, n, amount);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "executed", "{}", r.text());
    }
    // 45 used: a burst of ten 1.00 refunds over both instances. Those charged while less
    // than 50 was used run: 45, 46, 47, 48, 49 before them, so five; the rest are held.
    let responses = concurrently(BURST, |i| refund(addrs[i % 2], &c.token, 100 + i, "1"));
    let mut held = Vec::new();
    let mut ran = 0;
    for (i, r) in responses.iter().enumerate() {
        let body = r.json();
        match r.status {
            200 => {
                assert_eq!(body["status"], "executed", "{body}");
                ran += 1;
            }
            202 => {
                assert_eq!(body["status"], "pending_approval", "{body}");
                assert_eq!(
                    body["decision"]["reasons"],
                    json!(["half of today's refund budget is used; a finance approver must confirm"]),
                    "{body}"
                );
                held.push((
                    i,
                    body["id"].as_str().expect("id").to_owned(),
                    body["approval"]["payload_sha256"].as_str().expect("sha").to_owned(),
                ));
            }
            other => panic!("refund {i}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(ran, 5, "exactly the refunds charged under half ran");
    assert_eq!(held.len(), BURST - 5);
    let total: f64 = c.refunds().values().sum();
    assert!(
        (total - 50.0).abs() < 1e-9,
        "held refunds gave their charge back: {total}"
    );

    // Past half on both instances, whatever the amount.
    for addr in addrs {
        let r = refund(addr, &c.token, 200, "0.5");
        assert_eq!(r.status, 202, "{}", r.text());
    }
    // Held refunds approved through either instance run, and count against the budget.
    for (n, (i, id, sha)) in held.iter().take(2).enumerate() {
        let r = vote(addrs[n % 2], &c.alice, id, sha);
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!(body["intent"]["status"], "executed", "refund {i}: {body}");
    }
    let sent = c.refunds();
    assert_eq!(sent.len(), 2 + 5 + 2, "{sent:?}");
    let total: f64 = sent.values().sum();
    assert!((total - 52.0).abs() < 1e-9, "{total}");

    let events = c.verified_audit();
    let effects: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "decided")
        .filter_map(|e| e["decision"]["effect"].as_str())
        .collect();
    let count = |effect: &str| effects.iter().filter(|e| **e == effect).count();
    assert_eq!(count("hold"), BURST - 5 + 2, "{effects:?}");
    // 2 + 5 allowed at once, and 2 allowed again when approved.
    assert_eq!(count("allow"), 2 + 5 + 2, "{effects:?}");
}

fn vote(addr: SocketAddr, person: &str, id: &str, sha: &str) -> Response {
    let body = json!({"reason": "looks right", "payload_sha256": sha}).to_string();
    http::post_json(
        addr,
        &format!("/v1/approvals/{id}/approve"),
        Some(person),
        body.as_bytes(),
    )
}

#[test]
fn a_hold_approved_twice_at_once_through_both_instances_runs_once() {
    const HOLDS: usize = 6;
    let Some(c) = cluster("") else { return };
    let addrs = c.addrs();
    let holds: Vec<(String, String)> = (0..HOLDS)
        .map(|h| {
            let mut intent = ticket(&format!("held-{h}"));
            intent["input"]["priority"] = json!("high");
            let r = post_intent(addrs[h % 2], &c.token, &intent);
            assert_eq!(r.status, 202, "{}", r.text());
            let body = r.json();
            assert_eq!(body["status"], "pending_approval", "{body}");
            (
                body["id"].as_str().expect("id").to_owned(),
                body["approval"]["payload_sha256"].as_str().expect("sha").to_owned(),
            )
        })
        .collect();
    c.env.upstream.assert_untouched("held intents");

    // Each hold gets two approvals at the same moment, one through each instance: from
    // alice and bob for the first half, from alice twice for the second.
    let responses = concurrently(2 * HOLDS, |n| {
        let (h, side) = (n / 2, n % 2);
        let person = if side == 1 && h < HOLDS / 2 { &c.bob } else { &c.alice };
        let (id, sha) = &holds[h];
        vote(addrs[side], person, id, sha)
    });
    for (h, pair) in responses.chunks(2).enumerate() {
        let won: Vec<&Response> = pair.iter().filter(|r| r.status == 200).collect();
        assert_eq!(won.len(), 1, "hold {h}: exactly one approval completes it: {pair:#?}");
        let body = won[0].json();
        assert_eq!(body["state"], "executed", "{body}");
        assert_eq!(body["intent"]["status"], "executed", "{body}");
        let lost = pair.iter().find(|r| r.status != 200).expect("the other vote");
        assert_eq!(lost.status, 409, "{}", lost.text());
        let code = lost.json()["error"]["code"].as_str().unwrap_or_default().to_owned();
        assert!(
            code == "not_pending" || (h >= HOLDS / 2 && code == "already_voted"),
            "hold {h}: {}",
            lost.text()
        );
    }
    let expected: BTreeMap<String, usize> = (0..HOLDS).map(|h| (format!("held-{h}"), 1)).collect();
    assert_eq!(c.tickets(), expected, "each approved hold ran exactly once");
    for (h, (id, _)) in holds.iter().enumerate() {
        for g in &c.gateways {
            let r = g.get(&format!("/v1/intents/{id}"), Some(&c.token));
            assert_eq!(r.json()["status"], "executed", "hold {h}: {}", r.text());
        }
    }

    let events = c.verified_audit();
    let kinds = kinds_by_intent(&events);
    for (id, _) in &holds {
        assert_eq!(
            kinds[id],
            ["decided", "approval", "decided", "outcome"],
            "one counted approval, one execution for {id}"
        );
    }
    assert_eq!(events.len(), 4 * HOLDS);
}

#[test]
fn the_database_url_of_the_tests_replaces_only_the_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@db:5432/test?sslmode=disable", "x"),
        "postgresql://u:p@db:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://db", "x"), "postgres://db/x");
}

/// One instance is killed (SIGKILL) in the middle of an upstream call while another keeps
/// serving from the same database: the survivor tells a retry the intent is still in
/// progress, then, once it is older than an execution can take, reports it
/// `outcome_unknown`: never run again, its idempotency key still taken, the audit log intact.
#[test]
fn an_intent_whose_instance_dies_mid_call_is_settled_by_the_survivor_and_never_rerun() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(db) = Database::create() else { return };
    let env = Env::new();
    let config = CONFIG
        .replace("STORE_URL", &db.url)
        .replace("timeout_ms: 10000", "timeout_ms: 2000\n  connect_timeout_ms: 500");
    env.write("portcullis.yaml", &config);
    env.write("actions/tickets.yaml", TICKETS);
    env.write("actions/slow.yaml", SLOW);
    env.write("policies/policies.cedar", POLICIES);
    env.write("policies/slow.cedar", SLOW_POLICY);
    env.set_secret("tracker_token", &random_secret("tracker"));
    let token = env.add_agent(AGENT);
    let doomed = env.serve();
    let survivor = env.serve();
    let intent = json!({"action": "slow.get", "input": {}, "idempotency_key": "nightly-1"});

    let (addr, agent_token, body) = (doomed.addr, token.clone(), intent.to_string());
    let call = std::thread::spawn(move || http::post_json(addr, "/v1/intents", Some(&agent_token), body.as_bytes()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.upstream.requests().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the upstream never got the call");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(doomed); // SIGKILL, mid-call
    let _ = call.join();

    let early = post_intent(survivor.addr, &token, &intent);
    assert_eq!(early.status, 409, "{}", early.text());
    assert_eq!(early.json()["error"]["code"], "idempotency_in_progress");
    // Egress timeouts of 0.5 s + 2 s plus the 15 s margin, checked every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let settled = loop {
        let r = post_intent(survivor.addr, &token, &intent);
        if r.status != 409 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(settled.status, 200, "{}", settled.text());
    let body = settled.json();
    assert_eq!(body["status"], "outcome_unknown", "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        env.upstream.requests().len(),
        1,
        "the interrupted intent was not run again"
    );

    let verify = env.audit_verify();
    assert!(verify.success(), "{verify:?}");
    let kinds: Vec<(Value, Value)> = env
        .audit_tail(100)
        .into_iter()
        .filter(|l| l["event"]["intent_id"] == id.as_str())
        .map(|l| (l["event"]["kind"].clone(), l["event"]["detail"].clone()))
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0].0, "decided");
    assert_eq!(kinds[1], (json!("outcome"), json!({"status": "outcome_unknown"})));
    drop(survivor);
}

/// Tampering done directly in PostgreSQL (with the append-only triggers disabled, as a
/// database superuser could) is caught by `portcullis audit verify`, which names the event.
#[test]
fn tampering_in_the_database_is_named_by_audit_verify() {
    let Some(cluster) = cluster("") else { return };
    for title in ["one", "two", "three"] {
        let r = post_intent(cluster.gateways[0].addr, &cluster.token, &ticket(title));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(cluster.env.audit_verify().success());
    let refused = Command::new("psql")
        .args(["-X", "-q", "-d", &cluster.db.url, "-c"])
        .arg("UPDATE audit_events SET event = replace(event, 'support-bot', 'other-bot') WHERE seq = 3")
        .output()
        .expect("psql");
    assert!(!refused.status.success(), "the trigger refuses the edit");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("append-only"),
        "{refused:?}"
    );
    psql(
        &cluster.db.url,
        "ALTER TABLE audit_events DISABLE TRIGGER USER; \
         UPDATE audit_events SET event = replace(event, 'support-bot', 'other-bot') WHERE seq = 3",
    );
    let verify = cluster.env.audit_verify();
    assert_eq!(verify.code, Some(1), "{verify:?}");
    assert!(
        verify.stdout.contains("event 3 was modified") || verify.stderr.contains("event 3 was modified"),
        "{verify:?}"
    );
}
