//! Grows an audit log to a given number of events, for the benchmark of `audit verify` over
//! large logs (bench/audit_scale.py).
//!
//! `cargo run --release -p portcullis-store --example audit_fill -- sqlite://PATH EVENTS`
//!
//! Appends typical `decided` events through the store's real, durable append path (the hash
//! chain, batched by the audit writer) from many tasks at once, until the log holds EVENTS
//! events; a log already that long is left alone. Prints the events appended and the rate.

use std::time::Instant;

use portcullis_core::{ActionName, AgentId, AuditEvent, AuditKind, IntentId, sha256_hex};
use portcullis_store::Store;

/// Concurrent appenders: enough to keep the writer's batches full.
const APPENDERS: u64 = 256;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(target)) = (args.next(), args.next()) else {
        return Err("usage: audit_fill STORE_URL EVENTS".into());
    };
    let target: u64 = target.parse()?;
    let store = Store::open(&url).await?;
    let have = store.audit_len().await?;
    let missing = target.saturating_sub(have);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..APPENDERS {
        let store = store.clone();
        let count = missing / APPENDERS + u64::from(t < missing % APPENDERS);
        tasks.push(tokio::spawn(async move {
            for i in 0..count {
                store.append(&event(have + t + i * APPENDERS)).await?;
            }
            Ok::<_, portcullis_store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"appended\": {missing}, \"seconds\": {seconds:.3}, \"per_second\": {:.0}}}",
        missing as f64 / seconds.max(1e-9)
    );
    Ok(())
}

fn event(n: u64) -> AuditEvent {
    let bytes = n.to_le_bytes();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&bytes);
    AuditEvent {
        actor: None,
        kind: AuditKind::Decided,
        intent_id: IntentId::from_random(id),
        agent: AgentId::new(format!("agent-{}", n % 16)).unwrap_or_else(|_| unreachable!("a valid id")),
        action: ActionName::new("github.create_issue").ok(),
        payload_sha256: Some(sha256_hex(&bytes)),
        decision: None,
        dry_run: false,
        detail: serde_json::json!({"labels": ["bug", "checkout"], "title": "Checkout page returns 500"}),
    }
}
