//! OpenTelemetry traces over OTLP (HTTP/protobuf): the engine's `intent` spans and their
//! stage spans, exported by a batch processor on its own thread with a blocking HTTP client.
//!
//! Every string the exporter sends (attribute values, event names and attributes, status
//! descriptions) passes through the detector first, like a log line, and is capped.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::Status;
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

use portcullis_engine::config::TracingSettings;
use portcullis_redact::detect::Detector;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The cap on strings other than the payload.
const MIN_ATTRIBUTE_BYTES: usize = 1024;

/// Builds the tracer provider exporting to `settings.endpoint`. The blocking HTTP client is
/// built (and later dropped) on a thread of its own: inside the async runtime it would panic.
///
/// # Errors
/// When the client or the exporter can't be built.
pub(crate) fn provider(settings: &TracingSettings) -> anyhow::Result<SdkTracerProvider> {
    let endpoint = settings.endpoint.clone();
    let service = settings.service_name.clone();
    let cap = settings.payload_max_bytes.max(MIN_ATTRIBUTE_BYTES);
    std::thread::spawn(move || -> anyhow::Result<SdkTracerProvider> {
        // The same TLS setup as the egress client (ring, the system trust store), without
        // installing a process-wide crypto provider.
        let tls = portcullis_exec::tls_client_config(&[])?;
        let client = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(EXPORT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(Redacting {
                inner: exporter,
                detector: None,
                cap,
            })
            .with_resource(resource)
            .build())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread building the trace exporter panicked"))?
}

/// Flushes what is queued and stops the exporter (on a thread of its own, as above).
pub(crate) fn shutdown(provider: SdkTracerProvider) {
    let stopped = std::thread::spawn(move || provider.shutdown()).join();
    if let Ok(Err(e)) = stopped {
        tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
    }
}

/// An exporter that redacts and caps every string before handing the batch on.
#[derive(Debug)]
struct Redacting<E> {
    inner: E,
    /// The rules to apply; `None`: the log's current ones (which follow reloads).
    detector: Option<Arc<Detector>>,
    cap: usize,
}

impl<E: SpanExporter> Redacting<E> {
    fn clean(&self, text: &str) -> String {
        let detector = self
            .detector
            .clone()
            .or_else(crate::logging::current_detector)
            .unwrap_or_else(|| Arc::new(Detector::builtin()));
        let mut clean = crate::logging::redact_line(&detector, text);
        if clean.len() > self.cap {
            let mut cut = self.cap.saturating_sub('…'.len_utf8());
            while !clean.is_char_boundary(cut) {
                cut -= 1;
            }
            clean.truncate(cut);
            clean.push('…');
        }
        clean
    }

    fn clean_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = StringValue::from(self.clean(s.as_str())),
            Value::Array(Array::String(items)) => {
                for s in items {
                    *s = StringValue::from(self.clean(s.as_str()));
                }
            }
            _ => {}
        }
    }

    fn clean_attributes(&self, attributes: &mut [KeyValue]) {
        for kv in attributes {
            self.clean_value(&mut kv.value);
        }
    }

    fn clean_span(&self, span: &mut SpanData) {
        self.clean_attributes(&mut span.attributes);
        for event in &mut span.events.events {
            event.name = Cow::Owned(self.clean(&event.name));
            self.clean_attributes(&mut event.attributes);
        }
        if let Status::Error { description } = &mut span.status {
            *description = Cow::Owned(self.clean(description));
        }
    }
}

impl<E: SpanExporter> SpanExporter for Redacting<E> {
    fn export(&self, mut batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        for span in &mut batch {
            self.clean_span(span);
        }
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::SystemTime;

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// Keeps what it is given.
    #[derive(Debug, Default)]
    struct Keep(Mutex<Vec<SpanData>>);

    impl SpanExporter for Keep {
        fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            if let Ok(mut kept) = self.0.lock() {
                kept.extend(batch);
            }
            std::future::ready(Ok(()))
        }
    }

    const TOKEN: &str = "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";

    fn span() -> SpanData {
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            format!("upstream said {TOKEN}"),
            SystemTime::now(),
            vec![KeyValue::new("error", "mail ops@example.com")],
            0,
        ));
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("intent"),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: vec![
                KeyValue::new("reason", format!("token {TOKEN} refused")),
                KeyValue::new(
                    "list",
                    Value::Array(Array::String(vec![StringValue::from(TOKEN.to_owned())])),
                ),
                KeyValue::new("long", "x".repeat(5000)),
                KeyValue::new("upstream_status", 201_i64),
            ],
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: Status::Error {
                description: Cow::Owned(format!("failed with {TOKEN}")),
            },
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[tokio::test]
    async fn every_exported_string_is_redacted_and_capped_and_numbers_are_kept() {
        let redacting = Redacting {
            inner: Keep::default(),
            detector: Some(Arc::new(Detector::builtin())),
            cap: 1024,
        };
        assert!(redacting.export(vec![span()]).await.is_ok());
        let kept = redacting.inner.0.lock().map(|k| k.clone()).unwrap_or_default();
        let [out] = kept.as_slice() else {
            unreachable!("one span in, one span out: {kept:?}")
        };
        let text = format!("{out:?}");
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("ops@example.com"), "{text}");
        assert!(text.contains("[REDACTED:github-pat]"), "{text}");
        let long = out.attributes.iter().find(|kv| kv.key.as_str() == "long");
        let long = long.map(|kv| kv.value.as_str().len()).unwrap_or_default();
        assert!((1000..=1024).contains(&long), "capped at 1024 bytes, got {long}");
        let status = out.attributes.iter().find(|kv| kv.key.as_str() == "upstream_status");
        assert_eq!(status.map(|kv| kv.value.clone()), Some(Value::I64(201)));
    }
}
