//! What an on-call engineer sees: OTLP traces (captured by a receiver on loopback), JSON
//! and human logs, `/metrics` scraped from the running binary, and `/healthz`/`/readyz`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::{AGENT, CONFIG, HOLD_POLICY, assert_no_secret, write_standard_files};
use crate::harness::Env;
use crate::otlp::{Receiver, all_text, attribute};

/// A token-shaped value in an agent's input (the detector's `github-pat` rule).
const TOKEN_IN_INPUT: &str = "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";

fn config_with(extra: &str) -> String {
    format!("{CONFIG}{extra}")
}

#[test]
fn an_intent_is_one_trace_with_a_span_per_stage_and_no_secret_in_any_attribute() {
    let receiver = Receiver::start();
    let env = Env::new();
    let secret = write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &config_with(&format!(
            "tracing:\n  otlp_endpoint: {}\n  service_name: gateway-under-test\n  payloads: true\n",
            receiver.endpoint()
        )),
    );
    env.write("policies/hold.cedar", HOLD_POLICY);
    let token = env.add_agent(AGENT);
    let mut gateway = env.serve();

    let title = format!("call ops@example.com about {TOKEN_IN_INPUT}");
    let created = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": title}}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let created_id = created.json()["id"].as_str().unwrap().to_owned();
    // A hostile upstream echoes the credential back: it must not reach a span either.
    let leaked = gateway.post_intent(&token, &json!({"action": "leak.bearer", "input": {}}));
    assert_eq!(leaked.status, 200, "{}", leaked.text());
    let held = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "big", "priority": "high"}}),
    );
    assert_eq!(held.status, 202, "{}", held.text());
    let held_id = held.json()["id"].as_str().unwrap().to_owned();
    let denied = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "now", "priority": "urgent"}}),
    );
    assert_eq!(denied.status, 403, "{}", denied.text());

    // Stopping flushes the batch exporter.
    gateway.signal("TERM");
    assert_eq!(
        gateway.wait_exit(Duration::from_secs(20)),
        Some(Some(0)),
        "{}",
        gateway.log()
    );
    let spans = receiver.wait_for(Duration::from_secs(10), |spans| {
        spans.iter().filter(|s| s.name == "intent").count() >= 4
    });
    assert!(
        receiver.paths().iter().all(|p| p == "/v1/traces"),
        "{:?}",
        receiver.paths()
    );

    let intent = |id: &str| {
        spans
            .iter()
            .find(|s| s.name == "intent" && attribute(s, "intent_id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no intent span for {id}"))
    };
    let children = |parent: &opentelemetry_proto::tonic::trace::v1::Span| -> BTreeSet<String> {
        spans
            .iter()
            .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
            .map(|s| s.name.clone())
            .collect()
    };

    let executed = intent(&created_id);
    assert_eq!(attribute(executed, "action").as_deref(), Some("tickets.create"));
    assert_eq!(attribute(executed, "agent").as_deref(), Some(AGENT));
    assert_eq!(attribute(executed, "effect").as_deref(), Some("allow"));
    assert_eq!(attribute(executed, "status").as_deref(), Some("executed"));
    assert_eq!(attribute(executed, "upstream_status").as_deref(), Some("201"));
    assert!(attribute(executed, "upstream_latency_ms").is_some());
    let policies = attribute(executed, "policies").unwrap();
    assert!(policies.contains("support-creates-tickets"), "{policies}");
    let input = attribute(executed, "input").expect("payloads: true attaches the input");
    assert!(input.contains("[REDACTED:email]"), "{input}");
    assert!(input.contains("[REDACTED:github-pat]"), "{input}");
    assert!(
        !input.contains("ops@example.com") && !input.contains(TOKEN_IN_INPUT),
        "{input}"
    );
    let stages = children(executed);
    for stage in [
        "authenticate",
        "validate",
        "decide",
        "prepare",
        "execute",
        "redact",
        "record",
        "audit",
    ] {
        assert!(stages.contains(stage), "no `{stage}` span under the intent: {stages:?}");
    }
    let execute = spans
        .iter()
        .find(|s| s.name == "execute" && s.parent_span_id == executed.span_id)
        .unwrap();
    assert_eq!(attribute(execute, "upstream_status").as_deref(), Some("201"));
    assert!(execute.end_time_unix_nano >= execute.start_time_unix_nano);

    let on_hold = intent(&held_id);
    assert_eq!(attribute(on_hold, "effect").as_deref(), Some("hold"));
    assert_eq!(attribute(on_hold, "status").as_deref(), Some("pending_approval"));
    let stages = children(on_hold);
    assert!(stages.contains("hold"), "{stages:?}");
    assert!(!stages.contains("execute"), "a held intent ran: {stages:?}");

    let refused = spans
        .iter()
        .find(|s| s.name == "intent" && attribute(s, "effect").as_deref() == Some("deny"))
        .expect("the denied intent's span");
    assert_eq!(attribute(refused, "status").as_deref(), Some("denied"));
    assert!(attribute(refused, "policies").unwrap().contains("no-urgent-from-bots"));

    // Nothing exported carries the credential (in any spelling) or the agent's raw values.
    for span in &spans {
        let text = all_text(span);
        assert_no_secret(&text, &secret, &format!("span `{}`", span.name));
        assert!(!text.contains(TOKEN_IN_INPUT), "span `{}`: {text}", span.name);
        assert!(!text.contains("ops@example.com"), "span `{}`: {text}", span.name);
    }
    for body in receiver.bodies() {
        assert_no_secret(&String::from_utf8_lossy(&body), &secret, "an OTLP request body");
    }
}

