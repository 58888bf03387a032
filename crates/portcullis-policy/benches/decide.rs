//! Latency of one Cedar decision as the gateway makes it, with 10 to 10,000 policies, with
//! the gateway's allocator (mimalloc).
//!
//! `cargo bench -p portcullis-policy --bench decide` loads, for each size N, a catalog of
//! N/10 GitHub-issue-like actions and N policies written to `.cedar` files of a hundred
//! each, through [`PolicyEngine::load`] (schema generated from the catalog, strict
//! validation, the files read as `policies: [...]` has the gateway read them), and times
//! [`PolicyEngine::decide_as`] call by call: the call the gateway makes per intent, which
//! builds the Cedar context from the validated JSON input (checking it against the schema
//! only where that check could fail, and always in debug builds) and decides against the
//! whole loaded set. Each action has ten policies (permits for agent
//! groups, single agents and attributes, a `@hold`, forbids on labels, findings, resources,
//! amounts, email domains and text patterns, an `unless`), and one of them also names the
//! next action, so of the N policies loaded, about eleven have a scope that can admit the
//! decided action; the sixteen intents decided rotate over actions across the catalog.
//!
//! The baseline, measured in the same run, is an engine over the same catalog with no
//! policies: the fixed cost of a decision. Since a decision builds only the parts of the
//! context its action's policies read, and no policy reads any, that is the request and
//! the check of the input, not the context; the loaded engine's figure includes building
//! what its policies read. Sizes are measured in
//! interleaved rounds, so that a noisy shared machine affects them alike. It prints, per
//! size, p50/p99/p99.9 in µs for the baseline and the loaded engine, the ratio of each
//! to its baseline and to the 10-policy engine, how many decisions allowed, held and denied
//! and how many denials came from the gateway (an input that did not fit the context:
//! a bench that decides nothing must not pass for a fast one), and PASS or MISS against
//! the design budget (1,000 policies, p99 ≤ 50 µs).
//!
//! Pass sizes as arguments after `--` to measure others (e.g. `-- 1000`). With `PER_CASE=1`
//! in the environment it then times each intent alone (2,000 decisions each) and prints its
//! p50 and p99: the spread of one intent's decisions is the machine's, not the policies'.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_catalog::{ActionDef, Catalog, ValidInput};
use portcullis_core::json::Limits;
use portcullis_core::{AgentId, Effect};
use portcullis_policy::{AgentEntity, EntityDecl, EntityRef, PolicyEngine, PolicyInputs};
use portcullis_redact::detect::{Detector, JsonFinding};
use serde_json::{Map, json};

/// The gateway's allocator (see `crates/portcullis/src/main.rs`): a decision allocates
/// and frees hundreds of small values, and glibc's allocator would make it look slower than
/// the gateway makes it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Policy counts measured when none are given.
const DEFAULT_SIZES: &[usize] = &[10, 100, 1_000, 10_000];
/// Policies per action, and per `.cedar` file.
const PER_ACTION: usize = 10;
const FILE_POLICIES: usize = 100;
/// Agent groups (`team0` …), agents (`agent-00` …).
const GROUPS: usize = 8;
const AGENTS: usize = 16;
/// Decisions timed per engine: spread over this many rounds, the sizes taking turns.
const ROUNDS: usize = 20;
/// The design budget for 1,000 policies.
const BUDGET_POLICIES: usize = 1_000;
const BUDGET_P99: Duration = Duration::from_micros(50);
/// A Tuesday, 10:00 UTC: decisions are the same on every run.
const NOW_UNIX: i64 = 1_767_607_200;

