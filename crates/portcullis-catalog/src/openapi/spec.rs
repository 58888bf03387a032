//! The OpenAPI document: parsing, local `$ref` resolution, operations and servers.
//!
//! The document is read as plain JSON rather than through typed 3.0/3.1 models: the importer
//! only needs paths, parameters, request bodies and schemas, and it has to hand schemas on as
//! JSON Schema anyway, so one code path serves both versions.

use serde_json::{Map, Value};

use super::error::ImportError;

/// The HTTP methods of a path item, in the order the OpenAPI specification lists them.
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// How many `$ref`s may be followed in a row before the chain counts as a loop.
const MAX_REF_CHAIN: usize = 32;

/// A parsed OpenAPI 3.0 or 3.1 document.
#[derive(Debug)]
pub(crate) struct Spec {
    pub root: Value,
    /// `3.0` or `3.1`.
    pub minor: u8,
}

/// An operation as listed: its id (when it has one), method and path.
pub(crate) type Listed<'a> = (Option<String>, &'static str, &'a str);

/// One operation of the document.
#[derive(Debug)]
pub(crate) struct Operation<'a> {
    pub id: String,
    pub method: &'static str,
    pub path: &'a str,
    pub item: &'a Map<String, Value>,
    pub op: &'a Map<String, Value>,
}

impl Spec {
    /// Parses JSON or YAML text.
    pub fn parse(text: &str) -> Result<Self, ImportError> {
        let root: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ImportError::Parse(e.to_string()))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                ImportError::Parse(e.without_snippet().to_string().lines().next().unwrap_or("").to_owned())
            })?
        };
        if !root.is_object() {
            return Err(ImportError::Parse("the document is not an object".into()));
        }
        let version = root
            .get("openapi")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                root.get("swagger")
                    .map_or_else(|| "none".to_owned(), |v| format!("swagger {v}"))
            });
        let minor = if version.starts_with("3.0") {
            0
        } else if version.starts_with("3.1") {
            1
        } else {
            return Err(ImportError::Version(version));
        };
        Ok(Self { root, minor })
    }

    /// `title version` from `info`.
    pub fn label(&self) -> String {
        let info = self.root.get("info");
        let get = |k| {
            info.and_then(|i| i.get(k))
                .and_then(Value::as_str)
                .unwrap_or("untitled")
        };
        format!("{} {}", get("title"), get("version"))
    }

    /// Every operation, in document order: `(path, method)`; ids missing where the spec has none.
    pub fn operations(&self) -> Result<Vec<Listed<'_>>, ImportError> {
        let mut out = Vec::new();
        let Some(paths) = self.root.get("paths").and_then(Value::as_object) else {
            return Ok(out);
        };
        for (path, item) in paths {
            let item = self.resolve_object(item, &format!("path `{path}`"))?;
            for &m in METHODS {
                if let Some(op) = item.get(m).and_then(Value::as_object) {
                    let id = op.get("operationId").and_then(Value::as_str).map(str::to_owned);
                    out.push((id, m, path.as_str()));
                }
            }
        }
        Ok(out)
    }

    /// The operation with this id.
    pub fn operation(&self, id: &str) -> Result<Operation<'_>, ImportError> {
        let all = self.operations()?;
        let Some((_, method, path)) = all.iter().find(|(i, _, _)| i.as_deref() == Some(id)) else {
            return Err(ImportError::UnknownOperation {
                id: id.to_owned(),
                close: close_matches(id, all.iter().filter_map(|(i, _, _)| i.as_deref())),
            });
        };
        let item = self
            .root
            .get("paths")
            .and_then(|p| p.get(*path))
            .ok_or_else(|| ImportError::Parse(format!("path `{path}` vanished")))?;
        let item = self.resolve_object(item, &format!("path `{path}`"))?;
        let op = item
            .get(*method)
            .and_then(Value::as_object)
            .ok_or_else(|| ImportError::Parse(format!("operation `{id}` vanished")))?;
        Ok(Operation {
            id: id.to_owned(),
            method,
            path,
            item,
            op,
        })
    }

    /// Follows `$ref`s until an object without one (parameters, request bodies, path items).
    pub fn resolve<'a>(&'a self, mut value: &'a Value, place: &str) -> Result<&'a Value, ImportError> {
        for _ in 0..MAX_REF_CHAIN {
            match value.get("$ref").and_then(Value::as_str) {
                Some(r) => value = self.lookup(r, place)?,
                None => return Ok(value),
            }
        }
        Err(ImportError::BadRef {
            place: place.to_owned(),
            reference: value.get("$ref").and_then(Value::as_str).unwrap_or("").to_owned(),
            reason: "starts a chain of references that loops",
        })
    }

    /// As [`Self::resolve`], for a value that must be an object.
    pub fn resolve_object<'a>(&'a self, value: &'a Value, place: &str) -> Result<&'a Map<String, Value>, ImportError> {
        self.resolve(value, place)?
            .as_object()
            .ok_or_else(|| ImportError::Parse(format!("{place} is not an object")))
    }

    /// The value a local reference points to.
    pub fn lookup(&self, reference: &str, place: &str) -> Result<&Value, ImportError> {
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(ImportError::RemoteRef {
                place: place.to_owned(),
                reference: reference.to_owned(),
            });
        };
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(ImportError::BadRef {
                place: place.to_owned(),
                reference: reference.to_owned(),
                reason: "is not a JSON pointer",
            });
        }
        self.root
            .pointer(&percent_decode(pointer))
            .ok_or_else(|| ImportError::BadRef {
                place: place.to_owned(),
                reference: reference.to_owned(),
                reason: "points to nothing in the document",
            })
    }

    /// The base URL: `override_url`, else the first of the operation's, the path's or the
    /// document's `servers`, with its variables replaced by their defaults.
    pub fn server(&self, op: &Operation<'_>, override_url: Option<&str>) -> Result<String, ImportError> {
        let url = match override_url {
            Some(u) => u.to_owned(),
            None => {
                let server = [op.op.get("servers"), op.item.get("servers"), self.root.get("servers")]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_array)
                    .find_map(|s| s.first())
                    .ok_or_else(|| {
                        ImportError::Server("the document has no `servers`: give the base URL with `--server`".into())
                    })?;
                substitute_variables(server)?
            }
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ImportError::Server(format!(
                "server URL `{url}` is not absolute (`http://` or `https://`): give one with `--server`"
            )));
        }
        Ok(url.trim_end_matches('/').to_owned())
    }
}

