//! The action catalog: the approved actions an agent can ask for.
//!
//! Action files are YAML (one action per document, `---` between documents). Loading
//! validates everything that can be checked without the rest of the configuration and
//! reports every problem with its file and line: malformed YAML, unknown keys, invalid
//! JSON Schemas, malformed request templates, and placeholders that name input fields the
//! schema doesn't have.

mod action;
pub mod openapi;
mod raw;
pub mod smtp;
pub mod template;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_core::{ActionName, Diagnostic, json};

pub use action::{
    ActionDef, ActionKind, Hints, MAX_REDIRECTS, Method, Provenance, RequestSpec, ResourceSpec, ResponseRedaction,
    ResponseSpec,
};
pub use validate::{ValidInput, ValidationError};

/// All approved actions, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    actions: BTreeMap<ActionName, Arc<ActionDef>>,
}

impl Catalog {
    /// Loads every action file in `files`, collecting all problems.
    ///
    /// # Errors
    /// Every problem found, each with its file and line where known.
    pub fn load(files: &[PathBuf], limits: json::Limits) -> Result<Self, Vec<Diagnostic>> {
        let (catalog, problems) = Self::load_partial(files, limits);
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(problems)
        }
    }

    /// Loads every action file in `files`, returning the actions that are valid together
    /// with every problem, so that `portcullis check` can go on to check what uses them.
    #[must_use]
    pub fn load_partial(files: &[PathBuf], limits: json::Limits) -> (Self, Vec<Diagnostic>) {
        let mut catalog = Self::default();
        let mut problems = Vec::new();
        for file in files {
            match std::fs::read_to_string(file) {
                Ok(source) => catalog.add_source(file, &source, limits, &mut problems),
                Err(e) => problems.push(Diagnostic::at(file, None, format!("cannot read action file: {e}"))),
            }
        }
        (catalog, problems)
    }

    /// Loads actions from YAML text, as if read from `file`.
    ///
    /// # Errors
    /// Every problem found.
    pub fn from_source(file: &Path, source: &str, limits: json::Limits) -> Result<Self, Vec<Diagnostic>> {
        let mut catalog = Self::default();
        let mut problems = Vec::new();
        catalog.add_source(file, source, limits, &mut problems);
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(problems)
        }
    }

    fn add_source(&mut self, file: &Path, source: &str, limits: json::Limits, problems: &mut Vec<Diagnostic>) {
        let raws: Vec<raw::RawAction> = match serde_saphyr::from_multiple(source) {
            Ok(r) => r,
            Err(e) => {
                let line = e.location().map(|l| l.line());
                problems.push(Diagnostic::at(file, line, yaml_message(&e)));
                return;
            }
        };
        for raw in raws {
            let line = raw.name.referenced.line();
            match ActionDef::from_raw(raw, file, limits) {
                Ok(def) => {
                    if self.actions.contains_key(&def.name) {
                        problems.push(Diagnostic::at(
                            file,
                            Some(line),
                            format!("action `{}` is defined twice", def.name),
                        ));
                    } else {
                        self.actions.insert(def.name.clone(), Arc::new(def));
                    }
                }
                Err(mut errs) => problems.append(&mut errs),
            }
        }
    }

    /// The action called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<ActionDef>> {
        let name = ActionName::new(name).ok()?;
        self.actions.get(&name)
    }

    /// All actions, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ActionDef>> {
        self.actions.values()
    }

    /// The number of actions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether there are no actions.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// A one-line YAML error message without the source snippet (the line is reported apart).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    format!("invalid action file: {first}")
}
