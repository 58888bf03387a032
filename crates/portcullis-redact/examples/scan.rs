//! Runs the builtin detector over a labelled corpus and prints its findings as JSON lines, one
//! per record: `{"id": …, "findings": [{"kind": …, "category": …, "value": …}]}`.
//!
//! `tests/redaction-corpus/compare.py` reads this output to compare the detector with other
//! scanners:
//!
//! ```text
//! cargo run --release -p portcullis-redact --example scan -- tests/redaction-corpus/corpus.jsonl
//! ```

use std::error::Error;
use std::io::{BufRead, BufReader, BufWriter, Write};

use portcullis_redact::detect::Detector;
use serde_json::{Value, json};

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: scan CORPUS.jsonl (the output of tests/redaction-corpus/generate.py)")?;
    let detector = Detector::builtin();
    let input = BufReader::new(std::fs::File::open(&path).map_err(|e| format!("while opening `{path}`: {e}"))?);
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(&line).map_err(|e| format!("`{path}` line {}: {e}", number + 1))?;
        let text = record["text"].as_str().unwrap_or_default();
        let findings: Vec<Value> = detector
            .find(text)
            .into_iter()
            .map(|f| json!({"kind": f.rule_id, "category": f.category, "value": &text[f.range]}))
            .collect();
        serde_json::to_writer(&mut out, &json!({"id": record["id"], "findings": findings}))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
