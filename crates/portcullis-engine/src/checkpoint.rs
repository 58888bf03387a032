//! Signing audit checkpoints as the log grows (see `portcullis_store::Checkpoint`).
//!
//! The signing key's 32-byte seed is a secret in the store, sealed under the master key
//! like any credential, and created by the first instance that needs it. Each instance
//! keeps the Merkle frontier of the log in memory and extends it from the store on every
//! maintenance tick, so a checkpoint costs the new events' hashes, not the whole log.

use std::time::{Duration, Instant};

use portcullis_secrets::Keyring;
use portcullis_store::merkle::Frontier;
use portcullis_store::{Checkpoint, CheckpointKey, Store, StoreError};

use crate::config::AuditSettings;

/// Signs checkpoints for one store.
#[derive(Debug)]
pub struct Checkpointer {
    key: CheckpointKey,
    every: u64,
    interval: Duration,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug)]
struct State {
    frontier: Frontier,
    last_size: u64,
    last_at: Instant,
    /// The chain is broken: nothing more is signed until an operator looks.
    broken: bool,
}

impl Checkpointer {
    /// The checkpointer for `settings`, loading (or creating) the signing key. `Ok(None)`
    /// when checkpoints are off or there is no master key to seal the key with.
    ///
    /// # Errors
    /// When the key can't be read, opened or stored.
    pub async fn load(
        store: &Store,
        keyring: Option<&Keyring>,
        settings: &AuditSettings,
    ) -> Result<Option<Self>, String> {
        if settings.checkpoint_every == 0 {
            return Ok(None);
        }
        let Some(keyring) = keyring else {
            tracing::warn!("audit checkpoints are off: they need a `master_key` to keep their signing key");
            return Ok(None);
        };
        let key = signing_key(store, keyring, &settings.checkpoint_key).await?;
        let last_size = store
            .checkpoints()
            .await
            .map_err(|e| e.to_string())?
            .last()
            .map_or(0, |c| c.tree_size);
        Ok(Some(Self {
            key,
            every: settings.checkpoint_every,
            interval: settings.checkpoint_interval,
            state: tokio::sync::Mutex::new(State {
                frontier: Frontier::default(),
                last_size,
                last_at: Instant::now(),
                broken: false,
            }),
        }))
    }

    /// The public key checkpoints are signed with, hex.
    #[must_use]
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// Signs a checkpoint when one is due: `every` events since the last, or `interval`
    /// elapsed with new events. Skips when another tick is still running.
    pub async fn tick(&self, store: &Store) -> Option<Checkpoint> {
        let mut state = self.state.try_lock().ok()?;
        if state.broken {
            return None;
        }
        if let Err(e) = store.extend_frontier(&mut state.frontier, None).await {
            if matches!(e, StoreError::Corrupt { .. }) {
                state.broken = true;
                tracing::error!(error = %e, "audit checkpoints stopped: the log's chain is broken");
            } else {
                tracing::warn!(error = %e, "could not read the audit log for a checkpoint");
            }
            return None;
        }
        let size = state.frontier.size();
        let new = size.saturating_sub(state.last_size);
        let due = new >= self.every || (new > 0 && state.last_at.elapsed() >= self.interval);
        if !due {
            return None;
        }
        self.sign(store, &mut state).await
    }

    /// Signs a checkpoint of the whole log now.
    ///
    /// # Errors
    /// When the log can't be read (or its chain is broken) or the checkpoint stored.
    pub async fn now(&self, store: &Store) -> Result<Checkpoint, StoreError> {
        let mut state = self.state.lock().await;
        store.extend_frontier(&mut state.frontier, None).await?;
        let checkpoint = self.key.sign(state.frontier.size(), &state.frontier.root());
        if !store.add_checkpoint(&checkpoint).await? {
            // Another instance signed this size first: that one stands.
            if let Some(stored) = store
                .checkpoints()
                .await?
                .into_iter()
                .find(|c| c.tree_size == checkpoint.tree_size)
            {
                return Ok(stored);
            }
        }
        state.last_size = checkpoint.tree_size;
        state.last_at = Instant::now();
        Ok(checkpoint)
    }

    async fn sign(&self, store: &Store, state: &mut State) -> Option<Checkpoint> {
        let checkpoint = self.key.sign(state.frontier.size(), &state.frontier.root());
        match store.add_checkpoint(&checkpoint).await {
            Ok(_) => {
                state.last_size = checkpoint.tree_size;
                state.last_at = Instant::now();
                tracing::info!(tree_size = checkpoint.tree_size, root = %checkpoint.root, "audit checkpoint signed");
                Some(checkpoint)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not store an audit checkpoint");
                None
            }
        }
    }
}

