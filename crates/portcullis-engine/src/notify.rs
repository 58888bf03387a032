//! The hold webhook: every new hold is POSTed (JSON or a Slack-compatible message), signed
//! with HMAC-SHA256, retried with backoff. Delivery runs in its own task: a slow or failing
//! receiver never blocks or loses the hold, which is already stored when this runs.

use std::time::Duration;

use hmac::{Hmac, Mac as _};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::Sha256;
use url::Url;

use portcullis_core::Secret;
use portcullis_exec::{Egress, OutboundRequest};

use crate::approvals::HoldView;
use crate::config::{RawWebhook, WebhookFormat};

/// The header carrying `sha256=HEX(HMAC-SHA256(key, body))`.
pub const SIGNATURE_HEADER: &str = "x-portcullis-signature";
/// First retry delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest delay between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Sends hold notifications.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    url: Url,
    format: WebhookFormat,
    attempts: u32,
    key: Option<Secret<String>>,
    egress: Egress,
}

impl Notifier {
    pub(crate) fn new(spec: &RawWebhook, key: Option<Secret<String>>, egress: Egress) -> Result<Self, String> {
        let url = Url::parse(&spec.url).map_err(|e| format!("`approvals.webhook.url` is invalid: {e}"))?;
        let attempts = spec
            .max_attempts
            .unwrap_or(crate::config::DEFAULT_WEBHOOK_ATTEMPTS)
            .max(1);
        Ok(Self {
            url,
            format: spec.format,
            attempts,
            key,
            egress,
        })
    }

    /// Queues a notification for `hold` and returns at once.
    pub(crate) fn notify(&self, hold: &HoldView, ui_hint: Option<&str>) {
        let body = match self.format {
            WebhookFormat::Json => json!({"event": "hold.created", "hold": hold}),
            WebhookFormat::Slack => slack_message(hold, ui_hint),
        };
        let Ok(bytes) = serde_json::to_vec(&body) else { return };
        let this = self.clone();
        let id = hold.id.clone();
        tokio::spawn(async move { this.deliver(&id, bytes).await });
    }

    async fn deliver(&self, id: &str, body: Vec<u8>) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=self.attempts {
            match self.egress.dangerous().send(self.request(id, &body)).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    tracing::info!(intent = %id, attempt, "hold webhook delivered");
                    return;
                }
                Ok(r) => tracing::warn!(intent = %id, attempt, status = r.status, "hold webhook refused"),
                Err(e) => tracing::warn!(intent = %id, attempt, error = %e, "hold webhook failed"),
            }
            if attempt < self.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tracing::error!(intent = %id, attempts = self.attempts, "hold webhook gave up; the hold is still pending");
    }

    // The webhook is operator configuration, not an agent's action, so it is sent without a
    // policy permit — still through the egress guard, limits and no-redirect rules.
    fn request(&self, id: &str, body: &[u8]) -> OutboundRequest {
        let mut headers = vec![
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("x-portcullis-event"),
                HeaderValue::from_static("hold.created"),
            ),
        ];
        if let Ok(v) = HeaderValue::from_str(id) {
            headers.push((HeaderName::from_static("x-portcullis-intent"), v));
        }
        if let Some(v) = self
            .key
            .as_ref()
            .and_then(|k| signature(k, body))
            .and_then(|s| HeaderValue::from_str(&s).ok())
        {
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), v));
        }
        OutboundRequest {
            method: reqwest::Method::POST,
            url: self.url.clone(),
            headers,
            body: Some(body.to_vec()),
        }
    }
}

/// `sha256=HEX` of the HMAC-SHA256 of `body` under `key`.
pub(crate) fn signature(key: &Secret<String>, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).ok()?;
    mac.update(body);
    Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

fn slack_message(hold: &HoldView, ui_hint: Option<&str>) -> Value {
    let reasons = if hold.reasons.is_empty() {
        "approval required".to_owned()
    } else {
        hold.reasons.join("; ")
    };
    let mut text = format!(
        ":raised_hand: `{}` asked to run `{}` and it needs approval: {}.\nIntent `{}`, expires {}.",
        hold.agent, hold.action, reasons, hold.id, hold.expires_at
    );
    if let Some(ui) = ui_hint {
        text.push_str(&format!("\nReview it at {ui}/ui/approvals/{}", hold.id));
    }
    json!({"text": text})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let key = Secret::new("Jefe".to_owned());
        let sig = signature(&key, b"what do ya want for nothing?").unwrap();
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
