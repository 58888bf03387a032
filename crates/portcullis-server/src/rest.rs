//! The agent REST API.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use portcullis_core::AgentId;
use portcullis_engine::{Gateway, IntentError, IntentRequest, IntentStatus, Live, Submitted};
use portcullis_policy::Claims;
use tracing::Instrument as _;

use crate::error::ApiError;

type Shared = Arc<Live>;

/// The router as served on the configured `listen` address (see [`router_at`]).
pub fn router(live: Shared) -> Router {
    let gateway = live.current();
    let served = crate::Served {
        addr: gateway.loaded().config.listen,
        public_url: gateway.loaded().config.public_url.clone(),
    };
    router_at(live, &served)
}

/// The router: `POST /v1/intents`, `GET /v1/intents/{id}`, `GET /v1/actions`, the approvals
/// API under `/v1/approvals`, `/healthz`, `/readyz`, the approvals web UI under `/ui`, and
/// MCP at `/mcp` (its allowed `Host` and `Origin` values follow `served`), `/metrics` when
/// the configuration enables it, and `POST /v1/admin/reload`.
///
/// Each request uses the gateway current when it arrives, to its end (see [`Live`]).
pub fn router_at(live: Shared, served: &crate::Served) -> Router {
    let ui = crate::ui::routes(Arc::clone(&live));
    let mcp = crate::mcp::routes(Arc::clone(&live), served);
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/admin/reload", post(crate::admin::reload))
        .route("/v1/intents", post(submit))
        .route("/v1/intents/{id}", get(get_intent))
        .route("/v1/actions", get(list_actions))
        .route("/v1/approvals", get(crate::admin::list))
        .route("/v1/approvals/{id}", get(crate::admin::show))
        .route("/v1/approvals/{id}/approve", post(crate::admin::approve))
        .route("/v1/approvals/{id}/deny", post(crate::admin::deny))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(live)
        .merge(ui)
        .merge(mcp)
}

/// The bearer token of a request.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

async fn agent(gw: &Gateway, headers: &HeaderMap) -> Result<AgentId, ApiError> {
    Ok(agent_with_claims(gw, headers).await?.0)
}

async fn agent_with_claims(gw: &Gateway, headers: &HeaderMap) -> Result<(AgentId, Option<Claims>), ApiError> {
    let token = bearer(headers).ok_or(ApiError::Intent(IntentError::Unauthenticated))?;
    Ok(gw.authenticate_with_claims(token).await?)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn submit(State(live): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let admitted = live.admit()?;
    let gw = Arc::clone(&admitted.gateway);
    let span = portcullis_engine::trace::intent_span();
    let (agent, claims) = agent_with_claims(&gw, &headers)
        .instrument(tracing::info_span!(parent: &span, "authenticate"))
        .await?;
    if !is_json(&headers) {
        let _ = gw
            .reject_request(&agent, IntentError::Malformed("wrong content type".into()))
            .await;
        return Err(ApiError::UnsupportedMediaType);
    }
    let limits = (gw.loaded().config.max_body_bytes, gw.loaded().config.json_limits);
    let bytes = match crate::read_body(body, limits.0).await {
        Ok(b) => b,
        Err(e) => {
            let why = if matches!(e, ApiError::RequestTimeout) {
                "body not sent in time"
            } else {
                "body too large"
            };
            let _ = gw.reject_request(&agent, IntentError::Malformed(why.into())).await;
            return Err(e);
        }
    };
    let request = match IntentRequest::parse(&bytes, limits.1).and_then(|r| with_session_header(r, &headers)) {
        Ok(r) => r,
        Err(e) => return Err(gw.reject_request(&agent, e).await.into()),
    };
    // The pipeline runs in its own task so that an intent that reached the upstream is
    // finished and audited even when the agent hangs up: hyper drops a handler's future when
    // its client disconnects.
    let task = tokio::spawn(
        async move {
            let submitted = gw.submit_as(&agent, claims.as_ref(), request).await;
            drop(admitted);
            submitted
        }
        .instrument(span),
    );
    let outcome = task
        .await
        .map_err(|e| IntentError::StoreUnavailable(format!("the intent task failed: {e}")))?;
    Ok(submitted(outcome?))
}

/// The header naming the agent's session, as the body's `session` field does.
pub(crate) const SESSION_HEADER: &str = "portcullis-session";

/// The session from the [`SESSION_HEADER`] header, when the body names none: both may be
/// given only when they agree.
pub(crate) fn with_session_header(
    mut request: IntentRequest,
    headers: &HeaderMap,
) -> Result<IntentRequest, IntentError> {
    let mut values = headers.get_all(SESSION_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(request);
    };
    if values.next().is_some() {
        return Err(IntentError::Malformed(format!(
            "more than one `{SESSION_HEADER}` header"
        )));
    }
    let value = value
        .to_str()
        .map_err(|_| IntentError::Malformed(format!("the `{SESSION_HEADER}` header is not printable ASCII")))?;
    portcullis_engine::provenance::check_session(value)
        .map_err(|m| IntentError::Malformed(format!("the `{SESSION_HEADER}` header: {m}")))?;
    match &request.session {
        Some(body) if body != value => Err(IntentError::Malformed(format!(
            "the body's `session` and the `{SESSION_HEADER}` header differ"
        ))),
        _ => {
            request.session = Some(value.to_owned());
            Ok(request)
        }
    }
}

/// `?wait=SECONDS` on `GET /v1/intents/{id}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    #[serde(default)]
    wait: Option<u64>,
}

