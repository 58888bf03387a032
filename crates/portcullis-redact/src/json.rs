//! Scrubbing parsed JSON: string values, object keys and the digits of numbers.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::Scrubber;

/// Scrubs `root` in place. The walk uses its own stack, so a deeply nested value built in
/// code (not parsed, and so not depth-limited) can't overflow the thread's stack.
pub(crate) fn scrub_value(scrubber: &Scrubber, root: &mut Value) {
    let mut stack = vec![root];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) => {
                if let Cow::Owned(clean) = scrubber.scrub_str(text) {
                    *text = clean;
                }
            }
            Value::Number(number) => {
                let digits = number.to_string();
                if let Cow::Owned(clean) = scrubber.scrub_str(&digits) {
                    *value = Value::String(clean);
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(members) => {
                scrub_keys(scrubber, members);
                stack.extend(members.values_mut());
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
}

/// Rebuilds `members` with scrubbed keys, keeping their order, when any key holds a secret.
fn scrub_keys(scrubber: &Scrubber, members: &mut Map<String, Value>) {
    if members
        .keys()
        .all(|key| matches!(scrubber.scrub_str(key), Cow::Borrowed(_)))
    {
        return;
    }
    for (key, value) in std::mem::take(members) {
        let key = scrubber.scrub_str(&key).into_owned();
        let key = unique_key(members, key);
        members.insert(key, value);
    }
}

/// `key`, or `key#2`, `key#3`… when it is taken: two keys that differed only in their secret
/// become equal once scrubbed, and the second must not overwrite the first.
pub(crate) fn unique_key(members: &Map<String, Value>, key: String) -> String {
    if !members.contains_key(&key) {
        return key;
    }
    let mut n = 2_usize;
    loop {
        let candidate = format!("{key}#{n}");
        if !members.contains_key(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{PLACEHOLDER, Scrubber};

    const SECRET: &str = "ghp_0123456789abcdef";

    fn scrubbed(mut value: serde_json::Value) -> serde_json::Value {
        Scrubber::new([SECRET]).scrub_json(&mut value);
        value
    }

    #[test]
    fn secrets_written_with_unicode_escapes_are_scrubbed_after_parsing() {
        // What the upstream sent: every character of the token escaped.
        let escaped: String = SECRET.chars().map(|c| format!("\\u{:04x}", u32::from(c))).collect();
        let body = format!(r#"{{"echo": "token={escaped}"}}"#);
        assert!(!body.contains(SECRET));
        let value = scrubbed(serde_json::from_str(&body).unwrap());
        assert_eq!(value, json!({"echo": "token=<redacted>"}));
    }

    #[test]
    fn strings_at_any_depth_are_scrubbed() {
        let value = scrubbed(json!({"a": [{"b": {"c": [SECRET, "ok"]}}], "d": "ok"}));
        assert_eq!(value, json!({"a": [{"b": {"c": [PLACEHOLDER, "ok"]}}], "d": "ok"}));
    }

    #[test]
    fn secrets_in_object_keys_are_scrubbed_in_place() {
        let value = scrubbed(json!({"first": 1, SECRET: {SECRET: true}, "last": 3}));
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["first", PLACEHOLDER, "last"]);
        assert_eq!(value[PLACEHOLDER], json!({PLACEHOLDER: true}));
    }

    #[test]
    fn keys_that_collide_once_scrubbed_are_all_kept() {
        let mut value = json!({SECRET: 1, "other-secret": 2, "<redacted>#2": 3});
        Scrubber::new([SECRET, "other-secret"]).scrub_json(&mut value);
        let expected = json!({"<redacted>": 1, "<redacted>#2": 2, "<redacted>#2#2": 3});
        assert_eq!(value, expected);
        let value = scrubbed(json!({"x": 0, "<redacted>": 1, SECRET: 2}));
        assert_eq!(value, json!({"x": 0, "<redacted>": 1, "<redacted>#2": 2}));
    }

    #[test]
    fn numbers_holding_a_numeric_secret_are_scrubbed() {
        let mut value = json!({"pin": 987_654_321, "other": 12});
        Scrubber::new(["87654"]).scrub_json(&mut value);
        assert_eq!(value, json!({"pin": "9<redacted>321", "other": 12}));
    }

    #[test]
    fn json_in_a_json_string_is_scrubbed_through_its_escapes() {
        let mut value = json!({"payload": "{\"t\":\"\\u0067hp_0123456789abcdef\"}"});
        Scrubber::new([SECRET]).scrub_json(&mut value);
        assert_eq!(value, json!({"payload": "{\"t\":\"<redacted>\"}"}));
    }

    #[test]
    fn deep_values_do_not_overflow_the_stack() {
        let mut value = json!(SECRET);
        for _ in 0..100_000 {
            value = serde_json::Value::Array(vec![value]);
        }
        Scrubber::new([SECRET]).scrub_json(&mut value);
        let mut inner = &value;
        while let Some(next) = inner.get(0) {
            inner = next;
        }
        assert_eq!(inner, PLACEHOLDER);
        // serde_json drops values recursively; unwind by hand so the test itself can't overflow.
        while let serde_json::Value::Array(mut items) = value {
            value = items.pop().unwrap_or_default();
        }
    }
}
