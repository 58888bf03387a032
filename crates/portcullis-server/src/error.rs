//! The one mapping from errors to HTTP responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use portcullis_engine::{ApprovalError, IntentError};

/// An error response: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug)]
pub enum ApiError {
    /// A pipeline error.
    Intent(IntentError),
    /// An approvals error.
    Approval(ApprovalError),
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than `limits.max_body_bytes`.
    PayloadTooLarge(usize),
    /// No such route.
    NoRoute,
    /// The route exists, but not with this method.
    MethodNotAllowed,
    /// The client didn't send its request body in time.
    RequestTimeout,
    /// A reload found problems in the new configuration; the old one keeps serving.
    ReloadRefused(Vec<String>),
}

impl From<IntentError> for ApiError {
    fn from(e: IntentError) -> Self {
        Self::Intent(e)
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        Self::Approval(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, code, message, details): (StatusCode, &str, String, Option<Value>) = match self {
            Self::Intent(e) => match &e {
                IntentError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string(), None),
                IntentError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_request", e.to_string(), None),
                IntentError::UnknownAction(_) => (StatusCode::NOT_FOUND, "unknown_action", e.to_string(), None),
                IntentError::InvalidInput { problems, .. } => (
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    e.to_string(),
                    Some(json!(problems)),
                ),
                IntentError::IdempotencyConflict(_) => {
                    (StatusCode::CONFLICT, "idempotency_conflict", e.to_string(), None)
                }
                IntentError::IdempotencyInProgress(_) => {
                    (StatusCode::CONFLICT, "idempotency_in_progress", e.to_string(), None)
                }
                IntentError::OutcomeNotRecorded(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "outcome_not_recorded",
                    e.to_string(),
                    None,
                ),
                IntentError::IntentNotFound => (StatusCode::NOT_FOUND, "not_found", e.to_string(), None),
                IntentError::RateLimited(limit) => {
                    retry_after = Some(limit.retry_after_secs);
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        e.to_string(),
                        Some(json!({"quota": limit.quota, "used": limit.used, "max": limit.max,
                               "requested": limit.requested, "resets_at": limit.resets_at})),
                    )
                }
                // The cause stays in the gateway's log: it may name internal paths.
                IntentError::StoreUnavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string(), None)
                }
                IntentError::NotAccepting(not_ready) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    e.to_string(),
                    Some(json!({"check": not_ready.check})),
                ),
            },
            Self::Approval(e) => {
                let (status, code) = approval_status(&e);
                (status, code, e.to_string(), None)
            }
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with `Content-Type: application/json`".to_owned(),
                None,
            ),
            Self::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
                None,
            ),
            Self::NoRoute => (StatusCode::NOT_FOUND, "not_found", "no such endpoint".to_owned(), None),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    crate::BODY_READ_TIMEOUT.as_secs()
                ),
                None,
            ),
            Self::ReloadRefused(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_refused",
                "the new configuration has problems; the previous one keeps serving".to_owned(),
                Some(json!({"problems": problems})),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method".to_owned(),
                None,
            ),
        };
        let mut body = json!({"error": {"code": code, "message": message}});
        if let Some(d) = details {
            body["error"]["details"] = d;
        }
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
        }
        response
    }
}

/// The HTTP status and error code of an approvals error, for the REST API and the web UI
/// alike.
pub(crate) fn approval_status(e: &ApprovalError) -> (StatusCode, &'static str) {
    match e {
        ApprovalError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        ApprovalError::Forbidden | ApprovalError::AdminOnly => (StatusCode::FORBIDDEN, "forbidden"),
        ApprovalError::SelfApproval => (StatusCode::FORBIDDEN, "self_approval"),
        ApprovalError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ApprovalError::PayloadMismatch(_) => (StatusCode::CONFLICT, "payload_mismatch"),
        ApprovalError::AlreadyVoted => (StatusCode::CONFLICT, "already_voted"),
        ApprovalError::NotPending(_) => (StatusCode::CONFLICT, "not_pending"),
        ApprovalError::Expired => (StatusCode::GONE, "expired"),
        ApprovalError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        ApprovalError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}
