//! Resolving a credential entry to a secret ready for injection: from the encrypted store,
//! an environment variable (development), OpenBao/Vault, or an OAuth2 token endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use portcullis_catalog::ActionDef;
use portcullis_core::Secret;
use portcullis_exec::prepare::{Credential, Injection};
use portcullis_secrets::Keyring;
use portcullis_store::Store;

use crate::config::{CredentialKind, CredentialSpec};
use crate::oauth2::Broker;
use crate::vault::Vault;

/// Why a credential could not be resolved. Messages name the credential and where its
/// secret lives, never a value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialError {
    #[error("credential `{0}` is not configured")]
    Unknown(String),
    #[error("no master key is configured, so secret `{0}` can't be decrypted")]
    NoMasterKey(String),
    #[error("secret `{0}` is not in the store (set it with `portcullis secret set {0}`)")]
    MissingSecret(String),
    #[error("secret `{name}` is unavailable: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("the OAuth2 token of credential `{credential}` is unavailable: {reason}")]
    OAuth2 { credential: String, reason: String },
    #[error("no `vault` section is configured, so `{0}` can't be read")]
    NoVault(String),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
}

/// Where a secret comes from, as written in `credentials.NAME.secret` (and `client_secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The encrypted store: `NAME` or `store:NAME`.
    Store(String),
    /// An environment variable: `env:VAR`. For development; `serve` warns about it.
    Env(String),
    /// OpenBao/Vault KV v2: `vault:PATH#FIELD`, `PATH` relative to `vault.mount`.
    Vault {
        /// The secret's path under the mount.
        path: String,
        /// The field of the secret's data.
        field: String,
    },
}

impl SecretSource {
    /// Parses `NAME`, `store:NAME`, `env:VAR` or `vault:PATH#FIELD`.
    ///
    /// # Errors
    /// What is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let name_ok = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if let Some(var) = text.strip_prefix("env:") {
            return if name_ok(var) {
                Ok(Self::Env(var.to_owned()))
            } else {
                Err(format!("`env:{var}` does not name an environment variable"))
            };
        }
        if let Some(rest) = text.strip_prefix("vault:") {
            let (path, field) = rest
                .split_once('#')
                .ok_or_else(|| format!("`vault:{rest}` needs the field after `#`, as in `vault:PATH#FIELD`"))?;
            let path_ok = !path.is_empty() && path.split('/').all(|s| name_ok(s) && s != "." && s != "..");
            if !path_ok || field.is_empty() || field.contains(['#', '/']) {
                return Err(format!("`vault:{rest}` is not like `vault:PATH#FIELD`"));
            }
            return Ok(Self::Vault {
                path: path.to_owned(),
                field: field.to_owned(),
            });
        }
        let name = text.strip_prefix("store:").unwrap_or(text);
        if name_ok(name) {
            Ok(Self::Store(name.to_owned()))
        } else {
            Err(format!(
                "secret `{text}` is not a store name, `env:VAR` or `vault:PATH#FIELD`"
            ))
        }
    }

    /// How it is shown in messages: where it lives, never a value.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Store(n) => n.clone(),
            Self::Env(v) => format!("env:{v}"),
            Self::Vault { path, field } => format!("vault:{path}#{field}"),
        }
    }
}

/// A value read from the environment or a file (`env:VAR` or `file:PATH`), such as Vault's
/// token or AppRole ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueRef {
    /// `env:VAR`.
    Env(String),
    /// `file:PATH`, resolved against the config's directory.
    File(PathBuf),
}

impl ValueRef {
    /// Parses `env:VAR` or `file:PATH` (relative to `dir`) for the config field `what`.
    ///
    /// # Errors
    /// When it is neither.
    pub fn parse(what: &str, text: &str, dir: &Path) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("env", var)) if !var.is_empty() => Ok(Self::Env(var.to_owned())),
            Some(("file", path)) if !path.is_empty() => Ok(Self::File(dir.join(path))),
            _ => Err(format!("`{what}` must be `env:VAR` or `file:PATH`")),
        }
    }
}

/// Reads a [`ValueRef`]: the variable, or the file's text without surrounding whitespace.
///
/// # Errors
/// Naming the variable or file, never the value.
pub fn read_value(r: &ValueRef) -> Result<Secret<String>, String> {
    let text = match r {
        ValueRef::Env(var) => std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))?,
        ValueRef::File(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        }
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(match r {
            ValueRef::Env(var) => format!("environment variable `{var}` is empty"),
            ValueRef::File(path) => format!("`{}` is empty", path.display()),
        });
    }
    Ok(Secret::new(trimmed.to_owned()))
}

/// Values fetched at most once at a time per key, and reused while `fresh` says so: many
/// concurrent callers of an expired value cause one fetch, and the others get its result.
pub(crate) struct SingleFlight<K, V> {
    values: Mutex<HashMap<K, (V, Instant)>>,
    gates: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            values: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// The value for `key` if one is stored and `fresh(value, fetched_at)`; otherwise the
    /// result of `fetch`, stored when it succeeds.
    pub(crate) async fn get_or_fetch<E, Fut>(
        &self,
        key: K,
        fresh: impl Fn(&V, Instant) -> bool,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.fresh(&key, &fresh) {
            return Ok(v);
        }
        let gate = Arc::clone(
            self.gates
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.clone())
                .or_default(),
        );
        let _turn = gate.lock().await;
        // Whoever held the gate before may have fetched it.
        if let Some(v) = self.fresh(&key, &fresh) {
            return Ok(v);
        }
        let value = fetch().await?;
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (value.clone(), Instant::now()));
        Ok(value)
    }

    /// Forgets the value for `key` if `stale` says it is the one to forget (and not one
    /// fetched meanwhile), so the next caller fetches.
    pub(crate) fn invalidate_if(&self, key: &K, stale: impl Fn(&V) -> bool) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        if values.get(key).is_some_and(|(v, _)| stale(v)) {
            values.remove(key);
        }
    }

    fn fresh(&self, key: &K, fresh: &impl Fn(&V, Instant) -> bool) -> Option<V> {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values.get(key).filter(|(v, at)| fresh(v, *at)).map(|(v, _)| v.clone())
    }
}

