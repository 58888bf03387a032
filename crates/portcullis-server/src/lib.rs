//! HTTP adapters for Portcullis: the agent REST API, the approvals API, the approvals web UI
//! (`/ui`) and health endpoints.
//!
//! Every error an agent can see is built in one place, [`error::ApiError`], from one
//! exhaustive `match`, so a new error kind forces a decision about its status code and
//! about what of it may reach the agent.

mod admin;
mod error;
mod rest;
mod ui;

use std::future::Future;
use std::sync::Arc;

use portcullis_engine::Gateway;

pub use error::ApiError;
pub use rest::router;

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(shutdown)
        .await
}
