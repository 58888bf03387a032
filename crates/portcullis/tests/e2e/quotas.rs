//! Rate and spend quotas (`quotas:`) through the real binary on SQLite: a used-up quota is
//! a 429 with `Retry-After` and nothing reaches the upstream; only permitted intents are
//! charged; a summed budget is exact to the cent and never overshot, even by approved
//! holds; policies see the counters; `check` and `eval` know about them.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::fixtures::{self, AGENT, REFUND_ACTION, REFUND_HALF_BUDGET_POLICIES, write_standard_files};
use crate::harness::{Env, Gateway, random_secret};
use crate::http::{self, Response};

/// Three tickets a day per agent.
const TICKET_QUOTA: &str = r#"
quotas:
  tickets-per-window:
    actions: [tickets.create]
    window: 1d
    max: 3
"#;

fn ticket(title: &str) -> Value {
    json!({"action": "tickets.create", "input": {"project": "website", "title": title}})
}

fn with_key(mut intent: Value, key: &str) -> Value {
    intent["idempotency_key"] = json!(key);
    intent
}

/// The next multiple of `window` seconds after `now` (windows are aligned to the epoch).
fn window_end(now: OffsetDateTime, window: i64) -> OffsetDateTime {
    let end = (now.unix_timestamp().div_euclid(window) + 1) * window;
    OffsetDateTime::from_unix_timestamp(end).expect("timestamp")
}

/// Asserts `r` is the 429 of a used-up `quota` (`used` of `max`) whose window ends at one
/// of `ends` (the boundary seen just before and just after the request); returns the
/// `Retry-After` seconds.
fn assert_rate_limited(r: &Response, quota: &str, used: &str, max: &str, ends: &[OffsetDateTime]) -> u64 {
    assert_eq!(r.status, 429, "{}", r.text());
    let body = r.json();
    let err = &body["error"];
    assert_eq!(err["code"], "rate_limited", "{body}");
    let message = err["message"].as_str().expect("message");
    assert!(message.contains(&format!("quota `{quota}`")), "{message}");
    assert!(message.contains(&format!("({used} of {max} used, ")), "{message}");
    assert!(message.contains("the action did not run"), "{message}");
    assert_eq!(err["details"]["quota"], quota, "{body}");
    assert_eq!(err["details"]["used"], used, "{body}");
    assert_eq!(err["details"]["max"], max, "{body}");
    let resets_at = err["details"]["resets_at"].as_str().expect("resets_at");
    let resets = OffsetDateTime::parse(resets_at, &Rfc3339).unwrap_or_else(|e| panic!("resets_at {resets_at}: {e}"));
    assert!(
        ends.contains(&resets),
        "resets_at {resets_at} is not the window's end {ends:?}"
    );
    assert!(
        message.contains(resets_at),
        "the message names the reset time: {message}"
    );
    let retry: u64 = r
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    let until = u64::try_from((resets - OffsetDateTime::now_utc()).whole_seconds()).unwrap_or(0);
    assert!(retry >= 1, "Retry-After {retry}");
    assert!(
        retry.abs_diff(until) <= 5,
        "Retry-After {retry} is the time left until {resets_at} ({until} s)"
    );
    retry
}

/// The `event` objects of the audit log, oldest first.
fn audit_events(env: &Env) -> Vec<Value> {
    env.audit_tail(1000)
        .into_iter()
        .map(|line| line["event"].clone())
        .collect()
}