fn substitute_variables(server: &Value) -> Result<String, ImportError> {
    let mut url = server.get("url").and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(vars) = server.get("variables").and_then(Value::as_object) {
        for (name, var) in vars {
            let default = var.get("default").and_then(Value::as_str).ok_or_else(|| {
                ImportError::Server(format!(
                    "server variable `{name}` has no default: give the URL with `--server`"
                ))
            })?;
            url = url.replace(&format!("{{{name}}}"), default);
        }
    }
    if url.contains('{') {
        return Err(ImportError::Server(format!(
            "server URL `{url}` has a variable without a default: give the URL with `--server`"
        )));
    }
    Ok(url)
}

/// JSON pointers in references are URI fragments: `%7B` stands for `{`.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Up to five ids that share a word with `id` or are a small edit away, best first.
fn close_matches<'a>(id: &str, all: impl Iterator<Item = &'a str>) -> Vec<String> {
    let lower = id.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() > 2)
        .collect();
    let mut scored: Vec<(usize, &str)> = all
        .filter_map(|c| {
            let cl = c.to_ascii_lowercase();
            let d = edit_distance(&lower, &cl);
            let shared = words.iter().filter(|w| cl.contains(**w)).count();
            (d <= 3 || shared > 0).then(|| (d.saturating_sub(shared * 4), c))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, c)| c.to_owned()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
