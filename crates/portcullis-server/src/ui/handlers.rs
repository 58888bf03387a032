//! The `/ui` handlers: each checks the session, asks the engine, renders a page.

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use portcullis_engine::ApprovalError;

use super::pages::{DetailPage, ErrorPage, ListPage, LoginPage, Me, render};
use super::session::{self, is_https};
use super::{Shared, Signed, cross_site, store_error};
use crate::error::approval_status;

/// `GET /ui`: the login page, or the approvals when signed in.
pub(crate) async fn home(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    match ui.signed_in(&headers).await {
        Ok(Some(_)) => Redirect::to("/ui/approvals").into_response(),
        Ok(None) => render(StatusCode::OK, &LoginPage { me: None, error: None }),
        Err(e) => failure(None, &e),
    }
}

/// `GET /ui/login` (a reload after a failed login): back to `/ui`.
pub(crate) async fn to_home() -> Redirect {
    Redirect::to("/ui")
}

/// The login form.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /ui/login`: a person's login token starts a session.
pub(crate) async fn login(
    State(ui): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if cross_site(&headers) {
        return refused(None, "this form may only be sent from the Portcullis UI itself");
    }
    let token = form.map(|Form(f)| f.token).unwrap_or_default();
    let token = token.trim();
    match ui.gateway().authenticate_person(token).await {
        Ok(person) => {
            if let Some(old) = session::session_id(&headers)
                && let Err(e) = ui.sessions.remove(&old).await
            {
                return failure(None, &store_error(e));
            }
            let created = ui
                .sessions
                .create(&person.id, portcullis_core::sha256_hex(token.as_bytes()))
                .await;
            let (id, _) = match created {
                Ok(c) => c,
                Err(e) => return failure(None, &store_error(e)),
            };
            tracing::info!(person = %person.id, "web UI login");
            let mut response = Redirect::to("/ui/approvals").into_response();
            if let Some(cookie) = session::set_cookie(&id, is_https(&headers, &uri)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(e) => {
            tracing::info!("web UI login refused: {e}");
            let status = approval_status(&e).0;
            let error = match e {
                ApprovalError::Unauthenticated => "that login token is not valid".to_owned(),
                other => other.to_string(),
            };
            render(
                status,
                &LoginPage {
                    me: None,
                    error: Some(error),
                },
            )
        }
    }
}

/// A form that carries only the CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: ends the session.
pub(crate) async fn logout(
    State(ui): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let signed = match ui.signed_in(&headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to("/ui").into_response(),
        Err(e) => return failure(None, &e),
    };
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if cross_site(&headers) || !signed.session.csrf_matches(&csrf) {
        return refused(
            Some(me(&signed)),
            "the form's security token is missing or wrong; reload the page",
        );
    }
    if let Err(e) = ui.sessions.remove(&signed.id).await {
        return failure(Some(me(&signed)), &store_error(e));
    }
    tracing::info!(person = %signed.person.id, "web UI logout");
    let mut response = Redirect::to("/ui").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie(is_https(&headers, &uri)));
    response
}

/// `GET /ui/approvals`: what waits for this person, and what was decided.
pub(crate) async fn list(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    let signed = match ui.signed_in(&headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to("/ui").into_response(),
        Err(e) => return failure(None, &e),
    };
    let me = me(&signed);
    let pending = match ui.gateway().approvals_for(&signed.person, true).await {
        Ok(p) => p,
        Err(e) => return failure(Some(me), &e),
    };
    let all = match ui.gateway().approvals_for(&signed.person, false).await {
        Ok(a) => a,
        Err(e) => return failure(Some(me), &e),
    };
    let page = ListPage {
        me: Some(me),
        pending: pending.iter().map(Into::into).collect(),
        history: all.iter().filter(|h| h.state != "pending").map(Into::into).collect(),
    };
    render(StatusCode::OK, &page)
}

/// `?done=` after a vote.
#[derive(Debug, Deserialize)]
pub(crate) struct DetailQuery {
    #[serde(default)]
    done: Option<String>,
}

/// `GET /ui/approvals/{id}`: one held intent, with the forms to decide it.
pub(crate) async fn detail(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<DetailQuery>, QueryRejection>,
) -> Response {
    let signed = match ui.signed_in(&headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to("/ui").into_response(),
        Err(e) => return failure(None, &e),
    };
    let me = me(&signed);
    let hold = match ui.gateway().approval(&signed.person, &id).await {
        Ok(h) => h,
        Err(e) => return failure(Some(me), &e),
    };
    let mut page = DetailPage::new(me, &hold);
    // Only known values: the page never echoes text from the query string.
    page.notice = match query.ok().and_then(|Query(q)| q.done).as_deref() {
        Some("approved") => Some("You approved this intent.".to_owned()),
        Some("denied") => Some("You denied this intent; it will not run.".to_owned()),
        _ => None,
    };
    render(StatusCode::OK, &page)
}

/// The approve and deny forms.
#[derive(Debug, Deserialize)]
pub(crate) struct VoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    payload_sha256: String,
}

