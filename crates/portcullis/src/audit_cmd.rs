//! `portcullis audit verify|tail|export`.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use portcullis_store::{Store, VerifyReport};

use crate::cli::{AuditCmd, CheckpointCmd, ExportFormat};
use crate::progress::Progress;

/// Events fetched per page by `export`.
const PAGE: u32 = 1000;

pub async fn run(config: &std::path::Path, store: &Store, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { checkpoints } => {
            let report = verify_chain(store).await?;
            if report.ok {
                println!("audit log intact: {} event(s), hash chain verified", report.events);
            } else {
                println!("audit log TAMPERED: {} event(s) checked", report.events);
                for p in &report.problems {
                    println!("  {p}");
                }
                if report.unlisted_problems > 0 {
                    println!("  … and {} more problem(s)", report.unlisted_problems);
                }
            }
            let checkpoints_ok = crate::checkpoint_cmd::verify(config, store, checkpoints.as_deref()).await?;
            Ok(if report.ok && checkpoints_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCmd::Checkpoint(CheckpointCmd::Create) => crate::checkpoint_cmd::create(config, store).await,
        AuditCmd::Checkpoint(CheckpointCmd::Export { out, webhook }) => {
            crate::checkpoint_cmd::export(store, out.as_deref(), webhook.as_deref()).await
        }
        AuditCmd::Prove { seq } => crate::checkpoint_cmd::prove(store, seq).await,
        // Needs no store; handled before one is opened.
        AuditCmd::VerifyProof { file, public_key } => crate::checkpoint_cmd::verify_proof(&file, public_key.as_deref()),
        AuditCmd::Tail { lines } => {
            for e in store.audit_tail(lines).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Export {
            format: ExportFormat::Jsonl,
            out,
        } => export_jsonl(store, out.as_deref()).await,
    }
}

/// The hash chain check, with a bar over the log's events (cleared before the report).
async fn verify_chain(store: &Store) -> anyhow::Result<VerifyReport> {
    let progress = Progress::bar(store.audit_len().await?, "verifying the audit log");
    Ok(store.verify_audit_with(|checked| progress.set(checked)).await?)
}

/// Every event as one JSON line, to `out` or standard output, page by page.
async fn export_jsonl(store: &Store, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut sink: Box<dyn std::io::Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create `{}`", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    // Events scrolling past on the terminal show progress already, and a bar drawn between
    // them would be torn apart by them.
    let progress = if out.is_none() && std::io::stdout().is_terminal() {
        Progress::hidden()
    } else {
        Progress::bar(store.audit_len().await?, "exporting the audit log")
    };
    let (mut after, mut written) = (0, 0);
    loop {
        let page = store.audit_events(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            writeln!(sink, "{}", serde_json::to_string(e)?)?;
        }
        written += page.len() as u64;
        progress.set(written);
    }
    sink.flush()?;
    Ok(ExitCode::SUCCESS)
}
