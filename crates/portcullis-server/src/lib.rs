//! Adapters for Portcullis: the agent REST API, the MCP server (`/mcp` over streamable HTTP,
//! and stdio), the approvals API, the approvals web UI (`/ui`), health endpoints and (when
//! enabled) Prometheus metrics at `/metrics`.
//!
//! Every error an agent can see is built in one place, [`error::ApiError`], from one
//! exhaustive `match`, so a new error kind forces a decision about its status code and
//! about what of it may reach the agent.

mod admin;
mod error;
mod mcp;
mod rest;
mod ui;

use std::future::Future;
use std::sync::Arc;

use portcullis_engine::Live;

pub use error::ApiError;
pub use mcp::{Served, serve_stdio};
pub use rest::{router, router_at};

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    live: Arc<Live>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = Served {
        addr: listener.local_addr()?,
        public_url: live.current().loaded().config.public_url.clone(),
    };
    axum::serve(listener, router_at(live, &served))
        .with_graceful_shutdown(shutdown)
        .await
}
