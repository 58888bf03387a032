//! The bodies of the fuzz targets, one function each, so that a crash input can be replayed
//! by name. Each target feeds untrusted bytes to one parser or stage and checks what must
//! hold whatever the input: no panic, and for the request template, that no input moves the
//! request off its action's origin, adds path segments, or puts a line break in a header.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use portcullis_catalog::Catalog;
use portcullis_core::AgentId;
use portcullis_core::json::{Limits, parse_strict};
use portcullis_engine::{IDEMPOTENCY_META, IntentRequest, SESSION_META};
use portcullis_policy::{AgentEntity, PolicyEngine, PolicyInputs};
use portcullis_redact::detect::{Detector, Treatment};
use rmcp::model::{CallToolRequest, ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, RequestMetaObject};
use serde_json::{Value, json};

/// `POST /v1/intents` bodies.
pub fn intent(data: &[u8]) {
    let _ = portcullis_engine::IntentRequest::parse(data, Limits::default());
}

/// Action files.
pub fn action(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Catalog::from_source(Path::new("fuzz.yaml"), text, Limits::default());
    }
}

/// `portcullis.yaml`.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = portcullis_engine::Config::parse(Path::new("/nonexistent/portcullis.yaml"), text);
    }
}

/// The detector on text, and on JSON when the bytes are JSON.
pub fn redact(data: &[u8]) {
    let detector = detector();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = detector.redact(text);
    }
    if let Ok(mut value) = parse_strict(data, Limits::default()) {
        let _ = detector.scan_json(&value);
        detector.redact_json(&mut value, Treatment::Mask);
        detector.redact_json(&mut value, Treatment::Drop);
    }
}

/// MCP messages: strict JSON as `/mcp` parses it first, then rmcp's JSON-RPC types; a
/// `tools/call` then goes where the MCP handler takes it ([`tool_call`]).
pub fn mcp(data: &[u8]) {
    let Ok(strict) = parse_strict(data, Limits::default()) else {
        return;
    };
    let Ok(message) = serde_json::from_value::<ClientJsonRpcMessage>(strict) else {
        return;
    };
    if let JsonRpcMessage::Request(request) = message
        && let ClientRequest::CallToolRequest(call) = request.request
    {
        tool_call(call);
    }
}

/// A tool call's name, arguments and `_meta` turned into an intent by the code the MCP
/// handler runs (`IntentRequest::from_tool_call`; reading `_meta` is the handler's only other
/// part), then for one of the fuzz actions validation and a Cedar decision. What must hold: an
/// accepted intent carries exactly the tool's name, arguments, idempotency key and session.
fn tool_call(call: CallToolRequest) {
    // rmcp moves the wire's `params._meta` into the request's extensions (the handler's
    // `ctx.meta`); the handler also reads `params.meta`, second.
    let outer = call.extensions.get::<RequestMetaObject>();
    let params = call.params;
    let meta = |key: &str| {
        outer
            .and_then(|m| m.get(key))
            .or_else(|| params.meta.as_ref().and_then(|m| m.get(key)))
            .cloned()
    };
    let (key, session) = (meta(IDEMPOTENCY_META), meta(SESSION_META));
    let name = params.name.to_string();
    let input = Value::Object(params.arguments.clone().unwrap_or_default());
    let expected = json!({"action": name, "input": input, "key": key, "session": session});
    let Ok(intent) =
        IntentRequest::from_tool_call(name, params.arguments, key.clone(), session.clone(), Limits::default())
    else {
        return;
    };
    assert_eq!(intent.action, expected["action"], "{expected}");
    assert_eq!(intent.input, expected["input"], "{expected}");
    assert_eq!(
        intent.idempotency_key.as_deref(),
        key.as_ref().and_then(Value::as_str),
        "{expected}"
    );
    assert_eq!(
        intent.session.as_deref(),
        session.as_ref().and_then(Value::as_str),
        "{expected}"
    );
    assert!(!intent.dry_run, "{expected}");
    let world = world();
    let Some(action) = world.catalog.get(&intent.action) else {
        return;
    };
    let Ok(valid) = action.validate(intent.input) else {
        return;
    };
    if let Ok(agent) = AgentId::new("fuzz-bot") {
        let findings = detector().scan_json(valid.value());
        let decided = world
            .policy
            .decide(&agent, action, valid, &findings, &[], time::OffsetDateTime::UNIX_EPOCH);
        let _ = decided.decision();
    }
}

