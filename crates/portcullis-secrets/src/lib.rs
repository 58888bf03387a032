//! Encryption of stored secrets.
//!
//! Credentials that Portcullis keeps itself are stored only as XChaCha20-Poly1305
//! ciphertext ([`SealedSecret`]) under a [`MasterKey`] that lives outside the store (an
//! environment variable or a file). The secret's name is the associated data, so a
//! ciphertext copied under another name does not open. Each ciphertext records the id of
//! the key that sealed it, so that a [`Keyring`] of the current key and previous ones opens
//! every secret while a master-key rotation is under way. This crate does no I/O besides
//! reading the master key.

mod error;
mod key;
mod seal;

pub use error::{KeyOrigin, SecretsError};
pub use key::{Keyring, MasterKey};
pub use seal::{LEGACY_KEY_VERSION, NONCE_LEN, SealedSecret, open, seal};
