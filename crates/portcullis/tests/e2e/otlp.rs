//! A small OTLP/HTTP trace receiver on loopback: accepts `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, keeps the raw bodies and the decoded spans, answers 200.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// Most requests one receiver serves (the tests send a handful).
const MAX_REQUESTS: usize = 1000;
/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
struct Received {
    bodies: Vec<Vec<u8>>,
    spans: Vec<Span>,
    paths: Vec<String>,
}

/// The receiver; its thread ends with the test process.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl Receiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_REQUESTS) {
                let Ok(stream) = stream else { continue };
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || serve(stream, &sink));
            }
        });
        Self { addr, received }
    }

    /// The endpoint to configure as `tracing.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Every request body as received (protobuf bytes).
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().bodies.clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.received.lock().unwrap().paths.clone()
    }

    /// Waits until `done` holds for the spans received, at most `limit`.
    pub fn wait_for(&self, limit: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + limit;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the spans expected were not exported; got {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Serves requests on one connection until it closes.
fn serve(stream: TcpStream, sink: &Mutex<Received>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        assert!(length <= MAX_BODY, "an OTLP body of {length} bytes");
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let decoded = ExportTraceServiceRequest::decode(body.as_slice());
        let status = if decoded.is_ok() { "200 OK" } else { "400 Bad Request" };
        {
            let mut received = sink.lock().unwrap();
            received.paths.push(path);
            if let Ok(request) = decoded {
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        received.spans.extend(scope.spans);
                    }
                }
            }
            received.bodies.push(body);
        }
        let reply = format!("HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// An attribute's value as text (strings as they are, numbers and booleans printed).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(value_text)
}

fn value_text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Every string a span carries: name, attribute values, event names and attributes.
pub fn all_text(span: &Span) -> String {
    let mut out = vec![span.name.clone()];
    let values = |kvs: &[KeyValue]| kvs.iter().filter_map(value_text).collect::<Vec<_>>();
    out.extend(values(&span.attributes));
    for event in &span.events {
        out.push(event.name.clone());
        out.extend(values(&event.attributes));
    }
    if let Some(status) = &span.status {
        out.push(status.message.clone());
    }
    out.join("\n")
}
