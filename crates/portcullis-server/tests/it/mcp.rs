//! The MCP endpoint `/mcp`, driven with raw JSON-RPC POSTs through the real router: what
//! each agent is shown, what a call does (upstream hits counted), how refusals, bad input,
//! unknown tools and holds look, and the HTTP-level guards (bearer token, `Host`, `Origin`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use portcullis_core::{AgentId, sha256_hex};
use portcullis_engine::Gateway;

const SUPPORT_TOKEN: &str = "pcl_support-token-for-the-mcp-tests";
const OTHER_TOKEN: &str = "pcl_other-token-for-the-mcp-tests";
const LEAD_TOKEN: &str = "pcp_lead-login-token-for-the-mcp-tests";
/// The `Host` of every request: `listen` in the config below.
const HOST: &str = "127.0.0.1:8080";
const LEGACY: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

const CONFIG: &str = r#"
store: sqlite://state.db
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
agents:
  support: {groups: [support]}
  other: {groups: [other]}
admins:
  lead: {role: approver, groups: [leads]}
mcp:
  allowed_origins: ["https://agents.example.com"]
"#;

const ACTIONS: &str = r#"
name: tickets.create
description: Create a ticket
input:
  type: object
  required: [title]
  properties:
    title: {type: string, maxLength: 200}
    priority: {type: string, enum: [low, high, urgent]}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/tickets
  body: {title: "{title}", priority: "{priority}"}
response:
  keep: [/number, /title]
---
name: files.get
description: Read a file
# Files may be written by anyone: what they say is recorded per session.
provenance: untrusted
input:
  type: object
  required: [name]
  properties:
    name: {type: string, maxLength: 100}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/files/{name}
---
name: admin.purge
description: Purge everything
input: {type: object, properties: {}}
request:
  method: DELETE
  url: http://127.0.0.1:UPSTREAM_PORT/everything
"#;

const POLICIES: &str = r#"
@id("support-tickets")
permit (principal in AgentGroup::"support", action in [Action::"tickets.create", Action::"files.get"], resource);

@id("other-tickets")
permit (principal in AgentGroup::"other", action == Action::"tickets.create", resource);

@id("no-urgent")
@reason("agents may not open urgent tickets")
forbid (principal, action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "urgent" };

@id("titles-from-files-need-a-lead")
@hold("the title was read in a file")
@approvers("leads")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.provenance.pointers.contains("/title") };

@id("high-needs-a-lead")
@hold("high-priority tickets need a lead")
@approvers("leads")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "high" };
"#;

struct World {
    _dir: tempfile::TempDir,
    gateway: Arc<Gateway>,
    app: Router,
    upstream_hits: Arc<AtomicUsize>,
}

/// A response: status, headers, and the body as JSON when it is JSON.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn result(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        let v = self.json();
        assert!(v.get("error").is_none(), "unexpected error: {v}");
        v["result"].clone()
    }
}