fn main() -> BenchResult<()> {
    let mut sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = DEFAULT_SIZES.to_vec();
    }
    let dir = tempfile::tempdir()?;
    let detector = Detector::builtin();
    let mut setups = Vec::new();
    for &n in &sizes {
        let started = Instant::now();
        let setup = Setup::new(dir.path(), n, &detector)?;
        println!(
            "{n:>6} policies over {:>4} actions: loaded {} in {:.2} s",
            setup.catalog.len(),
            setup.full.policy_count(),
            started.elapsed().as_secs_f64()
        );
        setups.push(setup);
    }
    // Fewer decisions for the largest sets, so that the run stays within a few minutes.
    let per_round: Vec<usize> = sizes
        .iter()
        .map(|&n| if n > BUDGET_POLICIES { 100 } else { 1_000 })
        .collect();
    for setup in &setups {
        for case in 0..setup.cases.len() * 20 {
            black_box(setup.decide(&setup.full, case));
            black_box(setup.decide(&setup.empty, case));
        }
    }
    let mut results: Vec<Results> = setups.iter().map(|_| Results::default()).collect();
    for round in 0..ROUNDS {
        for ((setup, result), &count) in setups.iter().zip(&mut results).zip(&per_round) {
            for i in 0..count {
                let case = round * count + i;
                result.baseline.push(setup.time(&setup.empty, case).0);
                let (elapsed, effect, gateway) = setup.time(&setup.full, case);
                result.full.push(elapsed);
                result.count(effect, gateway);
            }
        }
    }
    report(&sizes, &mut results);
    if std::env::var_os("PER_CASE").is_some() {
        for setup in &setups {
            for c in 0..setup.cases.len() {
                let mut v: Vec<Duration> = (0..2000).map(|_| setup.time(&setup.full, c).0).collect();
                let p = percentiles(&mut v);
                println!(
                    "{:>8} intent {c:2}: p50 {:7.1} µs, p99 {:7.1} µs, {:?}",
                    setup.full.policy_count(),
                    p[0].as_secs_f64() * 1e6,
                    p[1].as_secs_f64() * 1e6,
                    setup.decide(&setup.full, c)
                );
            }
        }
    }
    Ok(())
}

/// One size: a catalog, an engine with the policies and one without, and the intents decided.
struct Setup {
    catalog: Catalog,
    full: PolicyEngine,
    empty: PolicyEngine,
    cases: Vec<Case>,
}

/// One intent: who asks for what, with the validated input and what the detector found in
/// it (as the gateway has them when it decides).
struct Case {
    agent: AgentId,
    action: Arc<ActionDef>,
    input: ValidInput,
    findings: Vec<JsonFinding>,
}

