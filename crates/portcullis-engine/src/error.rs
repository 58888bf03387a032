//! Errors of the pipeline, as the adapters see them.

use portcullis_core::Diagnostic;

/// Why an intent (or a lookup) could not be served. Each variant maps to one HTTP status
/// and one MCP error in the server's single exhaustive `match`.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// No valid agent token.
    #[error("missing or invalid agent token")]
    Unauthenticated,
    /// The request body isn't a well-formed intent.
    #[error("malformed intent: {0}")]
    Malformed(String),
    /// The action doesn't exist or isn't visible to this agent (indistinguishable on purpose).
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    /// The input doesn't match the action's schema.
    #[error("invalid input for `{action}`")]
    InvalidInput {
        /// The action.
        action: String,
        /// One entry per problem, naming the field.
        problems: Vec<String>,
    },
    /// The idempotency key was used before with a different payload.
    #[error("idempotency key `{0}` was already used with a different payload")]
    IdempotencyConflict(String),
    /// The idempotency key belongs to an intent that is still running.
    #[error("an intent with idempotency key `{0}` is still in progress; retry later")]
    IdempotencyInProgress(String),
    /// No such intent for this agent.
    #[error("intent not found")]
    IntentNotFound,
    /// The action ran, but its outcome could not be written to the store or the audit log.
    #[error("the action ran, but its outcome could not be recorded; fetch GET /v1/intents/{0} for the result")]
    OutcomeNotRecorded(String),
    /// A quota covering the intent can't take it in its current window: nothing was
    /// executed, and the idempotency key is free again for a retry after the reset.
    #[error("{0}")]
    RateLimited(Box<RateLimit>),
    /// The audit log or the store could not be written: nothing was executed.
    #[error("the gateway's store is unavailable; the action did not run")]
    StoreUnavailable(String),
    /// A readiness check fails (shutting down, the store doesn't answer, the audit log can't
    /// be written), so the gateway takes no new intents; another instance (or this one,
    /// later) will.
    #[error("the gateway is not taking intents now ({}); retry, and another instance will serve it", .0.reason)]
    NotAccepting(NotReady),
}

/// The `/readyz` check that keeps the gateway from taking intents, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady {
    /// The check's name, as `/readyz` lists it: `serving`, `store` or `audit`.
    pub check: &'static str,
    /// Why it fails, in words safe to show an agent.
    pub reason: &'static str,
}

/// The gateway could not be started with this configuration.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct StartError(pub Vec<Diagnostic>);

/// Which quota refused an intent, and until when.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quota `{quota}` can't take this intent ({used} of {max} used, {requested} requested) until {resets_at}; the action did not run"
)]
pub struct RateLimit {
    /// The quota's name.
    pub quota: String,
    /// Used in the window (a count, or a sum as a decimal).
    pub used: String,
    /// The window's maximum.
    pub max: String,
    /// What this intent needs.
    pub requested: String,
    /// When the window resets, RFC 3339 UTC.
    pub resets_at: String,
    /// Seconds until then (at least 1).
    pub retry_after_secs: u64,
}
