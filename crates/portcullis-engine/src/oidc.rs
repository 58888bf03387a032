//! Agents authenticated by JWTs from an OpenID Connect issuer, instead of static tokens.
//!
//! A bearer token that looks like a JWT is verified against the issuer's JWKS: the
//! signature (with an algorithm from the configured list; `none` and HMAC are never
//! accepted), `exp` (required), `nbf`, `iss` and `aud`. The agent id is a claim (`sub` by
//! default); configured claims become string attributes of the agent and a list claim its
//! groups, for policy. Keys are cached and fetched again when a token names a key id the
//! cache doesn't have (at most once per [`REFETCH_AFTER`]), so rotated keys are picked up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use url::Url;

use portcullis_core::AgentId;
use portcullis_exec::{Egress, OutboundRequest};
use portcullis_policy::Claims;

/// How long fetched keys are used before they are fetched again anyway.
pub const DEFAULT_JWKS_CACHE_SECONDS: u64 = 300;
/// An unknown key id fetches the keys again at most this often (a flood of tokens with
/// made-up key ids can't turn into a flood of requests to the issuer).
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// The largest token accepted.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `oidc:` in the configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// The issuer: the exact `iss` of accepted tokens.
    pub issuer: String,
    /// The audience: accepted tokens have it in `aud`.
    pub audience: String,
    /// Where the issuer publishes its signing keys (JWKS).
    pub jwks_url: String,
    /// The claim holding the agent id. Default `sub`.
    #[serde(default)]
    pub agent_claim: Option<String>,
    /// Agent attributes for policy, by name → the claim they come from (string claims).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// A claim holding a list of group names (`principal in AgentGroup::"…"`).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Accepted signature algorithms. Default `[RS256, ES256]`. HMAC and `none` are refused.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Seconds fetched keys are used. Default 300.
    #[serde(default)]
    pub jwks_cache_seconds: Option<u64>,
    /// Allowed clock skew in seconds for `exp` and `nbf`. Default 30.
    #[serde(default)]
    pub leeway_seconds: Option<u64>,
}

/// The validated `oidc` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSpec {
    issuer: String,
    audience: String,
    jwks_url: Url,
    agent_claim: String,
    attributes: BTreeMap<String, String>,
    groups_claim: Option<String>,
    algorithms: Vec<Algorithm>,
    cache: Duration,
    leeway: u64,
}

impl OidcSpec {
    /// Validates the section.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn from_raw(raw: RawOidc) -> Result<Self, String> {
        let jwks_url = Url::parse(&raw.jwks_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("`oidc.jwks_url` `{}` is not an http(s) URL", raw.jwks_url))?;
        if raw.issuer.is_empty() || raw.audience.is_empty() {
            return Err("`oidc.issuer` and `oidc.audience` can't be empty".to_owned());
        }
        let names = if raw.algorithms.is_empty() {
            vec!["RS256".to_owned(), "ES256".to_owned()]
        } else {
            raw.algorithms
        };
        let mut algorithms = Vec::new();
        for name in &names {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| format!("`oidc.algorithms`: `{name}` is not a JWS algorithm"))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(format!(
                    "`oidc.algorithms`: `{name}` is a shared-secret algorithm; only public-key signatures are accepted"
                ));
            }
            algorithms.push(alg);
        }
        for name in raw.attributes.keys() {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("`oidc.attributes`: `{name}` is not an attribute name"));
            }
        }
        Ok(Self {
            issuer: raw.issuer,
            audience: raw.audience,
            jwks_url,
            agent_claim: raw.agent_claim.unwrap_or_else(|| "sub".to_owned()),
            attributes: raw.attributes,
            groups_claim: raw.groups_claim,
            algorithms,
            cache: Duration::from_secs(raw.jwks_cache_seconds.unwrap_or(DEFAULT_JWKS_CACHE_SECONDS)),
            leeway: raw.leeway_seconds.unwrap_or(30),
        })
    }

    /// The agent attributes claims may set, for the policy schema.
    #[must_use]
    pub fn attribute_names(&self) -> Vec<String> {
        self.attributes.keys().cloned().collect()
    }
}