async fn get_intent(
    State(live): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let gw = live.current();
    let agent = agent(&gw, &headers).await?;
    let Ok(Query(q)) = query else {
        return Err(IntentError::Malformed("`wait` must be a whole number of seconds".into()).into());
    };
    let result = match q.wait {
        Some(s) if s > 0 => gw.wait_intent(&agent, &id, std::time::Duration::from_secs(s)).await?,
        _ => gw.intent(&agent, &id).await?,
    };
    Ok(submitted(result))
}

async fn list_actions(State(live): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let gw = live.current();
    let (agent, claims) = agent_with_claims(&gw, &headers).await?;
    Ok(Json(json!({"actions": gw.actions_for(&agent, claims.as_ref())})).into_response())
}

async fn metrics(State(live): State<Shared>) -> Result<Response, ApiError> {
    let gw = live.current();
    // Disabled, the path answers like an unrouted one: a 404 that says nothing about metrics.
    if !gw.loaded().config.metrics_enabled {
        return Err(ApiError::NoRoute);
    }
    let text = gw.render_metrics().await;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

/// `/readyz`: 200 when every check passes (not shutting down, the store answers, the audit
/// log can be written, the catalog and policies are loaded), else 503; the body lists them.
/// Store errors are not shown: they can name hosts and paths.
async fn ready(State(live): State<Shared>) -> Response {
    let mut readiness = live.readiness().await;
    for check in &mut readiness.checks {
        if check.name == "store" && !check.ok {
            check.detail = Some("the store did not answer".to_owned());
        }
    }
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if readiness.ready { "ready" } else { "not ready" };
    (
        status,
        Json(json!({"status": word, "checks": readiness.checks, "generation": readiness.generation})),
    )
        .into_response()
}

fn submitted(s: Submitted) -> Response {
    let status = match s.status {
        IntentStatus::Executed
        | IntentStatus::Failed
        | IntentStatus::DryRun
        | IntentStatus::Executing
        | IntentStatus::Withheld
        | IntentStatus::OutcomeUnknown => StatusCode::OK,
        IntentStatus::Denied | IntentStatus::Expired => StatusCode::FORBIDDEN,
        IntentStatus::PendingApproval => StatusCode::ACCEPTED,
    };
    // The body is the JSON text the intent's response was written as, sent as it is.
    (status, [(header::CONTENT_TYPE, "application/json")], s.into_json()).into_response()
}
