//! `portcullis eval --cases FILE.jsonl`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use portcullis_core::json;
use portcullis_engine::{EvalCase, evaluate_cases};

pub fn run(config: &Path, cases_file: &Path) -> anyhow::Result<ExitCode> {
    let loaded = portcullis_engine::check(config).map_err(|p| anyhow::anyhow!(crate::cli::render_problems(&p)))?;
    let text =
        std::fs::read_to_string(cases_file).with_context(|| format!("cannot read `{}`", cases_file.display()))?;
    let mut cases = Vec::new();
    let mut bad = 0usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let parsed = json::parse_strict(line.as_bytes(), loaded.config.json_limits)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<EvalCase>(v).map_err(|e| e.to_string()));
        match parsed {
            Ok(c) => cases.push((i + 1, c)),
            Err(e) => {
                bad += 1;
                println!("ERROR {}:{}: {e}", cases_file.display(), i + 1);
            }
        }
    }
    let outcomes = evaluate_cases(&loaded, &cases, time::OffsetDateTime::now_utc());
    let mut failed = 0usize;
    for o in &outcomes {
        let verdict = if o.passed { "PASS" } else { "FAIL" };
        let expected = o
            .expect
            .map(|e| format!(" (expected {})", e.as_str()))
            .unwrap_or_default();
        println!(
            "{verdict} line {}: {}: {}{expected}",
            o.line,
            o.name,
            o.decision.effect.as_str()
        );
        for r in &o.decision.reasons {
            println!("      reason: {r}");
        }
        for m in &o.provenance {
            println!("      untrusted: {} came from `{}`", m.pointer, m.source);
        }
        if !o.passed {
            failed += 1;
        }
    }
    let passed = outcomes.len() - failed;
    println!("eval: {passed} passed, {failed} failed, {bad} unreadable");
    Ok(if failed == 0 && bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
