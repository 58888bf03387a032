//! Domain types shared by every Portcullis crate.
//!
//! This crate does no I/O. It holds identifiers, the [`Secret`] wrapper, the
//! policy [`Decision`], audit events, the raw upstream response and strict JSON
//! parsing, so that the parts of the pipeline agree on one vocabulary.

mod audit;
mod decision;
mod diagnostic;
mod ids;
pub mod json;
mod response;
pub mod secret;

pub use audit::{AuditEvent, AuditKind};
pub use decision::{ApprovalSpec, Decision, Effect};
pub use diagnostic::{Diagnostic, line_at_offset, line_of};
pub use ids::{ActionName, AgentId, IntentId, InvalidId};
pub use response::RawResponse;
pub use secret::Secret;

/// The current time as RFC 3339 text, the format used everywhere in the audit log and the API.
#[must_use]
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

/// Formats a timestamp as RFC 3339 (UTC, microsecond precision).
#[must_use]
pub fn format_rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s, us) = (t.hour(), t.minute(), t.second(), t.microsecond());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

/// SHA-256 of `data` as lowercase hex.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