#[test]
fn a_count_quota_refuses_the_fourth_ticket_with_429_and_charges_only_what_runs() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("portcullis.yaml", &format!("{}{TICKET_QUOTA}", fixtures::CONFIG));
    let token = env.add_agent(AGENT);
    let other = env.add_agent(fixtures::OTHER);
    let gateway = env.serve();
    let tickets = || {
        env.upstream
            .requests()
            .into_iter()
            .filter(|r| r["path"] == "/tickets")
            .count()
    };

    // Neither a denial nor a dry run is charged: three tickets still run after them.
    let denied = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "website", "title": "Down", "priority": "urgent"}}),
    );
    assert_eq!(denied.status, 403, "{}", denied.text());
    let mut dry = ticket("Just looking");
    dry["dry_run"] = json!(true);
    for _ in 0..2 {
        let r = gateway.post_intent(&token, &dry);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "dry_run");
    }
    env.upstream.assert_untouched("a denial and dry runs");

    // An idempotent replay returns the stored result and is not charged either.
    let first = gateway.post_intent(&token, &with_key(ticket("One"), "ticket-one"));
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["status"], "executed");
    let replay = gateway.post_intent(&token, &with_key(ticket("One"), "ticket-one"));
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json(), first.json(), "the replay is the stored result");
    for title in ["Two", "Three"] {
        let r = gateway.post_intent(&token, &ticket(title));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "executed");
    }
    assert_eq!(tickets(), 3);

    // The fourth: 429 until the next UTC midnight, and nothing is sent.
    let before = window_end(OffsetDateTime::now_utc(), 86_400);
    let fourth = gateway.post_intent(&token, &with_key(ticket("Four"), "ticket-four"));
    let after = window_end(OffsetDateTime::now_utc(), 86_400);
    let retry = assert_rate_limited(&fourth, "tickets-per-window", "3", "3", &[before, after]);
    assert!(retry <= 86_400, "Retry-After {retry}");
    assert_eq!(tickets(), 3, "a refused intent never reaches the upstream");

    // The key of a refused intent is free again: the same key (with the same payload or
    // another) is decided afresh, still 429 while the window lasts, never a conflict or a
    // replay of the refusal.
    for intent in [
        with_key(ticket("Four"), "ticket-four"),
        with_key(ticket("Four, reworded"), "ticket-four"),
    ] {
        let again = gateway.post_intent(&token, &intent);
        assert_rate_limited(&again, "tickets-per-window", "3", "3", &[before, after]);
    }
    // A replay of an executed key is still a replay, not a 429.
    let replay = gateway.post_intent(&token, &with_key(ticket("One"), "ticket-one"));
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json(), first.json());

    // `per: agent`: the other agent has a counter of its own.
    let theirs = gateway.post_intent(&other, &ticket("Someone else's"));
    assert_eq!(theirs.status, 200, "{}", theirs.text());
    assert_eq!(theirs.json()["status"], "executed");
    assert_eq!(tickets(), 4);

    // The audit log has a `decided` allow and a `rate_limited` outcome for each refusal.
    let events = audit_events(&env);
    let limited: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "outcome" && e["detail"]["status"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 3, "{events:#?}");
    for e in &limited {
        assert_eq!(e["detail"]["quota"], "tickets-per-window", "{e}");
        assert_eq!(e["detail"]["used"], "3", "{e}");
        assert_eq!(e["detail"]["max"], "3", "{e}");
        assert_eq!(e["agent"], AGENT, "{e}");
        let decided: Vec<&Value> = events
            .iter()
            .filter(|d| d["intent_id"] == e["intent_id"] && d["kind"] == "decided")
            .collect();
        assert_eq!(decided.len(), 1, "{events:#?}");
        assert_eq!(decided[0]["decision"]["effect"], "allow", "{}", decided[0]);
    }
    let executed = events
        .iter()
        .filter(|e| e["kind"] == "outcome" && e["detail"]["status"] == "executed")
        .count();
    assert_eq!(executed, 4, "{events:#?}");
    let verify = env.audit_verify();
    assert!(verify.success(), "{verify:?}");
    drop(gateway);
}

const REFUND_CONFIG: &str = r#"
listen: 127.0.0.1:8080
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  support-bot: {groups: [support]}
admins:
  alice: {role: approver, groups: [finance]}
credentials:
  tracker: {kind: bearer, secret: tracker_token}
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 5000
quotas:
  refunds-per-day:
    actions: ["refunds.*"]
    window: 1d
    max: 100.00
    sum: /amount
"#;

const HOLD_REASON: &str = "half of today's refund budget is used; a finance approver must confirm";

fn write_refund_files(env: &Env) {
    env.write("portcullis.yaml", REFUND_CONFIG);
    env.write("actions/refunds.yaml", REFUND_ACTION);
    env.write("policies/refunds.cedar", REFUND_HALF_BUDGET_POLICIES);
    env.set_secret("tracker_token", &random_secret("tracker"));
}

