//! Which parts of the context a set of policies can read, found once at load, so that a
//! decision builds only those.
//!
//! Building the context (converting the input, the findings' sets, the counters and the
//! provenance into Cedar values, then dropping them) cost more than evaluating the policies.
//! A part no policy of the action mentions can't change its decision, so it need not exist.
//! The analysis walks each policy's JSON form (Cedar's EST) and is conservative: any use of
//! `context` other than `context.A…` or `context has A` means the whole context, and any
//! use of `context.A` other than `context.A.B…` or `context.A has B` means all of `A`.

use serde_json::Value;

/// The context attributes, and their attributes, that some policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    /// Everything: a policy uses `context` as a whole.
    all: bool,
    /// Each top-level attribute read, with `None` when it is read as a whole and otherwise
    /// the names read under it. Hashed with foldhash: a decision asks about a dozen names
    /// (B-tree lookups of them cost a twentieth of a decision).
    attrs: foldhash::HashMap<String, Option<foldhash::HashSet<String>>>,
}

impl Reads {
    /// Reads everything: what a decision builds when its context is checked against the
    /// schema, which wants every attribute.
    pub(crate) fn everything() -> Self {
        Self {
            all: true,
            attrs: foldhash::HashMap::default(),
        }
    }

    /// What this policy reads, from its JSON form. A policy whose JSON form can't be had
    /// reads everything.
    pub(crate) fn of(policy: &cedar_policy::Policy) -> Self {
        let mut reads = Self::default();
        match policy.to_json() {
            Ok(est) => reads.scan(&est),
            Err(_) => reads.all = true,
        }
        reads
    }

    /// Adds what `other` reads.
    pub(crate) fn add(&mut self, other: &Self) {
        if other.all {
            self.all = true;
        }
        for (name, under) in &other.attrs {
            match under {
                None => self.read(&[name]),
                Some(fields) => fields.iter().for_each(|f| self.read(&[name, f])),
            }
        }
    }

    /// Whether top-level attribute `attr` is read at all.
    pub(crate) fn reads(&self, attr: &str) -> bool {
        self.all || self.attrs.contains_key(attr)
    }

    /// Whether `attr.field` is read (or all of `attr`).
    pub(crate) fn reads_field(&self, attr: &str, field: &str) -> bool {
        self.all
            || match self.attrs.get(attr) {
                None => false,
                Some(None) => true,
                Some(Some(fields)) => fields.contains(field),
            }
    }

    /// Records a read of `context.path…` (the path's first two names count).
    fn read(&mut self, path: &[&str]) {
        match path {
            [] => self.all = true,
            [attr] => {
                self.attrs.insert((*attr).to_owned(), None);
            }
            [attr, field, ..] => {
                let entry = self
                    .attrs
                    .entry((*attr).to_owned())
                    .or_insert_with(|| Some(foldhash::HashSet::default()));
                if let Some(fields) = entry {
                    fields.insert((*field).to_owned());
                }
            }
        }
    }

    /// Walks one node of the EST.
    fn scan(&mut self, node: &Value) {
        match node {
            Value::Object(map) => {
                if map.len() == 1
                    && let Some(("." | "has", Value::Object(access))) = map.iter().next().map(|(k, v)| (k.as_str(), v))
                    && let (Some(left), Some(attr)) = (access.get("left"), access.get("attr").and_then(names))
                    && let Some(mut path) = context_path(left)
                {
                    // `context.A.B` / `context.A has B` (or `has B.C`, a list of names): a
                    // read of the path, which is not scanned again as a use of `context.A`
                    // on its own.
                    path.extend(attr);
                    self.read(&path);
                    return;
                }
                if map.len() == 1 && map.get("Var").and_then(Value::as_str) == Some("context") {
                    self.all = true;
                    return;
                }
                map.values().for_each(|v| self.scan(v));
            }
            Value::Array(items) => items.iter().for_each(|v| self.scan(v)),
            _ => {}
        }
    }
}

/// The attribute name of an access, or the names of a `has` over a path.
fn names(attr: &Value) -> Option<Vec<&str>> {
    match attr {
        Value::String(name) => Some(vec![name.as_str()]),
        Value::Array(names) => names.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// The attribute path of `context.A.B…` (empty for `context` itself), or `None` when the
/// node is not such a chain of attribute accesses.
fn context_path(node: &Value) -> Option<Vec<&str>> {
    let map = node.as_object()?;
    if map.len() != 1 {
        return None;
    }
    if map.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(Vec::new());
    }
    let access = map.get(".")?.as_object()?;
    let mut path = context_path(access.get("left")?)?;
    path.push(access.get("attr")?.as_str()?);
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn reads(src: &str) -> Reads {
        Reads::of(&cedar_policy::Policy::from_str(src).unwrap())
    }

    #[test]
    fn a_policy_reads_the_context_paths_it_names() {
        let r = reads(
            r#"forbid (principal, action, resource) when {
                context.input has labels && context.input.labels.contains("prod") &&
                context.input.meta.source == "bot" && context.findings.categories.contains("secret") &&
                context.now.hour < 6
            };"#,
        );
        assert!(!r.all);
        assert!(r.reads_field("input", "labels"));
        assert!(r.reads_field("input", "meta"));
        assert!(!r.reads_field("input", "body"));
        assert!(r.reads_field("findings", "categories"));
        assert!(!r.reads_field("findings", "at"));
        assert!(r.reads_field("now", "hour"));
        assert!(!r.reads("counters") && !r.reads("provenance") && !r.reads("derived"));
    }

    #[test]
    fn a_whole_attribute_or_the_whole_context_is_read_as_a_whole() {
        let r = reads(r#"permit (principal, action, resource) when { context.input == {"a": 1} };"#);
        assert!(r.reads_field("input", "anything") && !r.reads("now"));
        let r = reads(r#"permit (principal, action, resource) when { context has input };"#);
        assert!(r.reads_field("input", "anything") && !r.reads("now"));
        let r = reads(r#"permit (principal, action, resource) when { context == {} };"#);
        assert!(r.reads("now") && r.reads_field("findings", "at"));
        let r = reads(r#"permit (principal, action, resource) when { {"c": context}.c has now };"#);
        assert!(r.reads_field("provenance", "fields"));
        let r = reads(r#"permit (principal, action, resource) when { context.input has meta.source };"#);
        assert!(r.reads_field("input", "meta") && !r.reads_field("input", "title"));
    }

    #[test]
    fn reads_add_up() {
        let mut r = reads(r#"permit (principal, action, resource) when { context.now.hour < 6 };"#);
        r.add(&reads(
            r#"permit (principal, action, resource) when { context.now.weekday < 6 };"#,
        ));
        assert!(r.reads_field("now", "hour") && r.reads_field("now", "weekday") && !r.reads_field("now", "date"));
        r.add(&reads(
            r#"permit (principal, action, resource) when { context.now == context.now };"#,
        ));
        assert!(r.reads_field("now", "date"));
        r.add(&reads(
            r#"permit (principal, action, resource) when { context.now.hour < 6 };"#,
        ));
        assert!(r.reads_field("now", "date"), "a whole read stays whole");
        assert!(!r.reads("input"));
    }
}
