use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chacha20poly1305::aead::Generate as _;
use portcullis_core::Secret;
use zeroize::Zeroizing;

use crate::{KeyOrigin, SecretsError};

/// Length of a master key in bytes.
const KEY_LEN: usize = 32;

/// Standard alphabet, with or without padding: people paste keys both ways.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key that seals every stored secret: 32 bytes, zeroized on drop, never printed.
pub struct MasterKey(Secret<[u8; KEY_LEN]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MasterKey").field(&self.0).finish()
    }
}

impl MasterKey {
    /// Loads the key named by `spec`: `env:VAR` (the variable holds the key) or
    /// `file:PATH` (the file holds it). The key text is 32 bytes as base64 (standard
    /// alphabet, padded or not) or as 64 hex characters; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// When the spec has another form, the variable is unset, the file can't be read, or
    /// the text is not a 32-byte key. Errors name the variable or path, never the key.
    pub fn load(spec: &str) -> Result<Self, SecretsError> {
        let (origin, text) = read_spec(spec)?;
        decode(&origin, &text)
    }

    /// Wraps raw key bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Secret::new(bytes))
    }

    /// A fresh random key from the operating system's generator, encoded as base64, for
    /// `portcullis secret keygen`.
    ///
    /// # Panics
    /// Only if the operating system's random number generator fails, which modern
    /// systems do not do once booted.
    #[must_use]
    pub fn generate_encoded() -> String {
        let bytes = Zeroizing::new(<[u8; KEY_LEN]>::generate());
        BASE64.encode(bytes.as_slice())
    }

    /// The raw key, for the cipher only.
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        self.0.expose_secret()
    }

    /// The key's id: 31 bits of a SHA-256 over a label and the key, with the top bit set
    /// so that it never equals [`crate::LEGACY_KEY_VERSION`]. It is stored with every
    /// secret the key seals (as its key version), so that during a rotation each secret
    /// names the key that opens it. It reveals nothing usable about the key.
    #[must_use]
    pub fn id(&self) -> u32 {
        let mut input = Zeroizing::new(Vec::with_capacity(KEY_ID_LABEL.len() + KEY_LEN));
        input.extend_from_slice(KEY_ID_LABEL);
        input.extend_from_slice(self.bytes());
        let digest = portcullis_core::sha256_hex(&input);
        let first = u32::from_str_radix(digest.get(..8).unwrap_or("0"), 16).unwrap_or(0);
        first | 0x8000_0000
    }
}

/// Domain separation for key ids.
const KEY_ID_LABEL: &[u8] = b"portcullis master key id v1\0";

/// The master key that seals new secrets, and the previous ones that may still open
/// secrets a rotation has not reached yet.
#[derive(Debug)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring whose `current` key seals, and any of whose keys opens.
    #[must_use]
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// The key new secrets are sealed with.
    #[must_use]
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Every key, the current one first.
    pub fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

impl From<MasterKey> for Keyring {
    fn from(current: MasterKey) -> Self {
        Self::new(current, Vec::new())
    }
}

fn read_spec(spec: &str) -> Result<(KeyOrigin, Zeroizing<String>), SecretsError> {
    match spec.split_once(':') {
        Some(("env", var)) => {
            if var.is_empty() {
                return Err(SecretsError::EmptySpec {
                    scheme: "env",
                    what: "variable name",
                });
            }
            read_env(var)
        }
        Some(("file", path)) => {
            if path.is_empty() {
                return Err(SecretsError::EmptySpec {
                    scheme: "file",
                    what: "path",
                });
            }
            read_file(PathBuf::from(path))
        }
        Some((scheme, _)) if looks_like_scheme(scheme) => Err(SecretsError::UnknownScheme {
            scheme: Some(scheme.to_owned()),
        }),
        _ => Err(SecretsError::UnknownScheme { scheme: None }),
    }
}

fn looks_like_scheme(s: &str) -> bool {
    (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn read_env(var: &str) -> Result<(KeyOrigin, Zeroizing<String>), SecretsError> {
    let origin = KeyOrigin::Env(var.to_owned());
    match std::env::var(var) {
        Ok(text) => Ok((origin, Zeroizing::new(text))),
        Err(std::env::VarError::NotPresent) => Err(SecretsError::EnvMissing { var: var.to_owned() }),
        Err(std::env::VarError::NotUnicode(mut raw)) => {
            // Best effort: the OsString may hold key material.
            raw.clear();
            Err(SecretsError::NotText { origin })
        }
    }
}

fn read_file(path: PathBuf) -> Result<(KeyOrigin, Zeroizing<String>), SecretsError> {
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(source) => return Err(SecretsError::FileUnreadable { path, source }),
    };
    let origin = KeyOrigin::File(path);
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok((origin, Zeroizing::new(text.to_owned()))),
        Err(_) => Err(SecretsError::NotText { origin }),
    }
}

