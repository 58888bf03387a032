//! The configuration file: unknown keys, validation messages, and the checked-in schema.

// `cfg(test)` makes clippy treat the helpers as test code (unwrap allowed, as in every test).
#![cfg(test)]

use std::path::Path;

use portcullis_engine::Config;

fn errors(src: &str) -> Vec<String> {
    Config::parse(Path::new("portcullis.yaml"), src)
        .unwrap_err()
        .into_iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn unknown_keys_are_errors_with_lines() {
    let errs = errors("listen: 127.0.0.1:9000\nstroe: sqlite://x.db\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("portcullis.yaml:2:"), "{errs:?}");
    assert!(errs[0].contains("stroe"), "{errs:?}");
    let nested = errors("egress:\n  allow: []\n  proxy: http://x\n");
    assert!(
        nested[0].starts_with("portcullis.yaml:3:") && nested[0].contains("proxy"),
        "{nested:?}"
    );
}

#[test]
fn every_semantic_problem_is_listed() {
    let src = "listen: nowhere\nstore: mysql://x\nmaster_key: plain-text-key\ncredentials:\n  gh:\n    kind: header\n    secret: gh\negress:\n  allow: [\"10.1.2.3/8\"]\nactions: [\"no-such-dir/*.yaml\"]\n";
    let errs = errors(src);
    let all = errs.join("\n");
    assert_eq!(errs.len(), 6, "{all}");
    for needle in [
        "`listen` `nowhere`",
        "`store` with scheme `mysql` is not supported",
        "`master_key` must be",
        "credential `gh` of kind `header` needs `header`",
        "10.1.2.3/8",
        "matches no file",
    ] {
        assert!(all.contains(needle), "missing {needle}: {all}");
    }
    assert!(!all.contains("plain-text-key"), "a mistyped key is never echoed: {all}");
}

#[test]
fn postgres_stores_are_taken_as_is_and_env_urls_are_read() {
    let config = Config::parse(
        Path::new("portcullis.yaml"),
        "store: postgres://portcullis@db.internal:5432/gateway?sslmode=verify-full\n",
    )
    .unwrap();
    assert_eq!(
        config.store,
        "postgres://portcullis@db.internal:5432/gateway?sslmode=verify-full"
    );
    let errs = errors("store: env:PORTCULLIS_TEST_UNSET_STORE_VARIABLE\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("`store` names `env:PORTCULLIS_TEST_UNSET_STORE_VARIABLE`, which is not set"),
        "{errs:?}"
    );
    // A password in an unsupported URL is never echoed.
    let errs = errors("store: mysql://root:hunter2@db/x\n");
    assert!(!errs.join("\n").contains("hunter2"), "{errs:?}");
}

#[test]
fn quotas_are_validated() {
    let src = "quotas:\n  Bad Name:\n    actions: [x]\n    window: 1h\n    max: 1\n  frac:\n    actions: [x]\n    window: 1h\n    max: 2.5\n  weekly:\n    actions: [x]\n    window: 1w\n    max: 1\n  ptr:\n    actions: [x]\n    window: 1h\n    max: 10\n    sum: amount\n  none:\n    actions: []\n    window: 1h\n    max: 1\n";
    let all = errors(src).join("\n");
    for needle in [
        "quota name `Bad Name` must be",
        "quota `frac`: `max` counts intents, so it must be a whole number",
        "quota `weekly`: window `1w` is not like",
        "quota `ptr`: `sum` must be a JSON pointer",
        "quota `none` covers no `actions`",
    ] {
        assert!(all.contains(needle), "missing {needle}: {all}");
    }
}

#[test]
fn paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("actions")).unwrap();
    std::fs::write(dir.path().join("actions/a.yaml"), "").unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(
        &path,
        "store: sqlite://state/p.db\nmaster_key: file:keys/master\nactions: [\"actions/*.yaml\"]\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.store, format!("sqlite://{}", dir.path().join("state/p.db").display()));
    assert_eq!(
        c.master_key.unwrap(),
        format!("file:{}", dir.path().join("keys/master").display())
    );
    assert_eq!(c.action_files, vec![dir.path().join("actions/a.yaml")]);
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
}

/// The JSON Schema of the config is generated from the types and checked in at
/// `schema/portcullis.schema.json`; regenerate with
/// `cargo run -p portcullis -- check --config-schema > schema/portcullis.schema.json`.
#[test]
fn the_checked_in_config_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/portcullis.schema.json");
    let checked_in: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        checked_in,
        portcullis_engine::config::json_schema(),
        "schema/portcullis.schema.json is stale: regenerate it"
    );
}

#[test]
fn credential_sources_and_oauth2_entries_are_validated() {
    let src = r#"
credentials:
  no_source: {kind: bearer}
  bad_source: {kind: bearer, secret: "vault:no-field"}
  stray: {kind: bearer, secret: tok, token_url: "https://auth.example.com/token"}
  no_url: {kind: oauth2_client_credentials, client_id: gw, client_secret: cs}
  ftp: {kind: oauth2_client_credentials, token_url: "ftp://auth", client_id: gw, client_secret: cs}
  no_secret: {kind: oauth2_client_credentials, token_url: "https://auth.example.com/token", client_id: gw}
  both: {kind: oauth2_client_credentials, secret: x, token_url: "https://auth.example.com/token", client_id: gw, client_secret: cs}
  rt_env: {kind: oauth2_refresh_token, token_url: "https://auth.example.com/token", client_id: gw, refresh_token: "env:RT"}
  rt_missing: {kind: oauth2_refresh_token, token_url: "https://auth.example.com/token", client_id: gw}
  good_cc: {kind: oauth2_client_credentials, token_url: "https://auth.example.com/token", client_id: gw, client_secret: "vault:apps/crm#secret", scopes: [a, b]}
  good_rt: {kind: oauth2_refresh_token, token_url: "https://auth.example.com/token", client_id: gw, refresh_token: crm_refresh}
"#;
    let all = errors(src).join("\n");
    for needle in [
        "credential `no_source` of kind `bearer` needs `secret`",
        "credential `bad_source`: `vault:no-field` needs the field after `#`",
        "credential `stray`: `token_url` belongs to the OAuth2 kinds only",
        "credential `no_url` of an OAuth2 kind needs `token_url`",
        "credential `ftp`: `token_url` `ftp://auth` is not an http(s) URL",
        "credential `no_secret` of kind `oauth2_client_credentials` needs `client_secret`",
        "credential `both`: an OAuth2 credential has no `secret`",
        "credential `rt_env`: `refresh_token` names a secret in the encrypted store",
        "credential `rt_missing` of kind `oauth2_refresh_token` needs `refresh_token`",
    ] {
        assert!(all.contains(needle), "missing {needle}:\n{all}");
    }
    assert!(!all.contains("good_cc") && !all.contains("good_rt"), "{all}");
}
