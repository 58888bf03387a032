//! JWT agent authentication against a key set served on loopback: valid tokens map their
//! claims to the agent id, attributes and groups (and policy sees them); expired,
//! wrong-audience, wrong-issuer, unsigned and wrongly signed tokens are refused; rotated
//! keys are picked up once the cached set is stale.
//!
//! Ed25519 keys are made with the `openssl` command, which every development machine and
//! CI has.

// `cfg(test)` makes clippy treat the helpers as test code (unwrap allowed, as in every test).
#![cfg(test)]

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use portcullis_engine::{Gateway, IntentError};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "urn:portcullis";

/// An Ed25519 key pair: the private key as PEM (for signing) and the public JWK.
fn keypair(dir: &std::path::Path, kid: &str) -> (EncodingKey, Value) {
    let pem_path = dir.join(format!("{kid}.pem"));
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem_path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem_path)
        .output()
        .unwrap()
        .stdout;
    let raw = &der[der.len() - 32..];
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let private = Command::new("openssl")
        .args(["pkey", "-outform", "DER", "-in"])
        .arg(&pem_path)
        .output()
        .unwrap()
        .stdout;
    (
        EncodingKey::from_ed_der(&private),
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
    )
}

/// Serves `keys` as a JWKS on 127.0.0.1; returns its URL. Counts requests.
async fn jwks_server(keys: Arc<Mutex<Vec<Value>>>, hits: Arc<Mutex<u32>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (keys, hits) = (Arc::clone(&keys), Arc::clone(&hits));
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                *hits.lock().unwrap() += 1;
                let body = json!({"keys": *keys.lock().unwrap()}).to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/jwks")
}

const ACTION: &str = r#"
name: tickets.create
description: Create a ticket
input:
  type: object
  required: [title]
  properties:
    title: {type: string}
request:
  method: POST
  url: http://127.0.0.1:9/tickets
  body: {title: "{title}"}
"#;

const POLICY: &str = r#"
@id("support-team-files-tickets")
permit (principal in AgentGroup::"support", action == Action::"tickets.create", resource)
when { principal has team && principal.team == "helpdesk" };
"#;

struct World {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<Mutex<u32>>,
}

async fn world(first: Value) -> World {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(Mutex::new(vec![first]));
    let hits = Arc::new(Mutex::new(0));
    let jwks = jwks_server(Arc::clone(&keys), Arc::clone(&hits)).await;
    std::fs::create_dir_all(dir.path().join("actions")).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("actions/t.yaml"), ACTION).unwrap();
    std::fs::write(dir.path().join("policies/p.cedar"), POLICY).unwrap();
    let config = format!(
        "store: sqlite://state.db\nactions: [\"actions/*.yaml\"]\npolicies: [\"policies/*.cedar\"]\n\
         egress: {{allow: [\"127.0.0.1/32\"]}}\n\
         oidc:\n  issuer: {ISSUER}\n  audience: \"{AUDIENCE}\"\n  jwks_url: {jwks}\n  algorithms: [EdDSA]\n\
         \x20 jwks_cache_seconds: 1\n  leeway_seconds: 0\n  agent_claim: client_id\n\
         \x20 attributes: {{team: team}}\n  groups_claim: groups\n"
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let loaded = portcullis_engine::check(&dir.path().join("portcullis.yaml")).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::open(loaded).await.unwrap();
    World {
        _dir: dir,
        gateway,
        keys,
        hits,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "iat": now(),
        "client_id": "triage-bot", "sub": "someone-else", "team": "helpdesk", "groups": ["support"],
    })
}