fn decode(origin: &KeyOrigin, text: &str) -> Result<MasterKey, SecretsError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretsError::Empty { origin: origin.clone() });
    }
    // 64 hex characters are also valid base64 (of 48 bytes), so hex is tried first.
    let decoded = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map(Zeroizing::new).ok()
    } else {
        BASE64.decode(text).map(Zeroizing::new).ok()
    };
    // The decoders' own errors quote offending characters of the key, so they are dropped.
    let decoded = decoded.ok_or_else(|| SecretsError::BadEncoding { origin: origin.clone() })?;
    let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| SecretsError::WrongLength {
        origin: origin.clone(),
        len: decoded.len(),
    })?;
    Ok(MasterKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    fn load_text(contents: &str) -> Result<MasterKey, SecretsError> {
        let file = key_file(contents);
        MasterKey::load(&format!("file:{}", file.path().display()))
    }

    #[test]
    fn loads_hex_and_base64_from_a_file_ignoring_whitespace() {
        let expected: [u8; 32] = core::array::from_fn(|i| u8::try_from(i).unwrap());
        let from_hex = load_text(&format!("  {HEX_KEY}\n")).unwrap();
        assert_eq!(from_hex.bytes(), &expected);

        let padded = base64::engine::general_purpose::STANDARD.encode(expected);
        assert!(padded.ends_with('='));
        assert_eq!(load_text(&format!("{padded}\n")).unwrap().bytes(), &expected);
        assert_eq!(load_text(padded.trim_end_matches('=')).unwrap().bytes(), &expected);
    }

    #[test]
    fn generated_keys_load_and_differ() {
        let a = MasterKey::generate_encoded();
        let b = MasterKey::generate_encoded();
        assert_ne!(a, b);
        assert!(load_text(&a).is_ok());
    }

    #[test]
    fn wrong_length_and_encoding_errors_do_not_echo_the_key() {
        let short = "c2hvcnRrZXlzaG9ydGtleQ==";
        let err = load_text(short).unwrap_err().to_string();
        assert!(err.contains("decodes to 16 bytes; it must be 32 bytes"), "{err}");
        assert!(!err.contains(short), "{err}");

        let bad = "not!a!key!zzzzzzzzzzzzzzzzzzzzzzzzzzz";
        let err = load_text(bad).unwrap_err().to_string();
        assert!(err.contains("is neither 64 hex characters nor base64"), "{err}");
        assert!(!err.contains("not!a!key"), "{err}");
        assert!(!err.contains('!'), "{err}");

        let err = load_text(" \n").unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn errors_name_the_file_or_variable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-key");
        let err = MasterKey::load(&format!("file:{}", missing.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("could not read master key file `{}`: ", missing.display())),
            "{err}"
        );

        let err = load_text("abc").unwrap_err().to_string();
        assert!(err.starts_with("master key in file `"), "{err}");

        let var = "PORTCULLIS_TEST_MASTER_KEY_THAT_IS_NEVER_SET_7f3a";
        let err = MasterKey::load(&format!("env:{var}")).unwrap_err().to_string();
        assert_eq!(err, format!("master key environment variable `{var}` is not set"));
    }

    #[test]
    fn unknown_specs_are_refused_without_echoing_them() {
        let err = MasterKey::load("vault:secret/key").unwrap_err().to_string();
        assert_eq!(err, "master key source must be `env:VAR` or `file:PATH`, not `vault:`");
        // A key pasted where the spec belongs must not be printed back.
        let err = MasterKey::load(HEX_KEY).unwrap_err().to_string();
        assert_eq!(err, "master key source must be `env:VAR` or `file:PATH`");
        assert!(
            MasterKey::load("env:")
                .unwrap_err()
                .to_string()
                .contains("needs a variable name")
        );
        assert!(
            MasterKey::load("file:")
                .unwrap_err()
                .to_string()
                .contains("needs a path")
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = MasterKey::from_bytes([7; 32]);
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }
}
