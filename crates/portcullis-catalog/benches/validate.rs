//! Latency of validating an intent's input against its action's JSON Schema.
//!
//! `cargo bench -p portcullis-catalog --bench validate` loads a catalog of typical actions
//! and times, call by call, [`ActionDef::validate`]: what the gateway does with every
//! intent's input (depth check, canonicalization of emails and whole numbers, the compiled
//! JSON Schema, RFC 8785 canonical JSON and its SHA-256). Four payloads:
//! - small: a one-field file read;
//! - typical: a GitHub-issue-like create (patterned strings, an enum, arrays of labels and
//!   of emails, a nullable integer, a nested object with URIs);
//! - a 10 KB issue, mostly a Markdown body;
//! - a 10 KB contact import: an array of 40 objects with emails, phones, enums, addresses.
//!
//! The baseline is `serde_json::from_str::<Value>` of the same payload text, measured in
//! the same run, interleaved with the other measurements so that a noisy shared machine
//! affects them alike. For reference it also times `json::parse_strict` (how the gateway
//! parses agent JSON), the schema check alone (`jsonschema` with the catalog's options),
//! canonical JSON and its hash alone, and parsing plus validation (the per-intent cost
//! from bytes). It prints p50 and p99 in µs and the ratio of each p50 to the baseline's,
//! with the number of calls that failed (must be 0) and, for each payload, how many
//! problems `validate` reports on a broken copy, so that a validator that checks nothing
//! does not pass for a fast one.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_catalog::{ActionDef, Catalog};
use portcullis_core::json::{self, Limits};
use serde_json::{Value, json};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Rounds, the measurements taking turns; calls timed per measurement and round.
const ROUNDS: usize = 20;
const CALLS: usize = 500;

/// Prepares its input, then times one call: how long it took and whether it succeeded.
type Measure = fn(&Payload) -> (Duration, bool);

/// What is timed.
const MEASUREMENTS: &[(&str, Measure)] = &[
    ("serde_json::from_str (baseline)", from_str),
    ("json::parse_strict (ref.)", parse_strict),
    ("ActionDef::validate", validate),
    ("  schema check alone (ref.)", schema_only),
    ("  canonical JSON + sha256 (ref.)", canonical_only),
    ("parse_strict + validate", parse_and_validate),
];

const ACTIONS: &str = r#"
name: files.get
description: Read a file
input:
  type: object
  required: [name]
  properties:
    name: {type: string, maxLength: 100, pattern: "^[A-Za-z0-9._-]+$"}
request: {method: GET, url: "https://files.example.com/files/{name}"}
---
name: github.create_issue
description: Create an issue in a GitHub repository
input:
  type: object
  required: [owner, repo, title]
  properties:
    owner: {type: string, pattern: "^[A-Za-z0-9-]{1,39}$"}
    repo: {type: string, pattern: "^[A-Za-z0-9._-]{1,100}$"}
    title: {type: string, minLength: 1, maxLength: 256}
    body: {type: string, maxLength: 65536}
    type: {type: string, enum: [bug, feature, task, question]}
    labels:
      type: array
      maxItems: 10
      uniqueItems: true
      items: {type: string, pattern: "^[a-z0-9][a-z0-9._-]{0,49}$"}
    assignees:
      type: array
      maxItems: 10
      items: {type: string, pattern: "^[A-Za-z0-9-]{1,39}$"}
    milestone: {type: [integer, "null"], minimum: 1}
    notify: {type: array, maxItems: 10, items: {type: string, format: email}}
    meta:
      type: object
      additionalProperties: false
      required: [source]
      properties:
        source: {type: string, enum: [triage-bot, ci, human]}
        ticket: {type: integer, minimum: 0}
        links: {type: array, maxItems: 10, items: {type: string, format: uri}}
resource: {type: Repo, id: "{owner}/{repo}"}
request:
  method: POST
  url: https://api.github.com/repos/{owner}/{repo}/issues
  body: {title: "{title}", body: "{body}", labels: "{labels}", assignees: "{assignees}"}
---
name: crm.import_contacts
description: Import contacts into a mailing list
input:
  type: object
  required: [list, contacts]
  properties:
    list: {type: string, pattern: "^[a-z0-9-]{1,40}$"}
    contacts:
      type: array
      minItems: 1
      maxItems: 500
      items:
        type: object
        additionalProperties: false
        required: [email, name]
        properties:
          email: {type: string, format: email}
          name: {type: string, minLength: 1, maxLength: 200}
          phone: {type: string, pattern: "^\\+[0-9 ]{7,20}$"}
          company: {type: string, maxLength: 200}
          tags:
            type: array
            uniqueItems: true
            items: {type: string, enum: [customer, lead, partner, press, vip, churned]}
          address:
            type: object
            additionalProperties: false
            properties:
              street: {type: string, maxLength: 200}
              city: {type: string, maxLength: 100}
              postal_code: {type: string, pattern: "^[0-9A-Z -]{3,10}$"}
              country: {type: string, pattern: "^[A-Z]{2}$"}
          consent: {type: boolean}
          score: {type: number, minimum: 0, maximum: 100}