async fn upstream(hits: Arc<AtomicUsize>) -> u16 {
    let counted = |hits: Arc<AtomicUsize>, answer: Value| {
        move || {
            let hits = Arc::clone(&hits);
            let answer = answer.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(answer)
            }
        }
    };
    let app = Router::new()
        .route(
            "/tickets",
            axum::routing::post(counted(
                Arc::clone(&hits),
                json!({"number": 7, "title": "t", "internal": "dropped by keep"}),
            )),
        )
        .route(
            "/files/{name}",
            axum::routing::get(counted(Arc::clone(&hits), json!(["alpha", "bravo"]))),
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
        write("actions/actions.yaml", ACTIONS);
        write("policies/policies.cedar", POLICIES);
        let loaded =
            portcullis_engine::check(&dir.path().join("portcullis.yaml")).unwrap_or_else(|e| panic!("config: {e:?}"));
        let gateway = Arc::new(Gateway::open(loaded).await.unwrap());
        let store = gateway.store();
        for (agent, token) in [("support", SUPPORT_TOKEN), ("other", OTHER_TOKEN)] {
            store
                .add_agent(&AgentId::new(agent).unwrap(), &sha256_hex(token.as_bytes()))
                .await
                .unwrap();
        }
        store
            .set_person_token("lead", &sha256_hex(LEAD_TOKEN.as_bytes()))
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

    fn hits(&self) -> usize {
        self.upstream_hits.load(Ordering::SeqCst)
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        Reply {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// POSTs a JSON-RPC message to `/mcp` with `extra` headers (a `None` value removes a
    /// default one).
    async fn post(&self, token: Option<&str>, body: &Value, extra: &[(&str, Option<&str>)]) -> Reply {
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), HOST.into()),
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json, text/event-stream".into()),
        ];
        if let Some(t) = token {
            headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        for (name, value) in extra {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                headers.push(((*name).to_owned(), (*v).to_owned()));
            }
        }
        let mut request = Request::post("/mcp");
        for (n, v) in &headers {
            request = request.header(n.as_str(), v.as_str());
        }
        self.send(request.body(Body::from(body.to_string())).unwrap()).await
    }

    /// POSTs `raw` bytes as a JSON-RPC message, for bodies a `Value` can't hold.
    async fn post_raw(&self, token: &str, raw: &str) -> Reply {
        let request = Request::post("/mcp")
            .header("host", HOST)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {token}"))
            .header("mcp-protocol-version", LEGACY);
        self.send(request.body(Body::from(raw.to_owned())).unwrap()).await
    }

    /// A request of the handshake era (version in the header, no per-request `_meta`).
    async fn legacy(&self, token: &str, method: &str, params: Value) -> Reply {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post(Some(token), &body, &[("mcp-protocol-version", Some(LEGACY))])
            .await
    }

    /// A 2026-07-28 request: the version and client capabilities in `_meta`, the standard
    /// `Mcp-Method`/`Mcp-Name` headers. `tasks` declares the tasks extension.
    async fn modern(&self, token: &str, method: &str, mut params: Value, tasks: bool) -> Reply {
        let capabilities = if tasks {
            json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})
        } else {
            json!({})
        };
        let meta = params["_meta"].as_object().cloned().unwrap_or_default();
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"},
        });
        for (k, v) in meta {
            params["_meta"][k] = v;
        }
        let name = params["name"]
            .as_str()
            .or_else(|| params["taskId"].as_str())
            .map(str::to_owned);
        let body = json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params});
        let mut extra = vec![("mcp-protocol-version", Some(MODERN)), ("mcp-method", Some(method))];
        if let Some(n) = name.as_deref() {
            extra.push(("mcp-name", Some(n)));
        }
        self.post(Some(token), &body, &extra).await
    }

    async fn tool_names(&self, token: &str) -> Vec<String> {
        let result = self.legacy(token, "tools/list", json!({})).await.result();
        result["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn call(&self, token: &str, name: &str, arguments: Value) -> Reply {
        self.legacy(token, "tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }

    async fn approve(&self, id: &str) {
        let lead = self.gateway.authenticate_person(LEAD_TOKEN).await.unwrap();
        let hold = self.gateway.approval(&lead, id).await.unwrap();
        let vote = self
            .gateway
            .vote(&lead, id, true, "looks right", &hold.payload_sha256)
            .await
            .unwrap();
        assert_eq!(vote.state, "executed", "{vote:?}");
    }
}

fn text_of(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn initialize_and_discover_both_answer() {
    let w = World::new().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}});
    let r = w.post(Some(SUPPORT_TOKEN), &init, &[]).await;
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json", "JSON, not SSE");
    assert!(r.headers.get("mcp-session-id").is_none(), "stateless: no session");
    let result = r.result();
    assert_eq!(result["protocolVersion"], LEGACY);
    assert_eq!(result["serverInfo"]["name"], "portcullis");
    assert!(result["capabilities"]["tools"].is_object(), "{result}");

    let discover = w
        .modern(SUPPORT_TOKEN, "server/discover", json!({}), false)
        .await
        .result();
    let versions = discover["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!(MODERN)), "{discover}");
    assert!(versions.contains(&json!(LEGACY)), "{discover}");
}

#[tokio::test]
async fn each_agent_is_shown_exactly_its_actions() {
    let w = World::new().await;
    assert_eq!(
        w.tool_names(SUPPORT_TOKEN).await,
        ["files.get", "tickets.create", "portcullis_intent_status"]
    );
    // No hold applies to `other`, so it gets no status tool either.
    assert_eq!(w.tool_names(OTHER_TOKEN).await, ["tickets.create"]);

    let result = w.legacy(SUPPORT_TOKEN, "tools/list", json!({})).await.result();
    let files = &result["tools"][0];
    assert_eq!(files["description"], "Read a file");
    assert_eq!(files["inputSchema"]["required"], json!(["name"]));
    assert_eq!(
        files["annotations"],
        json!({"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": true})
    );
    let create = &result["tools"][1]["annotations"];
    assert_eq!(create["readOnlyHint"], false);
    assert_eq!(create["idempotentHint"], false);

    // The 2026-07-28 answer says the list is private to this client.
    let modern = w.modern(OTHER_TOKEN, "tools/list", json!({}), false).await.result();
    assert_eq!(modern["cacheScope"], "private", "{modern}");
    assert_eq!(modern["tools"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_allowed_call_runs_once_and_returns_the_projected_body() {
    let w = World::new().await;
    let r = w.call(SUPPORT_TOKEN, "tickets.create", json!({"title": "hello"})).await;
    let result = r.result();
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"], json!({"number": 7, "title": "t"}));
    let text: Value = serde_json::from_str(&text_of(&result)).unwrap();
    assert_eq!(text, result["structuredContent"], "the text is the same JSON");
    assert!(
        result["_meta"]["portcullis/intent_id"]
            .as_str()
            .unwrap()
            .starts_with("int_")
    );
    assert_eq!(w.hits(), 1);

    // A body that is not an object is wrapped: structured content must be an object.
    let list = w.call(SUPPORT_TOKEN, "files.get", json!({"name": "x"})).await.result();
    assert_eq!(
        list["structuredContent"],
        json!({"status": 200, "body": ["alpha", "bravo"]})
    );
    assert_eq!(w.hits(), 2);
}

#[tokio::test]
async fn a_denial_is_a_tool_error_with_the_reasons() {
    let w = World::new().await;
    let result = w
        .call(
            SUPPORT_TOKEN,
            "tickets.create",
            json!({"title": "x", "priority": "urgent"}),
        )
        .await
        .result();
    assert_eq!(result["isError"], true);
    assert_eq!(text_of(&result), "denied by policy: agents may not open urgent tickets");
    assert_eq!(result["structuredContent"]["status"], "denied");
    assert_eq!(w.hits(), 0);
}

#[tokio::test]
async fn invalid_input_is_a_tool_error_naming_the_fields() {
    let w = World::new().await;
    let result = w
        .call(SUPPORT_TOKEN, "tickets.create", json!({"title": 5, "colour": "red"}))
        .await
        .result();
    assert_eq!(result["isError"], true);
    let text = text_of(&result);
    assert!(text.starts_with("invalid input for `tickets.create`"), "{text}");
    assert!(text.contains("/title"), "{text}");
    assert!(text.contains("colour"), "{text}");
    assert_eq!(w.hits(), 0);
}

#[tokio::test]
async fn duplicate_keys_in_tool_arguments_are_refused_before_anything_runs() {
    let w = World::new().await;
    // Two titles: a lenient parser keeps one of them, and policy and request could disagree.
    let raw = r#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "tickets.create",
        "arguments": {"title": "harmless", "title": "something else"}}}"#;
    let reply = w.post_raw(SUPPORT_TOKEN, raw).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let error = reply.json();
    assert_eq!(error["error"]["code"], -32700, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key `title`"),
        "{error}"
    );
    assert_eq!(w.hits(), 0);
    // The same call without the duplicate runs.
    let ok = raw.replace(r#", "title": "something else""#, "");
    let result = w.post_raw(SUPPORT_TOKEN, &ok).await.result();
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(w.hits(), 1);
}

#[tokio::test]
async fn an_invisible_tool_looks_exactly_like_a_missing_one() {
    let w = World::new().await;
    let strip = |r: Reply| {
        let mut v = r.json();
        v["id"] = Value::Null;
        (r.status, v)
    };
    let missing = strip(w.call(SUPPORT_TOKEN, "no.such.tool", json!({})).await);
    let hidden = strip(w.call(SUPPORT_TOKEN, "admin.purge", json!({})).await);
    assert_eq!(missing.1["error"]["code"], -32602, "{missing:?}");
    assert_eq!(missing.1["error"]["message"], "unknown tool `no.such.tool`");
    assert_eq!(hidden.1["error"]["message"], "unknown tool `admin.purge`");
    assert_eq!(missing.0, hidden.0);
    let mut renamed = hidden.1.clone();
    renamed["error"]["message"] = missing.1["error"]["message"].clone();
    assert_eq!(renamed, missing.1, "same shape apart from the name");
    // The status tool of an agent no hold applies to is not there either.
    let status = w
        .call(OTHER_TOKEN, "portcullis_intent_status", json!({"intent_id": "int_x"}))
        .await;
    assert_eq!(
        status.json()["error"]["message"],
        "unknown tool `portcullis_intent_status`"
    );
    assert_eq!(w.hits(), 0);
}

#[tokio::test]
async fn an_idempotency_key_in_meta_runs_the_call_once() {
    let w = World::new().await;
    let params = json!({"name": "tickets.create", "arguments": {"title": "once"},
                        "_meta": {"portcullis/idempotency_key": "k-1"}});
    let first = w.legacy(SUPPORT_TOKEN, "tools/call", params.clone()).await.result();
    let second = w.legacy(SUPPORT_TOKEN, "tools/call", params).await.result();
    assert_eq!(w.hits(), 1);
    assert_eq!(first["_meta"], second["_meta"], "the same intent");
    let conflict = w
        .legacy(
            SUPPORT_TOKEN,
            "tools/call",
            json!({"name": "tickets.create", "arguments": {"title": "other"},
                   "_meta": {"portcullis/idempotency_key": "k-1"}}),
        )
        .await
        .result();
    assert_eq!(conflict["isError"], true);
    assert!(text_of(&conflict).contains("already used"), "{conflict}");
    assert_eq!(w.hits(), 1);
}

#[tokio::test]
async fn a_hold_returns_its_id_and_the_status_tool_returns_the_outcome() {
    let w = World::new().await;
    let held = w
        .call(
            SUPPORT_TOKEN,
            "tickets.create",
            json!({"title": "big", "priority": "high"}),
        )
        .await
        .result();
    assert_eq!(held["isError"], false, "{held}");
    assert_eq!(held["structuredContent"]["status"], "pending_approval");
    let id = held["structuredContent"]["intent_id"].as_str().unwrap().to_owned();
    let text = text_of(&held);
    assert!(
        text.contains(&id) && text.contains("portcullis_intent_status"),
        "{text}"
    );
    assert!(text.contains("high-priority tickets need a lead"), "{text}");
    assert_eq!(w.hits(), 0);

    let pending = w
        .call(SUPPORT_TOKEN, "portcullis_intent_status", json!({"intent_id": id}))
        .await
        .result();
    assert_eq!(pending["structuredContent"]["status"], "pending_approval");
    // Bad arguments are a tool error naming the field.
    let bad = w
        .call(
            SUPPORT_TOKEN,
            "portcullis_intent_status",
            json!({"intent_id": id, "wait_seconds": 61}),
        )
        .await
        .result();
    assert_eq!(bad["isError"], true);
    assert!(text_of(&bad).contains("wait_seconds"), "{bad}");

    w.approve(&id).await;
    assert_eq!(w.hits(), 1);
    let done = w
        .call(
            SUPPORT_TOKEN,
            "portcullis_intent_status",
            json!({"intent_id": id, "wait_seconds": 5}),
        )
        .await
        .result();
    assert_eq!(done["isError"], false, "{done}");
    assert_eq!(done["structuredContent"], json!({"number": 7, "title": "t"}));
    assert_eq!(w.hits(), 1);
}

#[tokio::test]
async fn a_hold_is_a_task_for_clients_with_the_tasks_extension() {
    let w = World::new().await;
    let params = json!({"name": "tickets.create", "arguments": {"title": "big", "priority": "high"}});
    let created = w.modern(SUPPORT_TOKEN, "tools/call", params, true).await.result();
    assert_eq!(created["resultType"], "task", "{created}");
    assert_eq!(created["status"], "working");
    let id = created["taskId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("int_"));

    let get = json!({"taskId": id});
    let working = w.modern(SUPPORT_TOKEN, "tasks/get", get.clone(), true).await.result();
    assert_eq!(working["status"], "working", "{working}");
    assert!(working["statusMessage"].as_str().unwrap().contains("need a lead"));
    // Without the tasks extension the same call is the pending result, not a task.
    let plain = w
        .modern(
            SUPPORT_TOKEN,
            "tools/call",
            json!({"name": "tickets.create", "arguments": {"title": "big2", "priority": "high"}}),
            false,
        )
        .await
        .result();
    assert_eq!(plain["structuredContent"]["status"], "pending_approval", "{plain}");

    w.approve(&id).await;
    let completed = w.modern(SUPPORT_TOKEN, "tasks/get", get, true).await.result();
    assert_eq!(completed["status"], "completed", "{completed}");
    assert_eq!(
        completed["result"]["structuredContent"],
        json!({"number": 7, "title": "t"})
    );
    // Another agent's view: no such task.
    let theirs = w.modern(OTHER_TOKEN, "tasks/get", json!({"taskId": id}), true).await;
    assert!(
        theirs.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown task")
    );
}

#[tokio::test]
async fn no_or_a_wrong_token_gets_401_pointing_to_the_resource_metadata() {
    let w = World::new().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let metadata = "http://127.0.0.1:8080/.well-known/oauth-protected-resource";
    let none = w.post(None, &body, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers[header::WWW_AUTHENTICATE],
        format!("Bearer resource_metadata=\"{metadata}\"").as_str()
    );
    let wrong = w.post(Some("pcl_wrong"), &body, &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.headers[header::WWW_AUTHENTICATE],
        format!("Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\"").as_str()
    );
    assert!(!wrong.text.contains("pcl_wrong"));

    let r = w
        .send(
            Request::get("/.well-known/oauth-protected-resource")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"resource": "http://127.0.0.1:8080/mcp", "authorization_servers": [],
               "bearer_methods_supported": ["header"], "resource_name": "Portcullis"})
    );
}

#[tokio::test]
async fn foreign_origins_and_hosts_are_refused() {
    let w = World::new().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let version = ("mcp-protocol-version", Some(LEGACY));
    for origin in [
        "http://evil.example",
        "http://127.0.0.1:9999",
        "https://agents.example.com:8443",
    ] {
        let r = w
            .post(Some(SUPPORT_TOKEN), &body, &[version, ("origin", Some(origin))])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin}: {}", r.text);
    }
    for origin in ["http://localhost:8080", "https://agents.example.com"] {
        let r = w
            .post(Some(SUPPORT_TOKEN), &body, &[version, ("origin", Some(origin))])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{origin}: {}", r.text);
    }
    for host in ["evil.example:8080", "127.0.0.1:9999", "rebind.example"] {
        let r = w
            .post(Some(SUPPORT_TOKEN), &body, &[version, ("host", Some(host))])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}: {}", r.text);
    }
    for host in ["localhost:8080", "[::1]:8080"] {
        let r = w
            .post(Some(SUPPORT_TOKEN), &body, &[version, ("host", Some(host))])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.text);
    }
}

