//! MCP with the official Python SDK (PyPI `mcp`, pinned in `tests/mcp/requirements.txt`) as
//! the client, driving `tests/mcp/client.py` line by line: over streamable HTTP against
//! `portcullis serve` (`/mcp`), and over stdio with the client spawning `portcullis mcp`.
//! The SDK first probes `server/discover` (protocol 2026-07-28); a second client in
//! `legacy` mode uses the `initialize` handshake. Runs only with `PORTCULLIS_MCP_TESTS=1`;
//! with it, never skips.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::{AGENT, OTHER, assert_no_secret, write_standard_files};
use crate::harness::{Env, Gateway, PORTCULLIS, recorded_headers};

/// How long one client step may take (a long-poll of the status tool included).
const STEP: Duration = Duration::from_secs(90);
const DENY_REASON: &str = "agents may not open urgent tickets; page a human instead";
const HOLD_REASON: &str = "high-priority tickets need a lead's approval";

const ADMINS: &str = "
admins:
  alice: {role: approver, groups: [leads]}
";

const HOLD_POLICY: &str = r#"
@id("high-priority-tickets-need-a-lead")
@hold("high-priority tickets need a lead's approval")
@approvers("leads")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { context.input has priority && context.input.priority == "high" };
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether to run; says so when not.
fn enabled() -> bool {
    if std::env::var("PORTCULLIS_MCP_TESTS").as_deref() == Ok("1") {
        return true;
    }
    println!("skipped: set PORTCULLIS_MCP_TESTS=1 (needs `pip install -r tests/mcp/requirements.txt`)");
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Http,
    Stdio,
}

/// One running `tests/mcp/client.py`, connected.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything the client (and, over stdio, `portcullis mcp`) wrote to standard error.
    stderr: Arc<Mutex<String>>,
    /// Everything it wrote to standard output.
    transcript: String,
    /// The negotiated protocol version.
    protocol: String,
}

impl Client {
    fn start(world: &World, transport: Transport, token: &str, mode: &str) -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/mcp/client.py"));
        match transport {
            Transport::Http => {
                let url = format!("{}/mcp", world.gateway.url());
                cmd.args(["http", &url, token, "--mode", mode]);
            }
            Transport::Stdio => {
                cmd.args(["stdio", "--mode", mode, "--", PORTCULLIS, "--config"])
                    .arg(world.env.config())
                    .arg("mcp")
                    .env("PORTCULLIS_AGENT_TOKEN", token);
            }
        }
        let mut child = cmd
            .current_dir(world.env.dir.path())
            .env_remove("PORTCULLIS_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed, with `pip install -r tests/mcp/requirements.txt`");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().expect("stderr lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdin = child.stdin.take();
        let mut client = Self {
            child,
            stdin,
            lines,
            stderr,
            transcript: String::new(),
            protocol: String::new(),
        };
        let ready = client.next("the client to connect");
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(ready["server"]["name"], "portcullis", "{ready}");
        client.protocol = ready["protocol_version"].as_str().expect("protocol version").to_owned();
        client
    }

    fn next(&mut self, what: &str) -> Value {
        let line = match self.lines.recv_timeout(STEP) {
            Ok(l) => l,
            Err(e) => panic!(
                "no answer from the MCP client while waiting for {what} ({e}); its stderr:\n{}",
                self.stderr.lock().expect("stderr lock")
            ),
        };
        self.transcript.push_str(&line);
        self.transcript.push('\n');
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client line is not JSON ({e}): {line}"))
    }