/// Asks for a refund of `amount` (a JSON number, as written) on order `order`.
fn refund(gateway: &Gateway, token: &str, order: &str, amount: &str) -> Response {
    let body = format!(r#"{{"action": "refunds.create", "input": {{"order": "{order}", "amount": {amount}}}}}"#);
    http::post_json(gateway.addr, "/v1/intents", Some(token), body.as_bytes())
}

/// A held refund's intent id and payload hash.
fn held(r: &Response) -> (String, String) {
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "pending_approval", "{body}");
    assert_eq!(body["decision"]["reasons"], json!([HOLD_REASON]), "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["approval"]["payload_sha256"].as_str().expect("sha").to_owned(),
    )
}

fn approve(gateway: &Gateway, person: &str, id: &str, sha: &str) -> Value {
    let body = json!({"reason": "checked the order", "payload_sha256": sha}).to_string();
    let r = http::post_json(
        gateway.addr,
        &format!("/v1/approvals/{id}/approve"),
        Some(person),
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The `amount`s the upstream received, in order.
fn amounts_sent(env: &Env) -> Vec<f64> {
    env.upstream
        .requests()
        .iter()
        .filter(|r| r["path"] == "/echo")
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().expect("body")).expect("JSON body");
            body["amount"].as_f64().expect("a numeric amount")
        })
        .collect()
}

