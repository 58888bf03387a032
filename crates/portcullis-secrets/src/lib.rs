//! Encryption of stored secrets.
//!
//! Credentials that Portcullis keeps itself are stored only as XChaCha20-Poly1305
//! ciphertext ([`SealedSecret`]) under one [`MasterKey`] that lives outside the store (an
//! environment variable or a file). The secret's name is the associated data, so a
//! ciphertext copied under another name does not open. This crate does no I/O besides
//! reading the master key.

mod error;
mod key;
mod seal;

pub use error::{KeyOrigin, SecretsError};
pub use key::MasterKey;
pub use seal::{CURRENT_KEY_VERSION, NONCE_LEN, SealedSecret, open, seal};