    fn send(&mut self, command: &Value) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write to the client");
        stdin.flush().expect("flush");
        self.next(&command.to_string())
    }

    fn tool_names(&mut self) -> Vec<String> {
        let r = self.send(&json!({"op": "list"}));
        assert_eq!(r["ok"], true, "{r}");
        r["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect()
    }

    /// Calls a tool; returns the `CallToolResult` (it must not be a JSON-RPC error).
    fn call(&mut self, name: &str, arguments: Value) -> Value {
        let r = self.send(&json!({"op": "call", "name": name, "arguments": arguments}));
        assert_eq!(r["ok"], true, "{name}: {r}");
        r["result"].clone()
    }

    /// Calls a tool that must fail as a JSON-RPC error; returns the error.
    fn call_error(&mut self, name: &str) -> Value {
        let r = self.send(&json!({"op": "call", "name": name, "arguments": {}}));
        assert_eq!(r["ok"], false, "{name}: {r}");
        r["error"].clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closing standard input ends the client, which ends `portcullis mcp` over stdio.
        drop(self.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

/// The standard setup plus a hold for high-priority tickets and an approver.
struct World {
    gateway: Gateway,
    env: Env,
    token: String,
    other_token: String,
    secret: String,
    alice: String,
}

fn world() -> World {
    let env = Env::new();
    let secret = write_standard_files(&env);
    let config = std::fs::read_to_string(env.config()).expect("config");
    env.write("portcullis.yaml", &format!("{config}{ADMINS}"));
    env.write("policies/hold.cedar", HOLD_POLICY);
    let token = env.add_agent(AGENT);
    let other_token = env.add_agent(OTHER);
    let alice = env.person_token("alice");
    let gateway = env.serve();
    World {
        gateway,
        env,
        token,
        other_token,
        secret,
        alice,
    }
}

impl World {
    fn ticket_requests(&self) -> Vec<Value> {
        self.env
            .upstream
            .requests()
            .into_iter()
            .filter(|r| r["path"] == "/tickets")
            .collect()
    }
}

/// The whole story over one transport: two agents see different tools; an allowed call
/// runs once with the credential injected (and none reaches the client); a denial, an
/// invalid input and an unknown tool; a hold approved through the CLI, whose outcome the
/// status tool returns.
fn story(transport: Transport) {
    let w = world();
    let mut support = Client::start(&w, transport, &w.token, "auto");
    assert_eq!(support.protocol, "2026-07-28", "server/discover is answered");
    let mut other = Client::start(&w, transport, &w.other_token, "auto");
    let mut legacy = Client::start(&w, transport, &w.other_token, "legacy");
    assert_eq!(legacy.protocol, "2025-11-25", "the initialize handshake works too");

    // Two agents, two lists; the status tool only where a hold may apply.
    let tools = support.tool_names();
    for name in [
        "tickets.create",
        "files.get",
        "leak.bearer",
        "search",
        "portcullis_intent_status",
    ] {
        assert!(tools.iter().any(|t| t == name), "{name} missing from {tools:?}");
    }
    assert!(!tools.iter().any(|t| t == "admin.purge"), "{tools:?}");
    assert_eq!(other.tool_names(), ["tickets.create"]);
    assert_eq!(legacy.tool_names(), ["tickets.create"]);

    // Allowed: the upstream gets the credential exactly once; the client gets the
    // projected body and no credential.
    let created = support.call(
        "tickets.create",
        json!({"project": "website", "title": "Login is slow"}),
    );
    assert_eq!(created["isError"], false, "{created}");
    assert_eq!(created["structuredContent"]["title"], "Login is slow", "{created}");
    assert!(created["structuredContent"].get("debug_auth").is_none(), "{created}");
    let tickets = w.ticket_requests();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(
        recorded_headers(&tickets[0], "authorization"),
        [format!("Bearer {}", w.secret)]
    );
    // A hostile upstream echoing the credential back: redacted before the client.
    let leaked = support.call("leak.bearer", json!({}));
    assert_eq!(leaked["isError"], false, "{leaked}");

    // Denied: a tool error with the policy's reason; nothing sent.
    let denied = support.call(
        "tickets.create",
        json!({"project": "website", "title": "Down", "priority": "urgent"}),
    );
    assert_eq!(denied["isError"], true, "{denied}");
    assert!(text(&denied).contains(DENY_REASON), "{denied}");

    // Invalid input: a tool error naming the field; nothing sent.
    let invalid = support.call("tickets.create", json!({"project": "Not A Slug!", "title": "x"}));
    assert_eq!(invalid["isError"], true, "{invalid}");
    assert!(text(&invalid).contains("/project"), "{invalid}");

    // Unknown and invisible tools answer alike.
    let missing = support.call_error("no.such.tool");
    let hidden = support.call_error("admin.purge");
    assert_eq!(missing["code"], -32602, "{missing}");
    assert_eq!(hidden["code"], missing["code"], "{hidden}");
    assert_eq!(hidden["message"], "unknown tool `admin.purge`");
    assert_eq!(w.ticket_requests().len(), 1, "nothing else reached the upstream");

    // Held: the pending id and instructions; approved through the CLI; the status tool
    // returns the executed result.
    let held = support.call(
        "tickets.create",
        json!({"project": "website", "title": "Refund order 1042", "priority": "high"}),
    );
    assert_eq!(held["isError"], false, "{held}");
    assert_eq!(held["structuredContent"]["status"], "pending_approval", "{held}");
    let id = held["structuredContent"]["intent_id"]
        .as_str()
        .expect("intent id")
        .to_owned();
    assert!(text(&held).contains(HOLD_REASON) && text(&held).contains("portcullis_intent_status"));
    let pending = support.call("portcullis_intent_status", json!({"intent_id": id}));
    assert_eq!(pending["structuredContent"]["status"], "pending_approval", "{pending}");
    assert_eq!(w.ticket_requests().len(), 1, "a held intent doesn't run");
    let url = w.gateway.url();
    let approved = w.env.cli_env(
        &["approvals", "approve", &id, "--reason", "customer verified"],
        &[("PORTCULLIS_URL", &url), ("PORTCULLIS_TOKEN", &w.alice)],
    );
    assert!(approved.success(), "{approved:?}");
    let done = support.call("portcullis_intent_status", json!({"intent_id": id, "wait_seconds": 30}));
    assert_eq!(done["isError"], false, "{done}");
    assert_eq!(done["structuredContent"]["title"], "Refund order 1042", "{done}");
    assert_eq!(w.ticket_requests().len(), 2);

    // Nothing the clients saw or logged carries the credential or an agent token.
    for client in [&support, &other, &legacy] {
        assert_no_secret(&client.transcript, &w.secret, "MCP client output");
        assert_no_secret(&client.stderr(), &w.secret, "MCP client standard error");
        for token in [&w.token, &w.other_token] {
            assert!(!client.stderr().contains(token.as_str()), "an agent token was logged");
        }
    }
    assert_no_secret(&w.gateway.log(), &w.secret, "gateway log");
}

#[test]
fn python_sdk_over_streamable_http() {
    if enabled() {
        story(Transport::Http);
    }
}

#[test]
fn python_sdk_over_stdio() {
    if enabled() {
        story(Transport::Stdio);
    }
}

/// `portcullis mcp` refuses to start without a valid agent token, saying why on standard
/// error and nothing on standard output (which belongs to the protocol). Needs no SDK.
#[test]
fn mcp_over_stdio_needs_an_agent_token() {
    let env = Env::new();
    write_standard_files(&env);
    let token = env.add_agent(AGENT);
    for (value, expected) in [
        (None, "PORTCULLIS_AGENT_TOKEN"),
        (Some(""), "PORTCULLIS_AGENT_TOKEN"),
        (Some("pcl_not-a-token"), "is not the token of any agent"),
    ] {
        let mut cmd = Command::new(PORTCULLIS);
        cmd.arg("--config")
            .arg(env.config())
            .arg("mcp")
            .env_remove("PORTCULLIS_AGENT_TOKEN")
            .stdin(Stdio::null());
        if let Some(v) = value {
            cmd.env("PORTCULLIS_AGENT_TOKEN", v);
        }
        let out = cmd.output().expect("run portcullis mcp");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{value:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{value:?}: stdout must stay empty");
        assert!(stderr.contains(expected), "{value:?}: {stderr}");
        assert!(!stderr.contains("pcl_not-a-token"), "the token is never printed");
    }
    // With a valid token and standard input closed at once, it starts and ends cleanly.
    let out = Command::new(PORTCULLIS)
        .arg("--config")
        .arg(env.config())
        .arg("mcp")
        .env("PORTCULLIS_AGENT_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis mcp");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&token));
}