request:
  method: POST
  url: https://crm.example.com/lists/{list}/contacts
  body: {contacts: "{contacts}"}
"#;

/// One payload: its text, parsed value, action, a compiled copy of the action's schema for
/// the reference measurement, and a copy that breaks the schema.
struct Payload {
    name: &'static str,
    action: Arc<ActionDef>,
    text: String,
    value: Value,
    broken: Value,
    schema: jsonschema::Validator,
}

fn main() -> BenchResult<()> {
    let catalog = Catalog::from_source(Path::new("actions.yaml"), ACTIONS, Limits::default())
        .map_err(|d| format!("the catalog does not load: {d:?}"))?;
    let payloads = payloads(&catalog)?;
    for p in &payloads {
        let valid = p.action.validate(p.value.clone())?;
        let problems = p
            .action
            .validate(p.broken.clone())
            .map_or_else(|e| e.problems().len(), |_| 0);
        println!(
            "{:<16} {:>6} bytes for `{}`: canonical {} bytes, sha256 {}…; broken copy: {problems} problem(s)",
            p.name,
            p.text.len(),
            p.action.name,
            valid.canonical_json().len(),
            &valid.sha256()[..12]
        );
        if problems == 0 {
            return Err(format!("{}: the broken copy validates", p.name).into());
        }
    }
    for p in &payloads {
        for (_, measure) in MEASUREMENTS {
            for _ in 0..CALLS {
                black_box(measure(p));
            }
        }
    }
    let mut samples = vec![vec![Vec::with_capacity(ROUNDS * CALLS); MEASUREMENTS.len()]; payloads.len()];
    let mut failed = vec![vec![0usize; MEASUREMENTS.len()]; payloads.len()];
    for _ in 0..ROUNDS {
        for (p, payload) in payloads.iter().enumerate() {
            for (m, (_, measure)) in MEASUREMENTS.iter().enumerate() {
                for _ in 0..CALLS {
                    let (elapsed, ok) = measure(payload);
                    samples[p][m].push(elapsed);
                    failed[p][m] += usize::from(!ok);
                }
            }
        }
    }
    println!();
    println!(
        "{:<16} {:<34} {:>9} {:>9} {:>10} {:>7}",
        "payload", "call", "p50 µs", "p99 µs", "p50 ratio", "failed"
    );
    for (p, payload) in payloads.iter().enumerate() {
        let baseline = p50_p99(&mut samples[p][0])[0];
        for (m, (label, _)) in MEASUREMENTS.iter().enumerate() {
            let [p50, p99] = p50_p99(&mut samples[p][m]);
            println!(
                "{:<16} {label:<34} {:>9.2} {:>9.2} {:>10.2} {:>7}",
                if m == 0 { payload.name } else { "" },
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                p50.as_secs_f64() / baseline.as_secs_f64(),
                failed[p][m]
            );
        }
    }
    Ok(())
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let out = black_box(f());
    (started.elapsed(), out)
}

fn from_str(p: &Payload) -> (Duration, bool) {
    let (d, v) = time(|| serde_json::from_str::<Value>(&p.text));
    (d, v.is_ok())
}

fn parse_strict(p: &Payload) -> (Duration, bool) {
    let (d, v) = time(|| json::parse_strict(p.text.as_bytes(), Limits::default()));
    (d, v.is_ok())
}

/// The value is cloned before the clock starts: the gateway hands over the value it parsed.
fn validate(p: &Payload) -> (Duration, bool) {
    let value = p.value.clone();
    let (d, v) = time(|| p.action.validate(value));
    (d, v.is_ok())
}

fn schema_only(p: &Payload) -> (Duration, bool) {
    time(|| p.schema.is_valid(&p.value))
}

fn canonical_only(p: &Payload) -> (Duration, bool) {
    let (d, hash) = time(|| json::canonical(&p.value).map(|c| portcullis_core::sha256_hex(c.as_bytes())));
    (d, hash.is_ok())
}

