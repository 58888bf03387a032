use std::fmt;

use serde::{Serialize, Serializer};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A value that must never be shown: `Debug`, `Display` and `Serialize` print `<redacted>`.
///
/// The value is zeroized on drop and compared in constant time. The only way to read
/// it is [`Secret::expose_secret`], which should appear only where a credential is
/// injected into a request or stored encrypted.
pub struct Secret<T: Zeroize>(T);

/// What every interface prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

impl<T: Zeroize> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Reads the value. Call this only to inject or store the secret.
    pub fn expose_secret(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> ZeroizeOnDrop for Secret<T> {}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T: Zeroize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<T: Zeroize + AsRef<[u8]>> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ref().ct_eq(other.0.as_ref()).into()
    }
}

impl<T: Zeroize + AsRef<[u8]>> Eq for Secret<T> {}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new(String::from("ghp_supersecret"));
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.to_string(), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose_secret(), "ghp_supersecret");
    }

    #[test]
    fn secrets_compare_by_value() {
        let a = Secret::new(String::from("abc"));
        assert!(a == Secret::new(String::from("abc")));
        assert!(a != Secret::new(String::from("abd")));
        assert!(a != Secret::new(String::from("abcd")));
    }
}