fn sign(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

async fn refused(w: &World, token: &str) {
    match w.gateway.authenticate_with_claims(token).await {
        Err(IntentError::Unauthenticated) => {}
        other => panic!("accepted or wrongly refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_names_the_agent_and_carries_its_attributes_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwk) = keypair(dir.path(), "k1");
    let w = world(jwk).await;
    let token = sign(&key, "k1", &claims());
    let (agent, found) = w.gateway.authenticate_with_claims(&token).await.unwrap();
    assert_eq!(agent.as_str(), "triage-bot", "the configured claim, not `sub`");
    let found = found.unwrap();
    assert_eq!(found.attributes.get("team").map(String::as_str), Some("helpdesk"));
    assert_eq!(found.groups, ["support"]);

    // Policy sees them: the same agent is allowed with its claims, denied without.
    let action = w.gateway.loaded().catalog.get("tickets.create").unwrap().clone();
    let decide = |claims: Option<&portcullis_policy::Claims>| {
        let input = action.validate(json!({"title": "Printer"})).unwrap();
        w.gateway
            .loaded()
            .policy
            .decide_as(
                &agent,
                claims,
                &action,
                input,
                &[],
                &[],
                time::OffsetDateTime::now_utc(),
            )
            .decision()
            .effect
    };
    assert_eq!(decide(Some(&found)), portcullis_core::Effect::Allow);
    assert_eq!(decide(None), portcullis_core::Effect::Deny);
    let other_team = portcullis_policy::Claims {
        attributes: [("team".to_owned(), "sales".to_owned())].into(),
        groups: vec!["support".to_owned()],
    };
    assert_eq!(decide(Some(&other_team)), portcullis_core::Effect::Deny);
}

#[tokio::test]
async fn expired_wrong_audience_wrong_issuer_unsigned_and_wrongly_signed_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwk) = keypair(dir.path(), "k1");
    let (stranger, _) = keypair(dir.path(), "k1-stranger");
    let w = world(jwk).await;
    let with = |field: &str, value: Value| {
        let mut c = claims();
        c[field] = value;
        c
    };
    refused(&w, &sign(&key, "k1", &with("exp", json!(now() - 10)))).await;
    refused(&w, &sign(&key, "k1", &with("aud", json!("urn:someone-else")))).await;
    refused(&w, &sign(&key, "k1", &with("iss", json!("https://evil.example")))).await;
    refused(&w, &sign(&key, "k1", &with("nbf", json!(now() + 600)))).await;
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    refused(&w, &sign(&key, "k1", &no_exp)).await;
    // Signed by another key under the same key id.
    refused(&w, &sign(&stranger, "k1", &claims())).await;
    // `alg: none`, and a valid token with its signature cut off.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "kid": "k1"})), b64(&claims()));
    refused(&w, &unsigned).await;
    let valid = sign(&key, "k1", &claims());
    let cut = valid.rsplit_once('.').map(|(head, _)| format!("{head}.")).unwrap();
    refused(&w, &cut).await;
    // HS256 "signed" with the public key's bytes (algorithm confusion).
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"the public key"),
    )
    .unwrap();
    refused(&w, &hs).await;
    // A claim that is not a valid agent id.
    refused(&w, &sign(&key, "k1", &with("client_id", json!("../admin")))).await;
    // And the untouched token still works.
    assert!(w.gateway.authenticate_with_claims(&valid).await.is_ok());
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_unknown_key_ids_do_not_flood_the_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let (old, old_jwk) = keypair(dir.path(), "k1");
    let (new, new_jwk) = keypair(dir.path(), "k2");
    let w = world(old_jwk).await;
    assert!(
        w.gateway
            .authenticate_with_claims(&sign(&old, "k1", &claims()))
            .await
            .is_ok()
    );
    // Made-up key ids, many times, right after a fetch: at most one more request.
    let before = *w.hits.lock().unwrap();
    for i in 0..20 {
        refused(&w, &sign(&old, &format!("bogus-{i}"), &claims())).await;
    }
    assert!(
        *w.hits.lock().unwrap() <= before + 1,
        "the key set was fetched for every unknown key id"
    );
    // The issuer rotates to k2: once the cached set is stale (1 s here), k2 tokens work.
    *w.keys.lock().unwrap() = vec![new_jwk];
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        w.gateway
            .authenticate_with_claims(&sign(&new, "k2", &claims()))
            .await
            .is_ok()
    );
    refused(&w, &sign(&old, "k1", &claims())).await;
    // Static tokens still work beside JWTs (none is registered here, so this one fails as
    // an unknown static token, not as a JWT).
    refused(&w, "pcl_not-a-registered-token").await;
}
