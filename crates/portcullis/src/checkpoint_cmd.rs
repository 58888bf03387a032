//! `portcullis audit checkpoint create|export`, `audit prove`, `audit verify-proof`, and
//! the checkpoint half of `audit verify`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use reqwest::header::{HeaderName, HeaderValue};

use portcullis_engine::checkpoint::{Checkpointer, existing_public_key};
use portcullis_exec::OutboundRequest;
use portcullis_store::{Checkpoint, InclusionProof, Store};

use crate::cli::load_config;

/// `audit checkpoint create`: signs a checkpoint of the whole log now and prints it.
pub async fn create(config: &Path, store: &Store) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let keyring = config.keyring()?;
    let Some(checkpointer) = Checkpointer::load(store, keyring.as_ref(), &config.audit)
        .await
        .map_err(anyhow::Error::msg)?
    else {
        bail!("audit checkpoints are off: they need a `master_key` and `audit.checkpoint_every` above 0");
    };
    let checkpoint = checkpointer.now(store).await?;
    println!("{}", serde_json::to_string(&checkpoint)?);
    Ok(ExitCode::SUCCESS)
}

/// `audit checkpoint export`: every stored checkpoint as JSON lines, to a file or standard
/// output, and/or posted to a webhook as `{"checkpoints": […]}`.
pub async fn export(store: &Store, out: Option<&Path>, webhook: Option<&str>) -> anyhow::Result<ExitCode> {
    let checkpoints = store.checkpoints().await?;
    let mut lines = String::new();
    for c in &checkpoints {
        lines.push_str(&serde_json::to_string(c)?);
        lines.push('\n');
    }
    match (out, webhook) {
        (Some(path), _) => {
            std::fs::write(path, &lines).with_context(|| format!("cannot write `{}`", path.display()))?;
            eprintln!("wrote {} checkpoint(s) to {}", checkpoints.len(), path.display());
        }
        (None, None) => std::io::stdout().lock().write_all(lines.as_bytes())?,
        (None, Some(_)) => {}
    }
    if let Some(url) = webhook {
        post(url, &serde_json::json!({"checkpoints": checkpoints})).await?;
        eprintln!("posted {} checkpoint(s) to the webhook", checkpoints.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Posts `body` to an operator-chosen URL (any address: the operator runs this command).
async fn post(url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    let url = url::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("the webhook must be an http(s) URL");
    }
    let egress = crate::approvals_cmd::operator_egress()?;
    let request = OutboundRequest {
        method: reqwest::Method::POST,
        url,
        headers: vec![(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        )],
        body: Some(serde_json::to_vec(body)?),
    };
    let response = egress.dangerous().send(request).await?;
    if !(200..300).contains(&response.status) {
        bail!("the webhook answered {}", response.status);
    }
    Ok(())
}

/// `audit prove SEQ`: the inclusion proof of one event in the smallest checkpoint that
/// covers it, as JSON.
pub async fn prove(store: &Store, seq: u64) -> anyhow::Result<ExitCode> {
    if seq == 0 {
        bail!("audit events are numbered from 1");
    }
    match store.prove(seq).await? {
        Some(proof) => {
            println!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(ExitCode::SUCCESS)
        }
        None => bail!(
            "no checkpoint covers event {seq} yet: wait for the next one, or sign one with `portcullis audit checkpoint create`"
        ),
    }
}

/// `audit verify-proof FILE`: checks a proof from `audit prove` without the store: the
/// checkpoint's signature, and the path from the event to its root. With `public_key`, the
/// signer must be that key.
pub fn verify_proof(file: &Path, public_key: Option<&str>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let proof: InclusionProof = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a proof from `audit prove`", file.display()))?;
    if let Some(key) = public_key
        && !key.eq_ignore_ascii_case(&proof.checkpoint.public_key)
    {
        println!(
            "proof INVALID: the checkpoint was signed by {}, not {key}",
            proof.checkpoint.public_key
        );
        return Ok(ExitCode::FAILURE);
    }
    if proof.valid() {
        println!(
            "proof valid: event {} is in the log of {} events signed at {} by {}",
            proof.seq, proof.checkpoint.tree_size, proof.checkpoint.ts, proof.checkpoint.public_key
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("proof INVALID: the path or the signature does not check out");
        Ok(ExitCode::FAILURE)
    }
}

/// The checkpoint half of `audit verify`: prints what was found; `true` when all is well.
/// `kept` is a file of checkpoints exported earlier (kept outside the database).
pub async fn verify(config: &Path, store: &Store, kept: Option<&Path>) -> anyhow::Result<bool> {
    let kept: Vec<Checkpoint> = match kept {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l)
                        .with_context(|| format!("`{}` line {}: not a checkpoint", path.display(), i + 1))
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    // The gateway's own key, when this configuration can open it.
    let config = load_config(config)?;
    let trusted = match config.keyring()? {
        Some(keyring) => existing_public_key(store, &keyring, &config.audit.checkpoint_key)
            .await
            .map_err(anyhow::Error::msg)?,
        None => None,
    };
    let report = store.verify_checkpoints(&kept, trusted.as_deref()).await?;
    if report.ok() {
        match report.verified_up_to {
            Some(size) => println!(
                "checkpoints intact: {} checkpoint(s) verified, the latest covering {size} of {} event(s)",
                report.checkpoints, report.events
            ),
            None => println!("no checkpoint yet: a cut-off tail would not be detected"),
        }
        return Ok(true);
    }
    println!("audit checkpoints FAILED: {} checkpoint(s) checked", report.checkpoints);
    for p in &report.problems {
        println!("  {p}");
    }
    Ok(false)
}
