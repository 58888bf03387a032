//! A store written by a newer Portcullis is refused: `serve` does not start on it and
//! `migrate` does not touch it, each saying which versions it found and knows, and exiting
//! nonzero. Running an old binary on a newer schema could write rows the newer one can't
//! read as it expects (see `docs/deployment.md`, "Migrations and upgrades").

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{CONFIG, TICKETS};
use crate::harness::{Env, KillOnDrop, Output, PORTCULLIS};

/// The schema version this build knows, as `migrate` reports it.
fn known_version(env: &Env) -> i64 {
    let out = env.cli(&["migrate"], None);
    assert!(out.success(), "migrate: {out:?}");
    let version = out
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {out:?}"));
    assert!(
        out.stdout.contains(&format!("is at schema version {version}")),
        "{out:?}"
    );
    version
}

/// Runs `portcullis serve` and waits for it to exit, at most 30 s: one that starts
/// serving instead is killed and fails the test.
fn serve_until_exit(env: &Env) -> Output {
    let child = Command::new(PORTCULLIS)
        .arg("--config")
        .arg(env.config())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(env.dir.path())
        .env_remove("PORTCULLIS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis serve");
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "`serve` kept running on a store with a newer schema"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // It exited: what it wrote is in the pipes (a few lines, never enough to fill one).
    let read = |pipe: Option<&mut dyn Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            pipe.read_to_string(&mut text).expect("read a pipe");
        }
        text
    };
    Output {
        code: status.code(),
        stdout: read(child.0.stdout.as_mut().map(|p| p as &mut dyn Read)),
        stderr: read(child.0.stderr.as_mut().map(|p| p as &mut dyn Read)),
    }
}

#[test]
fn serve_and_migrate_refuse_a_store_with_a_newer_schema() {
    let env = Env::new();
    env.write("portcullis.yaml", CONFIG);
    env.write("actions/tickets.yaml", TICKETS);
    // A config `serve` would start on: the store is all that is wrong.
    env.write(
        "policies/policies.cedar",
        r#"permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource);"#,
    );
    let known = known_version(&env);
    // `serve` starts on this store as it is.
    drop(env.serve());
    let newer = known + 1;
    // What a newer build's `portcullis migrate` leaves: a higher version in the table.
    let bumped = env.sqlite(&format!(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         db.execute('UPDATE schema_version SET version = {newer}')\n\
         db.commit()\n"
    ));
    assert!(bumped.success(), "{bumped:?}");
    let expected = format!("has schema version {newer}, but this build knows only up to {known}");

    let migrate = env.cli(&["migrate"], None);
    assert_eq!(migrate.code, Some(1), "{migrate:?}");
    assert!(migrate.stderr.contains(&expected), "{migrate:?}");
    assert!(
        migrate
            .stderr
            .contains("upgrade Portcullis, or restore a backup made by this version"),
        "{migrate:?}"
    );

    let serve = serve_until_exit(&env);
    assert_eq!(serve.code, Some(1), "{serve:?}");
    assert!(serve.stderr.contains(&expected), "{serve:?}");
    assert!(!serve.stderr.contains("listening on"), "{serve:?}");

    // Neither changed the store: the version is still the newer one.
    let version = env.sqlite(
        "import sqlite3, sys\n\
         print(sqlite3.connect(sys.argv[1]).execute('SELECT MAX(version) FROM schema_version').fetchone()[0])\n",
    );
    assert_eq!(version.stdout.trim(), newer.to_string(), "{version:?}");
    env.upstream.assert_untouched("a refused store");
}
