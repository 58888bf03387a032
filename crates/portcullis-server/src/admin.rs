//! The approvals API for people (`admins` in the config), authenticated with their own
//! login tokens. Agent tokens are never accepted here.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use portcullis_engine::config::Role;
use portcullis_engine::{ApprovalError, Gateway, Live, Person};

use crate::error::ApiError;
use crate::rest::bearer;

type Shared = Arc<Live>;

async fn person(gw: &Gateway, headers: &HeaderMap) -> Result<Person, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Approval(ApprovalError::Unauthenticated))?;
    Ok(gw.authenticate_person(token).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// `pending` (default) or `all`.
    #[serde(default)]
    state: Option<String>,
}

pub(crate) async fn list(
    State(live): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let gw = live.current();
    let person = person(&gw, &headers).await?;
    let pending_only = match q.state.as_deref() {
        None | Some("pending") => true,
        Some("all") => false,
        Some(other) => {
            return Err(ApprovalError::Invalid(format!("`state` must be `pending` or `all`, not `{other}`")).into());
        }
    };
    let holds = gw.approvals_for(&person, pending_only).await?;
    Ok(Json(json!({"approvals": holds})).into_response())
}

pub(crate) async fn show(
    State(live): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let gw = live.current();
    let person = person(&gw, &headers).await?;
    Ok(Json(gw.approval(&person, &id).await?).into_response())
}

/// The body of an approve or deny call: the reason, and the payload hash the person saw.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VoteBody {
    reason: String,
    payload_sha256: String,
}

pub(crate) async fn approve(
    State(live): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    vote(live.current(), headers, id, body, true).await
}

pub(crate) async fn deny(
    State(live): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    vote(live.current(), headers, id, body, false).await
}

async fn vote(
    gw: Arc<Gateway>,
    headers: HeaderMap,
    id: String,
    body: axum::body::Bytes,
    approve: bool,
) -> Result<Response, ApiError> {
    let person = person(&gw, &headers).await?;
    let limits = gw.loaded().config.json_limits;
    let value =
        portcullis_core::json::parse_strict(&body, limits).map_err(|e| ApprovalError::Invalid(e.to_string()))?;
    let body: VoteBody = serde_json::from_value(value).map_err(|e| ApprovalError::Invalid(e.to_string()))?;
    // The vote that completes the quorum executes the intent. It runs in its own task so
    // that it finishes, and its outcome is recorded, even when this approver hangs up:
    // hyper drops a handler's future when its client disconnects.
    let result = tokio::spawn(async move { gw.vote(&person, &id, approve, &body.reason, &body.payload_sha256).await })
        .await
        .map_err(|e| ApprovalError::Store(format!("the approval task failed: {e}")))??;
    Ok(Json(result).into_response())
}

/// `POST /v1/admin/reload` (admins only): re-reads the configuration, catalog and policies,
/// as `SIGHUP` does. A configuration with problems is refused with every problem listed,
/// and the previous one keeps serving.
pub(crate) async fn reload(State(live): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let person = person(&live.current(), &headers).await?;
    if person.role != Role::Admin {
        return Err(ApprovalError::AdminOnly.into());
    }
    tracing::warn!(by = %person.id, "reload requested through the admin API");
    match live.reload().await {
        Ok(reloaded) => Ok(Json(json!({"status": "reloaded", "generation": reloaded.generation,
            "actions": reloaded.actions, "policies": reloaded.policies}))
        .into_response()),
        Err(refused) => Err(ApiError::ReloadRefused(
            refused.0.iter().map(ToString::to_string).collect(),
        )),
    }
}
