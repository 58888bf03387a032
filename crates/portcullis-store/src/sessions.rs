//! Web UI sessions, in the store so that every gateway instance knows every session: a
//! person signed in through one instance stays signed in behind any load balancer, and
//! across restarts.

use crate::{Store, StoreError};

/// A signed-in browser. The id itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    /// SHA-256 of the session id in the browser's cookie.
    pub id_sha256: String,
    /// The person's id in `admins`.
    pub person: String,
    /// SHA-256 of the login token used: a new token for the person ends the session.
    pub token_sha256: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// When the session ends whatever its use, Unix seconds.
    pub expires_unix: i64,
}

type SessionRow = (String, String, String, String, i64);

/// Now in microseconds since the epoch, never going backwards within this process.
fn created_micros() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

impl Store {
    /// Stores a new session, after dropping expired ones; when `max_sessions` live ones
    /// exist, the oldest makes room.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn create_ui_session(
        &self,
        session: &UiSession,
        now_unix: i64,
        max_sessions: u32,
    ) -> Result<(), StoreError> {
        const CONTEXT: &str = "starting a web UI session";
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM ui_sessions WHERE expires_unix <= $1"
        )
        .bind(now_unix)
        .execute(pool)
        .await
        .map(drop))
        .map_err(StoreError::db(CONTEXT))?;
        let live: i64 = on_pool!(self, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM ui_sessions")
            .fetch_one(pool)
            .await)
        .map_err(StoreError::db(CONTEXT))?;
        let excess = live - i64::from(max_sessions) + 1;
        if excess > 0 {
            on_pool!(self, |pool| sqlx::query(
                "DELETE FROM ui_sessions WHERE id_sha256 IN \
                 (SELECT id_sha256 FROM ui_sessions ORDER BY created_micros, id_sha256 LIMIT $1)"
            )
            .bind(excess)
            .execute(pool)
            .await
            .map(drop))
            .map_err(StoreError::db(CONTEXT))?;
        }
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO ui_sessions (id_sha256, person, token_sha256, csrf, expires_unix, created_micros) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(&session.id_sha256)
        .bind(&session.person)
        .bind(&session.token_sha256)
        .bind(&session.csrf)
        .bind(session.expires_unix)
        .bind(created_micros())
        .execute(pool)
        .await
        .map(drop))
        .map_err(StoreError::db(CONTEXT))
    }

    /// The live session whose id hashes to `id_sha256`.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn ui_session(&self, id_sha256: &str, now_unix: i64) -> Result<Option<UiSession>, StoreError> {
        let row: Option<SessionRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id_sha256, person, token_sha256, csrf, expires_unix FROM ui_sessions \
             WHERE id_sha256 = $1 AND expires_unix > $2"
        )
        .bind(id_sha256)
        .bind(now_unix)
        .fetch_optional(pool)
        .await)
        .map_err(StoreError::db("reading a web UI session"))?;
        Ok(
            row.map(|(id_sha256, person, token_sha256, csrf, expires_unix)| UiSession {
                id_sha256,
                person,
                token_sha256,
                csrf,
                expires_unix,
            }),
        )
    }

    /// Ends a session.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn remove_ui_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("DELETE FROM ui_sessions WHERE id_sha256 = $1")
            .bind(id_sha256)
            .execute(pool)
            .await
            .map(drop))
        .map_err(StoreError::db("ending a web UI session"))
    }

    /// How many sessions are stored (live or not yet swept).
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn ui_session_count(&self) -> Result<u64, StoreError> {
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM ui_sessions")
            .fetch_one(pool)
            .await)
        .map_err(StoreError::db("counting web UI sessions"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
