//! Resolving a credential entry to a secret ready for injection.

use portcullis_catalog::ActionDef;
use portcullis_exec::prepare::{Credential, Injection};
use portcullis_secrets::Keyring;
use portcullis_store::Store;

use crate::config::{CredentialKind, CredentialSpec};

/// Why a credential could not be resolved. Messages name the credential and the secret,
/// never a value.
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
}

pub(crate) async fn resolve(
    action: &ActionDef,
    specs: &std::collections::BTreeMap<String, CredentialSpec>,
    key: Option<&Keyring>,
    store: &Store,
) -> Result<Option<Credential>, CredentialError> {
    let Some(name) = &action.credential else {
        return Ok(None);
    };
    let spec = specs.get(name).ok_or_else(|| CredentialError::Unknown(name.clone()))?;
    let key = key.ok_or_else(|| CredentialError::NoMasterKey(spec.secret.clone()))?;
    let sealed = store
        .get_secret(&spec.secret)
        .await
        .map_err(|e| CredentialError::Unavailable {
            name: spec.secret.clone(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| CredentialError::MissingSecret(spec.secret.clone()))?;
    let secret = portcullis_secrets::open(key, &sealed).map_err(|e| CredentialError::Unavailable {
        name: spec.secret.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(Credential::new(
        injection(spec),
        secret,
        action.request.url.realm(),
    )))
}

fn injection(spec: &CredentialSpec) -> Injection {
    match spec.kind {
        CredentialKind::Bearer => Injection::Bearer,
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
