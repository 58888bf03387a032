//! The pages (askama templates under `templates/ui/`, HTML-escaped by default) and the
//! plain view models they show.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use portcullis_engine::config::Role;
use portcullis_engine::{HoldView, Person};

use super::payload::{self, TextBlock};
use super::session::Session;

/// The signed-in person, for the page header and the forms.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub id: String,
    pub role: String,
    pub csrf: String,
}

impl Me {
    pub(crate) fn new(person: &Person, session: &Session) -> Self {
        let role = match person.role {
            Role::Admin => "admin".to_owned(),
            Role::Approver if person.groups.is_empty() => "approver".to_owned(),
            Role::Approver => format!("approver: {}", person.groups.join(", ")),
        };
        Self {
            id: person.id.clone(),
            role,
            csrf: session.csrf.clone(),
        }
    }
}

/// One vote as shown.
#[derive(Debug, Clone)]
pub(crate) struct VoteRow {
    pub approver: String,
    pub verdict: String,
    pub reason: String,
    pub at: String,
}

/// A held intent as shown in the list and on its page.
#[derive(Debug, Clone)]
pub(crate) struct HoldRow {
    pub id: String,
    pub agent: String,
    pub action: String,
    pub state: String,
    pub reasons: Vec<String>,
    /// The approver group, `None` for any approver.
    pub group: Option<String>,
    pub approvals: usize,
    pub required: u32,
    pub created_at: String,
    pub expires_at: String,
    pub decided_at: String,
    pub votes: Vec<VoteRow>,
}

impl From<&HoldView> for HoldRow {
    fn from(h: &HoldView) -> Self {
        Self {
            id: h.id.clone(),
            agent: h.agent.clone(),
            action: h.action.clone(),
            state: h.state.clone(),
            reasons: h.reasons.clone(),
            group: h.approver_group.clone(),
            approvals: h.votes.iter().filter(|v| v.verdict == "approve").count(),
            required: h.required,
            created_at: when(&h.created_at),
            expires_at: when(&h.expires_at),
            decided_at: h.decided_at.as_deref().map(when).unwrap_or_default(),
            votes: h
                .votes
                .iter()
                .map(|v| VoteRow {
                    approver: v.approver.clone(),
                    verdict: v.verdict.clone(),
                    reason: v.reason.clone(),
                    at: when(&v.at),
                })
                .collect(),
        }
    }
}

/// An RFC 3339 UTC time as people read it, to the second: `2026-11-24 07:26:28 UTC`.
/// Anything else is shown as it is.
fn when(rfc3339: &str) -> String {
    let Some((date, time)) = rfc3339.strip_suffix('Z').and_then(|t| t.split_once('T')) else {
        return rfc3339.to_owned();
    };
    let seconds = time.split('.').next().unwrap_or(time);
    format!("{date} {seconds} UTC")
}

/// `GET /ui` without a session, and a failed login.
#[derive(Debug, Template)]
#[template(path = "ui/login.html")]
pub(crate) struct LoginPage {
    pub me: Option<Me>,
    pub error: Option<String>,
}

/// `GET /ui/approvals`.
#[derive(Debug, Template)]
#[template(path = "ui/approvals.html")]
pub(crate) struct ListPage {
    pub me: Option<Me>,
    pub pending: Vec<HoldRow>,
    pub history: Vec<HoldRow>,
}

/// `GET /ui/approvals/{id}`, and a refused vote.
#[derive(Debug, Template)]
#[template(path = "ui/detail.html")]
pub(crate) struct DetailPage {
    pub me: Option<Me>,
    pub hold: HoldRow,
    /// The hash of exactly the payload rendered below; the vote forms carry it back.
    pub payload_sha256: String,
    pub pretty: String,
    pub texts: Vec<TextBlock>,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl DetailPage {
    pub(crate) fn new(me: Me, hold: &HoldView) -> Self {
        Self {
            me: Some(me),
            hold: HoldRow::from(hold),
            payload_sha256: hold.payload_sha256.clone(),
            pretty: payload::pretty(&hold.payload),
            texts: payload::text_blocks(&hold.payload),
            notice: None,
            error: None,
        }
    }
}

/// Anything else that went wrong.
#[derive(Debug, Template)]
#[template(path = "ui/error.html")]
pub(crate) struct ErrorPage {
    pub me: Option<Me>,
    pub title: String,
    pub message: String,
}

/// Renders a page with a status. A template that fails to render (it can't, short of a
/// bug) answers a bare 500 rather than half a page.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a web UI page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shown_to_the_second() {
        assert_eq!(super::when("2026-11-24T07:26:28.888596Z"), "2026-11-24 07:26:28 UTC");
        assert_eq!(super::when("2026-11-24T07:26:28Z"), "2026-11-24 07:26:28 UTC");
        assert_eq!(super::when("yesterday"), "yesterday");
    }
}
