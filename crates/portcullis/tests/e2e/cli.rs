//! Operator commands: `check`, `secret`, `agent`, `eval`.

use serde_json::json;

use crate::fixtures::{AGENT, standard, write_standard_files};
use crate::harness::{Env, random_secret};

const BROKEN_CONFIG: &str = r#"
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  support-bot: {groups: [support]}
credentials:
  tracker: {kind: bearer, secret: tracker_token}
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress: {allow: ["127.0.0.1/32"]}
frobnicate: true
"#;

const GOOD_ACTION: &str = r#"
name: tickets.create
description: Create a ticket
input:
  type: object
  required: [project, title]
  properties:
    project: {type: string}
    title: {type: string}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/tickets
  body: {project: "{project}", title: "{title}"}
credential: tracker
"#;

const BAD_SCHEMA: &str = r#"
name: bad.schema
description: Its input schema is not a JSON Schema
input:
  type: object
  properties:
    count: {type: integr}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/count
"#;

const BAD_PLACEHOLDER: &str = r#"
name: bad.placeholder
description: Its URL names an input field that doesn't exist
input:
  type: object
  required: [owner]
  properties:
    owner: {type: string}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/repos/{owner}/{repo}
"#;

const BAD_CREDENTIAL: &str = r#"
name: bad.credential
description: It names a credential nobody defined
input: {type: object, properties: {}}
request:
  method: GET
  url: http://127.0.0.1:UPSTREAM_PORT/x
credential: no_such_credential
"#;

const BAD_POLICY: &str = r#"
@id("looks-at-nope")
permit (principal, action == Action::"tickets.create", resource)
when { context.input.nope == "x" };

@id("unknown-action")
permit (principal, action == Action::"tickets.destroy_everything", resource);
"#;

/// Lines of `stderr` mentioning `file`, each with a `:LINE:` right after the file name.
fn lines_for<'a>(stderr: &'a str, file: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains(file))
        .inspect(|l| {
            let after = &l[l.find(file).expect("file") + file.len()..];
            let number: String = after
                .trim_start_matches(':')
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            assert!(after.starts_with(':') && !number.is_empty(), "no line number in `{l}`");
        })
        .collect()
}

fn assert_reported(stderr: &str, file: &str, needles: &[&str]) {
    let lines = lines_for(stderr, file);
    for needle in needles {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "`{needle}` is reported for {file} with a line number; stderr:\n{stderr}"
        );
    }
}

fn write_broken(env: &Env, config: &str) {
    env.write("portcullis.yaml", config);
    env.write("actions/good.yaml", GOOD_ACTION);
    env.write("actions/bad_schema.yaml", BAD_SCHEMA);
    env.write("actions/bad_placeholder.yaml", BAD_PLACEHOLDER);
    env.write("actions/bad_credential.yaml", BAD_CREDENTIAL);
    env.write("policies/bad.cedar", BAD_POLICY);
}

/// The contract (DESIGN §4): `check` exits 1 "with every error listed". Today it stops at
/// the first failing stage: an unknown config key hides every action and policy error; a
/// broken action file hides undefined credentials in the others (the cross-check runs over
/// an empty catalog) and every policy error. Run with `--ignored` once that is fixed.
#[test]
fn check_lists_every_error_of_a_broken_setup_at_once() {
    let env = Env::new();
    write_broken(&env, BROKEN_CONFIG);
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_reported(&out.stderr, "portcullis.yaml", &["frobnicate"]);
    assert_reported(&out.stderr, "bad_schema.yaml", &["bad.schema"]);
    assert_reported(&out.stderr, "bad_placeholder.yaml", &["repo"]);
    assert_reported(&out.stderr, "bad_credential.yaml", &["no_such_credential"]);
    assert_reported(&out.stderr, "bad.cedar", &["nope", "tickets.destroy_everything"]);
}