/// The signing key in the secret `name`, created (sealed under the current master key)
/// when there is none yet. When two instances create it at once, both use the one stored.
async fn signing_key(store: &Store, keyring: &Keyring, name: &str) -> Result<CheckpointKey, String> {
    if store.get_secret(name).await.map_err(|e| e.to_string())?.is_none() {
        let seed = CheckpointKey::generate_seed().map_err(|e| e.to_string())?;
        let sealed = portcullis_secrets::seal(keyring.current(), name, seed.as_bytes()).map_err(|e| e.to_string())?;
        if store.add_secret_if_absent(&sealed).await.map_err(|e| e.to_string())? {
            tracing::warn!(secret = name, "created the audit checkpoint signing key");
        }
    }
    let sealed = store
        .get_secret(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the audit checkpoint key `{name}` vanished from the store"))?;
    let seed = portcullis_secrets::open(keyring, &sealed).map_err(|e| e.to_string())?;
    CheckpointKey::from_seed_hex(seed.expose_secret()).map_err(|e| format!("the secret `{name}`: {e}"))
}

/// The public key of the existing checkpoint key in the secret `name`, without creating
/// one: what `audit verify` trusts. `None` when there is no such secret.
///
/// # Errors
/// When the secret can't be read or opened.
pub async fn existing_public_key(store: &Store, keyring: &Keyring, name: &str) -> Result<Option<String>, String> {
    let Some(sealed) = store.get_secret(name).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let seed = portcullis_secrets::open(keyring, &sealed).map_err(|e| e.to_string())?;
    let key = CheckpointKey::from_seed_hex(seed.expose_secret()).map_err(|e| format!("the secret `{name}`: {e}"))?;
    Ok(Some(key.public_key()))
}

#[cfg(test)]
mod tests {
    use portcullis_core::{AgentId, AuditEvent, AuditKind, IntentId};
    use portcullis_secrets::MasterKey;

    use super::*;

    /// A checkpointer signing every `every` events or `interval`, over a fresh store.
    async fn checkpointer(every: u64, interval: Duration) -> (Store, Checkpointer) {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let keyring = Keyring::from(MasterKey::from_bytes([7; 32]));
        let settings = AuditSettings {
            checkpoint_every: every,
            checkpoint_interval: interval,
            checkpoint_key: "checkpoint-key".to_owned(),
        };
        let checkpointer = Checkpointer::load(&store, Some(&keyring), &settings)
            .await
            .unwrap()
            .unwrap();
        (store, checkpointer)
    }

    async fn append(store: &Store, n: u8) {
        for i in 0..n {
            let event = AuditEvent {
                kind: AuditKind::Decided,
                intent_id: IntentId::from_random([i; 16]),
                agent: AgentId::new("bot").unwrap(),
                actor: None,
                action: None,
                payload_sha256: None,
                decision: None,
                dry_run: false,
                detail: serde_json::Value::Null,
            };
            store.append(&event).await.unwrap();
        }
    }

    #[tokio::test]
    async fn n_events_make_a_checkpoint_without_waiting_for_the_interval() {
        let (store, checkpointer) = checkpointer(4, Duration::from_secs(3600)).await;
        append(&store, 3).await;
        assert!(
            checkpointer.tick(&store).await.is_none(),
            "3 of 4 events, the hour not up"
        );
        append(&store, 1).await;
        let checkpoint = checkpointer.tick(&store).await.expect("a checkpoint at the 4th event");
        assert_eq!(checkpoint.tree_size, 4);
        assert!(checkpointer.tick(&store).await.is_none(), "no new event since");
        append(&store, 4).await;
        assert_eq!(checkpointer.tick(&store).await.map(|c| c.tree_size), Some(8));
        assert_eq!(store.checkpoints().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_interval_makes_a_checkpoint_of_fewer_than_n_events_and_none_of_no_event() {
        let interval = Duration::from_secs(3);
        let (store, checkpointer) = checkpointer(1000, interval).await;
        append(&store, 2).await;
        assert!(
            checkpointer.tick(&store).await.is_none(),
            "2 of 1000 events, the interval not up"
        );
        tokio::time::sleep(interval).await;
        let checkpoint = checkpointer
            .tick(&store)
            .await
            .expect("a checkpoint once the interval is up");
        assert_eq!(checkpoint.tree_size, 2);
        tokio::time::sleep(interval).await;
        assert!(
            checkpointer.tick(&store).await.is_none(),
            "the interval is up, but nothing new"
        );
        assert_eq!(store.checkpoints().await.unwrap().len(), 1);
    }
}
