//! The approvals web UI, driven like a browser without JavaScript would: forms posted as
//! `application/x-www-form-urlencoded`, the session cookie sent back by hand, redirects
//! looked at rather than followed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use portcullis_core::{AgentId, sha256_hex};
use portcullis_engine::Gateway;

const AGENT_TOKEN: &str = "pcl_agent-token-for-the-ui-tests";
const ALICE_TOKEN: &str = "pcp_alice-login-token-for-the-ui-tests";
const BOB_TOKEN: &str = "pcp_bob-login-token-for-the-ui-tests";

const CONFIG: &str = r#"
store: sqlite://state.db
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
admins:
  alice: {role: approver, groups: [leads]}
  bob: {role: approver, groups: [leads]}
"#;

const ACTION: &str = r#"
name: tickets.create
description: Create a ticket
input:
  type: object
  required: [title]
  properties:
    title: {type: string, maxLength: 200}
    body: {type: string, maxLength: 2000}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/tickets
  body: {title: "{title}", body: "{body}"}
"#;

const POLICY: &str = r#"
@id("tickets-need-a-lead")
@hold("tickets need a lead's approval")
@approvers("leads")
permit (principal, action == Action::"tickets.create", resource);
"#;

/// A gateway with one agent, two approvers (alice, bob) and a counting upstream.
struct World {
    _dir: tempfile::TempDir,
    gateway: Arc<Gateway>,
    app: Router,
    upstream_hits: Arc<AtomicUsize>,
}

/// A response, body as text.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The `value` of the form field `name` (the first one on the page).
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in:\n{}", self.body))
            + marker.len();
        let len = self.body[start..].find('"').unwrap();
        self.body[start..start + len].to_owned()
    }
}

