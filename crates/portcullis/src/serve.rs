//! `portcullis serve`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use portcullis_engine::Gateway;

pub async fn run(config: &Path, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let loaded = portcullis_engine::check(config).map_err(|p| anyhow::anyhow!(crate::cli::render_problems(&p)))?;
    crate::logging::use_detector(std::sync::Arc::clone(&loaded.config.detector));
    let addr = match listen {
        Some(l) => l
            .parse()
            .with_context(|| format!("`--listen` `{l}` is not an address like 127.0.0.1:8080"))?,
        None => loaded.config.listen,
    };
    let gateway = Arc::new(Gateway::open(loaded).await?);
    eprintln!("portcullis store: {}", gateway.store().location());
    // Holds approved before a restart run now; ones a crash interrupted are settled.
    gateway.recover().await;
    let maintenance = {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move { gateway.maintain().await })
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    gateway.set_served_at(local);
    eprintln!("portcullis listening on http://{local}");
    portcullis_server::serve(gateway, listener, shutdown_signal()).await?;
    maintenance.abort();
    eprintln!("portcullis stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