/// Every kind of error `check` finds, stage by stage (config, action files, credential
/// references, policies), each stage listing all of its errors with file and line.
#[test]
fn check_reports_each_broken_part_with_file_and_line() {
    let env = Env::new();
    write_broken(&env, BROKEN_CONFIG);
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_reported(&out.stderr, "portcullis.yaml", &["frobnicate"]);

    // Without the unknown key: the broken action files are listed together.
    let fixed_config = BROKEN_CONFIG.replace("frobnicate: true\n", "");
    env.write("portcullis.yaml", &fixed_config);
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_reported(
        &out.stderr,
        "bad_schema.yaml",
        &["bad.schema", "not a valid JSON Schema"],
    );
    assert_reported(&out.stderr, "bad_placeholder.yaml", &["{repo}", "no field `repo`"]);

    // With the catalog loading: the undefined credential.
    for f in ["bad_schema", "bad_placeholder"] {
        std::fs::remove_file(env.path(&format!("actions/{f}.yaml"))).expect("rm");
    }
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_reported(&out.stderr, "bad_credential.yaml", &["`no_such_credential`"]);

    // With the actions fixed: both broken policies are listed together.
    std::fs::remove_file(env.path("actions/bad_credential.yaml")).expect("rm");
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_reported(&out.stderr, "bad.cedar", &["nope", "tickets.destroy_everything"]);

    // And a clean setup passes.
    std::fs::remove_file(env.path("policies/bad.cedar")).expect("rm");
    env.write(
        "policies/good.cedar",
        "permit (principal, action == Action::\"tickets.create\", resource);\n",
    );
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("ok: 1 action(s)"), "{out:?}");
    env.upstream.assert_untouched("check");
}

#[test]
fn secrets_are_write_only_and_stored_encrypted() {
    let env = Env::new();
    let tracker = write_standard_files(&env);
    let value = random_secret("plaintext");
    let set = env.cli(&["secret", "set", "api_key"], Some(&format!("{value}\n")));
    assert!(set.success(), "{set:?}");
    assert!(!set.stdout.contains(&value) && !set.stderr.contains(&value), "{set:?}");

    let list = env.cli(&["secret", "list"], None);
    assert!(list.success(), "{list:?}");
    assert!(
        list.stdout.contains("api_key") && list.stdout.contains("tracker_token"),
        "{list:?}"
    );
    assert!(
        !list.stdout.contains(&value) && !list.stdout.contains(&tracker),
        "{list:?}"
    );

    // Neither value is anywhere in the store's files (the main file and its WAL).
    let mut bytes = Vec::new();
    for f in ["portcullis.db", "portcullis.db-wal", "portcullis.db-shm"] {
        if let Ok(b) = std::fs::read(env.path(f)) {
            bytes.extend(b);
        }
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains("api_key"),
        "the names are stored in the clear, so this search can find text"
    );
    assert!(!contains(&value), "the plaintext of `api_key` is in the store");
    assert!(!contains(&tracker), "the plaintext of `tracker_token` is in the store");

    // An empty value is refused, whether stdin is empty, just a newline, or closed.
    for stdin in [Some(""), Some("\n"), None] {
        let out = env.cli(&["secret", "set", "empty_one"], stdin);
        assert_ne!(out.code, Some(0), "empty secret accepted ({stdin:?}): {out:?}");
        assert!(out.stderr.contains("empty"), "{out:?}");
    }
    let list = env.cli(&["secret", "list"], None);
    assert!(!list.stdout.contains("empty_one"), "{list:?}");
}

