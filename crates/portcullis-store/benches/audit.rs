//! Audit appends per second: SQLite (one file, `synchronous=FULL`) and PostgreSQL with 1, 2
//! and 4 gateway instances appending to one chain at once.
//!
//! `cargo bench -p portcullis-store --bench audit` prints one line per setup: appends per
//! second, the p50 and p99 time a caller waits for its durable receipt, and the ratio to
//! the one-instance run of the same backend, all measured in this run. Every run ends with
//! `verify_audit` over the whole chain, so a fast run that broke the chain fails loudly.
//!
//! An "instance" is a separate process (this bench started again with `--instance`) with its
//! own [`Store`]: its own connection pool and audit writer, as a gateway process has. What
//! serializes instances (the advisory lock and the chain head in PostgreSQL, the file lock
//! in SQLite) is outside every process. The instances open their stores, then all start
//! appending when told to; the rate is every instance's appends over the time from that
//! start until the last one is done. The PostgreSQL
//! runs need `PORTCULLIS_TEST_DATABASE_URL` (a database the bench may create others
//! next to, e.g. `postgres://postgres@127.0.0.1:5432/test`); without it they are skipped.
//!
//! Arguments after `--`: the number of appends per run (default 20000) and the number of
//! concurrent appenders per instance (default 64).

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--instance") {
        return instance(&args[2..]).await;
    }
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

/// Appends `appends` events through `instances` processes with `appenders` tasks each;
/// prints and returns appends per second.
async fn run(
    label: &str,
    url: &str,
    instances: usize,
    appends: usize,
    appenders: usize,
    baseline: Option<f64>,
) -> BenchResult<f64> {
    let store = Store::open(url).await?;
    let before = store.verify_audit().await?.events;
    let per_instance = appends.div_ceil(instances);
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(instances);
    for i in 0..instances {
        let mut child = Command::new(&exe)
            .args([
                "--instance".to_owned(),
                url.to_owned(),
                appenders.to_string(),
                per_instance.to_string(),
                (i * per_instance).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut ready = String::new();
        out.read_line(&mut ready)?;
        if ready.trim() != "ready" {
            return Err(format!("{label}: instance {i} did not start: {ready:?}").into());
        }
        children.push((child, out));
    }
    let started = Instant::now();
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().ok_or("no stdin")?, "go")?;
    }
    // Each instance prints how long each of its callers waited, in microseconds, one per line.
    let mut waits: Vec<Duration> = Vec::with_capacity(appends);
    for (mut child, out) in children {
        for line in out.lines() {
            waits.push(Duration::from_micros(line?.trim().parse()?));
        }
        if !child.wait()?.success() {
            return Err(format!("{label}: an instance failed").into());
        }
    }
    let elapsed = started.elapsed();
    let report = store.verify_audit().await?;
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

/// One instance: `URL APPENDERS APPENDS FIRST`. Opens its store, says `ready`, waits for a
/// line on standard input, appends events `FIRST..FIRST+APPENDS` from `APPENDERS` tasks, and
/// prints each append's wait in microseconds.
async fn instance(args: &[String]) -> BenchResult<()> {
    let [url, appenders, appends, first] = args else {
        return Err("usage: --instance URL APPENDERS APPENDS FIRST".into());
    };
    let (appenders, appends, first): (usize, usize, usize) = (appenders.parse()?, appends.parse()?, first.parse()?);
    let store = Store::open(url).await?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let per_task = appends.div_ceil(appenders);
    let mut handles = Vec::with_capacity(appenders);
    for t in 0..appenders {
        let store = store.clone();
        let from = first + t * per_task;
        let to = (from + per_task).min(first + appends);
        handles.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(per_task);
            for n in from..to {
                let sent = Instant::now();
                store.append(&event(n)).await?;
                waits.push(sent.elapsed());
            }
            Ok::<_, portcullis_store::StoreError>(waits)
        }));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for h in handles {
        for wait in h.await?? {
            writeln!(out, "{}", wait.as_micros())?;
        }
    }
    out.flush()?;
    Ok(())
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
