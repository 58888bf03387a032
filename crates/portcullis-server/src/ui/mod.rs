//! The approvals web UI at `/ui`: server-rendered pages that work without JavaScript.
//!
//! People log in with their own login token (`portcullis approvals token ID`); agent tokens
//! are never accepted. A login starts a server-side session (see [`session`]) whose every
//! use re-checks the person against the configuration and their current token. Every form
//! carries the session's CSRF token, compared in constant time, and every vote carries the
//! SHA-256 of the payload the page showed, which the engine checks against the held one.

mod handlers;
mod pages;
mod payload;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{any, get, post};

use portcullis_engine::{ApprovalError, Gateway, Live, Person};

use self::session::{Session, Sessions};

/// What every `/ui` response carries: no scripts, no framing, no caching, no referrer.
const CSP: &str = "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";
/// The largest form body accepted (a reason is at most 2000 characters).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The UI's state: the gateway and the sessions (in its store).
#[derive(Debug)]
pub(crate) struct Ui {
    live: Arc<Live>,
    sessions: Sessions,
}

impl Ui {
    /// The gateway serving now.
    fn gateway(&self) -> Arc<Gateway> {
        self.live.current()
    }
}

type Shared = Arc<Ui>;

/// The `/ui` routes, to merge into the API router.
pub(crate) fn routes(live: Arc<Live>) -> Router {
    let ui = Arc::new(Ui {
        sessions: Sessions::new(live.current().store().clone()),
        live,
    });
    Router::new()
        .route("/ui", get(handlers::home))
        .route("/ui/login", get(handlers::to_home).post(handlers::login))
        .route("/ui/logout", post(handlers::logout))
        .route("/ui/approvals", get(handlers::list))
        .route("/ui/approvals/{id}", get(handlers::detail))
        .route("/ui/approvals/{id}/approve", post(handlers::approve))
        .route("/ui/approvals/{id}/deny", post(handlers::deny))
        .route("/ui/{*rest}", any(handlers::not_found))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::map_response(security_headers))
        .with_state(ui)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A request with a live session.
#[derive(Debug)]
struct Signed {
    /// The session id from the cookie.
    id: String,
    session: Session,
    person: Person,
}

impl Ui {
    /// The session of this request, if it has a live one whose person is still in
    /// `admins` and still holds the token they logged in with; a stale session is dropped.
    async fn signed_in(&self, headers: &HeaderMap) -> Result<Option<Signed>, ApprovalError> {
        let Some(id) = session::session_id(headers) else {
            return Ok(None);
        };
        let Some(session) = self.sessions.get(&id).await.map_err(store_error)? else {
            return Ok(None);
        };
        let owner = self
            .gateway()
            .store()
            .person_for_token_hash(&session.token_sha256)
            .await
            .map_err(|e| ApprovalError::Store(e.to_string()))?;
        let person = match owner {
            Some(owner) if owner == session.person => self.gateway().person_by_id(&owner),
            _ => None,
        };
        match person {
            Some(person) => Ok(Some(Signed { id, session, person })),
            None => {
                self.sessions.remove(&id).await.map_err(store_error)?;
                Ok(None)
            }
        }
    }
}

/// A store failure, as the approvals API reports it (503, nothing changed).
pub(crate) fn store_error(e: portcullis_store::StoreError) -> ApprovalError {
    ApprovalError::Store(e.to_string())
}

/// Whether the browser says this request came from another site. Browsers send
/// `Sec-Fetch-Site` on every request; `SameSite=Strict` and the CSRF token already stop
/// forged votes, and this also stops a forged login.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !matches!(v, "same-origin" | "none"))
}
