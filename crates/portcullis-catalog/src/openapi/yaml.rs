//! A small deterministic YAML writer for the subset action files need.
//!
//! Maps are written in block style, except that a map or list whose flow form fits on a short
//! line is written as `{type: string, maxLength: 256}`. Strings are plain only when they can't
//! be read back as anything else; otherwise they are double-quoted with JSON escapes, which
//! YAML reads the same way.

use std::fmt::Write as _;

use serde_json::Value;

/// The longest flow-style value written on one line.
const FLOW_WIDTH: usize = 72;

/// A YAML node with its map keys in the order they are to be written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Scalar(Value),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

impl Node {
    /// A JSON value, with map keys in schema-reading order: `type` first, then the other
    /// keywords alphabetically, then `properties` and `items`.
    pub fn from_json(value: &Value) -> Self {
        match value {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by_key(|k| (rank(k), k.as_str()));
                Self::Map(
                    keys.into_iter()
                        .map(|k| (k.clone(), Self::from_json(&m[k.as_str()])))
                        .collect(),
                )
            }
            Value::Array(items) => Self::Seq(items.iter().map(Self::from_json).collect()),
            other => Self::Scalar(other.clone()),
        }
    }

    /// Appends `key: value` to a map node.
    pub fn push(&mut self, key: &str, value: Node) {
        if let Self::Map(entries) = self {
            entries.push((key.to_owned(), value));
        }
    }

    fn flow(&self) -> String {
        match self {
            Self::Scalar(v) => scalar(v, true),
            Self::Seq(items) => format!("[{}]", items.iter().map(Self::flow).collect::<Vec<_>>().join(", ")),
            Self::Map(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", string(k, true), v.flow()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn is_empty_collection(&self) -> bool {
        matches!(self, Self::Map(e) if e.is_empty()) || matches!(self, Self::Seq(e) if e.is_empty())
    }
}

fn rank(key: &str) -> u8 {
    match key {
        "type" => 0,
        "properties" | "items" => 2,
        _ => 1,
    }
}

/// Writes a map node as a YAML document body (no `---`).
pub(crate) fn write_document(node: &Node) -> String {
    let mut out = String::new();
    if let Node::Map(entries) = node {
        write_entries(entries, 0, &mut out);
    }
    out
}

fn write_entries(entries: &[(String, Node)], indent: usize, out: &mut String) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 || indent > 0 {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&string(k, false));
        out.push(':');
        write_value(v, indent, out);
    }
}

/// Writes what follows `key:` or `-`: a scalar or flow value on the same line, or a block below.
fn write_value(v: &Node, indent: usize, out: &mut String) {
    let flow = v.flow();
    if matches!(v, Node::Scalar(_)) || v.is_empty_collection() || (flow.len() <= FLOW_WIDTH && !flow.contains('\n')) {
        let _ = writeln!(out, " {flow}");
        return;
    }
    match v {
        Node::Map(entries) => {
            out.push('\n');
            write_entries(entries, indent + 2, out);
        }
        Node::Seq(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&" ".repeat(indent + 2));
                out.push('-');
                match item {
                    Node::Map(entries) if !entries.is_empty() && item.flow().len() > FLOW_WIDTH => {
                        out.push(' ');
                        let mut inner = String::new();
                        write_entries(entries, indent + 4, &mut inner);
                        out.push_str(inner.trim_start());
                    }
                    _ => write_value(item, indent + 2, out),
                }
            }
        }
        Node::Scalar(_) => {}
    }
}

fn scalar(v: &Value, in_flow: bool) -> String {
    match v {
        Value::String(s) => string(s, in_flow),
        other => other.to_string(),
    }
}

/// Plain when safe, else double-quoted with JSON escapes.
fn string(s: &str, _in_flow: bool) -> String {
    const SPECIAL: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"];
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ' '))
        && !s.ends_with(' ')
        && !s.contains("  ")
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_maps_with_short_flow_leaves_and_reads_back_the_same() {
        let value = json!({
            "name": "x.y",
            "input": {"type": "object", "required": ["a"], "properties": {
                "a": {"type": "string", "maxLength": 3},
                "b": {"type": ["string", "null"], "enum": ["yes", "no", null, "1", "a: b", "#c", ""]},
                "long": {"type": "object", "properties": {"one": {"type": "integer", "minimum": 1}, "two": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}}}}
            }},
            "list": [{"a": 1, "b": "some very long text that will not fit on one line with everything else in it"}, "x", 1.5, true],
            "empty": {}, "none": [], "text": "line\nbreak \"quoted\" \\ tab\t"
        });
        let text = write_document(&Node::from_json(&value));
        assert!(text.contains("  a: {type: string, maxLength: 3}\n"), "{text}");
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, value, "{text}");
    }

    #[test]
    fn strings_that_look_like_other_things_are_quoted() {
        for s in [
            "true", "No", "~", "1", "-x", "a: b", "x #y", "{p}", "", " a", "a ", "null",
        ] {
            assert!(string(s, false).starts_with('"'), "{s}");
        }
        assert_eq!(string("github.create_issue", false), "github.create_issue");
    }
}
