//! The shipped examples stay true: the real `portcullis` binary accepts each example under
//! `examples/` with `check`, and every case in an example's `cases.jsonl` passes `eval`.
//!
//! Each example is copied to a scratch directory first, so a `portcullis.db` left in the
//! source tree by someone trying the example can't change the outcome, and the quick start's
//! `UPSTREAM_PORT` placeholder can be filled in the way `run.sh` does.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test on any error"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// The binary under test, built by cargo for this test target.
const PORTCULLIS: &str = env!("CARGO_BIN_EXE_portcullis");

/// One test per example that comes with decision cases, and the list of those examples,
/// both from one table: an example is in `WITH_CASES` only if a test evaluates its cases,
/// and `every_example_with_cases_is_tested` compares that list with the directories.
macro_rules! examples_with_cases {
    ($($test:ident: $name:literal expects [$($effect:literal),+ $(,)?];)+) => {
        /// The examples whose `cases.jsonl` a test below evaluates.
        const WITH_CASES: &[&str] = &[$($name),+];

        $(
            #[test]
            fn $test() {
                assert_example_holds($name, &[$($effect),+]);
            }
        )+
    };
}

examples_with_cases! {
    the_github_example_passes_check_and_its_cases: "github" expects ["allow", "deny"];
    the_email_api_example_passes_check_and_its_cases: "email-api" expects ["allow", "deny"];
    the_billing_example_passes_check_and_its_cases: "billing" expects ["allow", "deny", "hold"];
    the_email_smtp_example_passes_check_and_its_cases: "email-smtp" expects ["allow", "deny", "hold"];
    the_inbox_assistant_example_passes_check_and_its_cases:
        "inbox-assistant" expects ["allow", "deny", "hold"];
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A directory under the system temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("portcullis-examples-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies an example, leaving out state a local run may have left behind.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let local_state = name.contains(".db") || name == "master.key";
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else if !local_state {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// `examples/NAME`, copied to a scratch directory.
fn example(name: &str) -> Scratch {
    let dir = Scratch::new(name);
    copy_dir(&examples_dir().join(name), &dir.0);
    dir
}

/// Runs `portcullis --config CONFIG ARGS…` in the config's directory.
fn portcullis(config: &Path, args: &[&str]) -> Output {
    Command::new(PORTCULLIS)
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(config.parent().unwrap())
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_LOG")
        .output()
        .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_check_passes(config: &Path) {
    let out = portcullis(config, &["check"]);
    assert!(
        out.status.success(),
        "`check` failed for {}:\n{}",
        config.display(),
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ok: "),
        "`check` printed no summary:\n{}",
        show(&out)
    );
}

/// The cases of a cases file (blank lines and `//` comments skipped, as `eval` does).
fn cases(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn eval(config: &Path, cases: &Path) -> (Output, String) {
    let out = portcullis(config, &["eval", "--cases", cases.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

/// The verdict lines of `eval` output: one per case, without the indented reasons and the summary.
fn verdicts(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("eval:"))
        .collect()
}

/// `check` accepts the example and every case passes; the cases state an expectation each
/// and cover every effect in `effects`.
fn assert_example_holds(name: &str, effects: &[&str]) {
    let dir = example(name);
    let config = dir.path("portcullis.yaml");
    assert_check_passes(&config);

    let file = dir.path("cases.jsonl");
    let cases = cases(&file);
    let expected: Vec<&str> = cases.iter().map(|c| c["expect"].as_str().unwrap_or("")).collect();
    assert!(
        expected.iter().all(|e| matches!(*e, "allow" | "deny" | "hold")),
        "every case in examples/{name}/cases.jsonl must say what it expects: {expected:?}"
    );
    for effect in effects {
        assert!(
            expected.contains(effect),
            "examples/{name}/cases.jsonl has no case expecting `{effect}`"
        );
    }

    let (out, stdout) = eval(&config, &file);
    assert!(out.status.success(), "`eval` failed for {name}:\n{}", show(&out));
    let lines = verdicts(&stdout);
    assert_eq!(lines.len(), cases.len(), "one verdict per case:\n{}", show(&out));
    assert!(
        lines.iter().all(|l| l.starts_with("PASS line ")),
        "every case must pass:\n{}",
        show(&out)
    );
    assert!(
        stdout.contains(&format!("eval: {} passed, 0 failed, 0 unreadable", cases.len())),
        "{}",
        show(&out)
    );
}

#[test]
fn the_quickstart_passes_check() {
    let dir = example("quickstart");
    // As run.sh does: the demo upstream's port goes where the placeholder is.
    for entry in std::fs::read_dir(dir.path("actions")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("UPSTREAM_PORT", "18080")).unwrap();
    }
    // `master_key: file:master.key`, created as run.sh creates it.
    let keygen = Command::new(PORTCULLIS).args(["secret", "keygen"]).output().unwrap();
    assert!(keygen.status.success(), "{}", show(&keygen));
    std::fs::write(dir.path("master.key"), &keygen.stdout).unwrap();

    assert_check_passes(&dir.path("portcullis.yaml"));
}

#[test]
fn every_example_with_cases_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cases.jsonl").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut tested: Vec<String> = WITH_CASES.iter().map(|s| (*s).to_owned()).collect();
    tested.sort();
    assert_eq!(
        found, tested,
        "each example with a cases.jsonl needs a line in `examples_with_cases!`, which evaluates it"
    );
}

#[test]
fn a_wrong_expectation_fails_eval() {
    let dir = example("github");
    let file = dir.path("wrong.jsonl");
    let allowed = r#"{"agent": "triage-bot", "action": "github.create_issue", "input": {"owner": "acme", "repo": "widgets", "title": "t"}"#;
    std::fs::write(
        &file,
        format!("{allowed}, \"expect\": \"allow\"}}\n{allowed}, \"expect\": \"deny\"}}\n"),
    )
    .unwrap();
    let (out, stdout) = eval(&dir.path("portcullis.yaml"), &file);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout.contains("PASS line 1:"), "{}", show(&out));
    assert!(
        stdout.contains("FAIL line 2:") && stdout.contains("allow (expected deny)"),
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains("eval: 1 passed, 1 failed, 0 unreadable"),
        "{}",
        show(&out)
    );
}

#[test]
fn an_unreadable_case_fails_eval() {
    let dir = example("github");
    let file = dir.path("broken.jsonl");
    // Duplicate keys are refused, as they are in intents: the two `expect`s could disagree.
    let line = r#"{"agent": "triage-bot", "action": "github.create_issue", "input": {"owner": "acme", "repo": "docs", "title": "t"}, "expect": "deny", "expect": "allow"}"#;
    std::fs::write(&file, format!("{line}\nnot json\n")).unwrap();
    let (out, stdout) = eval(&dir.path("portcullis.yaml"), &file);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout.contains("ERROR ") && stdout.contains(":1:"), "{}", show(&out));
    assert!(
        stdout.contains("eval: 0 passed, 0 failed, 2 unreadable"),
        "{}",
        show(&out)
    );
}
