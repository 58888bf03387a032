//! Where an intent's input came from, in the policy context: `context.provenance`.
//!
//! The gateway matches each input value against the values that actions marked
//! `provenance: untrusted` returned to the agent earlier in the same session (see the
//! engine's `provenance` module). Each match is a [`Mark`]: the JSON pointer of the input
//! value, the action whose output it was read from, and when. Policy sees:
//!
//! - `session`: whether the intent came with a session at all (without one nothing can be
//!   matched, so a careful policy holds sensitive actions that arrive without one);
//! - `untrusted`: whether any input value was marked;
//! - `pointers`: the JSON pointers of the marked input values (`/recipient`, `/to/1`);
//! - `sources`: the actions the marked values were read from;
//! - `fields`: per top-level input field that was marked (wholly or inside it), its
//!   `sources`, `pointers` and `first_read` (Unix seconds); an optional attribute, so
//!   policies test `context.provenance.fields has recipient` first;
//! - `at`: each mark as `{pointer, source, read_at}`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One input value that matched data an untrusted action returned earlier in the session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mark {
    /// The JSON pointer of the input value.
    pub pointer: String,
    /// The action whose output held the value.
    pub source: String,
    /// When that output was returned to the agent, Unix seconds.
    pub read_at: i64,
}

/// What the gateway knows of where an intent's input came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputProvenance {
    /// Whether the intent belonged to a session (only then can values be matched).
    pub session: bool,
    /// The input values that came from untrusted data.
    pub marks: Vec<Mark>,
}

impl InputProvenance {
    /// No session, nothing marked.
    pub const NONE: Self = Self {
        session: false,
        marks: Vec::new(),
    };

    /// The top-level input fields with a mark: the keys of `context.provenance.fields`.
    pub(crate) fn marked_fields(&self) -> impl Iterator<Item = String> + '_ {
        self.marks.iter().filter_map(|m| field_of(&m.pointer))
    }
}

/// The top-level input field a pointer lies in (`/to/1` → `to`), unescaped.
fn field_of(pointer: &str) -> Option<String> {
    let first = pointer.strip_prefix('/')?.split('/').next()?;
    Some(first.replace("~1", "/").replace("~0", "~"))
}

/// The value of `context.provenance`.
pub(crate) fn provenance(p: &InputProvenance) -> Value {
    let set = |items: BTreeSet<&str>| Value::Array(items.into_iter().map(Value::from).collect());
    let mut fields: BTreeMap<String, (BTreeSet<&str>, BTreeSet<&str>, i64)> = BTreeMap::new();
    for m in &p.marks {
        let Some(field) = field_of(&m.pointer) else { continue };
        let entry = fields
            .entry(field)
            .or_insert_with(|| (BTreeSet::new(), BTreeSet::new(), m.read_at));
        entry.0.insert(&m.source);
        entry.1.insert(&m.pointer);
        entry.2 = entry.2.min(m.read_at);
    }
    let fields: Map<String, Value> = fields
        .into_iter()
        .map(|(name, (sources, pointers, first))| {
            (
                name,
                json!({"sources": set(sources), "pointers": set(pointers), "first_read": first}),
            )
        })
        .collect();
    let at: BTreeSet<&Mark> = p.marks.iter().collect();
    json!({
        "session": p.session,
        "untrusted": !p.marks.is_empty(),
        "pointers": set(p.marks.iter().map(|m| m.pointer.as_str()).collect()),
        "sources": set(p.marks.iter().map(|m| m.source.as_str()).collect()),
        "fields": fields,
        "at": at
            .into_iter()
            .map(|m| json!({"pointer": m.pointer, "source": m.source, "read_at": m.read_at}))
            .collect::<Vec<_>>(),
    })
}

/// The Cedar type of `context.provenance` for an action whose input has these top-level
/// fields.
pub(crate) fn provenance_type<'a>(input_fields: impl Iterator<Item = &'a str>) -> Value {
    let strings = json!({"type": "Set", "element": {"type": "String"}});
    let field = json!({"type": "Record", "required": false, "attributes": {
        "sources": strings, "pointers": strings, "first_read": {"type": "Long"}
    }});
    let fields: Map<String, Value> = input_fields.map(|n| (n.to_owned(), field.clone())).collect();
    json!({"type": "Record", "attributes": {
        "session": {"type": "Boolean"},
        "untrusted": {"type": "Boolean"},
        "pointers": strings,
        "sources": strings,
        "fields": {"type": "Record", "attributes": fields},
        "at": {"type": "Set", "element": {"type": "Record", "attributes": {
            "pointer": {"type": "String"}, "source": {"type": "String"}, "read_at": {"type": "Long"}
        }}}
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(pointer: &str, source: &str, read_at: i64) -> Mark {
        Mark {
            pointer: pointer.into(),
            source: source.into(),
            read_at,
        }
    }

    #[test]
    fn marks_are_grouped_by_top_level_field_with_the_earliest_read() {
        let p = InputProvenance {
            session: true,
            marks: vec![
                mark("/to/1", "web.fetch", 200),
                mark("/to/0", "mail.read", 100),
                mark("/a~1b", "mail.read", 300),
            ],
        };
        let v = provenance(&p);
        assert_eq!(v["untrusted"], true);
        assert_eq!(v["pointers"], json!(["/a~1b", "/to/0", "/to/1"]));
        assert_eq!(v["sources"], json!(["mail.read", "web.fetch"]));
        assert_eq!(v["fields"]["to"]["sources"], json!(["mail.read", "web.fetch"]));
        assert_eq!(v["fields"]["to"]["first_read"], 100);
        assert_eq!(v["fields"]["a/b"]["pointers"], json!(["/a~1b"]));
        assert_eq!(v["at"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn nothing_marked_is_an_empty_record_that_still_says_whether_there_was_a_session() {
        let v = provenance(&InputProvenance::NONE);
        assert_eq!(v["session"], false);
        assert_eq!(v["untrusted"], false);
        assert_eq!(v["fields"], json!({}));
        assert_eq!(v["at"], json!([]));
    }
}
