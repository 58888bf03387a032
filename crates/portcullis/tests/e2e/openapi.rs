//! `portcullis catalog import-openapi` on real, large public documents: GitHub's official
//! spec (npm `@octokit/openapi`) and Directus' (npm `@directus/specs`). The imported files
//! pass `check` and are the same bytes every time, and imported GitHub actions run through
//! the gateway against prism (npm `@stoplight/prism-cli`), a mock server generated from the
//! same document that validates every request and logs each violation.
//!
//! They run when `tests/openapi/node_modules` is installed (`npm ci` there), and must when
//! `PORTCULLIS_OPENAPI_TESTS=1` (as `.ci/run` sets it); otherwise they say they are skipped.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::{AGENT, CONFIG};
use crate::harness::{Env, KillOnDrop};

const MODULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/openapi/node_modules");

/// The GitHub operations the issue asks for, and the action names they get.
const GITHUB_OPS: &[(&str, &str)] = &[
    ("issues/create", "github.issues_create"),
    ("issues/add-labels", "github.issues_add-labels"),
    ("issues/create-comment", "github.issues_create-comment"),
    ("issues/list-for-repo", "github.issues_list-for-repo"),
    ("issues/update", "github.issues_update"),
    ("pulls/merge", "github.pulls_merge"),
];

const DIRECTUS_OPS: &[&str] = &["getItems", "getItem", "createComment", "updateItem", "deleteItem"];

const POLICY: &str = r#"
@id("bot-may-use-imported-actions")
permit (principal == Agent::"support-bot", action, resource);
"#;

/// The node_modules directory, or `None` (after saying so) when it is missing and the tests
/// are not required.
fn modules() -> Option<PathBuf> {
    let dir = PathBuf::from(MODULES);
    if dir.join(".bin/prism").exists() {
        return Some(dir);
    }
    let required = std::env::var("PORTCULLIS_OPENAPI_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "PORTCULLIS_OPENAPI_TESTS=1 but tests/openapi/node_modules is missing (cd tests/openapi && npm ci)"
    );
    eprintln!("skipped: tests/openapi/node_modules is missing (cd tests/openapi && npm ci)");
    None
}

fn github_spec(modules: &std::path::Path) -> String {
    modules
        .join("@octokit/openapi/generated/api.github.com.json")
        .to_string_lossy()
        .into_owned()
}

/// Runs the import into `rel` and returns the file's bytes.
fn import(env: &Env, spec: &str, ops: &[&str], extra: &[&str], rel: &str) -> String {
    let out_path = env.path(rel);
    std::fs::create_dir_all(out_path.parent().unwrap()).unwrap();
    let mut args = vec!["catalog", "import-openapi", spec];
    for op in ops {
        args.extend(["--operation", op]);
    }
    let out_arg = out_path.to_string_lossy().into_owned();
    args.extend(["--out", &out_arg]);
    args.extend(extra);
    let out = env.cli(&args, None);
    assert!(out.success(), "import failed: {out:?}");
    std::fs::read_to_string(&out_path).unwrap()
}

fn config_with(credentials: &str) -> String {
    CONFIG.replace("credentials:\n", &format!("credentials:\n{credentials}"))
}

#[test]
fn github_and_directus_imports_pass_check_and_are_deterministic() {
    let Some(modules) = modules() else { return };
    let env = Env::new();
    let github = github_spec(&modules);
    let ops: Vec<&str> = GITHUB_OPS.iter().map(|(op, _)| *op).collect();
    let gh = ["--credential", "github", "--name-prefix", "github"];
    let first = import(&env, &github, &ops, &gh, "actions/github.yaml");
    let second = import(&env, &github, &ops, &gh, "again/github.yaml");
    assert_eq!(first, second, "importing twice must give the same bytes");
    for (op, name) in GITHUB_OPS {
        assert!(first.contains(&format!("name: {name}\n")), "{name} missing:\n{first}");
        assert!(first.contains(&format!("# operation `{op}`:")), "{op} header missing");
    }
    assert!(first.contains("url: \"https://api.github.com/repos/{owner}/{repo}/issues\""));
    assert!(first.contains("resource: {type: Repo, id: \"{owner}/{repo}\"}"));
    assert!(!first.contains("api.github.com/repos/{owner}/{repo}/issues?") || first.contains("per_page={per_page}"));

    let directus = modules
        .join("@directus/specs/dist/openapi.json")
        .to_string_lossy()
        .into_owned();
    let dx = [
        "--credential",
        "directus",
        "--name-prefix",
        "directus",
        "--server",
        "https://cms.example.com",
    ];
    let d1 = import(&env, &directus, DIRECTUS_OPS, &dx, "actions/directus.yaml");
    let d2 = import(&env, &directus, DIRECTUS_OPS, &dx, "again/directus.yaml");
    assert_eq!(d1, d2, "importing twice must give the same bytes");
    assert!(
        d1.contains("name: directus.deleteItem\n") && d1.contains("destructive: true"),
        "{d1}"
    );

    env.write(
        "portcullis.yaml",
        &config_with("  github:\n    kind: bearer\n    secret: github_token\n  directus:\n    kind: bearer\n    secret: directus_token\n"),
    );
    env.write("policies/imported.cedar", POLICY);
    let check = env.cli(&["check"], None);
    assert!(check.success(), "check failed on the imported files: {check:?}");

    // Refusals name what is wrong.
    let out = env.cli(
        &[
            "catalog",
            "import-openapi",
            &github,
            "--operation",
            "issues/creat",
            "--credential",
            "g",
            "--out",
            "x.yaml",
        ],
        None,
    );
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("unknown operation `issues/creat`; did you mean `issues/create`"),
        "{out:?}"
    );
    assert!(!env.path("x.yaml").exists(), "nothing is written on failure");
}

