//! The MCP server: every action an agent may call is a tool, and a tool call is an intent
//! through the same pipeline as `POST /v1/intents` ([`Gateway::submit`]).
//!
//! Two transports share one handler ([`handler::McpHandler`]):
//! - streamable HTTP at `/mcp` ([`routes`]), stateless: every POST is served on its own
//!   (no session to keep, so any instance serves any request), JSON responses where the
//!   protocol allows; the agent authenticates each request with its bearer token;
//! - stdio ([`serve_stdio`]) for desktop clients, as one agent whose token was checked at
//!   start-up.
//!
//! `rmcp` stays inside this module: its types never cross the crate's public API.

mod handler;
mod http;
mod render;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_core::AgentId;
use portcullis_engine::Gateway;

pub use http::routes;

/// Serves MCP over standard input and output as `agent` until the client closes its end,
/// then waits (up to `drain`) for tool calls still executing, so that an intent that
/// reached the upstream is finished and audited.
///
/// # Errors
/// When the transport fails before or during the session.
pub async fn serve_stdio(
    gateway: Arc<Gateway>,
    agent: AgentId,
    session: Option<String>,
    drain: std::time::Duration,
) -> Result<(), std::io::Error> {
    use rmcp::ServiceExt as _;
    let handler = handler::McpHandler::for_agent(portcullis_engine::Live::new(gateway), agent, session);
    let in_flight = handler.in_flight();
    let running = match handler.serve(rmcp::transport::stdio()).await {
        Ok(r) => r,
        // A client that hangs up before saying anything ends the session; that is no error.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let _ = running.waiting().await;
    if tokio::time::timeout(drain, in_flight.write()).await.is_err() {
        tracing::warn!("tool calls were still executing when the client went away");
    }
    Ok(())
}

/// Where `/mcp` is served: the address the server listens on, and the public URL when one
/// is configured (`approvals.public_url`).
#[derive(Debug, Clone)]
pub struct Served {
    /// The socket address actually bound.
    pub addr: SocketAddr,
    /// The public base URL, without a trailing `/`.
    pub public_url: Option<String>,
}

impl Served {
    /// The base URL clients use: the public URL, or `http://` and the bound address (with a
    /// loopback address in place of an unspecified one).
    #[must_use]
    pub fn base_url(&self) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let ip = match self.addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }
}