/// `POST /ui/approvals/{id}/approve`.
pub(crate) async fn approve(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<VoteForm>, FormRejection>,
) -> Response {
    vote(ui, headers, id, form, true).await
}

/// `POST /ui/approvals/{id}/deny`.
pub(crate) async fn deny(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<VoteForm>, FormRejection>,
) -> Response {
    vote(ui, headers, id, form, false).await
}

async fn vote(
    ui: Shared,
    headers: HeaderMap,
    id: String,
    form: Result<Form<VoteForm>, FormRejection>,
    approve: bool,
) -> Response {
    let signed = match ui.signed_in(&headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return refused(
                None,
                "you are not logged in (or your session ended); log in and decide again",
            );
        }
        Err(e) => return failure(None, &e),
    };
    let me = me(&signed);
    let Ok(Form(form)) = form else {
        return page_error(
            Some(me),
            StatusCode::BAD_REQUEST,
            "Bad request",
            "the form could not be read",
        );
    };
    if cross_site(&headers) || !signed.session.csrf_matches(&form.csrf) {
        return refused(
            Some(me),
            "the form's security token is missing or wrong; reload the page and decide again",
        );
    }
    // The vote that completes the quorum executes the intent. It runs in its own task so
    // that it finishes, and its outcome is recorded, even when the browser goes away
    // (hyper drops a handler's future when its client disconnects).
    let (gateway, person, hold_id) = (ui.gateway(), signed.person.clone(), id.clone());
    let voted = tokio::spawn(async move {
        gateway
            .vote(&person, &hold_id, approve, &form.reason, &form.payload_sha256)
            .await
    })
    .await
    .unwrap_or_else(|e| Err(ApprovalError::Store(format!("the approval task failed: {e}"))));
    match voted {
        Ok(_) => {
            let done = if approve { "approved" } else { "denied" };
            // The engine accepted `id`, so it is a valid intent id (letters, digits, `_`, `-`).
            Redirect::to(&format!("/ui/approvals/{id}?done={done}")).into_response()
        }
        Err(e) => {
            let status = approval_status(&e).0;
            match ui.gateway().approval(&signed.person, &id).await {
                Ok(hold) => {
                    let mut page = DetailPage::new(me, &hold);
                    page.error = Some(e.to_string());
                    render(status, &page)
                }
                Err(_) => failure(Some(me), &e),
            }
        }
    }
}

/// Any other path under `/ui`.
pub(crate) async fn not_found(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    let me = ui.signed_in(&headers).await.ok().flatten().map(|s| me(&s));
    page_error(me, StatusCode::NOT_FOUND, "Not found", "there is no such page")
}

fn me(signed: &Signed) -> Me {
    Me::new(&signed.person, &signed.session)
}

/// An engine error as a page, with its status.
fn failure(me: Option<Me>, e: &ApprovalError) -> Response {
    let (status, _) = approval_status(e);
    let title = status.canonical_reason().unwrap_or("Error");
    page_error(me, status, title, &e.to_string())
}

/// 403: a missing session or a failed CSRF check.
fn refused(me: Option<Me>, message: &str) -> Response {
    page_error(me, StatusCode::FORBIDDEN, "Forbidden", message)
}

fn page_error(me: Option<Me>, status: StatusCode, title: &str, message: &str) -> Response {
    let page = ErrorPage {
        me,
        title: title.to_owned(),
        message: message.to_owned(),
    };
    render(status, &page)
}
