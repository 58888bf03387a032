//! The action file format as written by people, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// One action as written in an action file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAction {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// A JSON Schema for the input; `additionalProperties: false` is implied.
    pub input: Spanned<serde_json::Value>,
    #[serde(default)]
    pub resource: Option<Spanned<RawResource>>,
    /// An HTTP request; exactly one of `request` and `smtp`.
    #[serde(default)]
    pub request: Option<Spanned<RawRequest>>,
    /// An email sent over SMTP; exactly one of `request` and `smtp`.
    #[serde(default)]
    pub smtp: Option<Spanned<RawSmtp>>,
    #[serde(default)]
    pub credential: Option<Spanned<String>>,
    #[serde(default)]
    pub response: RawResponseSpec,
    #[serde(default)]
    pub hints: RawHints,
    /// Whether what the action returns may be attacker-controlled (`untrusted`).
    #[serde(default)]
    pub provenance: crate::action::Provenance,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequest {
    pub method: String,
    pub url: Spanned<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub redact: bool,
    /// How many redirects the gateway follows; 0 (the default) returns a 3xx as it is.
    /// Signed, so that a negative number gets the same message as one that is too large.
    #[serde(default)]
    pub redirects: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmtp {
    pub server: String,
    pub port: i64,
    pub tls: crate::smtp::SmtpTls,
    pub from: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub cc: Option<String>,
    #[serde(default)]
    pub bcc: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResponseSpec {
    #[serde(default)]
    pub keep: Option<Vec<String>>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub redact: crate::action::ResponseRedaction,
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHints {
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub destructive: Option<bool>,
    #[serde(default)]
    pub idempotent: Option<bool>,
}