/// prism on a free loopback port, with its log collected.
struct Prism {
    _child: KillOnDrop,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Prism {
    fn start(modules: &std::path::Path, spec: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(modules.join(".bin/prism"))
            .args(["mock", spec, "-p", &port.to_string(), "-h", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prism");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let child = KillOnDrop(child);
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        for pipe in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
            let sink = Arc::clone(&log);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("Prism is listening") {
                        let _ = tx.send(());
                    }
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        if rx.recv_timeout(Duration::from_secs(90)).is_err() {
            panic!("prism did not start; its log:\n{}", log.lock().unwrap());
        }
        Self {
            _child: child,
            port,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

#[test]
fn imported_github_actions_send_requests_that_prism_validates() {
    let Some(modules) = modules() else { return };
    let github = github_spec(&modules);
    let prism = Prism::start(&modules, &github);
    let env = Env::new();
    let server = format!("http://127.0.0.1:{}", prism.port);
    let ops: Vec<&str> = GITHUB_OPS.iter().map(|(op, _)| *op).collect();
    import(
        &env,
        &github,
        &ops,
        &["--credential", "github", "--name-prefix", "github", "--server", &server],
        "actions/github.yaml",
    );
    env.write(
        "portcullis.yaml",
        &config_with("  github:\n    kind: bearer\n    secret: github_token\n")
            .replace("max_body_bytes: 4096", "max_body_bytes: 65536"),
    );
    env.write("policies/imported.cedar", POLICY);
    env.set_secret("github_token", "ghp_imported_test_token");
    let token = env.add_agent(AGENT);
    let gateway = env.serve();
    let repo = json!({"owner": "octo-org", "repo": "hello-world"});
    let with = |extra: Value| {
        let mut input = repo.clone();
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        input
    };
    let cases = [
        (
            "github.issues_create",
            with(json!({"title": "Found a bug", "body": "It breaks.", "labels": ["bug"]})),
        ),
        (
            "github.issues_add-labels",
            with(json!({"issue_number": 7, "body": {"labels": ["bug", "triage"]}})),
        ),
        (
            "github.issues_create-comment",
            with(json!({"issue_number": 7, "body": "Thanks!"})),
        ),
        (
            "github.issues_list-for-repo",
            with(json!({"state": "open", "labels": "bug", "per_page": 5})),
        ),
        (
            "github.issues_update",
            with(json!({"issue_number": 7, "state": "closed", "state_reason": "completed"})),
        ),
        (
            "github.pulls_merge",
            with(json!({"pull_number": 3, "merge_method": "squash", "commit_title": "Merge"})),
        ),
    ];
    for (action, input) in cases {
        let r = gateway.post_intent(&token, &json!({"action": action, "input": input}));
        let body = r.json();
        assert_eq!(r.status, 200, "{action}: {}", r.text());
        assert_eq!(body["status"], "executed", "{action}: {body}");
        let status = body["result"]["status"].as_u64().unwrap_or(0);
        assert!(
            (200..300).contains(&status),
            "{action}: prism answered {status}: {body}\nprism log:\n{}",
            prism.log()
        );
    }
    let log = prism.log();
    assert!(!log.contains("Violation"), "prism saw invalid requests:\n{log}");
    assert_eq!(
        log.matches("The request passed the validation rules").count(),
        6,
        "{log}"
    );
}
