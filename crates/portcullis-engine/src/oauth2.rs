//! OAuth2 access tokens the gateway fetches and refreshes itself: the client-credentials
//! grant and the refresh-token grant (RFC 6749 §4.4 and §6).
//!
//! A token is cached per credential until shortly before it expires, and fetched
//! single-flight: however many intents need it at once, one request goes to the token
//! endpoint. A refresh token lives encrypted in the store; when the provider rotates it,
//! the new one replaces the old in one write. Token requests go through the egress guard.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use portcullis_core::Secret;
use portcullis_exec::{Egress, OutboundRequest};

use crate::config::{ClientAuth, CredentialKind, RawCredential};
use crate::credentials::{CredentialError, SecretSource, SingleFlight, Sources};

/// Lifetime assumed when the token endpoint doesn't say (`expires_in` absent).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Refresh this long before expiry (or at 90 % of a shorter lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Which grant a credential uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `client_credentials`.
    ClientCredentials,
    /// `refresh_token`, with the refresh token in the store.
    RefreshToken,
}

/// A validated OAuth2 credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Spec {
    /// The grant.
    pub grant: Grant,
    /// The token endpoint.
    pub token_url: Url,
    /// The client id.
    pub client_id: String,
    /// Where the client secret comes from (none for a public client).
    pub client_secret: Option<SecretSource>,
    /// How the client authenticates.
    pub client_auth: ClientAuth,
    /// Scopes, space-separated in the request.
    pub scopes: Vec<String>,
    /// `audience`, if any.
    pub audience: Option<String>,
    /// `resource`, if any.
    pub resource: Option<String>,
    /// The store name of the refresh token (refresh-token grant).
    pub refresh_token: Option<String>,
}

impl OAuth2Spec {
    /// The OAuth2 part of a credential entry: `None` for the other kinds (which must not
    /// carry OAuth2 fields).
    ///
    /// # Errors
    /// What is missing or wrong, naming the credential.
    pub fn from_raw(name: &str, c: &RawCredential) -> Result<Option<Self>, String> {
        let grant = match c.kind {
            CredentialKind::Oauth2ClientCredentials => Grant::ClientCredentials,
            CredentialKind::Oauth2RefreshToken => Grant::RefreshToken,
            _ => {
                let stray = [
                    ("token_url", c.token_url.is_some()),
                    ("client_id", c.client_id.is_some()),
                    ("client_secret", c.client_secret.is_some()),
                    ("scopes", !c.scopes.is_empty()),
                    ("audience", c.audience.is_some()),
                    ("resource", c.resource.is_some()),
                    ("refresh_token", c.refresh_token.is_some()),
                ];
                if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "credential `{name}`: `{field}` belongs to the OAuth2 kinds only"
                    ));
                }
                return Ok(None);
            }
        };
        let need = |v: &Option<String>, field: &str| {
            v.clone()
                .ok_or_else(|| format!("credential `{name}` of an OAuth2 kind needs `{field}`"))
        };
        let url_text = need(&c.token_url, "token_url")?;
        let token_url = Url::parse(&url_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("credential `{name}`: `token_url` `{url_text}` is not an http(s) URL"))?;
        let client_id = need(&c.client_id, "client_id")?;
        if client_id.is_empty() || client_id.chars().any(char::is_control) {
            return Err(format!(
                "credential `{name}`: `client_id` is empty or has control characters"
            ));
        }
        let client_secret = c
            .client_secret
            .as_deref()
            .map(SecretSource::parse)
            .transpose()
            .map_err(|e| format!("credential `{name}`: `client_secret`: {e}"))?;
        if grant == Grant::ClientCredentials && client_secret.is_none() {
            return Err(format!(
                "credential `{name}` of kind `oauth2_client_credentials` needs `client_secret`"
            ));
        }
        let refresh_token = match (grant, &c.refresh_token) {
            (Grant::RefreshToken, Some(n)) => match SecretSource::parse(n) {
                Ok(SecretSource::Store(n)) => Some(n),
                _ => {
                    return Err(format!(
                        "credential `{name}`: `refresh_token` names a secret in the encrypted store (a rotated one is written back there)"
                    ));
                }
            },
            (Grant::RefreshToken, None) => {
                return Err(format!(
                    "credential `{name}` of kind `oauth2_refresh_token` needs `refresh_token`"
                ));
            }
            (Grant::ClientCredentials, Some(_)) => {
                return Err(format!(
                    "credential `{name}`: `refresh_token` belongs to kind `oauth2_refresh_token`"
                ));
            }
            (Grant::ClientCredentials, None) => None,
        };
        if c.scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return Err(format!("credential `{name}`: a scope is empty or contains whitespace"));
        }
        Ok(Some(Self {
            grant,
            token_url,
            client_id,
            client_secret,
            client_auth: c.client_auth,
            scopes: c.scopes.clone(),
            audience: c.audience.clone(),
            resource: c.resource.clone(),
            refresh_token,
        }))
    }
}

