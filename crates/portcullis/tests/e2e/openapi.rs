//! `portcullis catalog import-openapi` on real, large public documents: GitHub's official
//! spec (npm `@octokit/openapi`) and Directus' (npm `@directus/specs`). The imported files
//! pass `check` and are the same bytes every time, and imported GitHub actions run through
//! the gateway against prism (npm `@stoplight/prism-cli`), a mock server generated from the
//! same document that validates every request and logs each violation.
//!
//! Those run when `tests/openapi/node_modules` is installed (`npm ci` there), and must when
//! `PORTCULLIS_OPENAPI_TESTS=1` (as `.ci/run` sets it); otherwise they say they are skipped.
//! The options (`--name`, `--all-matching`) are also shown on a small document each test
//! writes itself, so those tests run everywhere.

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
    let delete = documents(&d1)
        .into_iter()
        .find(|d| d.contains("\nname: directus.deleteItem\n"))
        .unwrap_or_else(|| panic!("no deleteItem:\n{d1}"));
    assert_eq!(
        line_of(delete, "hints"),
        "hints: {read_only: false, destructive: true, idempotent: true}"
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

/// A small API written by the tests that need no node_modules: the `gadgets` path sits
/// between the `widgets` ones, so a glob has to skip it.
const WIDGETS_SPEC: &str = r#"
openapi: 3.1.0
info: {title: Widgets, version: "2.0"}
servers: [{url: "https://widgets.example/v2"}]
paths:
  /widgets:
    post:
      operationId: widgets/create
      summary: Create a widget
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [label]
              properties:
                label: {type: string, maxLength: 40}
    get:
      operationId: widgets/list
      summary: List widgets
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 50}}
  /gadgets:
    post:
      operationId: gadgets/create
      summary: Create a gadget
  /widgets/{id}:
    get:
      operationId: widgets/get
      summary: Get a widget
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
    delete:
      operationId: widgets/delete
      summary: Delete a widget
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
"#;

/// An `Env` with the widgets document at `widgets.yaml` and a config whose credential
/// `widgets` the imported actions use.
fn widgets_env() -> Env {
    let env = Env::new();
    env.write("widgets.yaml", WIDGETS_SPEC);
    env.write(
        "portcullis.yaml",
        &config_with("  widgets:\n    kind: bearer\n    secret: widgets_token\n"),
    );
    env.write("policies/imported.cedar", POLICY);
    std::fs::create_dir_all(env.path("actions")).unwrap();
    env
}

/// Runs `catalog import-openapi widgets.yaml --credential widgets --out OUT ARGS…`.
fn import_widgets(env: &Env, out: &str, args: &[&str]) -> crate::harness::Output {
    let mut all = vec![
        "catalog",
        "import-openapi",
        "widgets.yaml",
        "--credential",
        "widgets",
        "--out",
        out,
    ];
    all.extend(args);
    env.cli(&all, None)
}

/// The action documents of an imported file, split at `---`.
fn documents(file: &str) -> Vec<&str> {
    file.split("---\n").collect()
}

/// The `name:` of each action document, in file order.
fn action_names(file: &str) -> Vec<&str> {
    file.lines().filter_map(|l| l.strip_prefix("name: ")).collect()
}

/// The one line of `doc` that starts with `key: `.
fn line_of<'a>(doc: &'a str, key: &str) -> &'a str {
    let lines: Vec<&str> = doc.lines().filter(|l| l.starts_with(&format!("{key}: "))).collect();
    assert_eq!(lines.len(), 1, "one `{key}` line in:\n{doc}");
    lines[0]
}

fn assert_check_passes(env: &Env) {
    let check = env.cli(&["check"], None);
    assert!(check.success(), "check failed on the imported file: {check:?}");
    assert!(check.stderr.contains("ok: "), "{check:?}");
}

