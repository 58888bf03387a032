//! Audit appends per second: SQLite (one file, `synchronous=FULL`) and PostgreSQL with 1, 2
//! and 4 gateway instances appending to one chain at once.
//!
//! `cargo bench -p portcullis-store --bench audit` prints one line per setup: appends per
//! second, the p50 and p99 time a caller waits for its durable receipt, and the ratio to
//! the one-instance run of the same backend, all measured in this run. Every run ends with
//! `verify_audit` over the whole chain, so a fast run that broke the chain fails loudly.
//!
//! An "instance" is a separate [`Store`]: its own connection pool and its own audit writer
//! task, which is everything a gateway process holds; what serializes instances (the
//! advisory lock and the chain head in PostgreSQL) is outside the process. The PostgreSQL
//! runs need `PORTCULLIS_TEST_DATABASE_URL` (a database the bench may create others
//! next to, e.g. `postgres://postgres@127.0.0.1:5432/test`); without it they are skipped.
//!
//! Arguments after `--`: the number of appends per run (default 20000) and the number of
//! concurrent appenders per instance (default 64).

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use portcullis_core::{ActionName, AgentId, AuditEvent, AuditKind, IntentId, sha256_hex};
use portcullis_store::Store;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const DEFAULT_APPENDS: usize = 20_000;
const DEFAULT_APPENDERS: usize = 64;

#[tokio::main]
async fn main() -> BenchResult<()> {
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let appends = numbers.first().copied().unwrap_or(DEFAULT_APPENDS);
    let appenders = numbers.get(1).copied().unwrap_or(DEFAULT_APPENDERS);
    println!("audit appends: {appends} per run, {appenders} concurrent appenders per instance");
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>8}",
        "setup", "appends/s", "p50 ms", "p99 ms", "ratio"
    );

    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let one = run("sqlite, 1 instance", &sqlite_url, 1, appends, appenders, None).await?;
    run("sqlite, 2 instances", &sqlite_url, 2, appends, appenders, Some(one)).await?;

    let Ok(admin) = std::env::var("PORTCULLIS_TEST_DATABASE_URL") else {
        println!("postgres: skipped, PORTCULLIS_TEST_DATABASE_URL is unset");
        return Ok(());
    };
    let mut baseline = None;
    for instances in [1, 2, 4] {
        let db = format!("pc_bench_{}_{instances}", std::process::id());
        let url = fresh_database(&admin, &db).await?;
        let label = format!(
            "postgres, {instances} instance{}",
            if instances == 1 { "" } else { "s" }
        );
        let rate = run(&label, &url, instances, appends, appenders, baseline).await;
        drop_database(&admin, &db).await?;
        baseline = baseline.or(rate.as_ref().ok().copied());
        rate?;
    }
    Ok(())
}

/// Appends `appends` events through `instances` stores with `appenders` tasks each; prints
/// and returns appends per second.
async fn run(
    label: &str,
    url: &str,
    instances: usize,
    appends: usize,
    appenders: usize,
    baseline: Option<f64>,
) -> BenchResult<f64> {
    let mut stores = Vec::with_capacity(instances);
    for _ in 0..instances {
        stores.push(Store::open(url).await?);
    }
    let before = stores[0].verify_audit().await?.events;
    let tasks = instances * appenders;
    let per_task = appends.div_ceil(tasks);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let store = stores[t % instances].clone();
        handles.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let sent = Instant::now();
                store.append(&event(t * per_task + i)).await?;
                waits.push(sent.elapsed());
            }
            Ok::<_, portcullis_store::StoreError>(waits)
        }));
    }
    let mut waits: Vec<Duration> = Vec::with_capacity(tasks * per_task);
    for h in handles {
        waits.extend(h.await??);
    }
    let elapsed = started.elapsed();
    let report = stores[0].verify_audit().await?;
    if !report.ok || report.events != before + waits.len() as u64 {
        return Err(format!("{label}: the chain is broken after the run: {:?}", report.problems).into());
    }
    waits.sort_unstable();
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let rate = waits.len() as f64 / elapsed.as_secs_f64();
    let ratio = baseline.map_or_else(|| "1.00".to_owned(), |b| format!("{:.2}", rate / b));
    println!(
        "{label:<28} {rate:>12.0} {:>10.2} {:>10.2} {ratio:>8}",
        at(0.5),
        at(0.99)
    );
    Ok(rate)
}

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        actor: None,
        kind: AuditKind::Decided,
        intent_id: IntentId::from_random([(n % 251) as u8; 16]),
        agent: AgentId::new(format!("agent-{}", n % 16)).unwrap_or_else(|_| unreachable!()),
        action: ActionName::new("github.create_issue").ok(),
        payload_sha256: Some(sha256_hex(n.to_string().as_bytes())),
        decision: None,
        dry_run: false,
        detail: serde_json::json!({"n": n, "labels": ["bug", "triage"], "title": "a typical issue title"}),
    }
}

async fn fresh_database(admin: &str, name: &str) -> BenchResult<String> {
    let options = PgConnectOptions::from_str(admin)?;
    let mut conn = options.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(options.database(name).to_url_lossy().to_string())
}

async fn drop_database(admin: &str, name: &str) -> BenchResult<()> {
    let mut conn = PgConnectOptions::from_str(admin)?.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}
