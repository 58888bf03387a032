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
    let app = router_at(live, &served);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, app.clone(), stopping.clone()));
    }
    // No new connections; open ones finish their current request and close.
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    stop.closed().await;
    Ok(())
}

/// How long a client may take to send a request's body once its headers are in.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a whole request body of at most `limit` bytes within [`BODY_READ_TIMEOUT`].
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::PayloadTooLarge(limit)),
        Err(_) => Err(ApiError::RequestTimeout),
    }
}

/// The backstop for every body, whatever reads it (form and JSON extractors included): a
/// body still arriving this long after its headers fails to read.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(35);

/// A request body that fails once its deadline passes, so that no handler waits forever
/// on a client that stopped sending.
struct DeadlineBody<B> {
    inner: B,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, limit: std::time::Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = axum::body::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How long a client may take to send a request's headers (from connecting, or from the end
/// of its previous request) before the connection is closed.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves one connection with HTTP/1.1 until it closes, or until shutdown, when it finishes
/// its current request and closes.
async fn connection(
    stream: tokio::net::TcpStream,
    app: axum::Router,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use tower::ServiceExt as _;
    let service = hyper_util::service::TowerToHyperService::new(app.map_request(
        |request: axum::http::Request<hyper::body::Incoming>| {
            request.map(|body| axum::body::Body::new(DeadlineBody::new(body, BODY_DEADLINE)))
        },
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
