use chacha20poly1305::aead::{Aead as _, Generate as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use portcullis_core::Secret;
use zeroize::Zeroize as _;

use crate::{Keyring, MasterKey, SecretsError};

/// Length of an XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;

/// The key version of secrets sealed before keys had ids: any configured key may open them
/// (the cipher authenticates, so a wrong key fails cleanly).
pub const LEGACY_KEY_VERSION: u32 = 1;

/// A secret as stored: its name and ciphertext, never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The secret's name, also the associated data of the ciphertext.
    pub name: String,
    /// The random 24-byte nonce used for this ciphertext.
    pub nonce: Vec<u8>,
    /// XChaCha20-Poly1305 ciphertext followed by its 16-byte tag.
    pub ciphertext: Vec<u8>,
    /// Which master key sealed it: the key's [`MasterKey::id`] (or
    /// [`LEGACY_KEY_VERSION`] for secrets sealed before key ids).
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
        key_version: key.id(),
    })
}

/// Decrypts a sealed secret with the keyring's key that sealed it (any of its keys for a
/// legacy secret).
///
/// # Errors
/// When no configured key is the one that sealed it, the name, nonce or ciphertext was
/// altered, or the plaintext is not UTF-8.
pub fn open(keyring: &Keyring, sealed: &SealedSecret) -> Result<Secret<String>, SecretsError> {
    if sealed.key_version == LEGACY_KEY_VERSION {
        let mut last = SecretsError::Decrypt {
            name: sealed.name.clone(),
        };
        for key in keyring.keys() {
            match open_with(key, sealed) {
                Ok(secret) => return Ok(secret),
                Err(e) => last = e,
            }
        }
        return Err(last);
    }
    let key = keyring
        .keys()
        .find(|k| k.id() == sealed.key_version)
        .ok_or_else(|| SecretsError::UnknownKeyVersion {
            name: sealed.name.clone(),
            version: sealed.key_version,
        })?;
    open_with(key, sealed)
}

fn open_with(key: &MasterKey, sealed: &SealedSecret) -> Result<Secret<String>, SecretsError> {
    let name = &sealed.name;
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

    fn ring(byte: u8) -> Keyring {
        key(byte).into()
    }

    #[test]
    fn round_trip() {
        let sealed = seal(&key(1), "github", b"ghp_abc123").unwrap();
        assert_eq!(sealed.name, "github");
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.key_version, key(1).id());
        assert!(!sealed.ciphertext.windows(10).any(|w| w == b"ghp_abc123"));
        assert_eq!(open(&ring(1), &sealed).unwrap().expose_secret(), "ghp_abc123");
    }

    #[test]
    fn key_ids_differ_between_keys_and_never_equal_the_legacy_version() {
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id(), key(1).id());
        for byte in 0..=255 {
            assert_ne!(key(byte).id(), LEGACY_KEY_VERSION);
        }
    }

    #[test]
    fn a_different_key_or_name_fails_to_open() {
        let sealed = seal(&key(1), "github", b"ghp_abc123").unwrap();
        // Another key, even under the first key's id, does not open it.
        let forged = SealedSecret {
            key_version: key(2).id(),
            ..sealed.clone()
        };
        let err = open(&ring(2), &forged).unwrap_err().to_string();
        assert_eq!(
            err,
            "secret `github` could not be decrypted (wrong master key, or the stored value was altered)"
        );
        let moved = SealedSecret {
            name: "stripe".into(),
            ..sealed.clone()
        };
        assert!(matches!(open(&ring(1), &moved), Err(SecretsError::Decrypt { name }) if name == "stripe"));
    }

    #[test]
    fn a_rotation_keyring_opens_secrets_of_every_key_it_holds() {
        let old = seal(&key(1), "github", b"old-key").unwrap();
        let new = seal(&key(2), "stripe", b"new-key").unwrap();
        let rotating = Keyring::new(key(2), vec![key(1)]);
        assert_eq!(open(&rotating, &old).unwrap().expose_secret(), "old-key");
        assert_eq!(open(&rotating, &new).unwrap().expose_secret(), "new-key");
        assert_eq!(rotating.current().id(), key(2).id());
        // Without the old key, the old secret names the key it needs, never a value.
        let err = open(&ring(2), &old).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "secret `github` was sealed with master key {:08x}, which is not configured (list it under \
                 `previous_master_keys` until `portcullis secret rotate-master-key` has re-encrypted everything)",
                key(1).id()
            )
        );
    }

    #[test]
    fn legacy_secrets_open_with_whichever_configured_key_sealed_them() {
        let sealed = SealedSecret {
            key_version: LEGACY_KEY_VERSION,
            ..seal(&key(1), "github", b"ghp_legacy").unwrap()
        };
        let rotating = Keyring::new(key(2), vec![key(1)]);
        assert_eq!(open(&rotating, &sealed).unwrap().expose_secret(), "ghp_legacy");
        assert!(matches!(open(&ring(3), &sealed), Err(SecretsError::Decrypt { .. })));
    }

    #[test]
    fn altered_ciphertext_or_nonce_fails() {
        let sealed = seal(&key(1), "github", b"ghp_abc123").unwrap();
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(open(&ring(1), &flipped), Err(SecretsError::Decrypt { .. })));
        let short_nonce = SealedSecret {
            nonce: vec![0; 12],
            ..sealed
        };
        assert!(matches!(
            open(&ring(1), &short_nonce),
            Err(SecretsError::Decrypt { .. })
        ));
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
        let err = open(&ring(1), &sealed).unwrap_err().to_string();
        assert_eq!(err, "secret `blob` is not UTF-8 text");
    }
}
