//! Errors of this crate.

/// Why a `response.keep` pointer list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// The pointer is neither empty nor starts with `/`.
    #[error("response.keep pointer `{pointer}` must be empty or start with `/`")]
    NoLeadingSlash {
        /// The pointer as written.
        pointer: String,
    },
    /// A `~` is followed by something other than `0` (for `~`) or `1` (for `/`).
    #[error("response.keep pointer `{pointer}` has a `~` not followed by `0` or `1`")]
    BadEscape {
        /// The pointer as written.
        pointer: String,
    },
}

impl ProjectionError {
    /// The pointer that was refused.
    #[must_use]
    pub fn pointer(&self) -> &str {
        match self {
            Self::NoLeadingSlash { pointer } | Self::BadEscape { pointer } => pointer,
        }
    }
}