#[test]
fn all_matching_imports_exactly_the_matching_operations_and_check_passes() {
    let env = widgets_env();
    let out = import_widgets(
        &env,
        "actions/widgets.yaml",
        &["--all-matching", "widgets/*", "--name-prefix", "shop"],
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "wrote 4 action(s) to actions/widgets.yaml: review them, then add the file to `actions`\n"
    );
    let file = std::fs::read_to_string(env.path("actions/widgets.yaml")).unwrap();
    // Document order (paths as written, methods in the specification's order), `gadgets/create`
    // skipped although it lies between.
    assert_eq!(
        action_names(&file),
        [
            "shop.widgets_list",
            "shop.widgets_create",
            "shop.widgets_get",
            "shop.widgets_delete"
        ],
        "{file}"
    );
    let docs = documents(&file);
    assert_eq!(docs.len(), 4, "{file}");
    assert!(docs[3].starts_with("# Imported by `portcullis catalog import-openapi` from Widgets 2.0 (OpenAPI 3.1),\n# operation `widgets/delete`: DELETE /widgets/{id}.\nname: shop.widgets_delete\n"), "{}", docs[3]);
    // The hints come from the method, one document each.
    let hints: Vec<&str> = docs.iter().map(|d| line_of(d, "hints")).collect();
    assert_eq!(
        hints,
        [
            "hints: {read_only: true, destructive: false, idempotent: true}",
            "hints: {read_only: false, destructive: false, idempotent: false}",
            "hints: {read_only: true, destructive: false, idempotent: true}",
            "hints: {read_only: false, destructive: true, idempotent: true}",
        ]
    );
    assert_eq!(
        line_of(docs[3], "  url"),
        "  url: \"https://widgets.example/v2/widgets/{id}\""
    );
    assert_check_passes(&env);

    // The same bytes again, and explicit operations come first, then the matches.
    let again = import_widgets(
        &env,
        "again.yaml",
        &["--all-matching", "widgets/*", "--name-prefix", "shop"],
    );
    assert!(again.success(), "{again:?}");
    assert_eq!(std::fs::read_to_string(env.path("again.yaml")).unwrap(), file);
    let mixed = import_widgets(
        &env,
        "mixed.yaml",
        &[
            "--operation",
            "gadgets/create",
            "--all-matching",
            "widgets/[gd]*",
            "--operation",
            "widgets/get",
        ],
    );
    assert!(mixed.success(), "{mixed:?}");
    let mixed = std::fs::read_to_string(env.path("mixed.yaml")).unwrap();
    assert_eq!(
        action_names(&mixed),
        ["gadgets_create", "widgets_get", "widgets_delete"],
        "{mixed}"
    );

    // A glob that matches nothing writes nothing.
    let none = import_widgets(&env, "none.yaml", &["--all-matching", "sprockets/*"]);
    assert_eq!(none.code, Some(1), "{none:?}");
    assert!(
        none.stderr.contains("no operation id matches `sprockets/*`"),
        "{none:?}"
    );
    assert!(!env.path("none.yaml").exists());
}

#[test]
fn name_gives_an_operation_its_own_action_name() {
    let env = widgets_env();
    let out = import_widgets(
        &env,
        "actions/widgets.yaml",
        &[
            "--operation",
            "widgets/create",
            "--operation",
            "widgets/delete",
            "--name-prefix",
            "shop",
            "--name",
            "widgets/create=shop.add_widget",
        ],
    );
    assert!(out.success(), "{out:?}");
    let file = std::fs::read_to_string(env.path("actions/widgets.yaml")).unwrap();
    assert_eq!(
        action_names(&file),
        ["shop.add_widget", "shop.widgets_delete"],
        "{file}"
    );
    let docs = documents(&file);
    assert!(
        docs[0].contains("# operation `widgets/create`: POST /widgets.\nname: shop.add_widget\n"),
        "{file}"
    );
    // Without a path parameter the resource is the action itself, under its given name.
    assert_eq!(
        line_of(docs[0], "resource"),
        "resource: {type: Resource, id: shop.add_widget}"
    );
    assert_check_passes(&env);

    // Refusals say what is wrong and write nothing.
    let refused = |args: &[&str], message: &str| {
        let mut all = vec![
            "--operation",
            "widgets/create",
            "--operation",
            "widgets/delete",
            "--name-prefix",
            "shop",
        ];
        all.extend(args);
        let out = import_widgets(&env, "refused.yaml", &all);
        assert_eq!(
            out.code,
            Some(if message.starts_with("error: invalid value") {
                2
            } else {
                1
            }),
            "{out:?}"
        );
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected `{message}` in {out:?}"
        );
        assert!(!env.path("refused.yaml").exists(), "{args:?}: nothing is written");
    };
    refused(
        &["--name", "widgets/delete=remove widget"],
        "name for operation `widgets/delete`: invalid action name `remove widget`: may contain only ASCII letters, digits, `_`, `-` and `.`",
    );
    refused(
        &["--name", "widgets/remove=shop.remove_widget"],
        "unknown operation `widgets/remove`; did you mean",
    );
    refused(
        &["--name", "widgets/get=shop.get_widget"],
        "a name is given for operation `widgets/get`, which is not imported",
    );
    refused(
        &["--name", "widgets/delete=shop.widgets_create"],
        "operations `widgets/create` and `widgets/delete` would both be action `shop.widgets_create`: give one of them another name with `--name OPERATION_ID=ACTION_NAME`",
    );
    refused(
        &["--name", "widgets/delete=a", "--name", "widgets/delete=b"],
        "operation `widgets/delete` is given more than one name",
    );
    refused(
        &["--name", "shop.remove_widget"],
        "error: invalid value 'shop.remove_widget' for '--name <OPERATION_ID=ACTION_NAME>': expected OPERATION_ID=ACTION_NAME",
    );
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