fn parse_and_validate(p: &Payload) -> (Duration, bool) {
    let (d, v) = time(|| {
        json::parse_strict(p.text.as_bytes(), Limits::default())
            .ok()
            .map(|value| p.action.validate(value).is_ok())
    });
    (d, v == Some(true))
}

/// p50 and p99 (nearest rank).
fn p50_p99(samples: &mut [Duration]) -> [Duration; 2] {
    samples.sort_unstable();
    [0.5, 0.99].map(|q| {
        let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1));
        samples.get(rank - 1).copied().unwrap_or_default()
    })
}

fn payloads(catalog: &Catalog) -> BenchResult<Vec<Payload>> {
    let small = json!({"name": "README.md"});
    let issue = |body: String| {
        json!({
            "owner": "acme",
            "repo": "widgets",
            "title": "Request fails with a timeout when the config file is missing",
            "body": body,
            "type": "bug",
            "labels": ["bug", "triage", "area.config"],
            "assignees": ["alice", "bob-smith"],
            "milestone": 12,
            "notify": ["Oncall@Example.com", "team-widgets@example.com"],
            "meta": {"source": "triage-bot", "ticket": 4711, "links": ["https://ci.example.com/runs/98213"]}
        })
    };
    let short_body = "### Describe the bug\n\nThe request fails after a 30 s timeout when `conf/app.toml` \
                      is missing.\n\n### To reproduce\n\n```\n$ widgets serve --config ./conf/app.toml\n```\n\n\
                      Version 1.4.2 on Linux."
        .to_owned();
    let typical = issue(short_body.clone());
    let long_issue = issue(long_body(&short_body, 9_500));
    let contacts = json!({"list": "newsletter-2026", "contacts": (0..40).map(contact).collect::<Vec<_>>()});

    let mut out = Vec::new();
    let cases = [
        ("small", "files.get", small, "/name", json!("no spaces allowed")),
        (
            "typical issue",
            "github.create_issue",
            typical,
            "/labels/0",
            json!("Bug"),
        ),
        (
            "10 KB issue",
            "github.create_issue",
            long_issue,
            "/type",
            json!("incident"),
        ),
        (
            "10 KB contacts",
            "crm.import_contacts",
            contacts,
            "/contacts/39/email",
            json!("not an email"),
        ),
    ];
    for (name, action, value, pointer, bad) in cases {
        let action = Arc::clone(catalog.get(action).ok_or("an action is missing from the catalog")?);
        let mut broken = value.clone();
        *broken.pointer_mut(pointer).ok_or("the broken field is missing")? = bad;
        // The catalog's options (`compile_schema` in `action.rs`).
        let schema = jsonschema::options()
            .offline()
            .should_validate_formats(true)
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&action.input_schema)?;
        out.push(Payload {
            name,
            action,
            text: value.to_string(),
            value,
            broken,
            schema,
        });
    }
    Ok(out)
}

/// A Markdown issue body of about `size` bytes: the short body, then log lines.
fn long_body(start: &str, size: usize) -> String {
    let mut body = format!("{start}\n\n### Logs\n\n```\n");
    let mut n = 0;
    while body.len() < size {
        body.push_str(&format!(
            "2026-01-05T10:{:02}:{:02}Z WARN widgets::config: retry {n} after backoff, path=./conf/app.toml err=NotFound\n",
            n / 60 % 60,
            n % 60
        ));
        n += 1;
    }
    body.push_str("```\n");
    body
}

fn contact(i: usize) -> Value {
    const NAMES: &[&str] = &[
        "Alice Martin",
        "Bob Schmidt",
        "Carol Dupont",
        "Dave O'Brien",
        "Erin Rossi",
    ];
    const CITIES: &[&str] = &["Lyon", "Berlin", "Dublin", "Milan", "Leeds"];
    const TAGS: &[&str] = &["customer", "lead", "partner", "press", "vip"];
    const COUNTRIES: &[&str] = &["FR", "DE", "IE", "IT", "GB"];
    json!({
        "email": format!("contact.{i}@Example{}.com", i % 7),
        "name": NAMES[i % NAMES.len()],
        "phone": format!("+44 20 7946 {:04}", i * 37 % 10_000),
        "company": format!("Company {} Ltd", i % 13),
        "tags": [TAGS[i % TAGS.len()], TAGS[(i + 2) % TAGS.len()]],
        "address": {
            "street": format!("{} High Street", 1 + i % 200),
            "city": CITIES[i % CITIES.len()],
            "postal_code": format!("{:05}", 10_000 + i * 97 % 90_000),
            "country": COUNTRIES[i % COUNTRIES.len()]
        },
        "consent": !i.is_multiple_of(3),
        "score": (i % 100) as f64 + 0.5
    })
}
