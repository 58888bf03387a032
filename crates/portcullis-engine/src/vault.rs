//! Secrets from OpenBao or HashiCorp Vault: the KV version 2 engine, read over its HTTP API
//! with a token or an AppRole login, in a namespace if configured, cached for a TTL.
//!
//! Every request goes through the egress guard like any other outbound call (so Vault's
//! address must be public or in `egress.allow`), with no redirects. Errors name the path
//! and field, never a value, and never the token.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

use portcullis_core::Secret;
use portcullis_exec::{Egress, OutboundRequest};

use crate::credentials::{SingleFlight, ValueRef, read_value};

/// Default time a value read from Vault is used before it is read again.
pub const DEFAULT_CACHE_TTL_SECONDS: u64 = 300;

/// `vault:` in the configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// The server, e.g. `https://bao.internal:8200`.
    pub address: String,
    /// The KV version 2 mount that `vault:PATH#FIELD` secrets are read from. Default `secret`.
    #[serde(default)]
    pub mount: Option<String>,
    /// The namespace (`X-Vault-Namespace`), if any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Seconds a value is used before it is read again (so a rotation in Vault is picked up
    /// after at most this long). Default 300.
    #[serde(default)]
    pub cache_ttl_seconds: Option<u64>,
    /// How the gateway logs in.
    pub auth: RawVaultAuth,
}

/// How the gateway authenticates to Vault.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawVaultAuth {
    /// A token: `env:VAR` or `file:PATH`.
    Token(String),
    /// An AppRole login.
    Approle {
        /// The role id: `env:VAR` or `file:PATH`.
        role_id: String,
        /// The secret id: `env:VAR` or `file:PATH`.
        secret_id: String,
        /// The auth mount. Default `approle`.
        #[serde(default)]
        mount: Option<String>,
    },
}

/// The validated `vault` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSpec {
    address: Url,
    mount: String,
    namespace: Option<String>,
    ttl: Duration,
    auth: VaultAuth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum VaultAuth {
    Token(ValueRef),
    AppRole {
        role_id: ValueRef,
        secret_id: ValueRef,
        mount: String,
    },
}

impl VaultSpec {
    /// Validates the section; file paths are relative to `dir`.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn from_raw(raw: RawVault, dir: &Path) -> Result<Self, String> {
        let address = Url::parse(&raw.address)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("`vault.address` `{}` is not an http(s) URL", raw.address))?;
        let segment = |what: &str, v: &str| {
            if v.is_empty() || v.split('/').any(|s| s.is_empty() || s == "." || s == "..") || v.contains(['?', '#']) {
                Err(format!("`vault.{what}` `{v}` is not a mount path"))
            } else {
                Ok(v.to_owned())
            }
        };
        let mount = segment("mount", raw.mount.as_deref().unwrap_or("secret"))?;
        let namespace = raw
            .namespace
            .map(|n| segment("namespace", n.trim_matches('/')))
            .transpose()?;
        let ttl = Duration::from_secs(raw.cache_ttl_seconds.unwrap_or(DEFAULT_CACHE_TTL_SECONDS));
        let auth = match raw.auth {
            RawVaultAuth::Token(t) => VaultAuth::Token(ValueRef::parse("vault.auth.token", &t, dir)?),
            RawVaultAuth::Approle {
                role_id,
                secret_id,
                mount,
            } => VaultAuth::AppRole {
                role_id: ValueRef::parse("vault.auth.approle.role_id", &role_id, dir)?,
                secret_id: ValueRef::parse("vault.auth.approle.secret_id", &secret_id, dir)?,
                mount: segment("auth.approle.mount", mount.as_deref().unwrap_or("approle"))?,
            },
        };
        Ok(Self {
            address,
            mount,
            namespace,
            ttl,
            auth,
        })
    }
}

/// Why a value could not be read from Vault. Messages name the path, never a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    /// Vault refused (the token's policies don't allow reading the path).
    #[error("permission denied reading `{0}` from Vault (check the token's or role's policies)")]
    PermissionDenied(String),
    /// Nothing is stored at the path.
    #[error("no secret at `{0}` in Vault")]
    NotFound(String),
    /// The secret exists but has no such field (or it is not a string).
    #[error("the secret at `{path}` in Vault has no string field `{field}`")]
    NoField {
        /// The path read.
        path: String,
        /// The missing field.
        field: String,
    },
    /// Logging in failed.
    #[error("logging in to Vault failed: {0}")]
    Login(String),
    /// Vault could not be reached, or answered something unexpected.
    #[error("reading `{path}` from Vault failed: {reason}")]
    Unavailable {
        /// The path read.
        path: String,
        /// What happened.
        reason: String,
    },
}

/// A client token and when it stops being usable.
struct Token {
    value: Secret<String>,
    expires: Option<Instant>,
}

/// The running client: the spec, a cached login token, and cached values.
pub struct Vault {
    spec: VaultSpec,
    egress: Egress,
    token: Mutex<Option<Token>>,
    /// Values read, by `(path, field)`, with when they were read.
    cache: SingleFlight<(String, String), Secret<String>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("address", &self.spec.address.as_str())
            .field("mount", &self.spec.mount)
            .finish_non_exhaustive()
    }
}

