//! Server-side sessions of the web UI.
//!
//! The browser holds only a random 256-bit id, in an `HttpOnly`, `SameSite=Strict` cookie
//! scoped to `/ui`. The server maps the id's SHA-256 to the person, the SHA-256 of the login
//! token they signed in with, a CSRF token and an absolute expiry. Nothing here is a
//! credential of an upstream: a stolen session can vote, never read a secret.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use subtle::ConstantTimeEq as _;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "portcullis_session";
/// How long a session lasts, whatever its use.
pub(crate) const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions kept at most; past that the one closest to expiry is dropped.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The person's id in `admins`.
    pub person: String,
    /// SHA-256 of the login token used: a new token for the person ends the session.
    pub token_sha256: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub(crate) fn csrf_matches(&self, given: &str) -> bool {
        !given.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// The sessions of one router, keyed by the SHA-256 of their ids.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session; returns its id (for the cookie) and the session.
    pub(crate) fn create(&self, person: &str, token_sha256: String) -> (String, Session) {
        let id = random_hex();
        let now = Instant::now();
        let session = Session {
            person: person.to_owned(),
            token_sha256,
            csrf: random_hex(),
            expires: now + LIFETIME,
        };
        let mut map = self.map();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(key(&id), session.clone());
        (id, session)
    }

    /// The live session with this id.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map();
        let k = key(id);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub(crate) fn remove(&self, id: &str) {
        self.map().remove(&key(id));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

fn key(id: &str) -> String {
    portcullis_core::sha256_hex(id.as_bytes())
}

/// 256 random bits from the thread's CSPRNG, as hex.
fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The session id in the request's cookies, if it has the shape of one.
pub(crate) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether the browser reached us over HTTPS (directly, or through a proxy that says so).
/// Only decides whether the cookie is marked `Secure`; a client lying about it only
/// keeps its own cookie from being sent back.
pub(crate) fn is_https(headers: &HeaderMap, uri: &Uri) -> bool {
    let forwarded = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    uri.scheme_str() == Some("https")
        || forwarded("x-forwarded-proto").is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim() == "https"))
        || forwarded("forwarded").is_some_and(|v| v.split([';', ',']).any(|p| p.trim() == "proto=https"))
}

/// The `Set-Cookie` value that starts a session.
pub(crate) fn set_cookie(id: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    let max_age = LIFETIME.as_secs();
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// The `Set-Cookie` value that ends a session in the browser.
pub(crate) fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static("portcullis_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0; Secure")
    } else {
        HeaderValue::from_static("portcullis_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_csrf_tokens_are_256_bit_and_distinct() {
        let sessions = Sessions::default();
        let (a, sa) = sessions.create("alice", "h".repeat(64));
        let (b, sb) = sessions.create("alice", "h".repeat(64));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(a, sa.csrf);
        assert_eq!(sessions.get(&a).map(|s| s.person), Some("alice".to_owned()));
        sessions.remove(&a);
        assert!(sessions.get(&a).is_none());
        assert!(sessions.get(&b).is_some());
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let (first, _) = sessions.create("alice", String::new());
        for _ in 0..MAX_SESSIONS {
            sessions.create("mallory", String::new());
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.get(&first).is_none(), "the oldest session made room");
    }

    #[test]
    fn csrf_must_match_exactly() {
        let (_, s) = Sessions::default().create("alice", String::new());
        assert!(s.csrf_matches(&s.csrf.clone()));
        assert!(!s.csrf_matches(""));
        assert!(!s.csrf_matches(&s.csrf[..63]));
        assert!(!s.csrf_matches(&s.csrf.to_uppercase()));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_must_look_like_an_id() {
        let id = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE}={id}; x=y")).unwrap(),
        );
        assert_eq!(session_id(&headers), Some(id));
        headers.insert(header::COOKIE, HeaderValue::from_static("portcullis_session=../../etc"));
        assert_eq!(session_id(&headers), None);
    }

    #[test]
    fn secure_only_over_https() {
        let uri: Uri = "/ui/login".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert!(!is_https(&headers, &uri));
        let cookie = set_cookie("00", false).unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("HttpOnly; SameSite=Strict; Path=/ui") && !cookie.contains("Secure"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(is_https(&headers, &uri));
        assert!(set_cookie("00", true).unwrap().to_str().unwrap().ends_with("; Secure"));
    }
}