const ACTIONS: &str = r#"
name: files.get
description: Read a file
input:
  type: object
  required: [name]
  properties:
    name: {type: string, minLength: 1, maxLength: 200}
    q: {type: string, maxLength: 200}
    n: {type: integer}
    tags: {type: array, items: {type: string}}
    label: {type: string, maxLength: 200}
request:
  method: GET
  url: https://api.example.test/v1/files/{name}?q={q}&n={n}&tag={tags}
  headers: {X-Label: "{label}"}
---
name: items.create
description: Create an item
input:
  type: object
  properties:
    title: {type: string, maxLength: 500}
    count: {type: integer}
    tags: {type: array}
    meta: {type: object}
    flag: {type: boolean}
request:
  method: POST
  url: https://api.example.test/v1/items
  body: {title: "{title}", count: "{count}", tags: "{tags}", meta: "{meta}", flag: "{flag}"}
"#;

const POLICIES: &str = r#"
permit (principal in AgentGroup::"bots", action, resource)
when { context.input has name && context.input.name like "*report*" };

permit (principal in AgentGroup::"bots", action == Action::"items.create", resource)
when { context.input has title };

forbid (principal, action == Action::"items.create", resource)
when { context.input has count && context.input.count > 5 };

forbid (principal, action, resource)
when { context.input has tags && context.input.tags.contains("secret") };
"#;

struct World {
    catalog: Catalog,
    policy: PolicyEngine,
    _dir: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("portcullis-fuzz-{}", std::process::id()));
        let file = dir.join("policies.cedar");
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, POLICIES));
        assert!(written.is_ok(), "cannot write the fuzz policy file");
        let catalog = Catalog::from_source(Path::new("actions.yaml"), ACTIONS, Limits::default());
        let Ok(catalog) = catalog else {
            panic!("the fuzz catalog is invalid: {catalog:?}");
        };
        let agents = BTreeMap::from([(
            "fuzz-bot".to_owned(),
            AgentEntity {
                attributes: serde_json::Map::new(),
                groups: vec!["bots".to_owned()],
            },
        )]);
        let policy = PolicyEngine::load(PolicyInputs {
            catalog: &catalog,
            agents: &agents,
            entities: &[],
            policy_files: std::slice::from_ref(&file),
            counters: &BTreeMap::new(),
            claim_attributes: &[],
        });
        let Ok(policy) = policy else {
            panic!("the fuzz policies are invalid: {policy:?}");
        };
        World {
            catalog,
            policy,
            _dir: dir,
        }
    })
}

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(Detector::builtin)
}

/// An agent's input for one of two actions (the first byte picks it): validated, decided
/// by Cedar (which builds its context from the input), and rendered into a request.
pub fn template(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let world = world();
    let name = if pick % 2 == 0 { "files.get" } else { "items.create" };
    let Some(action) = world.catalog.get(name) else {
        return;
    };
    let Ok(input) = parse_strict(rest, Limits::default()) else {
        return;
    };
    let Ok(valid) = action.validate(input) else {
        return;
    };
    if let Ok(rendered) = portcullis_exec::prepare::render(action, valid.value()) {
        let url = &rendered.url;
        assert_eq!(url.origin().ascii_serialization(), "https://api.example.test", "{url}");
        assert!(url.fragment().is_none(), "{url}");
        assert!(url.username().is_empty() && url.password().is_none(), "{url}");
        let segments: Vec<&str> = url.path_segments().map(Iterator::collect).unwrap_or_default();
        if name == "files.get" {
            assert_eq!(segments.len(), 3, "{url}");
            assert_eq!(&segments[..2], ["v1", "files"], "{url}");
            assert!(!matches!(segments[2], "" | "." | ".."), "{url}");
            for (key, _) in url.query_pairs() {
                assert!(["q", "n", "tag"].contains(&key.as_ref()), "{url}");
            }
        } else {
            assert_eq!(segments, ["v1", "items"], "{url}");
            assert!(url.query().is_none(), "{url}");
        }
        for (header, value) in &rendered.headers {
            assert!(!value.contains(['\r', '\n', '\0']), "{header}: {value:?}");
        }
    }
    let agent = AgentId::new("fuzz-bot");
    if let Ok(agent) = agent {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let findings = detector().scan_json(valid.value());
        let decided = world.policy.decide(&agent, action, valid, &findings, &[], now);
        let _ = decided.decision();
    }
}
