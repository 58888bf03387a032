use chacha20poly1305::aead::{Aead as _, Generate as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use portcullis_core::Secret;
use zeroize::Zeroize as _;

use crate::{MasterKey, SecretsError};

/// Length of an XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;

/// The key version [`seal`] writes. Versions exist so that a later master-key rotation
/// can tell old ciphertexts from new ones.
pub const CURRENT_KEY_VERSION: u32 = 1;

/// A secret as stored: its name and ciphertext, never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The secret's name, also the associated data of the ciphertext.
    pub name: String,
    /// The random 24-byte nonce used for this ciphertext.
    pub nonce: Vec<u8>,
    /// XChaCha20-Poly1305 ciphertext followed by its 16-byte tag.
    pub ciphertext: Vec<u8>,
    /// Which master key sealed it; see [`CURRENT_KEY_VERSION`].
    pub key_version: u32,
}

/// Encrypts `plaintext` under `key` with a fresh random nonce, binding it to `name`.
///
/// # Errors
/// When the operating system's random number generator fails, or the plaintext is too
/// long for the cipher.
pub fn seal(key: &MasterKey, name: &str, plaintext: &[u8]) -> Result<SealedSecret, SecretsError> {
    // A random 192-bit nonce per call: collisions are negligible without any counter state.
    let nonce = XNonce::try_generate().map_err(|e| SecretsError::Random(e.to_string()))?;
    let ciphertext = cipher(key)
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| SecretsError::Encrypt { name: name.to_owned() })?;
    Ok(SealedSecret {
        name: name.to_owned(),
        nonce: nonce.to_vec(),
        ciphertext,
        key_version: CURRENT_KEY_VERSION,
    })
}

/// Decrypts a sealed secret.
///
/// # Errors
/// When the key is not the one that sealed it, the name, nonce or ciphertext was altered,
/// the key version is unknown, or the plaintext is not UTF-8.
pub fn open(key: &MasterKey, sealed: &SealedSecret) -> Result<Secret<String>, SecretsError> {
    let name = &sealed.name;
    if sealed.key_version != CURRENT_KEY_VERSION {
        return Err(SecretsError::UnknownKeyVersion {
            name: name.clone(),
            version: sealed.key_version,
        });
    }
    let decrypt_error = || SecretsError::Decrypt { name: name.clone() };
    let nonce = XNonce::try_from(sealed.nonce.as_slice()).map_err(|_| decrypt_error())?;
    let plaintext = cipher(key)
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed.ciphertext,
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| decrypt_error())?;
    match String::from_utf8(plaintext) {
        Ok(text) => Ok(Secret::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(SecretsError::NotUtf8 { name: name.clone() })
        }
    }
}

fn cipher(key: &MasterKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    #[test]
    fn round_trip() {
        let sealed = seal(&key(1), "github", b"ghp_abc123").unwrap();
        assert_eq!(sealed.name, "github");
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.key_version, 1);
        assert!(!sealed.ciphertext.windows(10).any(|w| w == b"ghp_abc123"));
        assert_eq!(open(&key(1), &sealed).unwrap().expose_secret(), "ghp_abc123");
    }

    #[test]
    fn a_different_key_or_name_fails_to_open() {
        let sealed = seal(&key(1), "github", b"ghp_abc123").unwrap();
        let err = open(&key(2), &sealed).unwrap_err().to_string();
        assert_eq!(
            err,
            "secret `github` could not be decrypted (wrong master key, or the stored value was altered)"
        );
        let moved = SealedSecret {
            name: "stripe".into(),
            ..sealed.clone()
        };
        assert!(matches!(open(&key(1), &moved), Err(SecretsError::Decrypt { name }) if name == "stripe"));
    }

    #[test]
    fn altered_ciphertext_nonce_or_version_fails() {
        let sealed = seal(&key(1), "github", b"ghp_abc123").unwrap();
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(open(&key(1), &flipped), Err(SecretsError::Decrypt { .. })));
        let short_nonce = SealedSecret {
            nonce: vec![0; 12],
            ..sealed.clone()
        };
        assert!(matches!(open(&key(1), &short_nonce), Err(SecretsError::Decrypt { .. })));
        let future = SealedSecret {
            key_version: 2,
            ..sealed
        };
        let err = open(&key(1), &future).unwrap_err().to_string();
        assert_eq!(
            err,
            "secret `github` was sealed with key version 2, which this build does not know"
        );
    }

    #[test]
    fn nonces_differ_between_seals_of_the_same_value() {
        let a = seal(&key(1), "github", b"same").unwrap();
        let b = seal(&key(1), "github", b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn non_utf8_plaintext_is_an_error() {
        let sealed = seal(&key(1), "blob", &[0xff, 0xfe]).unwrap();
        let err = open(&key(1), &sealed).unwrap_err().to_string();
        assert_eq!(err, "secret `blob` is not UTF-8 text");
    }
}