impl Setup {
    fn new(dir: &Path, n: usize, detector: &Detector) -> BenchResult<Self> {
        let actions = n.div_ceil(PER_ACTION);
        let catalog = Catalog::from_source(Path::new("actions.yaml"), &catalog_yaml(actions), Limits::default())
            .map_err(|d| format!("the catalog does not load: {d:?}"))?;
        // One file per hundred policies (ten actions), as a team or a service would keep them.
        let files = policies(n, actions)
            .chunks(FILE_POLICIES)
            .enumerate()
            .map(|(f, chunk)| {
                let file = dir.join(format!("{n}-team{f:03}.cedar"));
                std::fs::write(&file, chunk.concat()).map(|()| file)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let agents = agents();
        let entities = entities();
        let load = |files: &[PathBuf]| {
            PolicyEngine::load(PolicyInputs {
                catalog: &catalog,
                agents: &agents,
                entities: &entities,
                policy_files: files,
                counters: &BTreeMap::new(),
                claim_attributes: &[],
            })
            .map_err(|d| format!("the policies do not load: {d:?}"))
        };
        let full = load(&files)?;
        let empty = load(&[])?;
        if full.policy_count() != n {
            return Err(format!("{} policies loaded, not {n}", full.policy_count()).into());
        }
        let cases = cases(&catalog, actions, detector)?;
        Ok(Self {
            catalog,
            full,
            empty,
            cases,
        })
    }

    fn decide(&self, engine: &PolicyEngine, case: usize) -> Effect {
        let case = &self.cases[case % self.cases.len()];
        let now = now();
        engine
            .decide_as(
                &case.agent,
                None,
                &case.action,
                case.input.clone(),
                &case.findings,
                &[],
                now,
            )
            .decision()
            .effect
    }

    /// One decision, timed alone: the input is cloned before the clock starts, as the
    /// gateway hands over the input it validated. Returns whether the gateway denied it
    /// itself (no policy determined it, for want of a context or by an evaluation error).
    fn time(&self, engine: &PolicyEngine, case: usize) -> (Duration, Effect, bool) {
        let case = &self.cases[case % self.cases.len()];
        let action = &case.action;
        let input = case.input.clone();
        let now = now();
        let started = Instant::now();
        let decided = engine.decide_as(&case.agent, None, action, input, &case.findings, &[], now);
        let elapsed = started.elapsed();
        let decision = black_box(decided.decision());
        let gateway = decision.policies.is_empty() && !decision.reasons.iter().any(|r| r.starts_with("no policy"));
        (elapsed, decision.effect, gateway)
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(NOW_UNIX).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[derive(Default)]
struct Results {
    baseline: Vec<Duration>,
    full: Vec<Duration>,
    allow: usize,
    hold: usize,
    deny: usize,
    gateway_deny: usize,
}

impl Results {
    fn count(&mut self, effect: Effect, gateway: bool) {
        match effect {
            Effect::Allow => self.allow += 1,
            Effect::Hold => self.hold += 1,
            Effect::Deny => self.deny += 1,
        }
        self.gateway_deny += usize::from(gateway);
    }
}

fn report(sizes: &[usize], results: &mut [Results]) {
    println!();
    println!(
        "{:>8} {:<22} {:>9} {:>9} {:>9} {:>10} {:>9}   decisions",
        "policies", "engine", "p50 µs", "p99 µs", "p99.9 µs", "p50 ratio", "vs 10"
    );
    let ten = sizes
        .iter()
        .zip(results.iter_mut())
        .find(|(n, _)| **n == 10)
        .map(|(_, r)| percentiles(&mut r.full)[0]);
    for (&n, r) in sizes.iter().zip(results.iter_mut()) {
        let base = percentiles(&mut r.baseline);
        let full = percentiles(&mut r.full);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{n:>8} {:<22} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>9}   {} timed",
            "none loaded (baseline)",
            us(base[0]),
            us(base[1]),
            us(base[2]),
            "1.00",
            "",
            r.baseline.len()
        );
        let vs_ten = ten.map_or_else(String::new, |t| {
            format!("{:.2}", full[0].as_secs_f64() / t.as_secs_f64())
        });
        println!(
            "{n:>8} {:<22} {:>9.1} {:>9.1} {:>9.1} {:>10.2} {vs_ten:>9}   {} allow, {} hold, {} deny ({} by the gateway)",
            format!("{n} loaded"),
            us(full[0]),
            us(full[1]),
            us(full[2]),
            full[0].as_secs_f64() / base[0].as_secs_f64(),
            r.allow,
            r.hold,
            r.deny,
            r.gateway_deny
        );
        if n == BUDGET_POLICIES {
            let verdict = if full[1] <= BUDGET_P99 { "PASS" } else { "MISS" };
            println!(
                "{:>8} budget: p99 {:.1} µs vs {} µs: {verdict}",
                "",
                us(full[1]),
                BUDGET_P99.as_micros()
            );
        }
    }
}

/// p50, p99 and p99.9 (nearest rank).
fn percentiles(samples: &mut [Duration]) -> [Duration; 3] {
    samples.sort_unstable();
    [0.5, 0.99, 0.999].map(|q| {
        let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1));
        samples.get(rank - 1).copied().unwrap_or_default()
    })
}

fn action_name(k: usize) -> String {
    format!("tracker{k:04}.create_issue")
}

