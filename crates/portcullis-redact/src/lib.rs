//! Redaction of upstream responses before anything of them reaches an agent.
//!
//! The gateway knows the credentials it injected into a request, so it can look for exactly
//! those values, and the ways they are commonly encoded, in what comes back: a [`Scrubber`]
//! replaces each with [`PLACEHOLDER`]. JSON is scrubbed after parsing, never as raw bytes,
//! because a secret written with `\uXXXX` escapes is invisible to a byte search yet becomes
//! the secret again in the agent's parser.
//!
//! [`redact`] is the one way to turn a [`portcullis_core::RawResponse`] into an
//! [`AgentResult`], the only response type the agent layer may return: it scrubs the body and
//! the exposed headers and keeps only the paths the action declares with a [`Projection`].
//!
//! [`detect`] finds secrets and personal data the gateway did not inject, by named rules:
//! [`redact`] applies it to what is left of a response, and the gateway to inbound payloads
//! (as policy context), audit events and its own log lines.

mod decoded;
mod error;
mod json;
mod patterns;
mod projection;
mod response;
mod scrub;

pub mod detect;

pub use error::ProjectionError;
pub use projection::Projection;
pub use response::{AgentResult, Detection, ResponsePolicy, redact, scrub_error};
pub use scrub::Scrubber;

/// What replaces a scrubbed value: the same text that `portcullis_core::Secret` prints.
pub const PLACEHOLDER: &str = "<redacted>";

#[cfg(test)]
mod tests {
    use portcullis_core::Secret;

    #[test]
    fn the_placeholder_is_what_a_secret_prints() {
        let secret = Secret::new(String::from("x"));
        assert_eq!(super::PLACEHOLDER, format!("{secret:?}"));
    }
}
