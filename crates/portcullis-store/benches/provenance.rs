//! Provenance lookups stay flat as the store fills: the time to look up one intent's input
//! values (20 hashes) in a session, with 10,000, 100,000 and 1,000,000 values recorded over
//! many sessions, on SQLite (and PostgreSQL when `PORTCULLIS_TEST_DATABASE_URL` is set).
//!
//! `cargo bench -p portcullis-store --bench provenance` prints, per size, the p50 and p99
//! of a lookup and the ratio of its p50 to the smallest size's, measured in this run; and
//! the time to record one result of 50 values. Every lookup must find exactly the values it
//! was built to find, so a fast wrong answer fails loudly.
//!
//! Argument after `--`: the largest size (default 1000000).

use std::time::{Duration, Instant};

use portcullis_core::sha256_hex;
use portcullis_store::{NewValues, ProvenanceLimits, Store};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const NOW: i64 = 1_800_000_000;
/// Values per recorded result while filling.
const PER_RESULT: usize = 1000;
/// Values per session while filling.
const PER_SESSION: usize = 5000;
const LOOKUPS: usize = 2000;

fn hash(i: usize) -> String {
    sha256_hex(format!("value-{i}").as_bytes())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let largest: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let sizes: Vec<usize> = [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|s| *s <= largest)
        .collect();
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    run("sqlite", &url, &sizes).await?;
    match std::env::var("PORTCULLIS_TEST_DATABASE_URL") {
        Ok(admin) => {
            // A database of its own next to the one named, dropped afterwards.
            let name = format!("pc_bench_provenance_{}", std::process::id());
            let url = database(&admin, &name, true).await?;
            let ran = run("postgres", &url, &sizes).await;
            database(&admin, &name, false).await?;
            ran?;
        }
        Err(_) => println!("postgres: skipped, PORTCULLIS_TEST_DATABASE_URL is unset"),
    }
    Ok(())
}

/// Drops the database `name` on the server of `admin`, and creates it anew when `create`;
/// returns its URL.
async fn database(admin: &str, name: &str, create: bool) -> BenchResult<String> {
    use sqlx::{ConnectOptions as _, Connection as _};
    use std::str::FromStr as _;
    let options = sqlx::postgres::PgConnectOptions::from_str(admin)?;
    let mut conn = options.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    if create {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(options.database(name).to_url_lossy().to_string())
}

async fn run(backend: &str, url: &str, sizes: &[usize]) -> BenchResult<()> {
    let store = Store::open(url).await?;
    let limits = ProvenanceLimits {
        ttl_secs: 86_400,
        per_session: i64::try_from(PER_SESSION)?,
        total: 10_000_000,
    };
    println!("{backend}: lookup of 20 hashes in one session (10 of them recorded there)");
    println!(
        "{:>12} {:>10} {:>10} {:>8} {:>14}",
        "values", "p50 µs", "p99 µs", "ratio", "record 50 ms"
    );
    let mut filled = 0usize;
    let mut baseline = None;
    for &size in sizes {
        while filled < size {
            let hashes: Vec<String> = (filled..filled + PER_RESULT).map(hash).collect();
            let session = format!("s{}", filled / PER_SESSION);
            let v = NewValues {
                agent: "bench-agent",
                session: &session,
                source: "mail.read",
                intent_id: "int_bench",
                read_unix: NOW,
                hashes: &hashes,
            };
            store.record_provenance(&v, limits).await?;
            filled += PER_RESULT;
        }
        let mut times = Vec::with_capacity(LOOKUPS);
        for n in 0..LOOKUPS {
            // A session somewhere in what is stored; ten of its values and ten unknown.
            let s = (n * 7919) % (size / PER_SESSION).max(1);
            let first = s * PER_SESSION + (n % (PER_SESSION - 10));
            let mut probe: Vec<String> = (first..first + 10).map(hash).collect();
            probe.extend((0..10).map(|k| sha256_hex(format!("absent-{n}-{k}").as_bytes())));
            let started = Instant::now();
            let seen = store
                .provenance("bench-agent", &format!("s{s}"), &probe, NOW + 1)
                .await?;
            times.push(started.elapsed());
            if seen.len() != 10 {
                return Err(format!("a lookup found {} values, not 10", seen.len()).into());
            }
        }
        times.sort();
        let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
        let p50 = p(0.5);
        let ratio = baseline.map_or(1.0, |b: Duration| p50.as_secs_f64() / b.as_secs_f64());
        baseline.get_or_insert(p50);
        let hashes: Vec<String> = (0..50)
            .map(|i| sha256_hex(format!("extra-{size}-{i}").as_bytes()))
            .collect();
        let started = Instant::now();
        let v = NewValues {
            agent: "bench-agent",
            session: "extra",
            source: "web.fetch",
            intent_id: "int_bench",
            read_unix: NOW,
            hashes: &hashes,
        };
        store.record_provenance(&v, limits).await?;
        let record = started.elapsed();
        println!(
            "{:>12} {:>10.0} {:>10.0} {:>7.2}× {:>14.2}",
            size,
            p50.as_secs_f64() * 1e6,
            p(0.99).as_secs_f64() * 1e6,
            ratio,
            record.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
