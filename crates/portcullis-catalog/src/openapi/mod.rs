//! Action files from an OpenAPI 3.0 or 3.1 document (`portcullis catalog import-openapi`).
//!
//! Each selected operation becomes one action: its parameters and JSON request body merged
//! into one input schema, a request template, hints from the method, the named credential and
//! a resource from the leading path parameters. The output is one YAML file with one document
//! per action, byte for byte the same for the same document and options, and it is loaded
//! through the catalog before it is returned, so what is written passes `portcullis check`.
//!
//! Field naming, in order of precedence:
//! - parameters are named after themselves (characters other than ASCII letters, digits and
//!   `_` become `_`; header names are lowercased); when two parameters would get the same
//!   field, the later one (path, then query, then header) gets `_query`/`_header` appended;
//! - the body's properties become top-level fields when the body is a plain object schema
//!   and none of its property names is taken by a parameter or unusable as a field name;
//!   otherwise the whole body is the field `body` (`body2`… when a parameter is `body`).

mod build;
mod error;
mod schema;
mod spec;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use portcullis_core::ActionName;

pub use error::ImportError;

/// What to import and how to name it.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Operation ids to import, in this order.
    pub operations: Vec<String>,
    /// Also every operation whose id matches this glob (`issues/*`), in document order.
    pub all_matching: Option<String>,
    /// The credential every action uses.
    pub credential: String,
    /// The base URL, instead of the document's first server.
    pub server: Option<String>,
    /// Prepended to derived action names: `github` makes `github.issues_create`.
    pub name_prefix: Option<String>,
    /// Action names given instead of derived, as `(operation id, action name)`: used as
    /// they are, without the prefix. Each operation must be selected, and no two actions
    /// may end up with the same name.
    pub names: Vec<(String, String)>,
}

/// How far an import has got, told to the callback of [`import_with_progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportProgress {
    /// The document is parsed and `total` operations are selected.
    Selected {
        /// How many operations will become actions.
        total: u64,
    },
    /// `done` of the selected operations are built into actions.
    Built {
        /// How many are built so far.
        done: u64,
    },
    /// Every action is built, and the file is being loaded as a catalog to check it.
    Checking,
}

/// Turns the selected operations of an OpenAPI document into one action file.
///
/// # Errors
/// When the document can't be read, an operation is unknown or can't be expressed as an
/// action, a given name is invalid or for an operation not selected, two actions would have
/// the same name, or (a bug) the result doesn't load as a catalog.
pub fn import(text: &str, options: &ImportOptions) -> Result<String, ImportError> {
    import_with_progress(text, options, |_| {})
}

/// [`import`], telling `progress` how far it has got: once the operations are selected,
/// after each one is built, and before the result is checked (a large document can take
/// seconds).
///
/// # Errors
/// As [`import`].
pub fn import_with_progress(
    text: &str,
    options: &ImportOptions,
    mut progress: impl FnMut(ImportProgress),
) -> Result<String, ImportError> {
    let spec = spec::Spec::parse(text)?;
    let ids = selected(&spec, options)?;
    let names = action_names(&spec, options, &ids)?;
    progress(ImportProgress::Selected {
        total: ids.len() as u64,
    });
    let target = build::Target {
        credential: &options.credential,
        server: options.server.as_deref(),
    };
    let version = if spec.minor == 0 { "3.0" } else { "3.1" };
    let mut out = String::new();
    for (i, (id, name)) in ids.iter().zip(&names).enumerate() {
        let op = spec.operation(id)?;
        let built = build::build(&spec, &op, name, &target)?;
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&format!(
            "# Imported by `portcullis catalog import-openapi` from {} (OpenAPI {version}),\n# operation `{id}`: {} {}.\n",
            one_line(&spec.label()),
            op.method.to_ascii_uppercase(),
            one_line(op.path),
        ));
        for note in &built.notes {
            out.push_str(&format!("# Note: {}\n", one_line(note)));
        }
        out.push_str(&yaml::write_document(&built.node));
        progress(ImportProgress::Built { done: i as u64 + 1 });
    }
    progress(ImportProgress::Checking);
    check_loads(&out)?;
    Ok(out)
}

/// The operation ids asked for: explicit ones first, then glob matches in document order.
fn selected(spec: &spec::Spec, options: &ImportOptions) -> Result<Vec<String>, ImportError> {
    let mut ids: Vec<String> = Vec::new();
    for id in &options.operations {
        spec.operation(id)?;
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    if let Some(glob) = &options.all_matching {
        let pattern = glob::Pattern::new(glob).map_err(|e| ImportError::Pattern(glob.clone(), e.to_string()))?;
        let mut matched = 0;
        for (id, method, path) in spec.operations()? {
            let Some(id) = id else {
                if pattern.matches(&format!("{} {path}", method.to_ascii_uppercase())) {
                    return Err(ImportError::Unsupported {
                        operation: format!("{} {path}", method.to_ascii_uppercase()),
                        reason: "it has no `operationId`, which action names are made from".into(),
                    });
                }
                continue;
            };
            if pattern.matches(&id) {
                matched += 1;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        if matched == 0 {
            return Err(ImportError::NoMatch(glob.clone()));
        }
    }
    if ids.is_empty() {
        return Err(ImportError::NothingSelected);
    }
    Ok(ids)
}

/// Each selected operation's action name, in the order of `ids`: the one given for it, else
/// the prefix and its id. Refused before anything is built: a given name that isn't a valid
/// action name or is for an operation not selected, two names for one operation, and two
/// operations with one name (which would otherwise surface as a duplicate in the check).
fn action_names(spec: &spec::Spec, options: &ImportOptions, ids: &[String]) -> Result<Vec<String>, ImportError> {
    let mut given: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, name) in &options.names {
        spec.operation(id)?;
        if !ids.contains(id) {
            return Err(ImportError::NameNotImported(id.clone()));
        }
        ActionName::new(name.as_str()).map_err(|e| ImportError::InvalidName {
            operation: id.clone(),
            reason: e.to_string(),
        })?;
        if given.insert(id, name).is_some() {
            return Err(ImportError::NamedTwice(id.clone()));
        }
    }
    let mut owners: BTreeMap<String, &str> = BTreeMap::new();
    let mut names = Vec::with_capacity(ids.len());
    for id in ids {
        let name = given.get(id.as_str()).map_or_else(
            || build::action_name(id, options.name_prefix.as_deref()),
            |n| (*n).to_owned(),
        );
        if let Some(first) = owners.insert(name.clone(), id) {
            return Err(ImportError::SameName {
                name,
                first: first.to_owned(),
                second: id.clone(),
            });
        }
        names.push(name);
    }
    Ok(names)
}

fn check_loads(text: &str) -> Result<(), ImportError> {
    crate::Catalog::from_source(
        Path::new("imported.yaml"),
        text,
        portcullis_core::json::Limits::default(),
    )
    .map(|_| ())
    .map_err(|problems| ImportError::Generated(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