/// Everything secrets come from.
#[derive(Clone, Copy)]
pub(crate) struct Sources<'a> {
    pub store: &'a Store,
    pub keyring: Option<&'a Keyring>,
    pub vault: Option<&'a Vault>,
    pub broker: &'a Broker,
}

impl Sources<'_> {
    /// The secret at `source`.
    pub(crate) async fn secret(&self, source: &SecretSource) -> Result<Secret<String>, CredentialError> {
        match source {
            SecretSource::Store(name) => {
                let keyring = self.keyring.ok_or_else(|| CredentialError::NoMasterKey(name.clone()))?;
                let sealed = self
                    .store
                    .get_secret(name)
                    .await
                    .map_err(|e| CredentialError::Unavailable {
                        name: name.clone(),
                        reason: e.to_string(),
                    })?
                    .ok_or_else(|| CredentialError::MissingSecret(name.clone()))?;
                portcullis_secrets::open(keyring, &sealed).map_err(|e| CredentialError::Unavailable {
                    name: name.clone(),
                    reason: e.to_string(),
                })
            }
            SecretSource::Env(var) => {
                read_value(&ValueRef::Env(var.clone())).map_err(|reason| CredentialError::Unavailable {
                    name: source.describe(),
                    reason,
                })
            }
            SecretSource::Vault { path, field } => {
                let vault = self.vault.ok_or_else(|| CredentialError::NoVault(source.describe()))?;
                Ok(vault.read(path, field).await?)
            }
        }
    }
}

/// The action's credential, resolved: `None` when the action has none.
pub(crate) async fn resolve(
    action: &ActionDef,
    specs: &std::collections::BTreeMap<String, CredentialSpec>,
    sources: Sources<'_>,
) -> Result<Option<Credential>, CredentialError> {
    let Some(name) = &action.credential else {
        return Ok(None);
    };
    let spec = specs.get(name).ok_or_else(|| CredentialError::Unknown(name.clone()))?;
    let secret = match (&spec.oauth2, &spec.secret) {
        (Some(oauth2), _) => sources.broker.access_token(name, oauth2, sources).await?,
        (None, Some(source)) => sources.secret(source).await?,
        (None, None) => return Err(CredentialError::Unknown(name.clone())),
    };
    Ok(Some(Credential::new(injection(spec), secret, action.realm())))
}

fn injection(spec: &CredentialSpec) -> Injection {
    match spec.kind {
        CredentialKind::Bearer | CredentialKind::Oauth2ClientCredentials | CredentialKind::Oauth2RefreshToken => {
            Injection::Bearer
        }
        CredentialKind::Basic => Injection::Basic {
            username: spec.username.clone().unwrap_or_default(),
        },
        CredentialKind::Header => Injection::Header {
            name: spec.header.clone().unwrap_or_default(),
            prefix: spec.prefix.clone(),
        },
        CredentialKind::Query => Injection::Query {
            param: spec.param.clone().unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_in_every_form_and_refuse_the_rest() {
        assert_eq!(
            SecretSource::parse("github_token"),
            Ok(SecretSource::Store("github_token".into()))
        );
        assert_eq!(
            SecretSource::parse("store:github_token"),
            Ok(SecretSource::Store("github_token".into()))
        );
        assert_eq!(
            SecretSource::parse("env:GITHUB_TOKEN"),
            Ok(SecretSource::Env("GITHUB_TOKEN".into()))
        );
        assert_eq!(
            SecretSource::parse("vault:teams/ops/github#token"),
            Ok(SecretSource::Vault {
                path: "teams/ops/github".into(),
                field: "token".into()
            })
        );
        for bad in [
            "",
            "env:",
            "vault:github",
            "vault:#token",
            "vault:a/../b#t",
            "vault:a//b#t",
            "a b",
            "store:",
        ] {
            assert!(SecretSource::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[tokio::test]
    async fn concurrent_callers_of_a_stale_value_cause_one_fetch() {
        let flight: Arc<SingleFlight<&str, u32>> = Arc::default();
        let fetches = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let (flight, fetches) = (Arc::clone(&flight), Arc::clone(&fetches));
                tokio::spawn(async move {
                    flight
                        .get_or_fetch(
                            "token",
                            |_, _| true,
                            || async {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                Ok::<_, ()>(fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
                            },
                        )
                        .await
                })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.ok().and_then(Result::ok), Some(1));
        }
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        flight.invalidate_if(&"token", |v| *v == 7);
        let kept = flight
            .get_or_fetch("token", |_, _| true, || async { Ok::<_, ()>(3) })
            .await;
        assert_eq!(kept, Ok(1), "only the value named stale is forgotten");
        flight.invalidate_if(&"token", |v| *v == 1);
        let again = flight
            .get_or_fetch("token", |_, _| true, || async { Ok::<_, ()>(2) })
            .await;
        assert_eq!(again, Ok(2));
    }
}
