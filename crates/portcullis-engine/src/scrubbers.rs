//! Scrubbers reused across intents.
//!
//! A [`Scrubber`] compiles its secrets and their encodings into Aho-Corasick automata, which
//! costs far more than scrubbing a typical response. The values injected into requests
//! change rarely (a rotation, a refreshed token), so the gateway keeps one scrubber per set
//! of values, keyed by a SHA-256 over them: the cache holds no secret that the scrubber
//! itself doesn't.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_redact::Scrubber;
use sha2::{Digest as _, Sha256};

/// Most scrubbers kept; past it the cache starts over (refreshed OAuth2 tokens each make a
/// new set of values).
const CAPACITY: usize = 256;

/// Scrubbers by the values they scrub.
#[derive(Debug, Default)]
pub(crate) struct Scrubbers {
    built: Mutex<HashMap<[u8; 32], Arc<Scrubber>>>,
}

impl Scrubbers {
    /// The scrubber for `values`, built on first use.
    pub(crate) fn get(&self, values: Vec<String>) -> Arc<Scrubber> {
        if values.is_empty() {
            return Arc::new(Scrubber::empty());
        }
        let mut hasher = Sha256::new();
        for value in &values {
            // Length-prefixed, so no two different lists hash alike.
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
        let key: [u8; 32] = hasher.finalize().into();
        if let Some(found) = self.built.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Arc::clone(found);
        }
        let scrubber = Arc::new(Scrubber::new(values));
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if built.len() >= CAPACITY {
            built.clear();
        }
        built.insert(key, Arc::clone(&scrubber));
        scrubber
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_values_share_one_scrubber_and_different_ones_do_not() {
        let cache = Scrubbers::default();
        let a = cache.get(vec!["sk_live_0123456789abcdef".into()]);
        let again = cache.get(vec!["sk_live_0123456789abcdef".into()]);
        let other = cache.get(vec!["sk_live_0123456789abcdeX".into()]);
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(a.scrub_str("key sk_live_0123456789abcdef"), "key <redacted>");
        assert!(!other.scrub_str("key sk_live_0123456789abcdeX").contains("abcdeX"));
        // Lists that concatenate alike are still told apart.
        let split = cache.get(vec!["ab".into(), "cd".into()]);
        let joined = cache.get(vec!["abcd".into()]);
        assert!(!Arc::ptr_eq(&split, &joined));
        assert!(cache.get(Vec::new()).is_empty());
    }
}
