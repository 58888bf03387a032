use std::fmt;
use std::path::PathBuf;

/// Where a master key was read from, for error messages. It names the variable or the
/// path, never the key text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "environment variable `{var}`"),
            Self::File(path) => write!(f, "file `{}`", path.display()),
        }
    }
}

/// Why a master key could not be loaded or a secret could not be sealed or opened.
///
/// No variant carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The master key spec is not `env:VAR` or `file:PATH`. The spec itself is not
    /// echoed, since a key pasted in place of the spec would otherwise be printed.
    #[error("master key source must be `env:VAR` or `file:PATH`{}", scheme_hint(.scheme.as_deref()))]
    UnknownScheme {
        /// The scheme, when it looked like one (short, alphanumeric).
        scheme: Option<String>,
    },
    /// `env:` or `file:` was given without a name.
    #[error("master key source `{scheme}:` needs a {what} after the colon")]
    EmptySpec {
        /// `env` or `file`.
        scheme: &'static str,
        /// What is missing.
        what: &'static str,
    },
    /// The environment variable is not set.
    #[error("master key environment variable `{var}` is not set")]
    EnvMissing {
        /// The variable.
        var: String,
    },
    /// The environment variable or file does not hold UTF-8 text.
    #[error("master key in {origin} is not text")]
    NotText {
        /// Where the key was read from.
        origin: KeyOrigin,
    },
    /// The key file could not be read.
    #[error("could not read master key file `{}`: {source}", .path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error (it never contains file contents).
        source: std::io::Error,
    },
    /// The key text is empty.
    #[error("master key in {origin} is empty")]
    Empty {
        /// Where the key was read from.
        origin: KeyOrigin,
    },
    /// The key text is neither 64 hex characters nor base64.
    #[error("master key in {origin} is neither 64 hex characters nor base64")]
    BadEncoding {
        /// Where the key was read from.
        origin: KeyOrigin,
    },
    /// The key decodes to the wrong number of bytes.
    #[error("master key in {origin} decodes to {len} bytes; it must be 32 bytes")]
    WrongLength {
        /// Where the key was read from.
        origin: KeyOrigin,
        /// The decoded length.
        len: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// Encryption failed (the plaintext is too long for the cipher).
    #[error("secret `{name}` could not be encrypted")]
    Encrypt {
        /// The secret's name.
        name: String,
    },
    /// Authentication failed: a different key, a different name, or altered bytes.
    #[error("secret `{name}` could not be decrypted (wrong master key, or the stored value was altered)")]
    Decrypt {
        /// The secret's name.
        name: String,
    },
    /// The secret was sealed by a master key that is not configured.
    #[error(
        "secret `{name}` was sealed with master key {version:08x}, which is not configured (list it under `previous_master_keys` until `portcullis secret rotate-master-key` has re-encrypted everything)"
    )]
    UnknownKeyVersion {
        /// The secret's name.
        name: String,
        /// The stored key version.
        version: u32,
    },
    /// The secret decrypted, but is not UTF-8 text.
    #[error("secret `{name}` is not UTF-8 text")]
    NotUtf8 {
        /// The secret's name.
        name: String,
    },
}

fn scheme_hint(scheme: Option<&str>) -> String {
    scheme.map(|s| format!(", not `{s}:`")).unwrap_or_default()
}