#[test]
fn json_logs_carry_the_intent_id_on_every_line_written_for_an_intent() {
    let env = Env::new();
    let secret = write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &config_with("logging: {format: json, level: info}\n"),
    );
    let token = env.add_agent(AGENT);
    let gateway = env.serve();
    let created = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "json logs"}}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let leaked = gateway.post_intent(&token, &json!({"action": "leak.bearer", "input": {}}));
    assert_eq!(leaked.status, 200);
    gateway.wait_for_log("\"executed\"", 2, Duration::from_secs(10));

    let log = gateway.log();
    assert_no_secret(&log, &secret, "the JSON log");
    let mut about_this_intent = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(entry["timestamp"].is_string() && entry["level"].is_string(), "{entry}");
        // A line written inside an intent's span names the intent.
        let Some(spans) = entry["spans"].as_array() else {
            continue;
        };
        let Some(intent) = spans.iter().find(|s| s["name"] == "intent") else {
            continue;
        };
        assert!(
            intent["intent_id"].is_string(),
            "a line in an intent span without its id: {line}"
        );
        if intent["intent_id"] == id.as_str() {
            about_this_intent += 1;
            assert_eq!(intent["action"], "tickets.create", "{line}");
            assert_eq!(intent["agent"], AGENT, "{line}");
        }
    }
    assert!(
        about_this_intent >= 2,
        "the decision and the execution are logged:\n{log}"
    );
}