/// Agent tokens and people's login tokens are kept only as their SHA-256: the store's files
/// never hold a token, and the row of each holds the hash of the token handed out. A token
/// is checked by hashing what is presented and looking the hash up, so no stored token is
/// ever compared with a guess (docs/adversarial-coverage.md, "How secrets are compared").
#[test]
fn agent_and_people_tokens_are_stored_only_as_their_sha256() {
    let env = Env::new();
    write_standard_files(&env);
    let config = std::fs::read_to_string(env.config()).unwrap();
    env.write(
        "portcullis.yaml",
        &format!("{config}\nadmins:\n  alice: {{role: approver, groups: [support]}}\n"),
    );
    let agent = env.add_agent(AGENT);
    let person = env.person_token("alice");
    let hashes = env.sqlite(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         for table in ('agents', 'people'):\n    \
             for (h,) in db.execute(f'SELECT token_sha256 FROM {table}'):\n        \
                 print(table, h)\n",
    );
    assert!(hashes.success(), "{hashes:?}");
    let expected = env.sqlite(&format!(
        "import hashlib\nfor t in ({agent:?}, {person:?}): print(hashlib.sha256(t.encode()).hexdigest())\n"
    ));
    let expected: Vec<&str> = expected.stdout.lines().collect();
    assert_eq!(
        hashes.stdout.lines().collect::<Vec<_>>(),
        [format!("agents {}", expected[0]), format!("people {}", expected[1])],
        "{hashes:?}"
    );

    let mut bytes = Vec::new();
    for f in ["portcullis.db", "portcullis.db-wal", "portcullis.db-shm"] {
        if let Ok(b) = std::fs::read(env.path(f)) {
            bytes.extend(b);
        }
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(expected[0]), "the search can find the stored hash");
    for (who, token) in [("the agent", &agent), ("alice", &person)] {
        assert!(!contains(token), "the token of {who} is in the store");
        assert!(
            !contains(&token.to_uppercase()),
            "the token of {who} is in the store, upper case"
        );
    }
}

#[test]
fn an_agent_token_works_until_the_agent_is_removed() {
    let s = standard();
    let token = s.env.add_agent("temp-bot");
    let r = s.gateway.get("/v1/actions", Some(&token));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"actions": []}), "no policy mentions temp-bot");
    let listed = s.env.cli(&["agent", "list"], None);
    assert!(
        listed.stdout.contains("temp-bot") && !listed.stdout.contains(&token),
        "{listed:?}"
    );

    let rm = s.env.cli(&["agent", "rm", "temp-bot"], None);
    assert!(rm.success(), "{rm:?}");
    let r = s.gateway.get("/v1/actions", Some(&token));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").is_some());
    let r = s.gateway.post_intent(
        &token,
        &json!({"action": "tickets.create", "input": {"project": "a", "title": "t"}}),
    );
    assert_eq!(r.status, 401, "{}", r.text());

    // The other agents are unaffected; removing twice is an error.
    assert_eq!(s.gateway.get("/v1/actions", Some(&s.token)).status, 200);
    let again = s.env.cli(&["agent", "rm", "temp-bot"], None);
    assert_ne!(again.code, Some(0), "{again:?}");
    s.env.upstream.assert_untouched("agent tokens");
}

#[test]
fn eval_prints_pass_and_fail_and_exits_accordingly() {
    let env = Env::new();
    write_standard_files(&env);
    let good = [
        json!({"agent": AGENT, "action": "tickets.create", "input": {"project": "website", "title": "ok"}, "expect": "allow"}),
        json!({"agent": AGENT, "action": "tickets.create", "input": {"project": "website", "title": "x", "priority": "urgent"}, "expect": "deny"}),
        json!({"agent": "other-bot", "action": "leak.bearer", "input": {}, "expect": "deny"}),
    ];
    let text: String = good.iter().map(|c| format!("{c}\n")).collect();
    env.write("cases.jsonl", &text);
    let out = env.cli(&["eval", "--cases", "cases.jsonl"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout.lines().filter(|l| l.starts_with("PASS")).count(),
        3,
        "{out:?}"
    );
    assert!(!out.stdout.contains("FAIL"), "{out:?}");
    assert!(
        out.stdout
            .contains("agents may not open urgent tickets; page a human instead"),
        "reasons are printed: {out:?}"
    );

    let wrong = json!({"agent": AGENT, "action": "tickets.create", "input": {"project": "website", "title": "x", "priority": "urgent"}, "expect": "allow"});
    env.write("cases.jsonl", &format!("{text}{wrong}\n"));
    let out = env.cli(&["eval", "--cases", "cases.jsonl"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let fails: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{out:?}");
    assert!(
        fails[0].contains("line 4"),
        "the failing case is named by line: {out:?}"
    );
    assert_eq!(
        out.stdout.lines().filter(|l| l.starts_with("PASS")).count(),
        3,
        "{out:?}"
    );
    env.upstream.assert_untouched("eval executes nothing");
}
