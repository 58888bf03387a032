//! `/readyz` and admission agree: once shutdown has begun, `/readyz` answers 503 naming the
//! `serving` check, and a new intent is refused with `503 not_ready` naming it too. (Through
//! the real binary the listener closes as draining begins, so this is where it shows.)

use axum::http::StatusCode;
use serde_json::json;

use crate::metrics::World;

#[tokio::test]
async fn once_draining_readyz_fails_on_serving_and_new_intents_are_refused_naming_it() {
    let w = World::new(true).await;
    let (status, body) = w.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    let ticket = json!({"action": "tickets.create", "input": {"title": "t", "priority": "low"}});
    assert_eq!(w.send(&ticket).await.0, StatusCode::OK);

    w.live.drain();
    let (status, body) = w.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not ready", "{body}");
    let failing: Vec<_> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{body}");
    assert_eq!(failing[0]["name"], "serving", "{body}");
    assert_eq!(failing[0]["detail"], "shutting down", "{body}");

    let (status, body) = w.send(&ticket).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert_eq!(body["error"]["details"]["check"], "serving", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    // Refused before anything ran: no decision, no audit event, no upstream call.
    let (_, metrics) = w.get_text("/metrics").await;
    assert!(
        metrics.contains("portcullis_decisions_total{effect=\"allow\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_upstream_responses_total{action=\"tickets.create\",code=\"2xx\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_audit_append_seconds_count 2\n"),
        "{metrics}"
    );
}
