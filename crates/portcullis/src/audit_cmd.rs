//! `portcullis audit verify|tail|export`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

use portcullis_store::Store;

use crate::cli::{AuditCmd, ExportFormat};

/// Events fetched per page by `export`.
const PAGE: u32 = 1000;

pub async fn run(store: &Store, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify => {
            let report = store.verify_audit().await?;
            if report.ok {
                println!("audit log intact: {} event(s), hash chain verified", report.events);
                return Ok(ExitCode::SUCCESS);
            }
            println!("audit log TAMPERED: {} event(s) checked", report.events);
            for p in &report.problems {
                println!("  {p}");
            }
            if report.unlisted_problems > 0 {
                println!("  … and {} more problem(s)", report.unlisted_problems);
            }
            Ok(ExitCode::FAILURE)
        }
        AuditCmd::Tail { lines } => {
            for e in store.audit_tail(lines).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Export {
            format: ExportFormat::Jsonl,
            out,
        } => {
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("cannot create `{}`", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut after = 0;
            loop {
                let page = store.audit_events(after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for e in &page {
                    writeln!(sink, "{}", serde_json::to_string(e)?)?;
                }
            }
            sink.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
