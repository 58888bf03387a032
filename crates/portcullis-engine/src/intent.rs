//! The wire shapes of intents and their results.

use serde::Serialize;
use serde_json::Value;

use portcullis_core::{Decision, Effect, IntentId, json};
use portcullis_redact::AgentResult;

use crate::IntentError;

/// An intent as the agent sent it, after strict parsing.
#[derive(Debug, Clone)]
pub struct IntentRequest {
    /// The action name.
    pub action: String,
    /// The input object.
    pub input: Value,
    /// Optional idempotency key.
    pub idempotency_key: Option<String>,
    /// Decide and render, but don't execute.
    pub dry_run: bool,
    /// The agent's task this intent belongs to, tying it to the earlier calls of the same
    /// task for provenance tracking. Scoped to the agent.
    pub session: Option<String>,
}

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `_meta` key of an MCP `tools/call` that carries the intent's idempotency key.
pub const IDEMPOTENCY_META: &str = "portcullis/idempotency_key";
/// The `_meta` key of an MCP `tools/call` that names the agent's session (provenance tracking).
pub const SESSION_META: &str = "portcullis/session";

impl IntentRequest {
    /// Parses a request body: strict JSON (no duplicate keys, bounded depth), an object
    /// with exactly the known fields.
    ///
    /// # Errors
    /// [`IntentError::Malformed`] naming the problem.
    pub fn parse(body: &[u8], limits: json::Limits) -> Result<Self, IntentError> {
        let value = json::parse_strict(body, limits).map_err(|e| IntentError::Malformed(e.to_string()))?;
        Self::from_value(value)
    }

    /// Builds a request from an MCP `tools/call`: the tool's name is the action, its
    /// arguments (none: an empty object) the input, and the idempotency key and session come
    /// from the call's `_meta` ([`IDEMPOTENCY_META`], [`SESSION_META`]) or its transport. The
    /// arguments' depth is checked against `limits`, and then every rule of
    /// [`IntentRequest::from_value`] applies, so a tool call can say nothing a REST body can't.
    ///
    /// # Errors
    /// [`IntentError::Malformed`] naming the problem.
    pub fn from_tool_call(
        name: String,
        arguments: Option<serde_json::Map<String, Value>>,
        idempotency_key: Option<Value>,
        session: Option<Value>,
        limits: json::Limits,
    ) -> Result<Self, IntentError> {
        let input = Value::Object(arguments.unwrap_or_default());
        json::check_depth(&input, limits).map_err(|e| IntentError::Malformed(e.to_string()))?;
        let mut fields = serde_json::Map::new();
        fields.insert("action".to_owned(), Value::String(name));
        fields.insert("input".to_owned(), input);
        if let Some(k) = idempotency_key {
            fields.insert("idempotency_key".to_owned(), k);
        }
        if let Some(s) = session {
            fields.insert("session".to_owned(), s);
        }
        Self::from_value(Value::Object(fields))
    }

    /// Builds a request from an already-parsed JSON object.
    ///
    /// # Errors
    /// [`IntentError::Malformed`] naming the problem.
    pub fn from_value(value: Value) -> Result<Self, IntentError> {
        let Value::Object(mut map) = value else {
            return Err(IntentError::Malformed("the body must be a JSON object".into()));
        };
        if let Some(k) = map.keys().find(|k| {
            !matches!(
                k.as_str(),
                "action" | "input" | "idempotency_key" | "dry_run" | "session"
            )
        }) {
            return Err(IntentError::Malformed(format!("unknown field `{k}`")));
        }
        let action = match map.remove("action") {
            Some(Value::String(a)) => a,
            Some(_) => return Err(IntentError::Malformed("`action` must be a string".into())),
            None => return Err(IntentError::Malformed("missing field `action`".into())),
        };
        let input = match map.remove("input") {
            Some(v @ Value::Object(_)) => v,
            None => Value::Object(serde_json::Map::new()),
            Some(_) => return Err(IntentError::Malformed("`input` must be a JSON object".into())),
        };
        let idempotency_key = match map.remove("idempotency_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k))
                if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && !k.chars().any(char::is_control) =>
            {
                Some(k)
            }
            Some(_) => {
                return Err(IntentError::Malformed(format!(
                    "`idempotency_key` must be a string of 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
                )));
            }
        };
        let dry_run = match map.remove("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(IntentError::Malformed("`dry_run` must be a boolean".into())),
        };
        let session = match map.remove("session") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                crate::provenance::check_session(&s).map_err(|m| IntentError::Malformed(format!("`session`: {m}")))?;
                Some(s)
            }
            Some(_) => return Err(IntentError::Malformed("`session` must be a string".into())),
        };
        Ok(Self {
            action,
            input,
            idempotency_key,
            dry_run,
            session,
        })
    }
}

/// Where an intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Deciding or executing.
    Executing,
    /// The upstream call was made; `result` holds its redacted response.
    Executed,
    /// Policy refused it.
    Denied,
    /// Held for a person.
    PendingApproval,
    /// Allowed, but it could not be executed (unreachable upstream, refused destination, …).
    Failed,
    /// A dry run: decided and rendered, not executed.
    DryRun,
    /// Held, and not approved before its expiry.
    Expired,
    /// The upstream call was made, but its response contained secrets or personal data the
    /// action may not return (`response.redact: block`); `error` says what was found where.
    Withheld,
    /// The gateway stopped (a crash, a kill) while the intent was executing, so whether the
    /// upstream call was made is unknown. It is never run again; its idempotency key stays
    /// taken and returns this status.
    OutcomeUnknown,
}

impl IntentStatus {
    /// The name stored and returned.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executing => "executing",
            Self::Executed => "executed",
            Self::Denied => "denied",
            Self::PendingApproval => "pending_approval",
            Self::Failed => "failed",
            Self::DryRun => "dry_run",
            Self::Expired => "expired",
            Self::Withheld => "withheld",
            Self::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// The decision as the agent sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    /// allow, deny or hold.
    pub effect: Effect,
    /// Reasons.
    pub reasons: Vec<String>,
}

impl From<&Decision> for DecisionView {
    fn from(d: &Decision) -> Self {
        Self {
            effect: d.effect,
            reasons: d.reasons.clone(),
        }
    }
}

/// What a dry run shows: the request that would be sent, with the credential replaced by
/// `<redacted>`.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// Method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Headers.
    pub headers: serde_json::Map<String, Value>,
    /// JSON body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// The response to an intent.
#[derive(Debug, Clone, Serialize)]
pub struct IntentResponse {
    /// The intent id.
    pub id: IntentId,
    /// Where it stands.
    pub status: IntentStatus,
    /// The decision.
    pub decision: DecisionView,
    /// The redacted upstream response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<AgentResult>,
    /// For dry runs: the request that would be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestView>,
    /// For failures: what went wrong, redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For holds: what the approval needs and when it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Value>,
}