#[tokio::test]
async fn a_call_names_its_session_in_meta_or_a_header_and_what_an_untrusted_tool_returned_marks_that_session_only() {
    let w = World::new().await;
    let in_session = |session: &str, name: &str, arguments: Value| json!({"name": name, "arguments": arguments, "_meta": {"portcullis/session": session}});
    let read = w
        .legacy(
            SUPPORT_TOKEN,
            "tools/call",
            in_session("task-1", "files.get", json!({"name": "notes"})),
        )
        .await
        .result();
    assert_eq!(read["structuredContent"]["body"], json!(["alpha", "bravo"]), "{read}");
    assert_eq!(w.hits(), 1);

    // The same session: the title came from the file, so a lead must approve.
    let held = w
        .legacy(
            SUPPORT_TOKEN,
            "tools/call",
            in_session("task-1", "tickets.create", json!({"title": "bravo"})),
        )
        .await
        .result();
    assert_eq!(held["structuredContent"]["status"], "pending_approval", "{held}");
    assert!(text_of(&held).contains("the title was read in a file"), "{held}");
    assert_eq!(w.hits(), 1, "nothing ran");

    // The session named by the `Portcullis-Session` header instead.
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "tickets.create", "arguments": {"title": "alpha"}}});
    let by_header = w
        .post(
            Some(SUPPORT_TOKEN),
            &body,
            &[
                ("mcp-protocol-version", Some(LEGACY)),
                ("portcullis-session", Some("task-1")),
            ],
        )
        .await
        .result();
    assert_eq!(
        by_header["structuredContent"]["status"], "pending_approval",
        "{by_header}"
    );

    // Another session, or none, knows nothing of that file: the same ticket runs.
    let other = w
        .legacy(
            SUPPORT_TOKEN,
            "tools/call",
            in_session("task-2", "tickets.create", json!({"title": "bravo"})),
        )
        .await
        .result();
    assert_eq!(other["isError"], false, "{other}");
    assert_eq!(other["structuredContent"], json!({"number": 7, "title": "t"}));
    assert_eq!(w.hits(), 2);
    let none = w
        .call(SUPPORT_TOKEN, "tickets.create", json!({"title": "bravo"}))
        .await
        .result();
    assert_eq!(none["structuredContent"], json!({"number": 7, "title": "t"}));
    assert_eq!(w.hits(), 3);

    // A bad session is a tool error, and nothing runs.
    let bad = w
        .legacy(
            SUPPORT_TOKEN,
            "tools/call",
            in_session("", "tickets.create", json!({"title": "x"})),
        )
        .await
        .result();
    assert_eq!(bad["isError"], true, "{bad}");
    assert!(text_of(&bad).contains("session"), "{bad}");
    assert_eq!(w.hits(), 3);

    // The lead approves the held ticket: it runs once, on the decision it was held with.
    let id = held["structuredContent"]["intent_id"].as_str().unwrap().to_owned();
    w.approve(&id).await;
    assert_eq!(w.hits(), 4);
}