/// Renew a login this long before its lease ends.
const LOGIN_MARGIN: Duration = Duration::from_secs(30);

impl Vault {
    /// A client for `spec`, sending through `egress`.
    #[must_use]
    pub fn new(spec: VaultSpec, egress: Egress) -> Self {
        Self {
            spec,
            egress,
            token: Mutex::new(None),
            cache: SingleFlight::default(),
        }
    }

    /// The string `field` of the KV v2 secret at `path` (relative to the mount), from the
    /// cache while it is younger than the TTL. Concurrent reads of an expired value wait for
    /// one request.
    ///
    /// # Errors
    /// [`VaultError`], naming the path.
    pub async fn read(&self, path: &str, field: &str) -> Result<Secret<String>, VaultError> {
        let key = (path.to_owned(), field.to_owned());
        let ttl = self.spec.ttl;
        self.cache
            .get_or_fetch(
                key,
                |_, at| at.elapsed() < ttl,
                || async {
                    let value = match self.read_uncached(path, field).await {
                        // A token revoked or expired early: log in again, once.
                        Err(VaultError::PermissionDenied(_)) if matches!(self.spec.auth, VaultAuth::AppRole { .. }) => {
                            *self.token.lock().await = None;
                            self.read_uncached(path, field).await?
                        }
                        other => other?,
                    };
                    Ok(value)
                },
            )
            .await
    }

    async fn read_uncached(&self, path: &str, field: &str) -> Result<Secret<String>, VaultError> {
        let shown = format!("{}/{path}", self.spec.mount);
        let unavailable = |reason: String| VaultError::Unavailable {
            path: shown.clone(),
            reason,
        };
        let token = self.token().await?;
        let url = self
            .spec
            .address
            .join(&format!("v1/{}/data/{path}", self.spec.mount))
            .map_err(|e| unavailable(e.to_string()))?;
        let response = self
            .send(Method::GET, url, Some(&token), None)
            .await
            .map_err(unavailable)?;
        match response.0 {
            200 => {}
            403 => return Err(VaultError::PermissionDenied(shown)),
            404 => return Err(VaultError::NotFound(shown)),
            status => return Err(unavailable(format!("HTTP {status}"))),
        }
        let body = response.1;
        body.pointer("/data/data")
            .and_then(|d| d.get(field))
            .and_then(Value::as_str)
            .map(|v| Secret::new(v.to_owned()))
            .ok_or_else(|| VaultError::NoField {
                path: shown,
                field: field.to_owned(),
            })
    }

    /// The client token: the configured one, or a (cached) AppRole login.
    async fn token(&self) -> Result<Secret<String>, VaultError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && t.expires.is_none_or(|e| Instant::now() + LOGIN_MARGIN < e)
        {
            return Ok(t.value.clone());
        }
        let token = match &self.spec.auth {
            VaultAuth::Token(r) => Token {
                value: read_value(r).map_err(VaultError::Login)?,
                expires: None,
            },
            VaultAuth::AppRole {
                role_id,
                secret_id,
                mount,
            } => self.login(role_id, secret_id, mount).await?,
        };
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    async fn login(&self, role_id: &ValueRef, secret_id: &ValueRef, mount: &str) -> Result<Token, VaultError> {
        let role_id = read_value(role_id).map_err(VaultError::Login)?;
        let secret_id = read_value(secret_id).map_err(VaultError::Login)?;
        let url = self
            .spec
            .address
            .join(&format!("v1/auth/{mount}/login"))
            .map_err(|e| VaultError::Login(e.to_string()))?;
        let body = json!({"role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret()});
        let (status, reply) = self
            .send(Method::POST, url, None, Some(body))
            .await
            .map_err(VaultError::Login)?;
        if status != 200 {
            return Err(VaultError::Login(format!(
                "the AppRole login at `auth/{mount}` answered HTTP {status}"
            )));
        }
        let value = reply
            .pointer("/auth/client_token")
            .and_then(Value::as_str)
            .ok_or_else(|| VaultError::Login("the login answer has no client token".to_owned()))?;
        let lease = reply
            .pointer("/auth/lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(Token {
            value: Secret::new(value.to_owned()),
            expires: (lease > 0).then(|| Instant::now() + Duration::from_secs(lease)),
        })
    }

    /// One request through the egress guard; the status and the JSON body (`null` if none).
    async fn send(
        &self,
        method: Method,
        url: Url,
        token: Option<&Secret<String>>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut headers = Vec::new();
        if let Some(t) = token {
            let mut v =
                HeaderValue::from_str(t.expose_secret()).map_err(|_| "the Vault token is not a valid header value")?;
            v.set_sensitive(true);
            headers.push((HeaderName::from_static("x-vault-token"), v));
        }
        if let Some(ns) = &self.spec.namespace {
            let v = HeaderValue::from_str(ns).map_err(|_| "the namespace is not a valid header value")?;
            headers.push((HeaderName::from_static("x-vault-namespace"), v));
        }
        let body = match body {
            Some(b) => {
                headers.push((
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                ));
                Some(serde_json::to_vec(&b).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let request = OutboundRequest {
            method,
            url,
            headers,
            body,
        };
        let raw = self.egress.dangerous().send(request).await.map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
        Ok((raw.status, value))
    }
}
