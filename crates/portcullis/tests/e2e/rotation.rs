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
