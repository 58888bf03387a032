//! `portcullis serve`: the gateway, reloaded on `SIGHUP` (or `portcullis reload`), stopped
//! gracefully on `SIGTERM` or Ctrl-C.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use portcullis_engine::{Gateway, Live};

/// How long queued audit events may take to commit once intents have settled.
const AUDIT_FLUSH: Duration = Duration::from_secs(10);
/// How long the server may take to write the last answers once intents have settled.
const LAST_ANSWERS: Duration = Duration::from_secs(2);

pub async fn run(config: &Path, listen: Option<String>, verbose: bool) -> anyhow::Result<ExitCode> {
    let loaded = portcullis_engine::check(config).map_err(|p| anyhow::anyhow!(crate::cli::render_problems(&p)))?;
    let detector = Arc::clone(&loaded.config.detector);
    crate::logging::use_detector(Arc::clone(&detector));
    let tracing = loaded.config.tracing.as_ref();
    let provider = crate::logging::init_with(verbose, &loaded.config.logging, tracing)?;
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
    let live = Live::new(gateway);
    // Log lines and exported spans are redacted with the rules of the configuration serving.
    live.on_reload(|gateway| crate::logging::use_detector(Arc::clone(&gateway.loaded().config.detector)));
    let maintenance = {
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            let mut tick: u64 = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tick += 1;
                live.current().maintain_tick(tick).await;
            }
        })
    };
    // Admission follows the store's health without asking it per intent.
    let store_watch = {
        let live = Arc::clone(&live);
        tokio::spawn(async move { live.watch_store().await })
    };
    // Signal handlers are in place before the address is announced: a signal sent as soon as
    // the gateway is up is handled, not fatal.
    let signals = Signals::register()?;
    let reloads = tokio::spawn(reload_on_hangup(Arc::clone(&live), signals.hangup));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    live.current().set_served_at(local);
    eprintln!("portcullis listening on http://{local}");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = portcullis_server::serve(Arc::clone(&live), listener, async move {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => served?,
        () = shutdown_signal(signals.terminate) => {
            let deadline = live.current().loaded().config.shutdown_deadline;
            shut_down(&live, stop, deadline, server).await;
        }
    }
    reloads.abort();
    maintenance.abort();
    store_watch.abort();
    if let Some(provider) = provider {
        crate::telemetry::shutdown(provider);
    }
    eprintln!("portcullis stopped");
    Ok(ExitCode::SUCCESS)
}

/// Stops taking intents and connections, lets intents in flight finish (up to `deadline`),
/// then waits for their audit events to commit. Held intents stay held: another instance,
/// or this one after a restart, runs them once approved.
async fn shut_down(
    live: &Live,
    stop: tokio::sync::oneshot::Sender<()>,
    deadline: Duration,
    server: impl std::future::Future<Output = std::io::Result<()>>,
) {
    live.drain();
    let _ = stop.send(());
    let running = live.current().metrics().in_flight();
    eprintln!(
        "portcullis stopping: taking no new intents; {running} in flight, waiting up to {}s for them",
        deadline.as_secs()
    );
    let left = live.settle(deadline).await;
    if left > 0 {
        tracing::error!(
            in_flight = left,
            "shutdown deadline passed with intents still running; they will be settled as outcome_unknown (never re-run) once older than the longest an execution can take"
        );
        eprintln!(
            "portcullis: {left} intent(s) still running at the deadline; they will be reported outcome_unknown, never re-run"
        );
    }
    let gateway = live.current();
    if !gateway.store().flush_audit(AUDIT_FLUSH).await {
        eprintln!("portcullis: audit events were still queued when the flush timed out");
    }
    // A last checkpoint covers the log as this instance leaves it.
    if let Some(checkpointer) = gateway.checkpointer() {
        match checkpointer.now(gateway.store()).await {
            Ok(c) => tracing::info!(tree_size = c.tree_size, "final audit checkpoint signed"),
            Err(e) => tracing::warn!(error = %e, "could not sign a final audit checkpoint"),
        }
    }
    // The last answers go out; connections left open (idle keep-alives, streams) are cut.
    let _ = tokio::time::timeout(LAST_ANSWERS, server).await;
}

/// The signals `serve` handles, registered up front.
struct Signals {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    hangup: (),
    #[cfg(not(unix))]
    terminate: (),
}

impl Signals {
    #[cfg(unix)]
    fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    #[cfg(not(unix))]
    fn register() -> anyhow::Result<Self> {
        Ok(Self {
            hangup: (),
            terminate: (),
        })
    }
}

/// Reloads the configuration on every `SIGHUP`; a broken one is logged and refused.
#[cfg(unix)]
async fn reload_on_hangup(live: Arc<Live>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::warn!("SIGHUP: reloading the configuration");
        // Success and every problem are logged by `reload` itself.
        let _ = live.reload().await;
    }
}

#[cfg(not(unix))]
async fn reload_on_hangup(_live: Arc<Live>, (): ()) {}

/// Ctrl-C or `SIGTERM`.
#[cfg(unix)]
async fn shutdown_signal(mut terminate: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}

#[cfg(not(unix))]
async fn shutdown_signal((): ()) {
    let _ = tokio::signal::ctrl_c().await;
}
