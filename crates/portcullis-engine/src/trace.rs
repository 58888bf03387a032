//! Spans: one `intent` span per intent, and a child span per pipeline stage (`authenticate`,
//! `validate`, `decide`, `hold`, `prepare`, `execute`, `redact`, `record`, `audit`).
//!
//! They are ordinary `tracing` spans: log lines written inside one carry its fields (the
//! intent id first of all), and when `tracing.otlp_endpoint` is set the binary exports them
//! over OTLP. Field values are names from the configuration, ids the gateway made, and
//! fixed words; the input is attached only when `tracing.payloads` is on, masked and
//! capped. The exporter passes every attribute through the redactor once more.

use tracing::Span;
use tracing::field::Empty;

use portcullis_core::Decision;
use portcullis_redact::detect::{Detector, Treatment};

/// The name of the per-intent span.
pub const INTENT_SPAN: &str = "intent";

/// A new `intent` span, its fields empty until the pipeline records them. The REST adapter
/// opens it before authenticating the caller, so the `authenticate` stage is its child; over
/// MCP the bearer token is checked per HTTP request before any tool call, outside the span.
#[must_use]
pub fn intent_span() -> Span {
    tracing::info_span!(
        "intent",
        intent_id = Empty,
        agent = Empty,
        action = Empty,
        effect = Empty,
        policies = Empty,
        status = Empty,
        upstream_status = Empty,
        upstream_latency_ms = Empty,
        approved_by = Empty,
        input = Empty,
    )
}

/// The `intent` span the caller is in, or a new one.
pub(crate) fn current_or_new() -> Span {
    let current = Span::current();
    if current.metadata().is_some_and(|m| m.name() == INTENT_SPAN) {
        current
    } else {
        intent_span()
    }
}

/// Records a decision on the intent span.
pub(crate) fn record_decision(span: &Span, decision: &Decision) {
    span.record("effect", decision.effect.as_str());
    if !decision.policies.is_empty() {
        span.record("policies", decision.policies.join(",").as_str());
    }
}

/// `input` as a span attribute: masked by `detector`, then cut to at most `max` bytes (on a
/// character boundary, marked with `…`).
pub(crate) fn payload_attribute(detector: &Detector, input: &serde_json::Value, max: usize) -> String {
    let mut masked = input.clone();
    detector.redact_json(&mut masked, Treatment::Mask);
    let mut text = masked.to_string();
    if text.len() > max {
        let mut cut = max.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_attributes_are_masked_and_capped_on_a_character_boundary() {
        let detector = Detector::builtin();
        let input = serde_json::json!({"to": "ops@example.com", "note": "ééééééééééééééééééééé"});
        let full = payload_attribute(&detector, &input, 10_000);
        assert!(!full.contains("ops@example.com"), "{full}");
        assert!(full.contains("[REDACTED:email]"), "{full}");
        let cut = payload_attribute(&detector, &input, 40);
        assert!(cut.len() <= 40, "{cut}");
        assert!(cut.ends_with('…'), "{cut}");
        assert!(full.starts_with(cut.trim_end_matches('…')));
    }
}
