//! The standard setup most tests share, modelled on `examples/quickstart`: one upstream
//! token stored with `secret set`, injected three ways (bearer, query, basic), two agents,
//! actions against the demo upstream, and policies with reasons.

use base64::Engine as _;
use serde_json::Value;

use crate::harness::{Env, Gateway, random_secret};

/// The agent most tests act as (group `support`).
pub const AGENT: &str = "support-bot";
/// A second agent that may only create tickets (group `other`).
pub const OTHER: &str = "other-bot";
/// The user name of the `basic` credential.
pub const BASIC_USER: &str = "demo-user";

pub const CONFIG: &str = r#"
listen: 127.0.0.1:8080
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  support-bot:
    attributes: {team: support}
    groups: [support]
  other-bot:
    groups: [other]
credentials:
  tracker:
    kind: bearer
    secret: tracker_token
  tracker_query:
    kind: query
    param: api_key
    secret: tracker_token
  tracker_basic:
    kind: basic
    username: demo-user
    secret: tracker_token
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 5000
limits:
  max_body_bytes: 4096
  max_depth: 8
"#;

pub const TICKETS: &str = r#"
name: tickets.create
description: Create a ticket in the demo tracker
input:
  type: object
  required: [project, title]
  properties:
    project: {type: string, pattern: "^[a-z0-9-]{1,40}$"}
    title: {type: string, minLength: 1, maxLength: 200}
    body: {type: string, maxLength: 1000}
    priority: {type: string, enum: [low, normal, high, urgent]}
resource: {type: Project, id: "{project}"}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/tickets
  headers: {Accept: application/json}
  body: {project: "{project}", title: "{title}", body: "{body}", priority: "{priority}"}
credential: tracker
response:
  keep: [/number, /title, /state, /url]
---
name: files.get
description: Read a file by name
input:
  type: object
  required: [name]
  properties:
    name: {type: string, minLength: 1, maxLength: 100}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/files/{name}
credential: tracker
---
name: admin.purge
description: Purge everything (only admins; invisible to the support bot)
input:
  type: object
  properties: {}
request:
  method: DELETE
  url: http://127.0.0.1:UPSTREAM_PORT/everything
credential: tracker
"#;

pub const LEAKS: &str = r#"
name: leak.bearer
description: A hostile upstream that echoes the Authorization header
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/leak
credential: tracker
response:
  headers: [x-echo]
---
name: leak.query
description: A hostile upstream that echoes the query string
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/leak
credential: tracker_query
response:
  headers: [x-echo]
---
name: leak.basic
description: A hostile upstream that echoes basic credentials
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/leak
credential: tracker_basic
response:
  headers: [x-echo]
---
name: search
description: Search; the agent's text goes into the query next to a query credential
input:
  type: object
  required: [q]
  properties:
    q: {type: string, maxLength: 200}
    label: {type: string, maxLength: 200}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/search?q={q}
  headers: {X-Search-Label: "{label}"}
credential: tracker_query
"#;

pub const POLICIES: &str = r#"
@id("support-creates-tickets")
@reason("support bots may create tickets")
permit (
  principal in AgentGroup::"support",
  action == Action::"tickets.create",
  resource
);

@id("other-creates-tickets")
@reason("other bots may create tickets too")
permit (principal in AgentGroup::"other", action == Action::"tickets.create", resource);

@id("no-urgent-from-bots")
@reason("agents may not open urgent tickets; page a human instead")
forbid (principal, action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "urgent" };

@id("support-reads")
@reason("support bots may read files and call the leaky endpoints")
permit (
  principal in AgentGroup::"support",
  action in [Action::"files.get", Action::"leak.bearer", Action::"leak.query", Action::"leak.basic", Action::"search"],
  resource
);

@id("admins-purge")
permit (principal in AgentGroup::"admins", action == Action::"admin.purge", resource);
"#;

/// The standard setup, running.
#[derive(Debug)]
pub struct Standard {
    pub gateway: Gateway,
    pub env: Env,
    /// The support bot's token.
    pub token: String,
    /// The other bot's token.
    pub other_token: String,
    /// The upstream token stored as `tracker_token`.
    pub secret: String,
}

/// Writes the standard files into `env` and stores a new secret; returns the secret.
pub fn write_standard_files(env: &Env) -> String {
    env.write("portcullis.yaml", CONFIG);
    env.write("actions/tickets.yaml", TICKETS);
    env.write("actions/leaks.yaml", LEAKS);
    env.write("policies/policies.cedar", POLICIES);
    let secret = random_secret("tracker");
    env.set_secret("tracker_token", &secret);
    secret
}

