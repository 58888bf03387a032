//! The approvals web UI in a real browser: Debian's headless Chromium, driven by npm
//! `playwright-core` (`tests/browser/approve.mjs`), approves a held intent while the agent
//! long-polls for it. Runs only with `PORTCULLIS_BROWSER_TESTS=1`; with it, never skips.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::{AGENT, CONFIG, LEAKS, POLICIES, TICKETS, assert_no_secret};
use crate::harness::{Env, random_secret};

/// Longest the browser script may take, Chromium's start-up included.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

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

const TICKET_BODY: &str = "The printer on floor 3 is smoking.\n\
Facilities must unplug it before anyone prints the quarterly report.\n\
Please bring an extinguisher, just in case.";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether to run; says so when not.
fn enabled() -> bool {
    if std::env::var("PORTCULLIS_BROWSER_TESTS").as_deref() == Ok("1") {
        return true;
    }
    println!("skipped: set PORTCULLIS_BROWSER_TESTS=1 (needs chromium and tests/browser/node_modules)");
    false
}

/// `GET path` with a bearer token and a read timeout long enough for a long-poll (the
/// shared client's timeout is shorter than `?wait=30`).
fn long_poll(addr: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).expect("read the long-poll response");
    let text = String::from_utf8(received).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "unexpected chunked response: {head}"
    );
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("long-poll body is not JSON ({e}): {body}"));
    (status, body)
}

/// Runs the browser script; returns its exit code, standard output and standard error.
fn run_browser(url: &str, login_token: &str, intent: &str, screenshot: &Path) -> (Option<i32>, String, String) {
    let dir = repo_root().join("tests/browser");
    let mut child = Command::new("node")
        .arg(dir.join("approve.mjs"))
        .args(["--url", url, "--intent", intent, "--action", "tickets.create"])
        .args(["--expect", "Printer on floor 3 is smoking"])
        .args([
            "--expect",
            "Facilities must unplug it before anyone prints the quarterly report.",
        ])
        .args(["--expect", "high-priority tickets need a lead's approval"])
        .arg("--screenshot")
        .arg(screenshot)
        .arg("--screenshot-after")
        .arg(screenshot.with_file_name("approval-done.png"))
        .env("PORTCULLIS_LOGIN_TOKEN", login_token)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node must be installed to run the browser test");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    while child.try_wait().expect("wait for node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("node output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_person_approves_a_held_intent_in_the_browser_and_the_agent_gets_the_result() {
    if !enabled() {
        return;
    }
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "PORTCULLIS_BROWSER_TESTS=1 but /usr/bin/chromium is missing: apt-get install -y chromium"
    );
    assert!(
        repo_root().join("tests/browser/node_modules/playwright-core").is_dir(),
        "PORTCULLIS_BROWSER_TESTS=1 but playwright-core is not installed: (cd tests/browser && npm ci)"
    );

    let env = Env::new();
    env.write("portcullis.yaml", &format!("{CONFIG}{ADMINS}"));
    env.write("actions/tickets.yaml", TICKETS);
    env.write("actions/leaks.yaml", LEAKS);
    env.write("policies/policies.cedar", POLICIES);
    env.write("policies/hold.cedar", HOLD_POLICY);
    let secret = random_secret("tracker");
    env.set_secret("tracker_token", &secret);
    let agent_token = env.add_agent(AGENT);
    let login = env.cli(&["approvals", "token", "alice"], None);
    assert!(login.success(), "approvals token alice failed: {login:?}");
    let login_token = login.stdout.trim().to_owned();
    let gateway = env.serve();

    let input = json!({
        "project": "facilities",
        "title": "Printer on floor 3 is smoking",
        "body": TICKET_BODY,
        "priority": "high",
    });
    let held = gateway.post_intent(&agent_token, &json!({"action": "tickets.create", "input": input}));
    assert_eq!(held.status, 202, "{}", held.text());
    let held = held.json();
    assert_eq!(held["status"], "pending_approval", "{held}");
    let id = held["id"].as_str().expect("intent id").to_owned();
    env.upstream.assert_untouched("while the intent is held");

    let addr = gateway.addr;
    let poll_path = format!("/v1/intents/{id}?wait=30");
    let poll_token = agent_token.clone();
    let poll = std::thread::spawn(move || long_poll(addr, &poll_path, &poll_token));

    let screenshot = repo_root().join("target/browser/approval-detail.png");
    let _ = std::fs::remove_file(&screenshot);
    let (code, stdout, stderr) = run_browser(&format!("http://{addr}"), &login_token, &id, &screenshot);
    assert_eq!(
        code,
        Some(0),
        "the browser test failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ngateway log:\n{}",
        gateway.log()
    );
    let png = std::fs::read(&screenshot).expect("the screenshot of the detail page");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a real screenshot"
    );

    let (status, result) = poll.join().expect("the long-poll thread");
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["id"], id.as_str(), "{result}");
    assert_eq!(result["status"], "executed", "{result}");
    assert_eq!(
        result["result"]["body"]["title"], "Printer on floor 3 is smoking",
        "{result}"
    );
    assert_eq!(result["result"]["body"]["state"], "open", "{result}");
    assert_no_secret(&result.to_string(), &secret, "the long-poll result");

    let requests = env.upstream.requests();
    assert_eq!(requests.len(), 1, "exactly one upstream call: {requests:#?}");
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[0]["path"], "/tickets");
    let sent: Value = serde_json::from_str(requests[0]["body"].as_str().expect("body")).expect("JSON body");
    assert_eq!(sent["body"], TICKET_BODY, "the approved payload was sent as held");
    assert!(
        !gateway.log().contains(&login_token),
        "the login token never reaches the gateway's log"
    );
}
