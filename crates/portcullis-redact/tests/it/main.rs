//! Properties of the public API: whatever surrounds a secret, no spelling of it gets through.

mod corpus;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use portcullis_core::RawResponse;
use portcullis_redact::{PLACEHOLDER, Projection, ResponsePolicy, Scrubber, redact};
use proptest::prelude::*;

/// Printable ASCII secrets, as API keys and passwords are.
fn secret() -> impl Strategy<Value = String> {
    "[ -~]{8,40}"
}

/// Any text, including non-ASCII and control characters.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,30}"
}

/// A secret that overlaps the placeholder (`d>…`, `…<re`) can reappear where a placeholder
/// meets the text next to it; such a value can't be told apart from the placeholder itself.
fn overlaps_placeholder(secret: &str) -> bool {
    (1..PLACEHOLDER.len())
        .any(|n| secret.starts_with(&PLACEHOLDER[PLACEHOLDER.len() - n..]) || secret.ends_with(&PLACEHOLDER[..n]))
        || PLACEHOLDER.contains(secret)
}

fn spellings(secret: &str) -> Vec<String> {
    let mut all = vec![secret.to_owned()];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        all.push(engine.encode(secret));
    }
    all
}

proptest! {
    #[test]
    fn no_spelling_of_a_secret_survives(
        secret in secret(),
        parts in proptest::collection::vec(text(), 6),
        order in proptest::sample::subsequence((0..5).collect::<Vec<usize>>(), 1..=5),
    ) {
        prop_assume!(!overlaps_placeholder(&secret));
        let forms = spellings(&secret);
        let mut input = parts[5].clone();
        for (i, form) in order.iter().enumerate() {
            input.push_str(&forms[*form]);
            input.push_str(&parts[i]);
        }
        let clean = Scrubber::new([&secret]).scrub_str(&input);
        for form in &forms {
            prop_assert!(!clean.contains(form.as_str()), "{form:?} left in {clean:?}");
        }
    }

    #[test]
    fn a_secret_inside_a_longer_base64_value_is_cut_out(
        secret in secret(),
        prefix in proptest::collection::vec(any::<u8>(), 0..7),
        suffix in proptest::collection::vec(any::<u8>(), 0..7),
    ) {
        let mut value = prefix.clone();
        value.extend_from_slice(secret.as_bytes());
        value.extend_from_slice(&suffix);
        let encoded = STANDARD.encode(&value);
        let clean = Scrubber::new([&secret]).scrub_str(&encoded).into_owned();
        let (left, right) = clean.split_once(PLACEHOLDER).expect("a placeholder");
        // At most the one character on each side that mixes secret and surrounding bits.
        prop_assert!(left.len() <= (8 * prefix.len()).div_ceil(6), "{clean}");
        prop_assert!(right.len() <= encoded.len() - 8 * (prefix.len() + secret.len()) / 6);
    }

    #[test]
    fn a_json_body_never_returns_the_secret_however_it_is_escaped(
        secret in secret(),
        key in text(),
        before in text(),
        escape_every in 1_usize..4,
    ) {
        prop_assume!(!overlaps_placeholder(&secret));
        let escaped: String = secret
            .chars()
            .enumerate()
            .map(|(i, c)| if i % escape_every == 0 { format!("\\u{:04x}", u32::from(c)) } else { json_char(c) })
            .collect();
        let key = serde_json::to_string(&key).expect("a string");
        let body = format!(r#"{{{key}: "{}{escaped}", "{escaped}": [1, "{escaped}"]}}"#, json_text(&before));
        let raw = RawResponse { status: 200, headers: Vec::new(), body: body.into_bytes() };
        let policy = ResponsePolicy { keep: None, expose_headers: &[], detection: None };
        let (result, _) = redact(raw, &Scrubber::new([&secret]), &policy);
        prop_assert!(result.body().is_object(), "{:?}", result.body());
        let out = serde_json::to_string(&result).expect("serializable");
        let reparsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        for text in strings(&reparsed) {
            prop_assert!(!text.contains(&secret), "{text:?}");
        }
    }
}

/// Every key and string value of `value`, decoded.
fn strings(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(strings).collect(),
        serde_json::Value::Object(members) => members
            .iter()
            .flat_map(|(k, v)| std::iter::once(k.clone()).chain(strings(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// `c` as it may appear inside a JSON string.
fn json_char(c: char) -> String {
    let quoted = serde_json::to_string(&c.to_string()).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_owned()
}

fn json_text(text: &str) -> String {
    text.chars().map(json_char).collect()
}

#[test]
fn projection_and_scrubbing_together() {
    let secret = "xoxb-1111-2222-abcdef";
    let body =
        format!(r#"{{"ok": true, "channel": "C1", "message": {{"text": "token is {secret}", "bot": "{secret}"}}}}"#);
    let raw = RawResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-slack-req-id".into(), secret.into()),
        ],
        body: body.into_bytes(),
    };
    let keep = Projection::parse(&["/ok".into(), "/message/text".into()]).expect("valid");
    let expose = ["x-slack-req-id".to_owned()];
    let policy = ResponsePolicy {
        keep: Some(&keep),
        expose_headers: &expose,
        detection: None,
    };
    let (result, _) = redact(raw, &Scrubber::new([secret]), &policy);
    let json = serde_json::to_value(&result).expect("serializable");
    assert_eq!(
        json,
        serde_json::json!({
            "status": 200,
            "headers": {"content-type": "application/json", "x-slack-req-id": PLACEHOLDER},
            "body": {"ok": true, "message": {"text": "token is <redacted>"}},
        })
    );
}
