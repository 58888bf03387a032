//! Why an OpenAPI import was refused.

/// An OpenAPI document or operation that can't be turned into action files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Neither JSON nor YAML, or not an object.
    #[error("cannot parse the OpenAPI document: {0}")]
    Parse(String),
    /// Swagger 2.0 or another version.
    #[error("unsupported OpenAPI version `{0}`: only 3.0 and 3.1 documents are read")]
    Version(String),
    /// No operation was asked for.
    #[error("no operation selected: give `--operation ID` or `--all-matching GLOB`")]
    NothingSelected,
    /// `--all-matching` matched nothing.
    #[error("no operation id matches `{0}`")]
    NoMatch(String),
    /// An invalid glob.
    #[error("invalid pattern `{0}`: {1}")]
    Pattern(String, String),
    /// An operation id that isn't in the document.
    #[error("unknown operation `{id}`{}", close_matches(.close))]
    UnknownOperation {
        /// The id asked for.
        id: String,
        /// Ids that look alike.
        close: Vec<String>,
    },
    /// A `$ref` to another file or URL.
    #[error("{place}: reference `{reference}` is not local: only `#/...` references are resolved")]
    RemoteRef {
        /// Where it was found.
        place: String,
        /// The reference.
        reference: String,
    },
    /// A local `$ref` that points nowhere, or a chain of references that loops.
    #[error("{place}: reference `{reference}` {reason}")]
    BadRef {
        /// Where it was found.
        place: String,
        /// The reference.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Something in an operation that Portcullis can't express.
    #[error("operation `{operation}`: {reason}")]
    Unsupported {
        /// The operation id.
        operation: String,
        /// What and why.
        reason: String,
    },
    /// A name given for an operation is not a valid action name.
    #[error("name for operation `{operation}`: {reason}")]
    InvalidName {
        /// The operation id.
        operation: String,
        /// Why the name is refused.
        reason: String,
    },
    /// A name is given for an operation that is in the document but not selected.
    #[error(
        "a name is given for operation `{0}`, which is not imported: select it with `--operation {0}` or `--all-matching`"
    )]
    NameNotImported(String),
    /// Two names are given for one operation.
    #[error("operation `{0}` is given more than one name")]
    NamedTwice(String),
    /// Two operations would become actions of the same name.
    #[error(
        "operations `{first}` and `{second}` would both be action `{name}`: give one of them another name with `--name OPERATION_ID=ACTION_NAME`"
    )]
    SameName {
        /// The action name.
        name: String,
        /// The operation that got it first.
        first: String,
        /// The operation that got it again.
        second: String,
    },
    /// No usable server URL.
    #[error("{0}")]
    Server(String),
    /// The generated file doesn't load: a bug in the importer.
    #[error("the generated action file does not load (please report this): {0}")]
    Generated(String),
}

fn close_matches(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = close.iter().map(|c| format!("`{c}`")).collect();
        format!("; did you mean {}?", list.join(", "))
    }
}