/// Writes the standard files, stores the secret, creates both agents and starts the gateway.
pub fn standard() -> Standard {
    let env = Env::new();
    let secret = write_standard_files(&env);
    let token = env.add_agent(AGENT);
    let other_token = env.add_agent(OTHER);
    let gateway = env.serve();
    Standard {
        gateway,
        env,
        token,
        other_token,
        secret,
    }
}

impl Standard {
    pub fn intent(&self, body: &Value) -> crate::http::Response {
        self.gateway.post_intent(&self.token, body)
    }
}

/// Every spelling of `secret` that must never reach an agent: the value, its base64
/// (standard and URL-safe), its percent- and form-encodings, and base64 of `user:secret`.
pub fn forbidden_spellings(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        secret.to_owned(),
        b64.encode(secret),
        b64url.encode(secret),
        percent_encode(secret, false),
        percent_encode(secret, true),
        b64.encode(format!("{BASIC_USER}:{secret}")),
    ]
}

/// RFC 3986 percent-encoding of everything but unreserved characters; `lower` picks the
/// case of the hex digits.
pub fn percent_encode(s: &str, lower: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded` text.
pub fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Decodes `%XX` escapes (once); everything else is kept as is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

/// Asserts no spelling of `secret` appears in `text`, nor in any string inside it when it
/// is JSON (whose escapes a client would decode).
pub fn assert_no_secret(text: &str, secret: &str, context: &str) {
    let mut haystacks = vec![text.to_owned()];
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        collect_strings(&v, &mut haystacks);
    }
    for spelling in forbidden_spellings(secret) {
        for h in &haystacks {
            assert!(
                !h.contains(&spelling),
                "{context}: found the secret (as `{spelling}`) in:\n{h}"
            );
        }
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            collect_strings(x, out);
        }),
        _ => {}
    }
}

/// The detector above is what makes "the agent never sees the secret" a real check: it
/// must find every spelling, including one hidden behind a JSON escape.
#[test]
fn the_secret_detector_finds_every_spelling() {
    let secret = random_secret("self-test");
    let fires = |text: String| std::panic::catch_unwind(|| assert_no_secret(&text, &secret, "self-test")).is_err();
    for spelling in forbidden_spellings(&secret) {
        assert!(
            fires(format!(r#"{{"x": "..{spelling}.."}}"#)),
            "`{spelling}` is not found"
        );
    }
    let (first, rest) = secret.split_at(1);
    let escaped = format!(r#"{{"x": "\u{:04x}{rest}"}}"#, u32::from(first.as_bytes()[0]));
    assert!(!escaped.contains(&secret));
    assert!(fires(escaped), "a JSON-escaped secret is not found");
    assert!(!fires("Bearer <redacted>".to_owned()));
}

/// An action whose upstream call takes four seconds (longer than a two-second timeout), for
/// the crash tests, and the policy that lets the support bot call it.
pub const SLOW: &str = r#"
name: slow.get
description: An upstream call that takes four seconds (longer than the two-second timeout)
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/slow?seconds=4
credential: tracker
"#;

pub const SLOW_POLICY: &str = r#"
@id("support-waits")
permit (principal in AgentGroup::"support", action == Action::"slow.get", resource);
"#;

/// High-priority tickets wait for a person (any approver).
pub const HOLD_POLICY: &str = r#"
@id("high-needs-a-person")
@hold("high-priority tickets need a person")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "high" };
"#;

/// A refund of part of an order, for quota tests. The schema lets any number through,
/// negative ones included: the quota refuses those.
pub const REFUND_ACTION: &str = r#"
name: refunds.create
description: Refund part of an order
input:
  type: object
  required: [order, amount]
  properties:
    order: {type: string, pattern: "^[0-9]{1,10}$"}
    amount: {type: number}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/echo
  body: {order: "{order}", amount: "{amount}"}
credential: tracker
"#;

/// Refunds run without approval until half of the `refunds-per-day` quota is used, and are
/// held for a finance approver after that (`context.counters`).
pub const REFUND_HALF_BUDGET_POLICIES: &str = r#"
@id("refunds-while-budget-lasts")
@reason("refunds run without approval until half of the day's budget is used")
permit (principal in AgentGroup::"support", action == Action::"refunds.create", resource)
when { context.counters["refunds-per-day"].percent < 50 };

@id("refunds-past-half-need-finance")
@hold("half of today's refund budget is used; a finance approver must confirm")
@approvers("finance")
permit (principal in AgentGroup::"support", action == Action::"refunds.create", resource)
when { context.counters["refunds-per-day"].percent >= 50 };
"#;
