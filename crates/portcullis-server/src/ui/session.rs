//! Server-side sessions of the web UI.
//!
//! The browser holds only a random 256-bit id, in an `HttpOnly`, `SameSite=Strict` cookie
//! scoped to `/ui`. The store maps the id's SHA-256 to the person, the SHA-256 of the login
//! token they signed in with, a CSRF token and an absolute expiry, so that every gateway
//! instance sharing the store knows every session. Nothing here is a credential of an
//! upstream: a stolen session can vote, never read a secret.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use portcullis_store::{Store, StoreError, UiSession};
use subtle::ConstantTimeEq as _;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "portcullis_session";
/// How long a session lasts, whatever its use.
pub(crate) const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions kept at most; past that the oldest is dropped.
const MAX_SESSIONS: u32 = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The person's id in `admins`.
    pub person: String,
    /// SHA-256 of the login token used: a new token for the person ends the session.
    pub token_sha256: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Session {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub(crate) fn csrf_matches(&self, given: &str) -> bool {
        !given.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// The sessions, kept in the store.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    store: Store,
    max: u32,
}

impl Sessions {
    /// Sessions in `store`.
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            max: MAX_SESSIONS,
        }
    }

    /// Starts a session; returns its id (for the cookie) and the session.
    pub(crate) async fn create(&self, person: &str, token_sha256: String) -> Result<(String, Session), StoreError> {
        let id = random_hex();
        let now = now_unix();
        let session = Session {
            person: person.to_owned(),
            token_sha256,
            csrf: random_hex(),
        };
        let lifetime = i64::try_from(LIFETIME.as_secs()).unwrap_or(i64::MAX);
        self.store
            .create_ui_session(
                &UiSession {
                    id_sha256: key(&id),
                    person: session.person.clone(),
                    token_sha256: session.token_sha256.clone(),
                    csrf: session.csrf.clone(),
                    expires_unix: now.saturating_add(lifetime),
                },
                now,
                self.max,
            )
            .await?;
        Ok((id, session))
    }

    /// The live session with this id.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.store.ui_session(&key(id), now_unix()).await?.map(|s| Session {
            person: s.person,
            token_sha256: s.token_sha256,
            csrf: s.csrf,
        }))
    }

    /// Ends a session.
    pub(crate) async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.store.remove_ui_session(&key(id)).await
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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

    async fn sessions(max: u32) -> Sessions {
        let store = Store::open("sqlite::memory:").await.unwrap();
        Sessions { store, max }
    }

    #[tokio::test]
    async fn ids_and_csrf_tokens_are_256_bit_and_distinct() {
        let sessions = sessions(MAX_SESSIONS).await;
        let (a, sa) = sessions.create("alice", "h".repeat(64)).await.unwrap();
        let (b, sb) = sessions.create("alice", "h".repeat(64)).await.unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(a, sa.csrf);
        assert_eq!(
            sessions.get(&a).await.unwrap().map(|s| s.person),
            Some("alice".to_owned())
        );
        sessions.remove(&a).await.unwrap();
        assert!(sessions.get(&a).await.unwrap().is_none());
        assert!(sessions.get(&b).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_number_of_sessions_is_bounded() {
        let sessions = sessions(20).await;
        let (first, _) = sessions.create("alice", String::new()).await.unwrap();
        for _ in 0..25 {
            sessions.create("mallory", String::new()).await.unwrap();
        }
        assert_eq!(sessions.store.ui_session_count().await.unwrap(), 20);
        assert!(
            sessions.get(&first).await.unwrap().is_none(),
            "the oldest session made room"
        );
    }

    #[tokio::test]
    async fn the_store_keeps_only_the_ids_hash() {
        let sessions = sessions(MAX_SESSIONS).await;
        let (id, _) = sessions.create("alice", String::new()).await.unwrap();
        assert!(sessions.store.ui_session(&id, now_unix()).await.unwrap().is_none());
        assert!(
            sessions
                .store
                .ui_session(&key(&id), now_unix())
                .await
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn csrf_must_match_exactly() {
        let s = Session {
            person: "alice".into(),
            token_sha256: String::new(),
            csrf: random_hex(),
        };
        assert!(s.csrf_matches(&s.csrf.clone()));
        assert!(!s.csrf_matches(""));
        assert!(!s.csrf_matches(&s.csrf[..63]));
        assert!(!s.csrf_matches(&s.csrf.to_uppercase()));
    }

    /// The comparison is `subtle`'s `ct_eq` (its timing doesn't depend on where a guess goes
    /// wrong; a timing measurement would be too noisy to test that here): every near miss,
    /// wherever it differs, is refused, and so is the right token with anything around it.
    #[test]
    fn csrf_near_misses_are_refused_wherever_they_differ() {
        let s = Session {
            person: "alice".into(),
            token_sha256: String::new(),
            csrf: "0".repeat(64),
        };
        for at in [0, 31, 63] {
            let mut guess = s.csrf.clone().into_bytes();
            guess[at] = b'1';
            assert!(!s.csrf_matches(&String::from_utf8(guess).unwrap()), "differs at {at}");
        }
        for guess in [format!("{}0", s.csrf), format!(" {}", s.csrf), format!("{}\0", s.csrf)] {
            assert!(!s.csrf_matches(&guess), "{guess:?}");
        }
        assert!(s.csrf_matches(&"0".repeat(64)));
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
