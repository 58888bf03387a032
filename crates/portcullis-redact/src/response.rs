//! [`redact`]: the one way from an upstream response to what an agent may see.

use portcullis_core::RawResponse;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::detect::{Detector, JsonFinding, Treatment};
use crate::{Projection, Scrubber};

/// The header every agent sees, so it knows how to read the body.
const CONTENT_TYPE: &str = "content-type";

/// The only thing the agent layer may return to an agent about an upstream response.
///
/// Its fields are private and only [`redact`] builds one, so a value of this type has been
/// scrubbed and projected. It serializes as
/// `{"status": 200, "headers": {"content-type": "…"}, "body": …}`; `headers` is left out when
/// empty, and repeated header names are joined with `, ` as HTTP allows.
#[derive(Debug, Clone, Serialize)]
pub struct AgentResult {
    status: u16,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "headers_as_object")]
    headers: Vec<(String, String)>,
    body: Value,
}

impl AgentResult {
    /// The upstream's HTTP status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The exposed headers (lowercase names, scrubbed values), in the order received.
    #[must_use]
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The scrubbed, projected body.
    #[must_use]
    pub fn body(&self) -> &Value {
        &self.body
    }
}

/// What of a response an action lets the agent see.
#[derive(Debug, Clone, Copy)]
pub struct ResponsePolicy<'a> {
    /// The action's `response.keep`; `None` keeps the whole body.
    pub keep: Option<&'a Projection>,
    /// Lowercase names of the headers the agent may see; `content-type` always is.
    pub expose_headers: &'a [String],
    /// Detection of secrets and personal data in what is left; `None` skips it.
    pub detection: Option<Detection<'a>>,
}

/// How the detector applies to a response.
#[derive(Debug, Clone, Copy)]
pub struct Detection<'a> {
    /// The rule set.
    pub detector: &'a Detector,
    /// Mask or drop what is found.
    pub treatment: Treatment,
    /// Finding kinds left as they are (the action's purpose is to return them).
    pub allow: &'a [String],
}

/// Turns a raw upstream response into what the agent may see.
///
/// - A body that parses as JSON (whatever the content type says) is parsed, scrubbed after
///   decoding (so `\uXXXX` escapes can't hide a secret) and then projected with `keep`.
/// - Any other body becomes a JSON string of the lossily decoded, scrubbed text. When `keep`
///   is set it becomes `null` instead: the action promised to return only certain fields,
///   and text has no fields to pick.
/// - An empty body becomes `null`.
/// - Only `content-type` and the exposed headers are kept, their values scrubbed.
/// - Then the detector (if any) runs over what is left: the projected body, JSON-aware,
///   and the exposed header values (pointers `/headers/NAME`). Its findings are returned
///   with the result, so the caller can withhold it altogether.
#[must_use]
pub fn redact(raw: RawResponse, scrubber: &Scrubber, policy: &ResponsePolicy<'_>) -> (AgentResult, Vec<JsonFinding>) {
    let mut headers = exposed_headers(raw.headers, scrubber, policy.expose_headers);
    let mut body = redact_body(&raw.body, scrubber, policy.keep);
    let mut found = Vec::new();
    if let Some(detection) = &policy.detection {
        found = detection
            .detector
            .redact_json_allowing(&mut body, detection.treatment, detection.allow);
        headers.retain_mut(|(name, value)| {
            let mut wrapped = Value::Object(serde_json::Map::from_iter([(
                name.clone(),
                Value::String(std::mem::take(value)),
            )]));
            for mut finding in
                detection
                    .detector
                    .redact_json_allowing(&mut wrapped, detection.treatment, detection.allow)
            {
                finding.pointer.insert_str(0, "/headers");
                found.push(finding);
            }
            match wrapped.get_mut(name.as_str()).map(Value::take) {
                Some(Value::String(clean)) => {
                    *value = clean;
                    true
                }
                _ => false,
            }
        });
    }
    let result = AgentResult {
        status: raw.status,
        headers,
        body,
    };
    (result, found)
}

/// Scrubs third-party error text (an upstream's error message, a transport error) before it
/// reaches an agent, a log, a trace or the audit log.
#[must_use]
pub fn scrub_error(scrubber: &Scrubber, message: &str) -> String {
    scrubber.scrub_str(message).into_owned()
}

