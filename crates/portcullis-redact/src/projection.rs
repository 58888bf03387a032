//! [`Projection`]: keep only the parts of a response an action declares.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::ProjectionError;

/// A JSON pointer list from an action's `response.keep`, compiled.
///
/// Pointers follow RFC 6901 (`/a/b`, with `~0` for `~` and `~1` for `/`; the empty pointer is
/// the whole document), plus one extension: a `*` segment means "every element of this
/// array" (`/items/*/id`). On an object, `*` names the member called `*`, so RFC 6901
/// pointers to such a member keep working.
///
/// [`Projection::apply`] builds a new document in the same nested shape as the source,
/// holding only the kept paths:
///
/// | pointers | source | result |
/// |---|---|---|
/// | `/number` | `{"number": 1, "x": 2}` | `{"number": 1}` |
/// | `/user/login` | `{"user": {"login": "x", "id": 7}}` | `{"user": {"login": "x"}}` |
/// | `/items/*/id` | `{"items": [{"id": 1, "x": 0}, {"id": 2}]}` | `{"items": [{"id": 1}, {"id": 2}]}` |
/// | `/items/1/id` | `{"items": [{"id": 1}, {"id": 2}]}` | `{"items": [{"id": 2}]}` |
/// | `/*/id` | `[{"id": 1, "x": 0}]` | `[{"id": 1}]` |
///
/// Choices worth knowing:
///
/// - Kept array elements are listed in source order without gaps, so `/items/1/id` yields a
///   one-element array. Padding with `null` would make a missing element look like a real
///   `null`, and `/items/100000` would inflate the result.
/// - A path that is missing from the source is absent from the result, but the objects and
///   arrays that lead to it and do exist are kept, possibly empty: with `/user/login`,
///   `{"user": {}}` says the user was there without a login, and with `/items/*/id` every
///   object element stays, so the result's indices match the source's.
/// - Several pointers into the same place merge (`/items/*/id` and `/items/0/name` keep both
///   members of the first element).
/// - With no pointer matching at all, the result is `{}` for an object, `[]` for an array,
///   and `null` for a scalar.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Node,
}

/// One position in the merged pointer tree.
#[derive(Debug, Clone, Default)]
struct Node {
    /// A pointer ends here: keep the whole value.
    whole: bool,
    /// Object members, or array indices written as RFC 6901 decimal.
    members: BTreeMap<String, Node>,
    /// The `*` segment.
    every: Option<Box<Node>>,
}

impl Projection {
    /// Compiles `pointers`.
    ///
    /// # Errors
    /// When a pointer is neither empty nor starts with `/`, or has a `~` escape other than
    /// `~0` and `~1`; the error names the pointer.
    pub fn parse(pointers: &[String]) -> Result<Self, ProjectionError> {
        let mut root = Node::default();
        for pointer in pointers {
            let mut node = &mut root;
            for segment in segments(pointer)? {
                node = match segment {
                    Segment::Every => node.every.get_or_insert_with(Box::default),
                    Segment::Member(name) => node.members.entry(name).or_default(),
                };
            }
            node.whole = true;
        }
        Ok(Self { root })
    }

    /// Builds a new value holding only the kept paths of `source`, in the same nested shape
    /// (see the type's documentation for the details).
    #[must_use]
    pub fn apply(&self, source: &Value) -> Value {
        project(&[&self.root], source).unwrap_or(Value::Null)
    }
}

enum Segment {
    Every,
    Member(String),
}

fn segments(pointer: &str) -> Result<Vec<Segment>, ProjectionError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(ProjectionError::NoLeadingSlash {
            pointer: pointer.to_owned(),
        });
    };
    rest.split('/')
        .map(|raw| match raw {
            "*" => Ok(Segment::Every),
            _ => unescape(raw)
                .map(Segment::Member)
                .ok_or_else(|| ProjectionError::BadEscape {
                    pointer: pointer.to_owned(),
                }),
        })
        .collect()
}

/// `~1` → `/`, `~0` → `~`; `None` for any other `~`.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '~' => match chars.next()? {
                '0' => '~',
                '1' => '/',
                _ => return None,
            },
            c => c,
        });
    }
    Some(out)
}

/// The part of `value` that any of `nodes` keeps; `None` when no pointer reaches it or the
/// pointers go deeper than `value` does. Recursion is bounded by the pointers' depth, not the value's.
fn project(nodes: &[&Node], value: &Value) -> Option<Value> {
    if nodes.is_empty() {
        return None;
    }
    if nodes.iter().any(|node| node.whole) {
        return Some(value.clone());
    }
    match value {
        Value::Object(members) => Some(Value::Object(
            members
                .iter()
                .filter_map(|(name, member)| {
                    let kept = project(&member_nodes(nodes, name), member)?;
                    Some((name.clone(), kept))
                })
                .collect::<Map<_, _>>(),
        )),
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| project(&element_nodes(nodes, index), item))
                .collect(),
        )),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}

fn member_nodes<'n>(nodes: &[&'n Node], name: &str) -> Vec<&'n Node> {
    let star = name == "*";
    nodes
        .iter()
        .flat_map(|node| {
            let every = node.every.as_deref().filter(|_| star);
            node.members.get(name).into_iter().chain(every)
        })
        .collect()
}