#[test]
fn human_logs_name_the_intent_and_metrics_are_scraped_from_the_running_gateway() {
    let env = Env::new();
    write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &config_with("metrics: {enabled: true}\nadmins:\n  root: {role: admin}\n"),
    );
    env.write("policies/hold.cedar", HOLD_POLICY);
    let token = env.add_agent(AGENT);
    let root = env.person_token("root");
    let gateway = env.serve();
    let created = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "metrics"}}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let held = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": "m", "priority": "high"}}),
    );
    assert_eq!(held.status, 202);
    let held = held.json();
    let sha = held["approval"]["payload_sha256"].as_str().unwrap();
    let denial = json!({"reason": "not today", "payload_sha256": sha}).to_string();
    let path = format!("/v1/approvals/{}/deny", held["id"].as_str().unwrap());
    let denied = crate::http::post_json(gateway.addr, &path, Some(&root), denial.as_bytes());
    assert_eq!(denied.status, 200, "{}", denied.text());
    gateway.wait_for_log("executed", 1, Duration::from_secs(10));
    let log = gateway.log();
    let decided = log
        .lines()
        .find(|l| l.contains("decided") && l.contains(&id))
        .unwrap_or_else(|| panic!("no `decided` line naming the intent:\n{log}"));
    assert!(decided.contains(&format!("intent_id={id}")), "{decided}");

    let scraped = gateway.get("/metrics", None);
    assert_eq!(scraped.status, 200);
    assert!(
        scraped
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        scraped.headers
    );
    let text = scraped.text();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(
            series.starts_with("portcullis_") && series.chars().filter(|c| *c == '"').count() % 2 == 0,
            "{line}"
        );
        samples.insert(series.to_owned(), value);
    }
    let sample = |s: &str| {
        samples
            .get(s)
            .copied()
            .unwrap_or_else(|| panic!("no `{s}` in:\n{text}"))
    };
    assert_eq!(
        sample(r#"portcullis_intents_total{action="tickets.create",status="executed"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"portcullis_intents_total{action="tickets.create",status="pending_approval"}"#),
        1.0
    );
    assert_eq!(sample(r#"portcullis_decisions_total{effect="hold"}"#), 1.0);
    assert_eq!(sample(r#"portcullis_approvals_total{outcome="denied"}"#), 1.0);
    assert_eq!(sample("portcullis_pending_approvals"), 0.0);
    assert_eq!(sample("portcullis_intents_in_flight"), 0.0);
    assert_eq!(
        sample(r#"portcullis_upstream_responses_total{action="tickets.create",code="2xx"}"#),
        1.0
    );
    for stage in ["validate", "decide", "execute", "redact", "record"] {
        assert!(
            sample(&format!(
                r#"portcullis_stage_duration_seconds_count{{stage="{stage}"}}"#
            )) >= 1.0,
            "stage {stage}"
        );
    }
    assert!(sample("portcullis_audit_append_seconds_count") >= 3.0);
}

#[test]
fn health_and_readiness_report_their_checks() {
    let env = Env::new();
    write_standard_files(&env);
    let _token = env.add_agent(AGENT);
    let gateway = env.serve();
    let health = gateway.get("/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let ready = gateway.get("/readyz", None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["generation"], 1);
    let checks: BTreeSet<String> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|c| assert_eq!(c["ok"], true, "{c}"))
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        checks,
        ["audit", "policies", "serving", "store"].map(str::to_owned).into()
    );
}

/// Starts a gateway exporting to `receiver` with `tracing_extra` under `tracing:`, sends one
/// ticket with `title`, stops the gateway (which flushes the exporter) and returns the spans.
fn spans_of_one_ticket(
    receiver: &Receiver,
    tracing_extra: &str,
    title: &str,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    let env = Env::new();
    write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &config_with(&format!(
            "tracing:\n  otlp_endpoint: {}\n{tracing_extra}",
            receiver.endpoint()
        )),
    );
    let token = env.add_agent(AGENT);
    let mut gateway = env.serve();
    let created = gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "web", "title": title}}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    gateway.signal("TERM");
    assert_eq!(
        gateway.wait_exit(Duration::from_secs(20)),
        Some(Some(0)),
        "{}",
        gateway.log()
    );
    receiver.wait_for(Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "intent") && spans.iter().any(|s| s.name == "record")
    })
}

#[test]
fn by_default_no_span_carries_the_input() {
    let receiver = Receiver::start();
    // Nothing in it is sensitive, so only `payloads` could put it on a span.
    let title = "plain-title-that-only-the-input-carries-7d2c";
    let spans = spans_of_one_ticket(&receiver, "", title);
    let intent = spans.iter().find(|s| s.name == "intent").unwrap();
    assert_eq!(attribute(intent, "action").as_deref(), Some("tickets.create"));
    for span in &spans {
        assert!(
            attribute(span, "input").is_none(),
            "span `{}` carries the input",
            span.name
        );
        assert!(
            !all_text(span).contains(title),
            "span `{}`: {}",
            span.name,
            all_text(span)
        );
    }
    for body in receiver.bodies() {
        assert!(!String::from_utf8_lossy(&body).contains(title));
    }
}

#[test]
fn with_payloads_on_the_input_is_masked_then_cut_to_payload_max_bytes() {
    let receiver = Receiver::start();
    // The input's JSON is `{"project":"web","title":"` (26 bytes), 30 `a`s, a space, then the
    // address at bytes 57 to 72: masked before the cut at 64, none of it can show.
    let title = format!("{} ops@example.com and more text after it", "a".repeat(30));
    let spans = spans_of_one_ticket(&receiver, "  payloads: true\n  payload_max_bytes: 64\n", &title);
    let intent = spans.iter().find(|s| s.name == "intent").unwrap();
    let input = attribute(intent, "input").expect("payloads: true attaches the input");
    assert!(input.len() <= 64, "{} bytes: {input}", input.len());
    assert!(input.ends_with('…'), "{input}");
    assert!(
        input.starts_with(&format!(r#"{{"project":"web","title":"{}"#, "a".repeat(30))),
        "{input}"
    );
    assert!(input.contains(" [RED"), "the mask, cut: {input}");
    for span in &spans {
        let text = all_text(span);
        assert!(!text.contains("ops@"), "span `{}`: {text}", span.name);
        assert!(!text.contains("more text"), "span `{}`: {text}", span.name);
    }
}
