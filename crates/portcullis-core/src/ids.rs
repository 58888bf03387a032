use std::fmt;

use serde::{Deserialize, Serialize};

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {reason}")]
pub struct InvalidId {
    kind: &'static str,
    value: String,
    reason: &'static str,
}

fn check(kind: &'static str, value: &str, extra: &[char]) -> Result<(), InvalidId> {
    let fail = |reason| InvalidId {
        kind,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.is_empty() || value.len() > 128 {
        return Err(fail("must be 1 to 128 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
    {
        return Err(fail("may contain only ASCII letters, digits, `_`, `-` and `.`"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            ///
            /// # Errors
            /// When `value` is empty, too long, or has characters outside the allowed set.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check($kind, &value, $extra)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The identity of an agent, as used in policies (`Agent::"id"`).
    AgentId, "agent id", &['.']
);
id_type!(
    /// The name of an approved action, as used in policies (`Action::"name"`).
    ActionName, "action name", &['.']
);
id_type!(
    /// The identifier of one intent, unique across the gateway's history.
    IntentId, "intent id", &[]
);

impl IntentId {
    /// Builds an intent id from 16 random bytes (the caller supplies the randomness).
    #[must_use]
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(format!("int_{}", hex::encode(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_path_and_control_characters() {
        assert!(ActionName::new("github.create_issue").is_ok());
        assert!(ActionName::new("a/b").is_err());
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("bot\n").is_err());
        assert!(IntentId::new("int_ab.cd").is_err());
        let err = AgentId::new("x y").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid agent id `x y`: may contain only ASCII letters, digits, `_`, `-` and `.`"
        );
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let ok: Result<AgentId, _> = serde_json::from_str("\"triage-bot\"");
        assert!(ok.is_ok());
        let bad: Result<AgentId, _> = serde_json::from_str("\"../etc\"");
        assert!(bad.is_err());
    }
}
