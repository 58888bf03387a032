//! Rendering a held payload so a person can read what they approve: the whole JSON
//! pretty-printed, and every long or multi-line string again as plain text under its field
//! name (an email body is unreadable as one JSON string full of `\n`).

use serde_json::Value;

/// Strings longer than this (in characters) are also shown as text blocks.
const LONG_TEXT: usize = 80;

/// A string field shown as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextBlock {
    /// Where it is in the payload: `body`, `message.text`, `lines[2]`.
    pub field: String,
    /// The text itself.
    pub text: String,
}

/// The payload as indented JSON.
pub(crate) fn pretty(payload: &Value) -> String {
    serde_json::to_string_pretty(payload).unwrap_or_else(|_| payload.to_string())
}

/// Every string in the payload that is long or has line breaks, in document order.
pub(crate) fn text_blocks(payload: &Value) -> Vec<TextBlock> {
    let mut out = Vec::new();
    collect(payload, String::new(), &mut out);
    out
}

fn collect(value: &Value, path: String, out: &mut Vec<TextBlock>) {
    match value {
        Value::String(s) if s.contains('\n') || s.chars().count() > LONG_TEXT => out.push(TextBlock {
            field: if path.is_empty() { "(payload)".to_owned() } else { path },
            text: s.clone(),
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (name, item) in fields {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                collect(item, child, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn long_and_multi_line_strings_become_text_blocks_with_their_field() {
        let long = "x".repeat(81);
        let payload = json!({
            "to": "someone@example.com",
            "body": "Hello,\nthe refund is on its way.",
            "parts": [{"note": long}, {"note": "short"}],
            "exactly80": "y".repeat(80),
        });
        assert_eq!(
            text_blocks(&payload),
            vec![
                TextBlock {
                    field: "body".into(),
                    text: "Hello,\nthe refund is on its way.".into()
                },
                TextBlock {
                    field: "parts[0].note".into(),
                    text: long
                },
            ]
        );
    }

    #[test]
    fn pretty_json_is_indented_and_keeps_the_order() {
        let payload = json!({"b": 1, "a": {"c": [1, 2]}});
        assert_eq!(
            pretty(&payload),
            "{\n  \"b\": 1,\n  \"a\": {\n    \"c\": [\n      1,\n      2\n    ]\n  }\n}"
        );
    }
}
