//! `portcullis secret rotate-master-key`: every stored secret re-encrypted under a new
//! master key, every secret readable throughout (mixed old and new ciphertexts are what an
//! interrupted rotation leaves), and a clear refusal when the old key is missing.

use serde_json::json;

use crate::fixtures::{AGENT, CONFIG, write_standard_files};
use crate::harness::{Env, random_secret, recorded_headers};

/// The standard config with `master_key` and `previous_master_keys` replaced.
fn config(master: &str, previous: &[&str]) -> String {
    let keys = if previous.is_empty() {
        format!("master_key: {master}")
    } else {
        format!("master_key: {master}\nprevious_master_keys: [{}]", previous.join(", "))
    };
    CONFIG.replace("master_key: file:master.key", &keys)
}

/// The bearer token the upstream received with the last ticket.
fn last_bearer(env: &Env) -> String {
    let requests = env.upstream.requests();
    let last = requests.last().expect("a request");
    recorded_headers(last, "authorization").join(",")
}

#[test]
fn rotating_the_master_key_keeps_every_secret_readable_and_finishes_under_the_new_key() {
    let env = Env::new();
    let tracker = write_standard_files(&env); // sealed by master.key
    let extra = random_secret("extra");
    env.set_secret("extra_token", &extra);
    let token = env.add_agent(AGENT);
    let ticket = json!({"action": "tickets.create", "input": {"project": "ops", "title": "Rotate"}});
    let keygen = env.cli(&["secret", "keygen"], None);
    assert!(keygen.success(), "{keygen:?}");
    env.write("new.key", &keygen.stdout);

    // Only the new key: the old secrets can't be opened. The agent learns nothing more than
    // that the credential is unavailable; the rotation refuses and changes nothing.
    env.write("portcullis.yaml", &config("file:new.key", &[]));
    let gateway = env.serve();
    let r = gateway.post_intent(&token, &ticket);
    assert_eq!(r.json()["status"], "failed", "{}", r.text());
    env.upstream.assert_untouched("no credential, no call");
    drop(gateway);
    let refused = env.cli(&["secret", "rotate-master-key"], None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("secret `tracker_token` was sealed with master key")
            && refused.stderr.contains("previous_master_keys"),
        "{refused:?}"
    );
    assert!(
        refused.stderr.contains("2 secret(s) could not be re-encrypted"),
        "{refused:?}"
    );

    // New key current, old key previous: a secret set now is sealed by the new key, the
    // others still by the old one, the state an interrupted rotation leaves. All work.
    env.write("portcullis.yaml", &config("file:new.key", &["file:master.key"]));
    let fresh = random_secret("fresh");
    env.set_secret("fresh_token", &fresh);
    let gateway = env.serve();
    let r = gateway.post_intent(&token, &ticket);
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(last_bearer(&env), format!("Bearer {tracker}"));
    drop(gateway);

    let rotated = env.cli(&["secret", "rotate-master-key"], None);
    assert!(rotated.success(), "{rotated:?}");
    // Already under the new key: `fresh_token`, and the audit checkpoint key the first
    // `serve` created.
    assert!(
        rotated.stderr.contains("re-encrypted 2 secret(s)") && rotated.stderr.contains("2 already were"),
        "{rotated:?}"
    );
    assert!(
        rotated.stderr.contains("`previous_master_keys` can be removed"),
        "{rotated:?}"
    );
    for value in [&tracker, &extra, &fresh] {
        assert!(!rotated.stderr.contains(value.as_str()) && !rotated.stdout.contains(value.as_str()));
    }
    // Running it again has nothing left to do.
    let again = env.cli(&["secret", "rotate-master-key"], None);
    assert!(again.success(), "{again:?}");
    assert!(
        again.stderr.contains("re-encrypted 0 secret(s)") && again.stderr.contains("4 already were"),
        "{again:?}"
    );

    // The old key can go: everything opens with the new one alone.
    env.write("portcullis.yaml", &config("file:new.key", &[]));
    std::fs::remove_file(env.path("master.key")).expect("remove the old key");
    let gateway = env.serve();
    let r = gateway.post_intent(&token, &ticket);
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(last_bearer(&env), format!("Bearer {tracker}"));
    let list = env.cli(&["secret", "list"], None);
    for name in ["tracker_token", "extra_token", "fresh_token"] {
        assert!(list.stdout.contains(name), "{list:?}");
    }
    drop(gateway);
}

#[test]
fn previous_master_keys_must_be_key_specs_and_need_a_master_key() {
    let env = Env::new();
    write_standard_files(&env);
    env.write(
        "portcullis.yaml",
        &CONFIG.replace(
            "master_key: file:master.key",
            "previous_master_keys: [plain-text-old-key]",
        ),
    );
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("every entry of `previous_master_keys` must be `env:VAR` or `file:PATH`"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("`previous_master_keys` needs a `master_key`"),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains("plain-text-old-key"),
        "a key is never echoed: {out:?}"
    );
}