async fn upstream(hits: Arc<AtomicUsize>) -> u16 {
    let app = Router::new().route(
        "/tickets",
        axum::routing::post(move |body: String| {
            let hits = Arc::clone(&hits);
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"number": 7, "received": body}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

impl World {
    async fn new() -> Self {
        let upstream_hits = Arc::new(AtomicUsize::new(0));
        let port = upstream(Arc::clone(&upstream_hits)).await;
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text.replace("UPSTREAM_PORT", &port.to_string())).unwrap();
        };
        write("portcullis.yaml", CONFIG);
        write("actions/tickets.yaml", ACTION);
        write("policies/hold.cedar", POLICY);
        let loaded =
            portcullis_engine::check(&dir.path().join("portcullis.yaml")).unwrap_or_else(|e| panic!("config: {e:?}"));
        let gateway = Arc::new(Gateway::open(loaded).await.unwrap());
        let store = gateway.store();
        store
            .add_agent(&AgentId::new("bot").unwrap(), &sha256_hex(AGENT_TOKEN.as_bytes()))
            .await
            .unwrap();
        store
            .set_person_token("alice", &sha256_hex(ALICE_TOKEN.as_bytes()))
            .await
            .unwrap();
        store
            .set_person_token("bob", &sha256_hex(BOB_TOKEN.as_bytes()))
            .await
            .unwrap();
        let app = portcullis_server::router(portcullis_engine::Live::new(Arc::clone(&gateway)));
        Self {
            _dir: dir,
            gateway,
            app,
            upstream_hits,
        }
    }

    async fn send(&self, request: Request<Body>) -> Page {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut request = Request::get(path);
        if let Some(c) = cookie {
            request = request.header(header::COOKIE, c);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Page {
        let body: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            request = request.header(header::COOKIE, c);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// Logs in; returns the `Cookie` header value to send back.
    async fn login(&self, token: &str) -> String {
        let page = self.post_form("/ui/login", None, &[("token", token)]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page.header("set-cookie");
        cookie.split(';').next().unwrap().to_owned()
    }

    /// The agent submits an intent that the policy holds; returns its id.
    async fn hold(&self, input: Value) -> String {
        let body = json!({"action": "tickets.create", "input": input}).to_string();
        let request = Request::post("/v1/intents")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {AGENT_TOKEN}"))
            .body(Body::from(body))
            .unwrap();
        let page = self.send(request).await;
        assert_eq!(page.status, StatusCode::ACCEPTED, "{}", page.body);
        let v: Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(v["status"], "pending_approval");
        v["id"].as_str().unwrap().to_owned()
    }

    /// The hold as the engine has it now.
    async fn state(&self, id: &str) -> (String, usize) {
        let alice = self.gateway.person_by_id("alice").unwrap();
        let hold = self.gateway.approval(&alice, id).await.unwrap();
        (hold.state, hold.votes.len())
    }

    fn hits(&self) -> usize {
        self.upstream_hits.load(Ordering::SeqCst)
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn assert_security_headers(page: &Page, context: &str) {
    assert_eq!(
        page.header("content-security-policy"),
        "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        "{context}"
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff", "{context}");
    assert_eq!(page.header("referrer-policy"), "no-referrer", "{context}");
    assert_eq!(page.header("cache-control"), "no-store", "{context}");
}

#[tokio::test]
async fn a_wrong_token_or_an_agent_token_does_not_log_in() {
    let w = World::new().await;
    for token in ["pcp_not-a-real-token", AGENT_TOKEN, ""] {
        let page = w.post_form("/ui/login", None, &[("token", token)]).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "token {token:?}");
        assert!(page.headers.get(header::SET_COOKIE).is_none(), "token {token:?}");
        assert!(page.body.contains("that login token is not valid"), "{}", page.body);
        assert!(
            page.body.contains("action=\"/ui/login\""),
            "the login form is shown again"
        );
        assert!(
            !page.body.contains(token) || token.is_empty(),
            "the token is never echoed"
        );
        assert_security_headers(&page, "failed login");
    }
}

#[tokio::test]
async fn a_login_sets_an_http_only_same_site_strict_session_cookie() {
    let w = World::new().await;
    let login = w.get("/ui", None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("type=\"password\"") && login.body.contains("name=\"token\""));
    assert_security_headers(&login, "login page");

    let page = w.post_form("/ui/login", None, &[("token", ALICE_TOKEN)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), "/ui/approvals");
    let cookie = page.header("set-cookie");
    let (pair, attributes) = cookie.split_once(';').unwrap();
    let (name, id) = pair.split_once('=').unwrap();
    assert_eq!(name, "portcullis_session");
    assert_eq!(id.len(), 64, "a 256-bit id: {cookie}");
    assert!(!cookie.contains(ALICE_TOKEN));
    let attributes: Vec<&str> = attributes.split(';').map(str::trim).collect();
    for a in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(attributes.contains(&a), "{a} missing: {cookie}");
    }
    assert!(!attributes.contains(&"Secure"), "plain http on loopback: {cookie}");
    assert_security_headers(&page, "login redirect");

    // Behind a TLS-terminating proxy the cookie is `Secure`.
    let request = Request::post("/ui/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(Body::from(format!("token={ALICE_TOKEN}")))
        .unwrap();
    let page = w.send(request).await;
    assert!(
        page.header("set-cookie").ends_with("; Secure"),
        "{}",
        page.header("set-cookie")
    );

    // The session works, and `/ui` now goes straight to the approvals.
    let cookie = format!("portcullis_session={id}");
    let list = w.get("/ui/approvals", Some(&cookie)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body.contains("Signed in as <strong>alice</strong>"),
        "{}",
        list.body
    );
    let home = w.get("/ui", Some(&cookie)).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.header("location"), "/ui/approvals");
}

#[tokio::test]
async fn a_login_from_another_site_is_refused() {
    let w = World::new().await;
    let request = Request::post("/ui/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(format!("token={ALICE_TOKEN}")))
        .unwrap();
    let page = w.send(request).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn pages_need_a_session() {
    let w = World::new().await;
    let id = w.hold(json!({"title": "printer on fire"})).await;
    let forged = format!("portcullis_session={}", "ab".repeat(32));
    for cookie in [None, Some(forged.as_str()), Some("portcullis_session=garbage")] {
        for path in ["/ui/approvals".to_owned(), format!("/ui/approvals/{id}")] {
            let page = w.get(&path, cookie).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path} with {cookie:?}");
            assert_eq!(page.header("location"), "/ui", "{path} with {cookie:?}");
            assert!(!page.body.contains("printer on fire"));
            assert_security_headers(&page, &path);
        }
    }
    let missing = w.get("/ui/nothing-here", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_security_headers(&missing, "404");
}

#[tokio::test]
async fn a_vote_without_the_sessions_csrf_token_is_refused_and_records_nothing() {
    let w = World::new().await;
    let id = w.hold(json!({"title": "printer on fire"})).await;
    let alice = w.login(ALICE_TOKEN).await;
    let bob = w.login(BOB_TOKEN).await;
    let detail = w.get(&format!("/ui/approvals/{id}"), Some(&alice)).await;
    let sha = detail.field("payload_sha256");
    let bobs_csrf = w.get(&format!("/ui/approvals/{id}"), Some(&bob)).await.field("csrf");
    let approve = format!("/ui/approvals/{id}/approve");
    let deny = format!("/ui/approvals/{id}/deny");
    let reason = ("reason", "looks fine");
    let payload = ("payload_sha256", sha.as_str());
    for (path, cookie, fields) in [
        (&approve, Some(alice.as_str()), vec![reason, payload]),
        (&approve, Some(alice.as_str()), vec![("csrf", ""), reason, payload]),
        (
            &approve,
            Some(alice.as_str()),
            vec![("csrf", "0".repeat(64).as_str()), reason, payload],
        ),
        (
            &approve,
            Some(alice.as_str()),
            vec![("csrf", bobs_csrf.as_str()), reason, payload],
        ),
        (
            &deny,
            Some(alice.as_str()),
            vec![("csrf", bobs_csrf.as_str()), reason, payload],
        ),
        (&approve, None, vec![("csrf", bobs_csrf.as_str()), reason, payload]),
    ] {
        let page = w.post_form(path, cookie, &fields).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{path} {cookie:?} {fields:?}: {}",
            page.body
        );
        assert_security_headers(&page, "refused vote");
    }
    assert_eq!(w.state(&id).await, ("pending".to_owned(), 0), "no vote was recorded");
    assert_eq!(w.hits(), 0);
}

#[tokio::test]
async fn approving_through_the_form_executes_the_intent_once() {
    let w = World::new().await;
    let body = "Hello team,\nthe printer on floor 3 is on fire.\nPlease send someone with an extinguisher.";
    let id = w
        .hold(json!({"title": "<script>alert(1)</script> printer", "body": body}))
        .await;
    let alice = w.login(ALICE_TOKEN).await;

    let list = w.get("/ui/approvals", Some(&alice)).await;
    assert!(
        list.body.contains(&format!("href=\"/ui/approvals/{id}\"")),
        "{}",
        list.body
    );
    assert!(
        list.body.contains("tickets need a lead&#39;s approval"),
        "{}",
        list.body
    );
    assert!(list.body.contains("0 of 1"), "{}", list.body);

    let detail = w.get(&format!("/ui/approvals/{id}"), Some(&alice)).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.body.contains("tickets.create"));
    assert!(
        !detail.body.contains("<script>"),
        "payload text is escaped: {}",
        detail.body
    );
    assert!(
        detail.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        detail.body
    );
    assert!(
        detail.body.contains(&format!("<pre class=\"text\">{body}</pre>")),
        "the multi-line body is shown as text: {}",
        detail.body
    );
    assert!(detail.body.contains("Text of <code>body</code>"));
    let sha = detail.field("payload_sha256");
    let csrf = detail.field("csrf");
    assert_eq!(
        sha,
        w.gateway
            .approval(&w.gateway.person_by_id("alice").unwrap(), &id)
            .await
            .unwrap()
            .payload_sha256
    );
    assert!(detail.body.contains(&sha), "the hash is displayed");

    let page = w
        .post_form(
            &format!("/ui/approvals/{id}/approve"),
            Some(&alice),
            &[("csrf", &csrf), ("payload_sha256", &sha), ("reason", "a real fire")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.header("location"), format!("/ui/approvals/{id}?done=approved"));
    assert_eq!(w.hits(), 1, "the gateway executed the approved intent");

    let after = w.get(page.header("location"), Some(&alice)).await;
    assert!(after.body.contains("You approved this intent."), "{}", after.body);
    assert!(after.body.contains("state-executed"), "{}", after.body);
    assert!(!after.body.contains("/approve\""), "no more vote forms once decided");
    let history = w.get("/ui/approvals", Some(&alice)).await;
    assert!(history.body.contains("a real fire") && history.body.contains("state-executed"));
    assert!(history.body.contains("Nothing is waiting for you."));

    // A second click (or the back button) changes nothing.
    let again = w
        .post_form(
            &format!("/ui/approvals/{id}/approve"),
            Some(&alice),
            &[("csrf", &csrf), ("payload_sha256", &sha), ("reason", "again")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(again.body.contains("already"), "{}", again.body);
    assert_eq!(w.hits(), 1);

    // The agent sees the result.
    let request = Request::get(format!("/v1/intents/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {AGENT_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let intent: Value = serde_json::from_str(&w.send(request).await.body).unwrap();
    assert_eq!(intent["status"], "executed", "{intent}");
    assert_eq!(intent["result"]["body"]["number"], 7, "{intent}");
}

#[tokio::test]
async fn a_vote_for_another_payload_or_without_a_reason_is_refused() {
    let w = World::new().await;
    let id = w.hold(json!({"title": "printer on fire"})).await;
    let alice = w.login(ALICE_TOKEN).await;
    let detail = w.get(&format!("/ui/approvals/{id}"), Some(&alice)).await;
    let csrf = detail.field("csrf");
    let sha = detail.field("payload_sha256");
    let other = "f".repeat(64);
    let approve = format!("/ui/approvals/{id}/approve");

    let page = w
        .post_form(
            &approve,
            Some(&alice),
            &[("csrf", &csrf), ("payload_sha256", &other), ("reason", "ok")],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("is not the held payload"), "{}", page.body);
    assert!(
        page.body.contains(&sha),
        "the page shows the held payload again to decide on"
    );

    let page = w
        .post_form(
            &approve,
            Some(&alice),
            &[("csrf", &csrf), ("payload_sha256", &sha), ("reason", "  ")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("reason"), "{}", page.body);

    assert_eq!(w.state(&id).await, ("pending".to_owned(), 0));
    assert_eq!(w.hits(), 0);
}

#[tokio::test]
async fn a_denial_is_final_and_listed_in_the_history() {
    let w = World::new().await;
    let id = w.hold(json!({"title": "delete production"})).await;
    let bob = w.login(BOB_TOKEN).await;
    let detail = w.get(&format!("/ui/approvals/{id}"), Some(&bob)).await;
    let page = w
        .post_form(
            &format!("/ui/approvals/{id}/deny"),
            Some(&bob),
            &[
                ("csrf", &detail.field("csrf")),
                ("payload_sha256", &detail.field("payload_sha256")),
                ("reason", "not <b>today</b>"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), format!("/ui/approvals/{id}?done=denied"));
    let list = w.get("/ui/approvals", Some(&bob)).await;
    assert!(list.body.contains("state-denied"), "{}", list.body);
    assert!(list.body.contains("not &#60;b&#62;today&#60;/b&#62;"), "{}", list.body);
    assert_eq!(w.hits(), 0);
}

#[tokio::test]
async fn logout_and_a_new_login_token_end_the_session() {
    let w = World::new().await;
    let alice = w.login(ALICE_TOKEN).await;
    let csrf = w.get("/ui/approvals", Some(&alice)).await.field("csrf");

    let refused = w.post_form("/ui/logout", Some(&alice), &[("csrf", "nope")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(w.get("/ui/approvals", Some(&alice)).await.status, StatusCode::OK);

    let out = w.post_form("/ui/logout", Some(&alice), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(w.get("/ui/approvals", Some(&alice)).await.status, StatusCode::SEE_OTHER);

    // `portcullis approvals token bob` again: bob's open sessions stop working.
    let bob = w.login(BOB_TOKEN).await;
    assert_eq!(w.get("/ui/approvals", Some(&bob)).await.status, StatusCode::OK);
    w.gateway
        .store()
        .set_person_token("bob", &sha256_hex(b"pcp_a-new-token"))
        .await
        .unwrap();
    assert_eq!(w.get("/ui/approvals", Some(&bob)).await.status, StatusCode::SEE_OTHER);
}

/// Sessions live in the store: a person signed in through one instance is signed in on
/// every other instance sharing it (no sticky sessions needed behind a load balancer), and
/// signing out anywhere signs out everywhere.
#[tokio::test]
async fn a_session_started_on_one_instance_works_on_another_sharing_the_store() {
    let w = World::new().await;
    let loaded = portcullis_engine::check(&w._dir.path().join("portcullis.yaml")).unwrap();
    let other = portcullis_server::router(portcullis_engine::Live::new(Arc::new(
        Gateway::open(loaded).await.unwrap(),
    )));
    let cookie = w.login(ALICE_TOKEN).await;
    let id = w.hold(json!({"title": "Printer on fire"})).await;

    let get = |path: String| {
        let request = Request::get(path)
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        other.clone().oneshot(request)
    };
    let list = get("/ui/approvals".to_owned()).await.unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    let body = axum::body::to_bytes(list.into_body(), 1 << 20).await.unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains(&id),
        "the other instance lists the hold for alice:\n{body}"
    );

    // Signing out through the first instance ends the session on the second.
    let csrf = w.get("/ui/approvals", Some(&cookie)).await.field("csrf");
    let out = w.post_form("/ui/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    let after = get("/ui/approvals".to_owned()).await.unwrap();
    let status = after.status();
    let body = axum::body::to_bytes(after.into_body(), 1 << 20).await.unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        status != StatusCode::OK || body.contains("action=\"/ui/login\""),
        "signed out everywhere: {status}\n{body}"
    );
    assert!(!body.contains(&id), "{body}");
}