/// Whether a bearer token has the shape of a JWT (three base64url parts).
#[must_use]
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_TOKEN_BYTES
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Fetched keys and when.
struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// The verifier: the spec and the cached keys.
pub struct Oidc {
    spec: OidcSpec,
    egress: Egress,
    keys: Mutex<Option<Keys>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.spec.issuer)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// A verifier fetching keys through `egress`.
    #[must_use]
    pub fn new(spec: OidcSpec, egress: Egress) -> Self {
        Self {
            spec,
            egress,
            keys: Mutex::new(None),
        }
    }

    /// The agent a JWT belongs to, with what its claims say about it.
    ///
    /// # Errors
    /// Why the token is refused (for the log; the agent is told only that it is refused).
    pub async fn verify(&self, token: &str) -> Result<(AgentId, Claims), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a valid JWT: {e}"))?;
        if !self.spec.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.spec.issuer]);
        validation.set_audience(&[&self.spec.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.spec.leeway;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| format!("refused: {e}"))?;
        let claims = data.claims;
        let id = claims
            .get(&self.spec.agent_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the token has no string claim `{}`", self.spec.agent_claim))?;
        let agent = AgentId::new(id.to_owned()).map_err(|e| format!("claim `{}`: {e}", self.spec.agent_claim))?;
        let attributes = self
            .spec
            .attributes
            .iter()
            .filter_map(|(name, claim)| {
                let v = claims.get(claim)?.as_str()?;
                (!v.chars().any(char::is_control)).then(|| (name.clone(), v.to_owned()))
            })
            .collect();
        let groups = self
            .spec
            .groups_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .filter(|g| !g.is_empty() && !g.chars().any(char::is_control))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok((agent, Claims { attributes, groups }))
    }

    /// The decoding key for `kid`: from the cache, or from a fresh fetch when the cache is
    /// old or doesn't know the key (rate-limited).
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, String> {
        let mut keys = self.keys.lock().await;
        let find = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(k) => set.find(k)?,
                // Without a key id, only an unambiguous set will do.
                None if set.keys.len() == 1 => set.keys.first()?,
                None => return None,
            };
            DecodingKey::from_jwk(jwk).ok()
        };
        if let Some(cached) = keys.as_ref() {
            let age = cached.fetched.elapsed();
            if age < self.spec.cache {
                if let Some(k) = find(&cached.set) {
                    return Ok(k);
                }
                // An unknown key id fetches the set again, but not more often than this.
                if age < REFETCH_AFTER.min(self.spec.cache) {
                    return Err(format!("no key {kid:?} for {alg:?} in the issuer's key set"));
                }
            }
        }
        let set = self.fetch().await?;
        let found = find(&set);
        *keys = Some(Keys {
            set,
            fetched: Instant::now(),
        });
        found.ok_or_else(|| format!("no key {kid:?} for {alg:?} in the issuer's key set"))
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let request = OutboundRequest {
            method: Method::GET,
            url: self.spec.jwks_url.clone(),
            headers: vec![(
                HeaderName::from_static("accept"),
                HeaderValue::from_static("application/json"),
            )],
            body: None,
        };
        let raw = self
            .egress
            .dangerous()
            .send(request)
            .await
            .map_err(|e| format!("the issuer's keys could not be fetched: {e}"))?;
        if raw.status != 200 {
            return Err(format!("the issuer's key set answered HTTP {}", raw.status));
        }
        serde_json::from_slice(&raw.body).map_err(|e| format!("the issuer's key set is not a JWKS: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jwt_shaped_tokens_take_the_jwt_path() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("pcl_abcdef0123456789"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a b.c.d"));
    }

    #[test]
    fn shared_secret_and_unknown_algorithms_are_refused_in_config() {
        let raw = |algs: &[&str]| RawOidc {
            issuer: "https://idp.example.com".into(),
            audience: "portcullis".into(),
            jwks_url: "https://idp.example.com/jwks".into(),
            agent_claim: None,
            attributes: BTreeMap::new(),
            groups_claim: None,
            algorithms: algs.iter().map(|a| (*a).to_owned()).collect(),
            jwks_cache_seconds: None,
            leeway_seconds: None,
        };
        assert!(OidcSpec::from_raw(raw(&[])).is_ok());
        assert!(OidcSpec::from_raw(raw(&["HS256"])).is_err());
        assert!(OidcSpec::from_raw(raw(&["none"])).is_err());
        assert!(OidcSpec::from_raw(raw(&["EdDSA", "PS256"])).is_ok());
    }
}