fn exposed_headers(headers: Vec<(String, String)>, scrubber: &Scrubber, exposed: &[String]) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, _)| {
            name.eq_ignore_ascii_case(CONTENT_TYPE) || exposed.iter().any(|e| e.eq_ignore_ascii_case(name))
        })
        .map(|(name, value)| {
            let value = scrubber.scrub_str(&value).into_owned();
            (name.to_ascii_lowercase(), value)
        })
        .collect()
}

fn redact_body(body: &[u8], scrubber: &Scrubber, keep: Option<&Projection>) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(mut json) => {
            scrubber.scrub_json(&mut json);
            match keep {
                Some(projection) => projection.apply(&json),
                None => json,
            }
        }
        Err(_) if keep.is_some() => Value::Null,
        Err(_) => Value::String(scrubber.scrub_str(&String::from_utf8_lossy(body)).into_owned()),
    }
}

fn headers_as_object<S: Serializer>(headers: &[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
    let mut joined: Vec<(&str, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        match joined.iter_mut().find(|(seen, _)| seen == name) {
            Some((_, all)) => {
                all.push_str(", ");
                all.push_str(value);
            }
            None => joined.push((name, value.clone())),
        }
    }
    serializer.collect_map(joined)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use serde_json::json;

    use super::*;
    use crate::PLACEHOLDER;

    const SECRET: &str = "sk_live_0123456789abcdef";

    fn raw(headers: &[(&str, &str)], body: &str) -> RawResponse {
        RawResponse {
            status: 201,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn run(raw: RawResponse, keep: Option<&Projection>, expose: &[&str]) -> AgentResult {
        let expose: Vec<String> = expose.iter().map(|e| (*e).to_owned()).collect();
        let policy = ResponsePolicy {
            keep,
            expose_headers: &expose,
            detection: None,
        };
        redact(raw, &Scrubber::new([SECRET]), &policy).0
    }

    fn detected(raw: RawResponse, treatment: Treatment, allow: &[&str]) -> (AgentResult, Vec<JsonFinding>) {
        let allow: Vec<String> = allow.iter().map(|a| (*a).to_owned()).collect();
        let expose = ["x-contact".to_owned()];
        let detector = Detector::builtin();
        let policy = ResponsePolicy {
            keep: None,
            expose_headers: &expose,
            detection: Some(Detection {
                detector: &detector,
                treatment,
                allow: &allow,
            }),
        };
        redact(raw, &Scrubber::new([SECRET]), &policy)
    }

    #[test]
    fn the_detector_runs_over_body_and_exposed_headers_after_scrubbing() {
        let body = format!(r#"{{"pan": "4111 1111 1111 1111", "echo": "{SECRET}", "owner": "jane@example.com"}}"#);
        let raw = raw(&[("x-contact", "ops@example.com"), ("x-other", "a@example.com")], &body);
        let (result, found) = detected(raw.clone(), Treatment::Mask, &[]);
        assert_eq!(
            result.body(),
            &json!({"pan": "[REDACTED:payment-card]", "echo": PLACEHOLDER, "owner": "[REDACTED:email]"})
        );
        assert_eq!(
            result.headers(),
            [("x-contact".to_owned(), "[REDACTED:email]".to_owned())]
        );
        let at: Vec<(&str, &str)> = found.iter().map(|f| (&*f.kind, f.pointer.as_str())).collect();
        assert_eq!(
            at,
            [
                ("email", "/owner"),
                ("payment-card", "/pan"),
                ("email", "/headers/x-contact")
            ]
        );

        let (dropped, _) = detected(raw.clone(), Treatment::Drop, &[]);
        assert_eq!(dropped.body(), &json!({"echo": PLACEHOLDER}));
        assert!(dropped.headers().is_empty());

        let (allowed, found) = detected(raw, Treatment::Mask, &["email"]);
        assert_eq!(allowed.body()["owner"], "jane@example.com");
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn a_text_body_is_masked_or_dropped_whole() {
        let raw = raw(&[("content-type", "text/plain")], "call +14155550123 now");
        assert_eq!(
            detected(raw.clone(), Treatment::Mask, &[]).0.body(),
            &json!("call [REDACTED:phone-e164] now")
        );
        assert_eq!(detected(raw, Treatment::Drop, &[]).0.body(), &Value::Null);
    }

    #[test]
    fn only_content_type_and_exposed_headers_are_kept_and_scrubbed() {
        let headers = [
            ("content-type", "application/json"),
            ("set-cookie", "session=1"),
            ("x-request-id", "abc"),
            ("x-echo", "Bearer sk_live_0123456789abcdef"),
            ("X-Ratelimit-Remaining", "9"),
        ];
        let result = run(raw(&headers, "{}"), None, &["x-echo", "x-ratelimit-remaining"]);
        let expected = [
            ("content-type", "application/json"),
            ("x-echo", "Bearer <redacted>"),
            ("x-ratelimit-remaining", "9"),
        ];
        let expected: Vec<_> = expected.iter().map(|(n, v)| ((*n).into(), (*v).into())).collect();
        assert_eq!(result.headers(), expected);
        assert_eq!(result.status(), 201);
    }

    #[test]
    fn json_bodies_are_scrubbed_after_decoding_then_projected() {
        let escaped: String = SECRET.chars().map(|c| format!("\\u{:04X}", u32::from(c))).collect();
        let body = format!(r#"{{"id": 7, "echo": "{escaped}", "token": "{SECRET}"}}"#);
        let keep = Projection::parse(&["/id".to_owned(), "/echo".to_owned()]).unwrap();
        let result = run(raw(&[("content-type", "text/plain")], &body), Some(&keep), &[]);
        assert_eq!(result.body(), &json!({"id": 7, "echo": PLACEHOLDER}));
        let whole = run(raw(&[], &body), None, &[]);
        assert_eq!(
            whole.body(),
            &json!({"id": 7, "echo": PLACEHOLDER, "token": PLACEHOLDER})
        );
    }

    #[test]
    fn text_bodies_become_a_scrubbed_string_or_null_under_keep() {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}"));
        let body = format!("error: bad key {SECRET} (sent Basic {basic})\n");
        let result = run(raw(&[("content-type", "application/json")], &body), None, &[]);
        let text = result.body().as_str().unwrap();
        assert!(text.starts_with("error: bad key <redacted> (sent Basic dTp"), "{text}");
        assert!(!text.contains(SECRET) && !text.contains(&basic), "{text}");
        let keep = Projection::parse(&["/id".to_owned()]).unwrap();
        assert_eq!(run(raw(&[], &body), Some(&keep), &[]).body(), &Value::Null);
    }

    #[test]
    fn a_truncated_json_body_is_still_scrubbed_through_its_escapes() {
        let body = r#"{"echo": "\u0073k_live_0123456789abcdef", "more": ["#;
        let result = run(raw(&[], body), None, &[]);
        assert_eq!(result.body(), &json!(r#"{"echo": "<redacted>", "more": ["#));
    }

    #[test]
    fn non_utf8_text_is_decoded_lossily_and_scrubbed() {
        let mut body = vec![0xff];
        body.extend_from_slice(SECRET.as_bytes());
        let raw = RawResponse {
            status: 500,
            headers: Vec::new(),
            body,
        };
        assert_eq!(run(raw, None, &[]).body(), &json!("\u{FFFD}<redacted>"));
    }

    #[test]
    fn an_empty_body_is_null() {
        assert_eq!(run(raw(&[], ""), None, &[]).body(), &Value::Null);
    }

    #[test]
    fn serializes_headers_as_an_object() {
        let headers = [("content-type", "application/json"), ("link", "<a>"), ("link", "<b>")];
        let result = run(raw(&headers, r#"{"ok": true}"#), None, &["link"]);
        let json = serde_json::to_value(&result).unwrap();
        let expected = json!({
            "status": 201,
            "headers": {"content-type": "application/json", "link": "<a>, <b>"},
            "body": {"ok": true},
        });
        assert_eq!(json, expected);
        let bare = serde_json::to_value(run(raw(&[], "1"), None, &[])).unwrap();
        assert_eq!(bare, json!({"status": 201, "body": 1}));
    }

    #[test]
    fn third_party_error_text_is_scrubbed() {
        let message = format!("upstream said: invalid api key {SECRET}");
        let clean = scrub_error(&Scrubber::new([SECRET]), &message);
        assert_eq!(clean, "upstream said: invalid api key <redacted>");
    }
}
