//! Progress bars of the long CLI operations (`audit verify`, `audit export`,
//! `catalog import-openapi`): drawn on a terminal and cleared before the command's output,
//! absent in pipes, where the output is byte for byte what it is without them.
//!
//! The terminal is a pseudo-terminal opened by python3 (`TERMINAL`), which runs the real
//! binary on it and copies everything written there to its own standard output.

use std::process::{Command, Stdio};

use serde_json::{Map, Value, json};

use crate::fixtures::{Standard, standard};
use crate::harness::{Env, Output, PORTCULLIS, concurrently};

/// Runs `sys.argv[1:]` on a new 100-column pseudo-terminal (standard input, output and
/// error), prints everything written there, and exits with its code; kills it after 20 s.
const TERMINAL: &str = r#"
import fcntl, os, pty, select, struct, subprocess, sys, termios, time
master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
os.close(slave)
deadline, out = time.monotonic() + 20, b""
while time.monotonic() < deadline:
    if select.select([master], [], [], 0.1)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
else:
    child.kill()
sys.stdout.buffer.write(out)
sys.exit(child.wait())
"#;

/// Denied intents (one audit event each, no upstream call) sent to make the log long.
const INTENTS: usize = 240;
const THREADS: usize = 8;

/// The standard setup with a log of at least [`INTENTS`] events, its gateway stopped.
fn long_log() -> Env {
    let Standard {
        gateway, env, token, ..
    } = standard();
    let denied =
        json!({"action": "tickets.create", "input": {"project": "website", "title": "t", "priority": "urgent"}});
    let statuses = concurrently(THREADS, |_| {
        (0..INTENTS / THREADS)
            .map(|_| gateway.post_intent(&token, &denied).status)
            .collect::<Vec<_>>()
    });
    assert!(statuses.iter().flatten().all(|s| *s == 403), "{statuses:?}");
    drop(gateway);
    env
}

/// An OpenAPI document with `n` operations, `items/get-0`….
fn openapi_spec(n: usize) -> String {
    let paths: Map<String, Value> = (0..n)
        .map(|i| {
            let op =
                json!({"get": {"operationId": format!("items/get-{i}"), "responses": {"200": {"description": "ok"}}}});
            (format!("/items/{i}"), op)
        })
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Items", "version": "1"},
        "servers": [{"url": "https://items.example"}],
        "paths": paths,
    })
    .to_string()
}

const IMPORT: &[&str] = &[
    "catalog",
    "import-openapi",
    "items.json",
    "--all-matching",
    "items/*",
    "--credential",
    "items",
    "--out",
    "items.yaml",
];

/// Runs `portcullis --config portcullis.yaml ARGS…` on a pseudo-terminal; everything it
/// wrote there, with the carriage returns the terminal adds to newlines taken out.
fn on_terminal(env: &Env, args: &[&str]) -> (Output, String) {
    let out = Command::new("python3")
        .args(["-c", TERMINAL, PORTCULLIS, "--config"])
        .arg(env.config())
        .args(args)
        .current_dir(env.dir.path())
        .env_remove("PORTCULLIS_LOG")
        // Progress bars stay off on terminals that can't move the cursor (`TERM=dumb` or unset).
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    let out = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let screen = out.stdout.replace("\r\n", "\n");
    (out, screen)
}

/// Asserts that `screen` shows the bar labelled `label`, then a line clear, then `then`.
fn assert_drawn_then_cleared(screen: &str, label: &str, then: &str) {
    let drawn = screen
        .rfind(label)
        .unwrap_or_else(|| panic!("no `{label}` bar drawn: {screen:?}"));
    let cleared = screen
        .rfind("\x1b[2K")
        .unwrap_or_else(|| panic!("the bar was not cleared: {screen:?}"));
    let output = screen.find(then).unwrap_or_else(|| panic!("no `{then}`: {screen:?}"));
    assert!(
        drawn < cleared && cleared < output,
        "drawn, cleared, then the output: {screen:?}"
    );
    assert!(
        !screen[output..].contains(label),
        "the bar is gone after the output: {screen:?}"
    );
}

fn assert_nothing_progress_like(out: &Output, context: &str) {
    assert!(
        out.stderr.is_empty() && !out.stdout.contains(['\r', '\x1b']),
        "{context} wrote something besides its output: {out:?}"
    );
}

#[test]
fn in_a_pipe_long_operations_print_only_their_output() {
    let env = long_log();
    // `audit tail` has no progress bar: what `export` must print, line for line.
    let tail = env.cli(&["audit", "tail", "-n", "100000"], None);
    assert!(tail.success(), "{tail:?}");
    let events = tail.stdout.lines().count();
    assert!(events >= INTENTS, "{events} events");

    let verify = env.audit_verify();
    assert!(verify.success(), "{verify:?}");
    assert_eq!(
        verify.stdout.lines().next(),
        Some(format!("audit log intact: {events} event(s), hash chain verified").as_str()),
        "{verify:?}"
    );
    assert_nothing_progress_like(&verify, "audit verify");

    let export = env.cli(&["audit", "export", "--format", "jsonl"], None);
    assert!(export.success(), "{export:?}");
    assert_eq!(export.stdout, tail.stdout, "export prints the log and nothing else");
    assert_nothing_progress_like(&export, "audit export");

    let to_file = env.cli(&["audit", "export", "--format", "jsonl", "--out", "audit.jsonl"], None);
    assert!(to_file.success(), "{to_file:?}");
    assert_eq!(to_file.stdout, "");
    assert_nothing_progress_like(&to_file, "audit export --out");
    assert_eq!(std::fs::read_to_string(env.path("audit.jsonl")).unwrap(), tail.stdout);

    env.write("items.json", &openapi_spec(300));
    let import = env.cli(IMPORT, None);
    assert!(import.success(), "{import:?}");
    assert_eq!(
        import.stdout,
        "wrote 300 action(s) to items.yaml: review them, then add the file to `actions`\n"
    );
    assert_nothing_progress_like(&import, "catalog import-openapi");
}

#[test]
fn on_a_terminal_bars_are_drawn_then_cleared_before_the_output() {
    let env = long_log();
    let (verify, screen) = on_terminal(&env, &["audit", "verify"]);
    assert_eq!(verify.code, Some(0), "{verify:?}");
    assert_drawn_then_cleared(&screen, "verifying the audit log", "audit log intact: ");

    let (to_file, screen) = on_terminal(&env, &["audit", "export", "--format", "jsonl", "--out", "audit.jsonl"]);
    assert_eq!(to_file.code, Some(0), "{to_file:?}");
    assert!(screen.contains("exporting the audit log"), "{screen:?}");
    assert!(screen.contains("\x1b[2K"), "the bar was cleared: {screen:?}");
    let exported = std::fs::read_to_string(env.path("audit.jsonl")).unwrap();
    assert!(exported.lines().count() >= INTENTS, "{exported}");
    assert!(!exported.contains(['\r', '\x1b']), "the file holds only the events");

    // Events scrolling past on the terminal are their own progress: no bar among them.
    let (to_screen, screen) = on_terminal(&env, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(to_screen.code, Some(0), "{to_screen:?}");
    assert_eq!(screen, exported, "only the events, when they go to the terminal");

    env.write("items.json", &openapi_spec(300));
    let (import, screen) = on_terminal(&env, IMPORT);
    assert_eq!(import.code, Some(0), "{import:?}");
    assert_drawn_then_cleared(&screen, "importing operations", "wrote 300 action(s)");
}
