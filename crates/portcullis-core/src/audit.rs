use serde::{Deserialize, Serialize};

use crate::{ActionName, AgentId, Decision, IntentId};

/// The kinds of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// An authenticated intent was rejected before a decision (unknown action, invalid input).
    Rejected,
    /// Policy decided; written before any side effect.
    Decided,
    /// The action ran (or failed to run) after an allow; written after the side effect.
    Outcome,
    /// A person approved a held intent (`actor` names them).
    Approval,
    /// A person denied a held intent (`actor` names them).
    Denial,
    /// A held intent expired without enough approvals.
    Expiry,
}

impl AuditKind {
    /// The name as serialized (`decided`, `outcome`…).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Decided => "decided",
            Self::Outcome => "outcome",
            Self::Approval => "approval",
            Self::Denial => "denial",
            Self::Expiry => "expiry",
        }
    }
}

/// One audit event. Everything in it is already redacted: it never holds a credential
/// value or the raw upstream body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// The intent it belongs to.
    pub intent_id: IntentId,
    /// The authenticated agent (for approval events: the agent that asked).
    pub agent: AgentId,
    /// The person who acted, for approval and denial events.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actor: Option<String>,
    /// The requested action, when it was a valid action name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionName>,
    /// SHA-256 of the canonical validated input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    /// The decision, for `decided` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Whether this was a dry run (nothing executed).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub dry_run: bool,
    /// Free-form, redacted details: the rejection error, the upstream status, the failure.
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod kind_tests {
    use super::AuditKind;

    #[test]
    fn kind_names_are_the_serialized_names() {
        for kind in [
            AuditKind::Rejected,
            AuditKind::Decided,
            AuditKind::Outcome,
            AuditKind::Approval,
            AuditKind::Denial,
            AuditKind::Expiry,
        ] {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::json!(kind.as_str())));
        }
    }
}
