//! `portcullis approvals …`: a client of the running gateway's approvals API (the gateway
//! executes what is approved), plus `token`, which writes to the local store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use portcullis_exec::{Egress, EgressConfig, IpNet, OutboundRequest};

use crate::cli::{ApprovalsCmd, Remote, load_config};

pub async fn run(config: &Path, cmd: ApprovalsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCmd::Token { name } => token(config, &name).await,
        ApprovalsCmd::List { all, remote } => {
            let client = Client::new(config, remote)?;
            let path = if all {
                "/v1/approvals?state=all"
            } else {
                "/v1/approvals"
            };
            let body = client.call("GET", path, None).await?;
            let holds = body["approvals"].as_array().cloned().unwrap_or_default();
            if holds.is_empty() {
                eprintln!("no held intents");
            }
            for h in holds {
                println!(
                    "{}\t{}\t{} → {}\texpires {}\t{}",
                    text(&h["id"]),
                    text(&h["state"]),
                    text(&h["agent"]),
                    text(&h["action"]),
                    text(&h["expires_at"]),
                    h["reasons"]
                        .as_array()
                        .map(|r| r.iter().map(text).collect::<Vec<_>>().join("; "))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Show { id, remote } => {
            let client = Client::new(config, remote)?;
            let hold = client
                .call("GET", &format!("/v1/approvals/{}", segment(&id)?), None)
                .await?;
            print_hold(&hold);
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Approve {
            id,
            reason,
            sha256,
            remote,
        } => {
            let client = Client::new(config, remote)?;
            let sha = match sha256 {
                Some(s) => s,
                None => {
                    let hold = client
                        .call("GET", &format!("/v1/approvals/{}", segment(&id)?), None)
                        .await?;
                    print_hold(&hold);
                    text(&hold["payload_sha256"])
                }
            };
            let body = json!({"reason": reason, "payload_sha256": sha});
            let result = client
                .call("POST", &format!("/v1/approvals/{}/approve", segment(&id)?), Some(body))
                .await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Deny { id, reason, remote } => {
            let client = Client::new(config, remote)?;
            let hold = client
                .call("GET", &format!("/v1/approvals/{}", segment(&id)?), None)
                .await?;
            let body = json!({"reason": reason, "payload_sha256": hold["payload_sha256"]});
            let result = client
                .call("POST", &format!("/v1/approvals/{}/deny", segment(&id)?), Some(body))
                .await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn token(config: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    if !cfg.admins.contains_key(name) {
        bail!("`{name}` is not listed under `admins` in the config");
    }
    let store = portcullis_store::Store::open(&cfg.store).await?;
    let token = crate::keys::new_person_token();
    store
        .set_person_token(name, &portcullis_core::sha256_hex(token.as_bytes()))
        .await?;
    println!("{token}");
    eprintln!(
        "login token for `{name}` created; it is shown only once (any earlier token of `{name}` stopped working)"
    );
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        bail!("`{id}` is not an intent id");
    }
    Ok(id)
}

fn print_hold(h: &Value) {
    println!("intent     {}", text(&h["id"]));
    println!("state      {}", text(&h["state"]));
    println!("agent      {}", text(&h["agent"]));
    println!("action     {}", text(&h["action"]));
    if let Some(reasons) = h["reasons"].as_array() {
        for r in reasons {
            println!("reason     {}", text(r));
        }
    }
    println!(
        "needs      {} approval(s){}",
        h["required"],
        h["approver_group"]
            .as_str()
            .map(|g| format!(" from group `{g}`"))
            .unwrap_or_default()
    );
    println!("expires    {}", text(&h["expires_at"]));
    for v in h["votes"].as_array().into_iter().flatten() {
        println!(
            "vote       {} {}: {}",
            text(&v["approver"]),
            text(&v["verdict"]),
            text(&v["reason"])
        );
    }
    println!("payload    sha256 {}", text(&h["payload_sha256"]));
    println!("{}", serde_json::to_string_pretty(&h["payload"]).unwrap_or_default());
}

/// A client of the gateway's own API. It goes through the same egress client as upstream
/// calls (no redirects, no proxy, timeouts), allowed to reach any address because the
/// operator named the gateway; it sends no credential of an action, only the person's token.
struct Client {
    base: url::Url,
    token: String,
    egress: Egress,
}

impl Client {
    fn new(config: &Path, remote: Remote) -> anyhow::Result<Self> {
        let base = match remote.url {
            Some(u) => u,
            None => format!("http://{}", load_config(config)?.listen),
        };
        let base = url::Url::parse(&base).with_context(|| format!("`{base}` is not a URL"))?;
        let token = remote
            .token
            .context("set PORTCULLIS_TOKEN (or --token) to your login token")?;
        let egress = operator_egress()?;
        Ok(Self { base, token, egress })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, value) = self.send(method, path, body).await?;
        if !(200..300).contains(&status) {
            let message = value["error"]["message"].as_str().unwrap_or("request failed");
            bail!("the gateway answered {status}: {message}");
        }
        Ok(value)
    }

    /// The status and JSON body (`null` when not JSON) of one call.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let url = self.base.join(path)?;
        let mut headers = vec![(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(&format!("Bearer {}", self.token)).context("the token is not valid header text")?,
        )];
        if body.is_some() {
            headers.push((
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ));
        }
        let request = OutboundRequest {
            method: reqwest::Method::from_bytes(method.as_bytes())?,
            url,
            headers,
            body: body.map(|b| serde_json::to_vec(&b)).transpose()?,
        };
        let response = self.egress.dangerous().send(request).await?;
        let value: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        Ok((response.status, value))
    }
}

/// `portcullis reload`: `POST /v1/admin/reload`, printing what was applied or every problem.
pub async fn reload(config: &Path, remote: Remote) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, remote)?;
    let (status, body) = client.send("POST", "/v1/admin/reload", None).await?;
    if (200..300).contains(&status) {
        println!(
            "reloaded: configuration generation {}, {} action(s), {} policies",
            body["generation"], body["actions"], body["policies"]
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "reload refused ({status}): {}",
        body["error"]["message"].as_str().unwrap_or("request failed")
    );
    for problem in body["error"]["details"]["problems"].as_array().into_iter().flatten() {
        eprintln!("  {}", text(problem));
    }
    Ok(ExitCode::FAILURE)
}

/// The egress client of commands an operator runs against addresses they chose (the
/// gateway, a webhook): any address, no policy.
pub(crate) fn operator_egress() -> anyhow::Result<Egress> {
    let allow = ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .collect();
    Ok(Egress::new(EgressConfig {
        allow,
        ..EgressConfig::default()
    })?)
}