/// `actions` GitHub-issue-like actions: strings with patterns, an enum, a number, arrays of
/// labels and of emails, a boolean and a nested object.
fn catalog_yaml(actions: usize) -> String {
    (0..actions)
        .map(|k| {
            format!(
                r#"name: {name}
description: Create an issue in tracker {k}
input:
  type: object
  required: [owner, repo, title]
  properties:
    owner: {{type: string, pattern: "^[A-Za-z0-9-]{{1,39}}$"}}
    repo: {{type: string, pattern: "^[A-Za-z0-9._-]{{1,100}}$"}}
    title: {{type: string, minLength: 1, maxLength: 256}}
    body: {{type: string, maxLength: 65536}}
    labels:
      type: array
      maxItems: 10
      uniqueItems: true
      items: {{type: string, pattern: "^[a-z0-9][a-z0-9._-]{{0,49}}$"}}
    priority: {{type: string, enum: [low, normal, high, urgent]}}
    estimate: {{type: number, minimum: 0}}
    assignees: {{type: array, maxItems: 5, items: {{type: string, format: email}}}}
    draft: {{type: boolean}}
    meta:
      type: object
      properties:
        source: {{type: string}}
        ticket: {{type: integer}}
resource: {{type: Repo, id: "{{owner}}/{{repo}}"}}
request:
  method: POST
  url: https://tracker{k}.example.com/repos/{{owner}}/{{repo}}/issues
  body: {{title: "{{title}}", body: "{{body}}", labels: "{{labels}}"}}
"#,
                name = action_name(k)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `n` policies, ten per action (the last action may have fewer).
fn policies(n: usize, actions: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = i / PER_ACTION;
        let a = format!("Action::\"{}\"", action_name(k));
        let b = format!("Action::\"{}\"", action_name((k + 1) % actions));
        let text = match i % PER_ACTION {
            0 => format!(
                "@reason(\"team {g} opens issues in the allowed repositories\")\n\
                 permit (principal in AgentGroup::\"team{g}\", action == {a}, resource in RepoList::\"allowed\")\n\
                 unless {{ context.input has draft && context.input.draft }};",
                g = k % GROUPS
            ),
            1 => format!(
                "permit (principal == Agent::\"agent-{:02}\", action in [{a}, {b}], resource)\n\
                 when {{ context.input has priority && context.input.priority != \"urgent\" }};",
                k % AGENTS
            ),
            2 => format!(
                "@hold(\"high-priority issues in tracker {k} need a person\")\n@approvers(\"leads\")\n\
                 permit (principal in AgentGroup::\"team{}\", action == {a}, resource)\n\
                 when {{ context.input has priority && context.input.priority == \"high\" }};",
                (k + 1) % GROUPS
            ),
            3 => format!(
                "@reason(\"agents may not label an issue `prod`\")\n\
                 forbid (principal, action == {a}, resource)\n\
                 when {{ context.input has labels && context.input.labels.contains(\"prod\") }};"
            ),
            4 => format!(
                "@reason(\"the issue would publish a credential\")\n\
                 forbid (principal, action == {a}, resource) when {{ context.findings.categories.contains(\"secret\") }};"
            ),
            5 => format!("forbid (principal, action == {a}, resource == Repo::\"acme/frozen-{k}\");"),
            6 => format!(
                "permit (principal in AgentGroup::\"team{}\", action == {a}, resource)\n\
                 when {{ principal has level && principal.level >= 2 && context.input.owner == \"acme\" }};",
                (k + 3) % GROUPS
            ),
            7 => format!(
                "forbid (principal, action == {a}, resource)\n\
                 when {{ context.input has estimate && context.input.estimate.greaterThan(decimal(\"40.0\")) }};"
            ),
            8 => format!(
                "forbid (principal, action == {a}, resource)\n\
                 when {{ context.derived has assignees &&\n\
                 !Allowlist::\"domains\".values.containsAll(context.derived.assignees.domains) }};"
            ),
            _ => format!(
                "forbid (principal, action == {a}, resource)\n\
                 unless {{ resource in RepoList::\"allowed\" && !(context.input.title like \"*DROP TABLE*\") &&\n\
                 (context.now.hour >= 6 || principal in AgentGroup::\"oncall\") }};"
            ),
        };
        out.push(format!("@id(\"p{i:05}\")\n{text}\n\n"));
    }
    out
}

/// `agent-NN` in groups `teamN%8` and `team(N+1)%8`, with a team name and a level.
fn agents() -> BTreeMap<String, AgentEntity> {
    (0..AGENTS)
        .map(|i| {
            let mut attributes = Map::new();
            attributes.insert("team".into(), json!(format!("team{}", i % GROUPS)));
            attributes.insert("level".into(), json!(i % 4));
            let mut groups = vec![format!("team{}", i % GROUPS), format!("team{}", (i + 1) % GROUPS)];
            if i % 5 == 0 {
                groups.push("oncall".into());
            }
            (format!("agent-{i:02}"), AgentEntity { attributes, groups })
        })
        .collect()
}

fn entities() -> Vec<EntityDecl> {
    let entity = |entity_type: &str, id: &str| EntityRef {
        entity_type: entity_type.into(),
        id: id.into(),
    };
    let mut allow = Map::new();
    allow.insert("values".into(), json!(["example.com", "partner.org"]));
    let mut list = vec![
        EntityDecl {
            uid: entity("RepoList", "allowed"),
            attrs: Map::new(),
            parents: vec![],
        },
        EntityDecl {
            uid: entity("Allowlist", "domains"),
            attrs: allow,
            parents: vec![],
        },
    ];
    for repo in ["acme/widgets", "acme/docs", "acme/gateway", "partner/sdk"] {
        list.push(EntityDecl {
            uid: entity("Repo", repo),
            attrs: Map::new(),
            parents: vec![entity("RepoList", "allowed")],
        });
    }
    list
}

/// Sixteen intents over actions spread across the catalog: allowed, held, forbidden by
/// label, by a pasted secret, by an outside assignee, by a frozen repository, and not
/// permitted at all.
fn cases(catalog: &Catalog, actions: usize, detector: &Detector) -> BenchResult<Vec<Case>> {
    let issue = |priority: &str, labels: &[&str]| {
        json!({
            "owner": "acme",
            "repo": "widgets",
            "title": "Request fails when config is missing",
            "body": "### Describe the bug\n\nThe request fails after a timeout when the config is missing.\n\n\
                     ### To reproduce\n\n```\n$ widgets serve --config ./conf/app.toml\n```\n\nVersion 1.4.2.",
            "labels": labels,
            "priority": priority,
            "estimate": 3.5,
            "assignees": ["alice@example.com", "Bob@Partner.org"],
            "draft": false,
            "meta": {"source": "triage-bot", "ticket": 4711}
        })
    };
    let mut inputs = [
        issue("normal", &["bug", "triage"]),
        issue("high", &["bug"]),
        issue("low", &["bug", "prod"]),
        issue("normal", &["docs"]),
        issue("urgent", &["incident"]),
    ];
    inputs[3]["body"] = json!("my token is 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, sorry");
    inputs[4]["assignees"] = json!(["mallory@evil.test"]);
    let mut cases = Vec::new();
    for c in 0..16 {
        let k = (c * actions / 16 + c) % actions;
        // Agents in the action's permitting group, its holding group, and in neither.
        let agent = match c % 3 {
            0 => k % GROUPS,
            1 => (k + 1) % GROUPS + GROUPS,
            _ => (k + 5) % GROUPS,
        };
        let mut input = inputs[c % inputs.len()].clone();
        if c % 7 == 6 {
            input["repo"] = json!(format!("frozen-{k}"));
        }
        let action = catalog
            .get(&action_name(k))
            .ok_or("an action is missing from the catalog")?;
        let input = action
            .validate(input)
            .map_err(|e| format!("a case does not validate: {e}"))?;
        let findings = detector.scan_json(input.value());
        cases.push(Case {
            agent: AgentId::new(format!("agent-{agent:02}"))?,
            action: Arc::clone(action),
            input,
            findings,
        });
    }
    Ok(cases)
}
