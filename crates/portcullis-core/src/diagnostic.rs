use std::fmt;
use std::path::PathBuf;

/// One problem found while loading configuration, actions or policies, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in, when it is in a file.
    pub file: Option<PathBuf>,
    /// The 1-based line, when known.
    pub line: Option<u64>,
    /// What is wrong, lowercase, user input in backticks.
    pub message: String,
}

impl Diagnostic {
    /// A problem in `file` at `line`.
    pub fn at(file: impl Into<PathBuf>, line: Option<u64>, message: impl Into<String>) -> Self {
        Self {
            file: Some(file.into()),
            line,
            message: message.into(),
        }
    }

    /// A problem not tied to a file.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: {}", file.display(), self.message),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// The 1-based line of the first occurrence of `needle` in `source`, for problems that
/// are found after parsing, when the parser's location is no longer at hand.
#[must_use]
pub fn line_of(source: &str, needle: &str) -> Option<u64> {
    let at = source.find(needle)?;
    Some(line_at_offset(source, at))
}

/// The 1-based line of byte offset `offset` in `source`.
#[must_use]
pub fn line_at_offset(source: &str, offset: usize) -> u64 {
    let end = offset.min(source.len());
    let newlines = source.as_bytes()[..end].iter().filter(|b| **b == b'\n').count();
    u64::try_from(newlines).map_or(u64::MAX, |n| n + 1)
}
