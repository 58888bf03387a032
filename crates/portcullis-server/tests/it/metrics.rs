//! `GET /metrics`: scraped after a few intents (allowed, denied, held, refused, rate limited,
//! credentials that can't be resolved, OAuth2 tokens fetched) and parsed line by line; every
//! count matches what was done, nothing an agent sent shows up, and the path is 404 unless
//! the configuration enables it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use portcullis_core::{AgentId, sha256_hex};
use portcullis_engine::{Gateway, Live};

const TOKEN: &str = "pcl_metrics-agent-token-never-in-the-output";
/// A title the agent sends: it must not become a label value.
const SECRET_TITLE: &str = "agent-chosen-title-8c1f";
/// An action name the agent invents.
const INVENTED: &str = "agent.invented-action-55e2";

const CONFIG: &str = r#"
store: sqlite://state.db
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
agents:
  support: {groups: [support]}
admins:
  lead: {role: approver, groups: [leads]}
quotas:
  tickets_hourly:
    actions: [tickets.create]
    window: 1h
    max: 2
METRICS
EXTRA
"#;

/// An environment variable no test sets.
const UNSET_VAR: &str = "PORTCULLIS_IT_NEVER_SET_5D1E";

/// Credentials that can't be resolved, and one OAuth2 client whose token endpoint is the
/// test upstream. Its client secret is a variable `cargo test` sets for every test process
/// (tests may not set variables themselves: `unsafe` is forbidden).
const CREDENTIALS: &str = r#"
credentials:
  missing_env:
    kind: bearer
    secret: env:UNSET_VAR
  oauth_ok:
    kind: oauth2_client_credentials
    token_url: http://127.0.0.1:UPSTREAM_PORT/token
    client_id: it-client
    client_secret: env:CARGO_PKG_NAME
  oauth_no_secret:
    kind: oauth2_client_credentials
    token_url: http://127.0.0.1:UPSTREAM_PORT/token
    client_id: it-client
    client_secret: env:UNSET_VAR
"#;

const CREDENTIAL_ACTIONS: &str = r#"
name: reports.plain
description: Read a report with a static token
input: {type: object}
request: {method: GET, url: "http://127.0.0.1:UPSTREAM_PORT/report"}
credential: missing_env
---
name: reports.oauth
description: Read a report with an OAuth2 token
input: {type: object}
request: {method: GET, url: "http://127.0.0.1:UPSTREAM_PORT/report"}
credential: oauth_ok
---
name: reports.broken
description: Read a report with an OAuth2 client that has no secret
input: {type: object}
request: {method: GET, url: "http://127.0.0.1:UPSTREAM_PORT/report"}
credential: oauth_no_secret
"#;

const CREDENTIAL_POLICIES: &str = r#"
@id("support-reports")
permit (principal in AgentGroup::"support", action in [Action::"reports.plain", Action::"reports.oauth", Action::"reports.broken"], resource);
"#;

const ACTIONS: &str = r#"
name: tickets.create
description: Create a ticket
input:
  type: object
  required: [title]
  properties:
    title: {type: string, maxLength: 200}
    priority: {type: string, enum: [low, high, urgent]}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/tickets
  body: {title: "{title}"}
"#;

const POLICIES: &str = r#"
@id("support-tickets")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource);

@id("no-urgent")
forbid (principal, action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "urgent" };

@id("high-needs-a-lead")
@hold("high-priority tickets need a lead")
@approvers("leads")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "high" };
"#;

pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub(crate) app: Router,
    pub(crate) live: Arc<Live>,
}