/// The token request's form body, and the `Authorization: Basic` value when the client
/// authenticates that way.
fn token_form(
    spec: &OAuth2Spec,
    refresh_token: Option<&Secret<String>>,
    client_secret: Option<&Secret<String>>,
) -> (String, Option<String>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match refresh_token {
        Some(rt) if spec.grant == Grant::RefreshToken => {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", rt.expose_secret());
        }
        _ => {
            form.append_pair("grant_type", "client_credentials");
        }
    }
    if !spec.scopes.is_empty() {
        form.append_pair("scope", &spec.scopes.join(" "));
    }
    if let Some(a) = &spec.audience {
        form.append_pair("audience", a);
    }
    if let Some(r) = &spec.resource {
        form.append_pair("resource", r);
    }
    let basic = match (spec.client_auth, client_secret) {
        (ClientAuth::Basic, Some(secret)) => {
            // RFC 6749 §2.3.1: both parts form-encoded before base64.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&spec.client_id), enc(secret.expose_secret()));
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
        (_, secret) => {
            form.append_pair("client_id", &spec.client_id);
            if let Some(s) = secret {
                form.append_pair("client_secret", s.expose_secret());
            }
            None
        }
    };
    (form.finish(), basic)
}

/// A cached access token.
#[derive(Clone)]
struct AccessToken {
    value: Secret<String>,
    refresh_at: Instant,
}

/// Fetches, caches and refreshes access tokens.
pub struct Broker {
    egress: Egress,
    tokens: SingleFlight<String, AccessToken>,
    requests: std::sync::atomic::AtomicU64,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker sending through `egress`.
    #[must_use]
    pub fn new(egress: Egress) -> Self {
        Self {
            egress,
            tokens: SingleFlight::default(),
            requests: std::sync::atomic::AtomicU64::new(0),
            metrics: None,
        }
    }

    /// This broker, counting its token requests' outcomes in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How many token requests this broker has sent.
    #[must_use]
    pub fn token_requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The access token of credential `name`, from the cache until shortly before it
    /// expires.
    pub(crate) async fn access_token(
        &self,
        name: &str,
        spec: &OAuth2Spec,
        sources: Sources<'_>,
    ) -> Result<Secret<String>, CredentialError> {
        let token = self
            .tokens
            .get_or_fetch(
                name.to_owned(),
                |t, _| Instant::now() < t.refresh_at,
                || self.fetch_counted(name, spec, sources),
            )
            .await?;
        Ok(token.value)
    }

    /// Forgets the cached token of `name` if it is `refused` (the upstream answered 401 to
    /// it), so the next use fetches a new one; a token fetched meanwhile is kept.
    pub(crate) fn invalidate(&self, name: &str, refused: &str) {
        self.tokens
            .invalidate_if(&name.to_owned(), |t| t.value.expose_secret() == refused);
    }

    async fn fetch_counted(
        &self,
        name: &str,
        spec: &OAuth2Spec,
        sources: Sources<'_>,
    ) -> Result<AccessToken, CredentialError> {
        let fetched = self.fetch(name, spec, sources).await;
        if let Some(m) = &self.metrics {
            m.oauth2_token_request(name, fetched.is_ok());
        }
        fetched
    }

    async fn fetch(&self, name: &str, spec: &OAuth2Spec, sources: Sources<'_>) -> Result<AccessToken, CredentialError> {
        let unavailable = |reason: String| CredentialError::OAuth2 {
            credential: name.to_owned(),
            reason,
        };
        let client_secret = match &spec.client_secret {
            Some(source) => Some(sources.secret(source).await?),
            None => None,
        };
        let refresh_token = match (&spec.grant, &spec.refresh_token) {
            (Grant::RefreshToken, Some(stored)) => Some(sources.secret(&SecretSource::Store(stored.clone())).await?),
            _ => None,
        };
        let (body, basic) = token_form(spec, refresh_token.as_ref(), client_secret.as_ref());
        let mut headers = vec![
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            (
                HeaderName::from_static("accept"),
                HeaderValue::from_static("application/json"),
            ),
        ];
        if let Some(basic) = basic {
            let mut v = HeaderValue::from_str(&basic)
                .map_err(|_| unavailable("the client credentials can't form a header".into()))?;
            v.set_sensitive(true);
            headers.push((HeaderName::from_static("authorization"), v));
        }
        let request = OutboundRequest {
            method: Method::POST,
            url: spec.token_url.clone(),
            headers,
            body: Some(body.into_bytes()),
        };
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let raw = self
            .egress
            .dangerous()
            .send(request)
            .await
            .map_err(|e| unavailable(format!("the token endpoint could not be reached: {e}")))?;
        let body: Value = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
        if raw.status != 200 {
            // Only the standard error code: descriptions are free text from the provider.
            let code = body
                .get("error")
                .and_then(Value::as_str)
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .unwrap_or("no error code");
            return Err(unavailable(format!(
                "the token endpoint answered HTTP {} ({code})",
                raw.status
            )));
        }
        let value = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unavailable("the token endpoint's answer has no access_token".into()))?;
        if body
            .get("token_type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(unavailable(
                "the token endpoint issued a token that is not a bearer token".into(),
            ));
        }
        // A number, or (from some providers) a number as text.
        let lifetime = body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let margin = REFRESH_MARGIN.min(lifetime / 10);
        let refresh_at = started + lifetime.saturating_sub(margin);
        if let (Grant::RefreshToken, Some(stored), Some(old), Some(new)) = (
            spec.grant,
            &spec.refresh_token,
            &refresh_token,
            body.get("refresh_token").and_then(Value::as_str),
        ) && new != old.expose_secret()
        {
            // The access token is good either way; a refresh token that could not be kept is
            // lost, and the next refresh will say so.
            if let Err(e) = self.store_refresh_token(stored, new, sources).await {
                tracing::error!(credential = %name, error = %e, "could not store a rotated OAuth2 refresh token");
            }
        }
        tracing::info!(credential = %name, expires_in = lifetime.as_secs(), "fetched an OAuth2 access token");
        Ok(AccessToken {
            value: Secret::new(value.to_owned()),
            refresh_at,
        })
    }

    /// Writes a rotated refresh token back, sealed, in one statement.
    async fn store_refresh_token(&self, stored: &str, new: &str, sources: Sources<'_>) -> Result<(), String> {
        let keyring = sources
            .keyring
            .ok_or("a rotated refresh token can't be stored without a `master_key`")?;
        let sealed = portcullis_secrets::seal(keyring.current(), stored, new.as_bytes()).map_err(|e| e.to_string())?;
        sources
            .store
            .put_secret(&sealed)
            .await
            .map_err(|e| format!("the provider rotated the refresh token, but the new one could not be stored: {e}"))?;
        tracing::info!(secret = %stored, "stored a rotated OAuth2 refresh token");
        Ok(())
    }
}