/// Makes the store behave as if a gateway still running with the old master key stored
/// `tracker_token` (say, a rotated refresh token) under that key right after the rotation
/// re-encrypted it: a SQLite trigger puts back `row`, a ciphertext of another value sealed
/// by the old key. `once`: only the first time (the race a retry wins); otherwise after every
/// re-encryption (a gateway that keeps writing with the old key).
fn old_gateway_rewrites_tracker_token(env: &Env, row: &SealedRow, once: bool) {
    let (guard, mark) = if once {
        (
            "AND NOT EXISTS (SELECT 1 FROM race_fired)",
            "INSERT INTO race_fired VALUES (1);",
        )
    } else {
        ("", "")
    };
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS race_fired (x INTEGER);\n\
         CREATE TRIGGER old_gateway AFTER UPDATE ON secrets\n\
         WHEN NEW.name = 'tracker_token' AND NEW.key_version != {v} {guard}\n\
         BEGIN\n  {mark}\n  UPDATE secrets SET nonce = X'{n}', ciphertext = X'{c}', key_version = {v}\n  \
         WHERE name = 'tracker_token';\nEND;",
        v = row.key_version,
        n = row.nonce,
        c = row.ciphertext,
    );
    let out = env.sqlite(&format!(
        "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\ndb.executescript({sql:?})\ndb.commit()\n"
    ));
    assert!(out.success(), "{out:?}");
}

/// Overwrites the stored row of `name`, as a writer with the old key would.
fn store_row(env: &Env, name: &str, row: &SealedRow) {
    let out = env.sqlite(&format!(
        "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n\
         db.execute(\"UPDATE secrets SET nonce = X'{}', ciphertext = X'{}', key_version = {} WHERE name = ?\", ({name:?},))\n\
         db.commit()\n",
        row.nonce, row.ciphertext, row.key_version
    ));
    assert!(out.success(), "{out:?}");
}

fn stop_the_old_gateway(env: &Env) {
    let out = env.sqlite(
        "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\ndb.execute('DROP TRIGGER old_gateway')\ndb.commit()\n",
    );
    assert!(out.success(), "{out:?}");
}

/// A secret's stored row, hex-encoded.
struct SealedRow {
    nonce: String,
    ciphertext: String,
    key_version: i64,
}

fn sealed_row(env: &Env, name: &str) -> SealedRow {
    let out = env.sqlite(&format!(
        "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n\
         n, c, v = db.execute('SELECT nonce, ciphertext, key_version FROM secrets WHERE name = ?', ({name:?},)).fetchone()\n\
         print(n.hex(), c.hex(), v)\n"
    ));
    assert!(out.success(), "{out:?}");
    let parts: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "{out:?}");
    SealedRow {
        nonce: parts[0].to_owned(),
        ciphertext: parts[1].to_owned(),
        key_version: parts[2].parse().expect("a key version"),
    }
}

/// A secret stored under the old key while the rotation runs (by a gateway not yet reloaded
/// with the new keyring) is found when every key version is read again after the pass: it is
/// re-encrypted by another pass, or, when it keeps being stored under the old key, reported by
/// name, and the command does not say the old key may be removed.
#[test]
fn a_secret_stored_under_the_old_key_during_the_rotation_is_caught_and_the_old_key_kept() {
    let env = Env::new();
    let tracker = write_standard_files(&env); // sealed by master.key
    let token = env.add_agent(AGENT);
    let ticket = json!({"action": "tickets.create", "input": {"project": "ops", "title": "Race"}});
    // What the old gateway stores: a new value, sealed by the old key.
    let rotated = random_secret("rotated");
    env.set_secret("tracker_token", &rotated);
    let old_row = sealed_row(&env, "tracker_token");
    env.set_secret("tracker_token", &tracker);
    let keygen = env.cli(&["secret", "keygen"], None);
    assert!(keygen.success(), "{keygen:?}");
    env.write("new.key", &keygen.stdout);
    env.write("portcullis.yaml", &config("file:new.key", &["file:master.key"]));
    let old_id = format!("{:08x}", old_row.key_version);

    // The old gateway writes once, right after the pass re-encrypted the secret: the
    // rotation sees it under the old key again and re-encrypts the new value.
    old_gateway_rewrites_tracker_token(&env, &old_row, true);
    let rotated_once = env.cli(&["secret", "rotate-master-key"], None);
    assert!(rotated_once.success(), "{rotated_once:?}");
    assert!(
        rotated_once.stderr.contains("re-encrypted 1 secret(s)")
            && rotated_once.stderr.contains("`previous_master_keys` can be removed"),
        "{rotated_once:?}"
    );
    let row = sealed_row(&env, "tracker_token");
    assert_ne!(row.key_version, old_row.key_version, "under the new key");
    stop_the_old_gateway(&env);

    // It was right: the new key alone opens everything, and the value the old gateway
    // stored is the one used.
    env.write("portcullis.yaml", &config("file:new.key", &[]));
    let gateway = env.serve();
    let r = gateway.post_intent(&token, &ticket);
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    assert_eq!(last_bearer(&env), format!("Bearer {rotated}"));
    drop(gateway);

    // An old gateway that keeps storing under the old key (it stored it once already).
    env.write("portcullis.yaml", &config("file:new.key", &["file:master.key"]));
    store_row(&env, "tracker_token", &old_row);
    old_gateway_rewrites_tracker_token(&env, &old_row, false);
    let refused = env.cli(&["secret", "rotate-master-key"], None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "secret `tracker_token` is still sealed by master key {old_id}"
        )) && refused
            .stderr
            .contains("reload or restart every gateway with this `master_key`"),
        "{refused:?}"
    );
    assert!(
        !refused.stderr.contains("can be removed"),
        "the old key is still needed: {refused:?}"
    );
    for value in [&tracker, &rotated] {
        assert!(!refused.stderr.contains(value.as_str()) && !refused.stdout.contains(value.as_str()));
    }

    // Once that gateway runs with the new keyring, running the command again finishes.
    stop_the_old_gateway(&env);
    let finished = env.cli(&["secret", "rotate-master-key"], None);
    assert!(finished.success(), "{finished:?}");
    assert!(
        finished.stderr.contains("`previous_master_keys` can be removed"),
        "{finished:?}"
    );
}
