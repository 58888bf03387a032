//! `/mcp` over streamable HTTP: bearer authentication in front of rmcp's stateless service,
//! its DNS-rebinding protection (allowed `Host` and `Origin` values), and the OAuth
//! protected-resource metadata (RFC 9728) that 401 answers point to.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

use portcullis_engine::{Gateway, IntentError, Live};

use super::Served;
use super::handler::McpHandler;
use crate::error::ApiError;

/// Where the protected-resource metadata is published (RFC 9728 §3).
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// Room for the JSON-RPC envelope around a tool call's arguments, on top of
/// `limits.max_body_bytes`.
const ENVELOPE_BYTES: usize = 16 * 1024;

/// Nesting the JSON-RPC envelope adds around a tool call's arguments
/// (`{"params": {"arguments": …}}`), on top of `limits.max_depth`.
const ENVELOPE_DEPTH: usize = 3;

#[derive(Debug)]
struct McpState {
    live: Arc<Live>,
    /// `BASE/mcp`: the protected resource.
    resource: String,
    /// `BASE/.well-known/oauth-protected-resource`, named in every 401.
    metadata_url: String,
}

/// The routes of the MCP endpoint: `/mcp` (any method; POST is the protocol, GET and
/// DELETE answer 405 in stateless mode) and the protected-resource metadata.
///
/// The bearer token is checked first (401 without a valid one), then rmcp checks `Host`
/// and `Origin` (403), the media types and the JSON-RPC message.
///
/// The allowed hosts and origins and the body limit are fixed when the router is built: a
/// reload doesn't change them (restart to).
pub fn routes(live: Arc<Live>, served: &Served) -> Router {
    let base = served.base_url();
    let gateway = live.current();
    let state = Arc::new(McpState {
        live: Arc::clone(&live),
        resource: format!("{base}/mcp"),
        metadata_url: format!("{base}{METADATA_PATH}"),
    });
    let max_body = gateway.loaded().config.max_body_bytes.saturating_add(ENVELOPE_BYTES);
    let config = StreamableHttpServerConfig::default()
        // Stateless: no session survives a request, so any instance serves any request.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(allowed_hosts(&gateway, served))
        .with_allowed_origins(allowed_origins(&gateway, served))
        .enforce_origin_validation()
        .with_max_request_body_bytes(max_body);
    let service = StreamableHttpService::new(
        move || Ok(McpHandler::over_http(Arc::clone(&live))),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        // Layers run last-added first: authentication, then strict JSON, then rmcp.
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), strict_json))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .route(METADATA_PATH, get(metadata))
        .route(&format!("{METADATA_PATH}/mcp"), get(metadata))
        .with_state(state)
}

/// The `Host` values `/mcp` accepts: the loopback names of the port served, the specific
/// address served (when not a wildcard), and `mcp.allowed_hosts`.
fn allowed_hosts(gateway: &Gateway, served: &Served) -> Vec<String> {
    let port = served.addr.port();
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !served.addr.ip().is_unspecified() && !served.addr.ip().is_loopback() {
        hosts.push(served.addr.to_string());
    }
    hosts.extend(gateway.loaded().config.mcp.allowed_hosts.iter().cloned());
    hosts
}

/// The `Origin` values `/mcp` accepts: `http://` and each loopback host above, and
/// `mcp.allowed_origins`. Requests without an `Origin` (non-browser clients) pass.
fn allowed_origins(gateway: &Gateway, served: &Served) -> Vec<String> {
    let port = served.addr.port();
    let mut origins = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
    ];
    if !served.addr.ip().is_unspecified() && !served.addr.ip().is_loopback() {
        origins.push(format!("http://{}", served.addr));
    }
    origins.extend(gateway.loaded().config.mcp.allowed_origins.iter().cloned());
    origins
}

/// Authenticates the agent by its bearer token and hands its id to the handler through the
/// request's extensions (rmcp passes the HTTP request parts on to the handler).
async fn authenticate(State(state): State<Arc<McpState>>, mut request: Request, next: Next) -> Response {
    let Some(token) = crate::rest::bearer(request.headers()) else {
        return unauthorized(&state, false);
    };
    match state.live.current().authenticate_with_claims(token).await {
        Ok((agent, claims)) => {
            request.extensions_mut().insert(agent);
            if let Some(claims) = claims {
                request.extensions_mut().insert(claims);
            }
            next.run(request).await
        }
        Err(IntentError::Unauthenticated) => unauthorized(&state, true),
        Err(e) => ApiError::Intent(e).into_response(),
    }
}

/// Parses a JSON `POST` body as strictly as `POST /v1/intents` does before rmcp sees it:
/// a duplicate key, nesting deeper than `limits.max_depth` (plus the envelope) or a number
/// that can't be represented exactly is refused with a JSON-RPC parse error (HTTP 400), so a
/// tool call's arguments can't carry two values for one field, one for the policy and one
/// for the request. Other bodies and methods pass to rmcp unchanged.
async fn strict_json(State(state): State<Arc<McpState>>, request: Request, next: Next) -> Response {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if request.method() != axum::http::Method::POST || !is_json {
        return next.run(request).await;
    }
    let gateway = state.live.current();
    let config = &gateway.loaded().config;
    let max_body = config.max_body_bytes.saturating_add(ENVELOPE_BYTES);
    let (parts, body) = request.into_parts();
    let bytes = match crate::read_body(body, max_body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let limits = portcullis_core::json::Limits {
        max_depth: config.json_limits.max_depth.saturating_add(ENVELOPE_DEPTH),
    };
    if let Err(e) = portcullis_core::json::parse_strict(&bytes, limits) {
        let error = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32700, "message": format!("the request is not acceptable JSON: {e}")},
        });
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// 401 with `WWW-Authenticate: Bearer resource_metadata="…"` (RFC 9728 §5.1), and
/// `error="invalid_token"` when a token was sent (RFC 6750 §3.1).
fn unauthorized(state: &McpState, token_sent: bool) -> Response {
    let mut response = ApiError::Intent(IntentError::Unauthenticated).into_response();
    let error = if token_sent { ", error=\"invalid_token\"" } else { "" };
    let challenge = format!("Bearer resource_metadata=\"{}\"{error}", state.metadata_url);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// RFC 9728 protected-resource metadata. No authorization server yet: agents present
/// tokens made with `portcullis agent add`.
async fn metadata(State(state): State<Arc<McpState>>) -> Response {
    let body = json!({
        "resource": state.resource,
        "authorization_servers": [],
        "bearer_methods_supported": ["header"],
        "resource_name": "Portcullis",
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}