#[test]
fn a_spend_quota_holds_past_half_and_never_overshoots_even_after_approval() {
    let env = Env::new();
    write_refund_files(&env);
    let token = env.add_agent(AGENT);
    let alice = env.person_token("alice");
    let gateway = env.serve();

    let r = refund(&gateway, &token, "1001", "30.00");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(r.json()["result"]["body"], json!({"order": "1001", "amount": 30.0}));

    // 30 of 100 used: policy allows 80, but 30 + 80 is past the budget: 429, not sent.
    let before = window_end(OffsetDateTime::now_utc(), 86_400);
    let over = refund(&gateway, &token, "1002", "80");
    let after = window_end(OffsetDateTime::now_utc(), 86_400);
    assert_rate_limited(&over, "refunds-per-day", "30", "100", &[before, after]);
    assert_eq!(over.json()["error"]["details"]["requested"], "80", "{}", over.text());
    assert_eq!(amounts_sent(&env), [30.0]);

    let r = refund(&gateway, &token, "1003", "25.50");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "executed", "{}", r.text());

    // 55.50 used: past half, so every refund now waits for finance, whether or not it fits.
    let (fits, fits_sha) = held(&refund(&gateway, &token, "1004", "10"));
    let (too_big, too_big_sha) = held(&refund(&gateway, &token, "1005", "60"));
    let (exact, exact_sha) = held(&refund(&gateway, &token, "1006", "34.50"));
    assert_eq!(amounts_sent(&env), [30.0, 25.5]);

    // The quota refuses a negative amount the schema lets through; nothing is held or sent.
    let negative = refund(&gateway, &token, "1007", "-5");
    assert_eq!(negative.status, 400, "{}", negative.text());
    let err = negative.json();
    assert_eq!(err["error"]["code"], "invalid_input", "{err}");
    assert_eq!(
        err["error"]["details"],
        json!(["quota `refunds-per-day` sums `/amount`, which must be a number from 0 to 10^14"]),
        "{err}"
    );
    assert_eq!(amounts_sent(&env), [30.0, 25.5]);

    // Approved, 10 fits (65.50 used)…
    let done = approve(&gateway, &alice, &fits, &fits_sha);
    assert_eq!(done["state"], "executed", "{done}");
    assert_eq!(done["intent"]["status"], "executed", "{done}");
    assert_eq!(amounts_sent(&env), [30.0, 25.5, 10.0]);

    // …60 does not: the approval stands, but the quota fails the intent and nothing is sent.
    let failed = approve(&gateway, &alice, &too_big, &too_big_sha);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["intent"]["status"], "failed", "{failed}");
    let error = failed["intent"]["error"].as_str().expect("error");
    assert!(
        error.contains("quota `refunds-per-day` can't take this intent (65.5 of 100 used, 60 requested)"),
        "{error}"
    );
    assert_eq!(amounts_sent(&env), [30.0, 25.5, 10.0]);
    let seen = gateway.get(&format!("/v1/intents/{too_big}"), Some(&token));
    assert_eq!(seen.json()["status"], "failed", "{}", seen.text());

    // …and 34.50 fills the budget to the cent.
    let done = approve(&gateway, &alice, &exact, &exact_sha);
    assert_eq!(done["intent"]["status"], "executed", "{done}");
    let sent = amounts_sent(&env);
    assert_eq!(sent, [30.0, 25.5, 10.0, 34.5]);
    assert!((sent.iter().sum::<f64>() - 100.0).abs() < 1e-9, "{sent:?}");

    // Audit: the direct 429 and the approved-then-refused hold each end in `rate_limited`.
    let events = audit_events(&env);
    let of = |id: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["intent_id"] == id)
            .map(|e| {
                let what = e["decision"]["effect"]
                    .as_str()
                    .or_else(|| e["detail"]["status"].as_str())
                    .unwrap_or_default();
                (e["kind"].as_str().unwrap_or_default().to_owned(), what.to_owned())
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    };
    assert_eq!(
        of(&too_big),
        pairs(&[
            ("decided", "hold"),
            ("approval", ""),
            ("decided", "allow"),
            ("outcome", "rate_limited")
        ]),
        "{events:#?}"
    );
    let limited: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail"]["status"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 2, "{events:#?}");
    assert_eq!(limited[0]["detail"]["used"], "30");
    assert_eq!(limited[1]["detail"]["used"], "65.5");
    assert!(env.audit_verify().success());
    drop(gateway);
}

#[test]
fn check_rejects_a_quota_summing_a_non_number_and_one_covering_no_action() {
    let env = Env::new();
    write_standard_files(&env);
    env.write("actions/refunds.yaml", REFUND_ACTION);
    env.write(
        "actions/optional.yaml",
        r#"
name: refunds.maybe
description: A refund whose amount is optional
input:
  type: object
  properties:
    amount: {type: number}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/echo
"#,
    );
    let quotas = r#"
quotas:
  by-title:
    actions: [tickets.create]
    window: 1h
    max: 10
    sum: /title
  refunds:
    actions: ["refunds.*"]
    window: 1d
    max: 100
    sum: /amount
  ghost:
    actions: ["payments.*", "nothing.here"]
    window: 15m
    max: 5
"#;
    let text = format!("{}{quotas}", fixtures::CONFIG);
    env.write("portcullis.yaml", &text);
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let config = env.config().display().to_string();
    let line_of = |name: &str| {
        text.lines()
            .position(|l| l == format!("  {name}:"))
            .map(|i| i + 1)
            .expect("the quota is in the config")
    };
    for (name, expected) in [
        (
            "by-title",
            "quota `by-title` sums `/title`, which is not a required number in the input of `tickets.create`",
        ),
        (
            "refunds",
            "quota `refunds` sums `/amount`, which is not a required number in the input of `refunds.maybe`",
        ),
        (
            "ghost",
            "quota `ghost` covers no action in the catalog (payments.*, nothing.here)",
        ),
    ] {
        let at = format!("{config}:{}:", line_of(name));
        assert!(
            out.stderr.lines().any(|l| l.contains(expected) && l.contains(&at)),
            "`{expected}` is reported at {at}:\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("3 problem(s) found"), "{}", out.stderr);
    // `refunds.create` has a required numeric `amount`: no complaint about it.
    assert!(!out.stderr.contains("`refunds.create`"), "{}", out.stderr);

    // Malformed quotas are reported by the configuration's own checks.
    let bad = r#"
quotas:
  weekly:
    actions: [tickets.create]
    window: 1w
    max: 10
  fractional:
    actions: [tickets.create]
    window: 1h
    max: 2.5
"#;
    env.write("portcullis.yaml", &format!("{}{bad}", fixtures::CONFIG));
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("quota `weekly`: window `1w` is not like `90s`, `15m`, `1h` or `1d`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("quota `fractional`: `max` counts intents, so it must be a whole number"),
        "{}",
        out.stderr
    );

    // Without the optional-amount action and the bad quotas, the configuration passes.
    std::fs::remove_file(env.path("actions/optional.yaml")).expect("rm");
    let sound = "\nquotas:\n  refunds: {actions: [\"refunds.*\"], window: 1d, max: 100, sum: /amount}\n";
    env.write("portcullis.yaml", &format!("{}{sound}", fixtures::CONFIG));
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    env.upstream.assert_untouched("check");
}

#[test]
fn eval_cases_with_counters_see_the_budget_half_used() {
    let env = Env::new();
    write_refund_files(&env);
    let case = |name: &str, counters: Option<f64>, expect: &str| {
        let mut c = json!({
            "name": name,
            "agent": AGENT,
            "action": "refunds.create",
            "input": {"order": "42", "amount": 10},
            "expect": expect,
        });
        if let Some(used) = counters {
            c["counters"] = json!({"refunds-per-day": used});
        }
        format!("{c}\n")
    };
    let cases = [
        case("a fresh day", None, "allow"),
        case("49.99 used", Some(49.99), "allow"),
        case("half used", Some(50.0), "hold"),
        case("60 used", Some(60.0), "hold"),
    ]
    .concat();
    env.write("cases.jsonl", &cases);
    let out = env.cli(&["eval", "--cases", "cases.jsonl"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("PASS")).collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(
        lines[0].ends_with("a fresh day: allow (expected allow)"),
        "{}",
        out.stdout
    );
    assert!(lines[3].ends_with("60 used: hold (expected hold)"), "{}", out.stdout);
    assert!(out.stdout.contains(HOLD_REASON), "{}", out.stdout);

    // The counters are what decides: the same case expecting the other effect fails.
    env.write("cases.jsonl", &case("60 used", Some(60.0), "allow"));
    let out = env.cli(&["eval", "--cases", "cases.jsonl"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("FAIL line 1: 60 used: hold (expected allow)"),
        "{}",
        out.stdout
    );
    env.upstream.assert_untouched("eval");
}

/// A burst can't slip past a threshold policy: each intent is charged before it is decided,
/// so concurrent intents see the counter one after another. With refunds of 10.00 against a
/// budget of 100.00 and "hold from 50 % used", exactly five of twelve simultaneous refunds
/// run on their own (they see 0, 10, 20, 30 and 40 used), and the rest are held; the held
/// ones give their share back, so the counter ends at exactly what ran.
#[test]
fn a_burst_of_refunds_cannot_slip_past_the_half_budget_hold() {
    let env = Env::new();
    write_refund_files(&env);
    let token = env.add_agent(AGENT);
    let alice = env.person_token("alice");
    let gateway = env.serve();
    let answers: Vec<Response> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..12)
            .map(|i| {
                let (gateway, token) = (&gateway, &token);
                s.spawn(move || refund(gateway, token, &format!("{}", 2000 + i), "10"))
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("the call")).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 7, "{statuses:?}");
    let holds: Vec<(String, String)> = answers.iter().filter(|r| r.status == 202).map(held).collect();
    assert_eq!(amounts_sent(&env), [10.0; 5]);
    // The held refunds gave their share back: 50.00 is used, so a dry run (which sees the
    // counter as it stands) would be held, the audit log shows five allows, and approving
    // five of the held refunds fills the budget exactly, which it could not if the holds
    // had kept their share.
    let mut dry = json!({"action": "refunds.create", "input": {"order": "2999", "amount": 50}});
    dry["dry_run"] = json!(true);
    let r = gateway.post_intent(&token, &dry);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "dry_run", "{}", r.text());
    assert_eq!(r.json()["decision"]["effect"], "hold", "{}", r.text());
    let allows = audit_events(&env)
        .iter()
        .filter(|e| e["kind"] == "decided" && e["decision"]["effect"] == "allow")
        .count();
    assert_eq!(allows, 5);
    for (id, sha) in &holds[..5] {
        let done = approve(&gateway, &alice, id, sha);
        assert_eq!(done["intent"]["status"], "executed", "{done}");
    }
    assert_eq!(amounts_sent(&env), [10.0; 10]);
    let (id, sha) = &holds[5];
    let refused = approve(&gateway, &alice, id, sha);
    assert_eq!(refused["intent"]["status"], "failed", "{refused}");
    assert_eq!(amounts_sent(&env), [10.0; 10]);
    drop(gateway);
}
