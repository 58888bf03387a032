//! `portcullis mcp`: MCP over standard input and output, for desktop clients that start the
//! server themselves. Standard output carries only the protocol; logs go to standard error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use portcullis_engine::{Gateway, IntentError};

/// The environment variable holding the agent's token.
pub const TOKEN_ENV: &str = "PORTCULLIS_AGENT_TOKEN";
/// The environment variable naming the session of this connection (provenance tracking);
/// without it every `portcullis mcp` process is a session of its own.
pub const SESSION_ENV: &str = "PORTCULLIS_SESSION";
/// How long tool calls still executing may finish after the client hangs up.
const DRAIN: Duration = Duration::from_secs(30);

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let token = match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => t,
        Ok(_) | Err(std::env::VarError::NotPresent) => bail!(
            "`portcullis mcp` needs the agent's token in the environment variable {TOKEN_ENV} \
             (create one with `portcullis agent add NAME`)"
        ),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{TOKEN_ENV} is not valid UTF-8"),
    };
    let loaded = portcullis_engine::check(config).map_err(|p| anyhow::anyhow!(crate::cli::render_problems(&p)))?;
    crate::logging::use_detector(std::sync::Arc::clone(&loaded.config.detector));
    let gateway = Arc::new(Gateway::open(loaded).await?);
    let agent = match gateway.authenticate(token.trim()).await {
        Ok(a) => a,
        Err(IntentError::Unauthenticated) => {
            bail!("{TOKEN_ENV} is not the token of any agent (`portcullis agent list` shows the agents)")
        }
        Err(e) => bail!("cannot check the agent token: {e}"),
    };
    drop(token);
    let session = match std::env::var(SESSION_ENV) {
        Ok(s) => {
            portcullis_engine::provenance::check_session(&s).map_err(|m| anyhow::anyhow!("{SESSION_ENV}: {m}"))?;
            s
        }
        Err(std::env::VarError::NotPresent) => format!("stdio-{}", random_id()),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{SESSION_ENV} is not valid UTF-8"),
    };
    tracing::info!(agent = %agent, session = %session, "serving MCP on stdio");
    // Expire due holds, as `serve` does. Start-up recovery (`Gateway::recover`) is left to
    // `serve`: it settles holds caught mid-execution as failed, which is right for a gateway
    // restarting after a crash but wrong next to a running `serve` on the same store, where
    // a desktop client may start this command at any moment.
    let maintenance = {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move { gateway.maintain().await })
    };
    let served = portcullis_server::serve_stdio(gateway, agent, Some(session), DRAIN).await;
    maintenance.abort();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// 128 random bits in hex.
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