fn element_nodes<'n>(nodes: &[&'n Node], index: usize) -> Vec<&'n Node> {
    // `usize`'s decimal form is the only spelling RFC 6901 allows for an index (no leading
    // zeros), so `/items/01` never matches, as the RFC requires.
    let name = (!nodes.iter().all(|node| node.members.is_empty())).then(|| index.to_string());
    nodes
        .iter()
        .flat_map(|node| {
            let member = name.as_deref().and_then(|name| node.members.get(name));
            member.into_iter().chain(node.every.as_deref())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn apply(pointers: &[&str], source: Value) -> Value {
        let pointers: Vec<String> = pointers.iter().map(|p| (*p).to_owned()).collect();
        Projection::parse(&pointers).unwrap().apply(&source)
    }

    #[test]
    fn a_top_level_member_keeps_its_name() {
        assert_eq!(
            apply(&["/number"], json!({"number": 1, "title": "t"})),
            json!({"number": 1})
        );
    }

    #[test]
    fn nested_members_keep_their_nesting() {
        let source = json!({"user": {"login": "x", "token": "t"}, "other": 1});
        assert_eq!(apply(&["/user/login"], source), json!({"user": {"login": "x"}}));
    }

    #[test]
    fn a_wildcard_keeps_a_member_of_every_element() {
        let source = json!({"items": [{"id": 1, "secret": "a"}, {"id": 2, "secret": "b"}]});
        assert_eq!(
            apply(&["/items/*/id"], source),
            json!({"items": [{"id": 1}, {"id": 2}]})
        );
    }

    #[test]
    fn an_index_keeps_only_that_element() {
        let source = json!({"items": [{"id": 1, "x": 0}, {"id": 2}]});
        assert_eq!(apply(&["/items/0/id"], source.clone()), json!({"items": [{"id": 1}]}));
        assert_eq!(apply(&["/items/1/id"], source.clone()), json!({"items": [{"id": 2}]}));
        assert_eq!(apply(&["/items/01/id"], source.clone()), json!({"items": []}));
        assert_eq!(apply(&["/items/-"], source), json!({"items": []}));
    }

    #[test]
    fn a_top_level_array_takes_a_wildcard() {
        let source = json!([{"id": 1, "x": 0}, {"id": 2, "x": 0}]);
        assert_eq!(apply(&["/*/id"], source), json!([{"id": 1}, {"id": 2}]));
    }

    #[test]
    fn missing_paths_are_absent() {
        let source = json!({"user": {"name": "n"}, "items": [{"id": 1}, {"x": 2}, 3]});
        let kept = apply(&["/user/login", "/items/*/id", "/nope", "/user/name/deeper"], source);
        assert_eq!(kept, json!({"user": {}, "items": [{"id": 1}, {}]}));
        assert_eq!(apply(&["/a"], json!("scalar")), Value::Null);
        assert_eq!(apply(&[], json!({"a": 1})), json!({}));
    }

    #[test]
    fn pointers_into_the_same_place_merge() {
        let source = json!({"items": [{"id": 1, "name": "a", "x": 0}, {"id": 2, "name": "b"}]});
        let kept = apply(&["/items/*/id", "/items/0/name"], source);
        assert_eq!(kept, json!({"items": [{"id": 1, "name": "a"}, {"id": 2}]}));
    }

    #[test]
    fn a_whole_subtree_wins_over_deeper_pointers() {
        let source = json!({"user": {"login": "x", "id": 7}});
        assert_eq!(apply(&["/user/login", "/user"], source.clone()), source);
        assert_eq!(apply(&[""], source.clone()), source);
    }

    #[test]
    fn escapes_and_a_literal_star_member() {
        let source = json!({"a/b": {"~c": 1}, "*": {"d": 2}, "e": {"*": 3, "f": 4}});
        assert_eq!(apply(&["/a~1b/~0c"], source.clone()), json!({"a/b": {"~c": 1}}));
        assert_eq!(apply(&["/*/d"], source.clone()), json!({"*": {"d": 2}}));
        assert_eq!(apply(&["/e/*"], source), json!({"e": {"*": 3}}));
    }

    #[test]
    fn the_result_keeps_source_member_order() {
        let kept = apply(&["/z", "/a"], json!({"z": 1, "m": 2, "a": 3}));
        assert_eq!(serde_json::to_string(&kept).unwrap(), r#"{"z":1,"a":3}"#);
    }

    #[test]
    fn bad_pointers_are_named_in_the_error() {
        let err = Projection::parse(&["/ok".to_owned(), "number".to_owned()]).unwrap_err();
        assert_eq!(err.pointer(), "number");
        assert_eq!(
            err.to_string(),
            "response.keep pointer `number` must be empty or start with `/`"
        );
        let err = Projection::parse(&["/a~2b".to_owned()]).unwrap_err();
        assert_eq!(
            err,
            ProjectionError::BadEscape {
                pointer: "/a~2b".to_owned()
            }
        );
        assert!(Projection::parse(&["/a~".to_owned()]).is_err());
    }
}
