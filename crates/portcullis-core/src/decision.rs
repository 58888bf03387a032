use serde::{Deserialize, Serialize};

/// What policy decided about an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Run the action.
    Allow,
    /// Refuse the action.
    Deny,
    /// Permit the action only after a person approves it.
    Hold,
}

impl Effect {
    /// The lowercase name used in the API, the audit log and eval case files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Hold => "hold",
        }
    }
}

/// A decision with the reasons a person (and the agent) can read, and the ids of the
/// policies that determined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The outcome.
    pub effect: Effect,
    /// Human-readable reasons, from policy annotations or the gateway.
    pub reasons: Vec<String>,
    /// Ids of the policies that determined the outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// For a hold: who may approve and how many distinct approvals are needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSpec>,
}

/// What a hold needs before it runs, from the policies' `@approvers` and `@approvals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSpec {
    /// The approver group that may approve (any approver, and admins, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Distinct approvals needed (at least 1).
    pub required: u32,
}

impl Decision {
    /// A denial decided by the gateway itself rather than by a policy (for example an
    /// evaluation error), which is how the gateway fails closed.
    #[must_use]
    pub fn gateway_deny(reason: impl Into<String>) -> Self {
        Self {
            effect: Effect::Deny,
            reasons: vec![reason.into()],
            policies: Vec::new(),
            approval: None,
        }
    }
}