/// The upstream: tickets, a report, and an OAuth2 token endpoint that issues one token.
async fn upstream() -> u16 {
    let app = Router::new()
        .route(
            "/tickets",
            axum::routing::post(|| async { (StatusCode::CREATED, axum::Json(json!({"number": 1}))) }),
        )
        .route(
            "/report",
            axum::routing::get(|| async { axum::Json(json!({"rows": 3})) }),
        )
        .route(
            "/token",
            axum::routing::post(|| async {
                axum::Json(json!({"access_token": "it-access-token", "token_type": "Bearer", "expires_in": 3600}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

impl World {
    pub(crate) async fn new(metrics: bool) -> Self {
        Self::with(metrics, false).await
    }

    /// With `credentials`, also the credentials, actions and policy of [`CREDENTIALS`].
    pub(crate) async fn with(metrics: bool, credentials: bool) -> Self {
        let port = upstream().await.to_string();
        let dir = tempfile::tempdir().unwrap();
        let enabled = if metrics { "metrics: {enabled: true}" } else { "" };
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let text = text
                .replace("EXTRA", if credentials { CREDENTIALS } else { "" })
                .replace("UPSTREAM_PORT", &port)
                .replace("METRICS", enabled)
                .replace("UNSET_VAR", UNSET_VAR);
            std::fs::write(path, text).unwrap();
        };
        write("portcullis.yaml", CONFIG);
        write("actions/actions.yaml", ACTIONS);
        write("policies/policies.cedar", POLICIES);
        if credentials {
            write("actions/reports.yaml", CREDENTIAL_ACTIONS);
            write("policies/reports.cedar", CREDENTIAL_POLICIES);
        }
        let loaded = portcullis_engine::check(&dir.path().join("portcullis.yaml")).unwrap_or_else(|e| panic!("{e:?}"));
        let gateway = Arc::new(Gateway::open(loaded).await.unwrap());
        gateway
            .store()
            .add_agent(&AgentId::new("support").unwrap(), &sha256_hex(TOKEN.as_bytes()))
            .await
            .unwrap();
        let live = Live::new(gateway);
        let app = portcullis_server::router(Arc::clone(&live));
        Self { _dir: dir, app, live }
    }

    async fn submit(&self, body: &Value) -> StatusCode {
        self.send(body).await.0
    }

    /// Submits an intent; its status and body.
    pub(crate) async fn send(&self, body: &Value) -> (StatusCode, Value) {
        let request = Request::post("/v1/intents")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// `GET path`: its status and body.
    pub(crate) async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// `GET path`: its status and JSON body.
    pub(crate) async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.get_text(path).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn scrape(&self) -> (StatusCode, Option<String>, String) {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, String::from_utf8(bytes.to_vec()).unwrap())
    }
}

/// One sample: metric name and labels (sorted) → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses the text format: `# HELP`/`# TYPE` comments (each family's `TYPE` once, before its
/// samples) and `name{label="value",…} value` lines. Panics on anything else.
fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "HELP" => assert!(!rest.is_empty(), "{line}"),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram"].contains(&rest), "{line}");
                    assert!(
                        typed.insert(name.to_owned(), rest.to_owned()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
        };
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad name: {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample before its TYPE: {line}");
        let key = (name.to_owned(), labels);
        assert!(samples.insert(key, value).is_none(), "duplicate sample: {line}");
    }
    samples
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad labels: {text}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().unwrap_or_else(|| panic!("unterminated: {text}")) {
                (i, '"') => break i,
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}: {text}"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
    }
    labels
}

fn get(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    *samples
        .get(&(name.to_owned(), labels))
        .unwrap_or_else(|| panic!("no sample {name}"))
}

#[tokio::test]
async fn metrics_count_what_was_done_and_show_nothing_an_agent_sent() {
    let w = World::new(true).await;
    let create =
        |priority: &str| json!({"action": "tickets.create", "input": {"title": SECRET_TITLE, "priority": priority}});
    assert_eq!(w.submit(&create("low")).await, StatusCode::OK);
    assert_eq!(w.submit(&create("low")).await, StatusCode::OK);
    assert_eq!(w.submit(&create("urgent")).await, StatusCode::FORBIDDEN);
    assert_eq!(w.submit(&create("high")).await, StatusCode::ACCEPTED);
    assert_eq!(w.submit(&create("low")).await, StatusCode::TOO_MANY_REQUESTS);
    let invented = json!({"action": INVENTED, "input": {"title": SECRET_TITLE}});
    assert_eq!(w.submit(&invented).await, StatusCode::NOT_FOUND);
    let invalid = json!({"action": "tickets.create", "input": {"title": 5}});
    assert_eq!(w.submit(&invalid).await, StatusCode::BAD_REQUEST);

    let (status, content_type, text) = w.scrape().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for leaked in [TOKEN, SECRET_TITLE, INVENTED, "support"] {
        assert!(!text.contains(leaked), "`{leaked}` in the metrics:\n{text}");
    }
    let s = parse(&text);
    let intents = "portcullis_intents_total";
    let action = ("action", "tickets.create");
    assert_eq!(get(&s, intents, &[action, ("status", "executed")]), 2.0);
    assert_eq!(get(&s, intents, &[action, ("status", "denied")]), 1.0);
    assert_eq!(get(&s, intents, &[action, ("status", "pending_approval")]), 1.0);
    assert_eq!(get(&s, intents, &[action, ("status", "rate_limited")]), 1.0);
    assert_eq!(get(&s, intents, &[action, ("status", "rejected")]), 1.0);
    assert_eq!(get(&s, intents, &[("action", ""), ("status", "rejected")]), 1.0);
    // Three allows (the third is then rate limited), one deny, one hold.
    assert_eq!(get(&s, "portcullis_decisions_total", &[("effect", "allow")]), 3.0);
    assert_eq!(get(&s, "portcullis_decisions_total", &[("effect", "deny")]), 1.0);
    assert_eq!(get(&s, "portcullis_decisions_total", &[("effect", "hold")]), 1.0);
    let upstream = "portcullis_upstream_responses_total";
    assert_eq!(get(&s, upstream, &[action, ("code", "2xx")]), 2.0);
    assert_eq!(
        get(&s, "portcullis_rate_limited_total", &[("quota", "tickets_hourly")]),
        1.0
    );
    let duration = "portcullis_intent_duration_seconds";
    assert_eq!(get(&s, &format!("{duration}_count"), &[action]), 6.0);
    assert_eq!(get(&s, &format!("{duration}_bucket"), &[action, ("le", "+Inf")]), 6.0);
    assert!(get(&s, &format!("{duration}_sum"), &[action]) > 0.0);
    let stage = "portcullis_stage_duration_seconds_count";
    assert_eq!(get(&s, stage, &[("stage", "decide")]), 5.0);
    assert_eq!(get(&s, stage, &[("stage", "execute")]), 2.0);
    // Executed: decided + outcome, twice; denied and held: decided; rate limited: decided +
    // outcome; the two refused: one `rejected` event each.
    assert_eq!(get(&s, "portcullis_audit_append_seconds_count", &[]), 10.0);
    assert_eq!(get(&s, "portcullis_pending_approvals", &[]), 1.0);
    assert_eq!(get(&s, "portcullis_audit_queue_depth", &[]), 0.0);
    // Buckets are cumulative.
    let mut buckets: Vec<(f64, f64)> = s
        .iter()
        .filter(|((n, _), _)| n == "portcullis_audit_append_seconds_bucket")
        .map(|((_, l), v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), *v))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 15);
    assert_eq!(buckets.last().unwrap().1, 10.0);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
}

#[tokio::test]
async fn metrics_are_not_served_unless_enabled() {
    let w = World::new(false).await;
    let (status, _, _) = w.scrape().await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn credentials_that_cannot_be_resolved_and_oauth2_token_requests_are_counted_by_credential() {
    assert!(
        std::env::var("CARGO_PKG_NAME").is_ok(),
        "the OAuth2 client secret comes from CARGO_PKG_NAME, which `cargo test` sets"
    );
    let w = World::with(true, true).await;
    let call = |action: &str| json!({"action": action, "input": {}});
    // A static token from a variable that isn't set: the intent fails, nothing is sent.
    let (status, body) = w.send(&call("reports.plain")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{body}"
    );
    // One token fetched, then served from the cache.
    for _ in 0..2 {
        let (status, body) = w.send(&call("reports.oauth")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "executed", "{body}");
    }
    // No client secret: the token request fails before the endpoint, and so does the intent.
    let (status, body) = w.send(&call("reports.broken")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{body}"
    );

    let (status, _, text) = w.scrape().await;
    assert_eq!(status, StatusCode::OK);
    assert!(!text.contains("it-access-token"), "{text}");
    let s = parse(&text);
    let failures = "portcullis_credential_failures_total";
    assert_eq!(get(&s, failures, &[("credential", "missing_env")]), 1.0);
    assert_eq!(get(&s, failures, &[("credential", "oauth_no_secret")]), 1.0);
    assert!(
        !s.keys()
            .any(|(n, l)| n == failures && l.get("credential").is_some_and(|c| c == "oauth_ok")),
        "{text}"
    );
    let tokens = "portcullis_oauth2_token_requests_total";
    assert_eq!(get(&s, tokens, &[("credential", "oauth_ok"), ("outcome", "ok")]), 1.0);
    assert_eq!(
        get(&s, tokens, &[("credential", "oauth_no_secret"), ("outcome", "failed")]),
        1.0
    );
    assert!(
        !s.keys()
            .any(|(n, l)| n == tokens && l.get("credential").is_some_and(|c| c == "missing_env")),
        "a static credential makes no token request: {text}"
    );
    let intents = "portcullis_intents_total";
    assert_eq!(
        get(&s, intents, &[("action", "reports.plain"), ("status", "failed")]),
        1.0
    );
    assert_eq!(
        get(&s, intents, &[("action", "reports.oauth"), ("status", "executed")]),
        2.0
    );
}
