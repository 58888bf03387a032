use std::sync::Arc;

/// What went wrong in the store. Every message says what the store was doing.
///
/// The type is `Clone` so that one failed group commit can report the same error to every
/// caller whose event was in the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one this build can open. Only the scheme is shown, since a
    /// database URL may carry a password.
    #[error("unsupported store URL scheme `{scheme}`: this build supports `sqlite://PATH` and `postgres://…`")]
    UnsupportedUrl {
        /// The URL's scheme, or the whole text up to 16 characters when it has none.
        scheme: String,
    },
    /// The database was written by a newer Portcullis.
    #[error(
        "the store at `{location}` has schema version {found}, but this build knows only up to \
         {supported}: upgrade Portcullis, or restore a backup made by this version"
    )]
    SchemaTooNew {
        /// The database file.
        location: String,
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build can migrate to.
        supported: i64,
    },
    /// A database operation failed.
    #[error("while {context}: {source}")]
    Database {
        /// What the store was doing, e.g. "appending to the audit log".
        context: &'static str,
        /// The driver's error.
        source: Arc<sqlx::Error>,
    },
    /// A row with the same key already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What already exists, e.g. "agent `triage-bot`".
        what: String,
    },
    /// The row to update does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What is missing, e.g. "intent `int_…`".
        what: String,
    },
    /// An argument is malformed (for example a token hash that is not 64 hex characters).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The argument.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A stored value could not be read back (hand-edited or damaged database).
    #[error("while {context}: stored {what} is unreadable: {reason}")]
    Corrupt {
        /// What the store was doing.
        context: &'static str,
        /// Which value, e.g. "audit event 17".
        what: String,
        /// Why it could not be read.
        reason: String,
    },
    /// An event could not be encoded as JSON.
    #[error("while appending to the audit log: the event could not be encoded: {0}")]
    Encode(String),
    /// The audit writer task is gone (the runtime is shutting down, or it failed).
    #[error("while appending to the audit log: the audit writer has stopped")]
    WriterStopped,
}

impl StoreError {
    /// Wraps an error of a direct SQLite call ([`crate::direct`]) with what the store was
    /// doing, as a driver error.
    pub(crate) fn direct(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::db(context)(crate::direct::to_sqlx(source))
    }

    /// Wraps a driver error with what the store was doing.
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database {
            context,
            source: Arc::new(source),
        }
    }

    /// A damaged stored value.
    pub(crate) fn corrupt(context: &'static str, what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Corrupt {
            context,
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Whether a driver error is a UNIQUE or PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
