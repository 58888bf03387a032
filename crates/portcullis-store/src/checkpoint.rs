//! Signed audit checkpoints: an Ed25519 signature over the RFC 6962 Merkle root of the
//! first `tree_size` audit events ([`crate::merkle`]).
//!
//! The hash chain shows any edit, deletion or reordering, but not the newest events cut
//! off the tail: what is left is still a valid chain. A checkpoint kept outside the
//! database (`portcullis audit checkpoint export`) says how long the log was and what it
//! held; `verify_checkpoints` recomputes each checkpoint's root from the log and reports a
//! log shorter than a checkpoint, a root that doesn't match, and a bad signature.

use std::collections::BTreeMap;
use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::error::StoreError;
use crate::merkle::{self, Frontier, Hash};

/// What a checkpoint's signature covers, before the values.
const DOMAIN: &str = "portcullis-audit-checkpoint-v1";
/// Hashes read per page when walking the log.
const PAGE: i64 = 10_000;

/// A signed statement of the audit log's size and Merkle root at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// How many events it covers (sequence numbers 1 to `tree_size`).
    pub tree_size: u64,
    /// The Merkle root, lowercase hex.
    pub root: String,
    /// When it was made, RFC 3339 UTC.
    pub ts: String,
    /// The Ed25519 public key that signed it, lowercase hex.
    pub public_key: String,
    /// The signature over [`Checkpoint::message`], lowercase hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    #[must_use]
    pub fn message(tree_size: u64, root: &str, ts: &str) -> Vec<u8> {
        format!("{DOMAIN}\n{tree_size}\n{root}\n{ts}\n").into_bytes()
    }

    /// Whether the signature is valid for its public key.
    #[must_use]
    pub fn signature_valid(&self) -> bool {
        let (Ok(key), Ok(signature)) = (hex::decode(&self.public_key), hex::decode(&self.signature)) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&Self::message(self.tree_size, &self.root, &self.ts), &signature)
            .is_ok()
    }
}

/// The key checkpoints are signed with (its seed lives sealed in the secret store).
pub struct CheckpointKey(Ed25519KeyPair);

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointKey({})", self.public_key())
    }
}

impl CheckpointKey {
    /// A new random seed, hex: what is stored sealed.
    ///
    /// # Errors
    /// When the system has no randomness.
    pub fn generate_seed() -> Result<String, StoreError> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| StoreError::Encode("no randomness for a checkpoint key".to_owned()))?;
        Ok(hex::encode(seed))
    }

    /// The key for a hex seed.
    ///
    /// # Errors
    /// When the seed is not 32 bytes of hex.
    pub fn from_seed_hex(seed: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Encode("the audit checkpoint key is not a 32-byte hex seed".to_owned());
        let bytes = hex::decode(seed.trim()).map_err(|_| bad())?;
        Ed25519KeyPair::from_seed_unchecked(&bytes).map(Self).map_err(|_| bad())
    }

    /// The public key, lowercase hex.
    #[must_use]
    pub fn public_key(&self) -> String {
        hex::encode(self.0.public_key().as_ref())
    }

    /// Signs the root of a tree of `tree_size` events, now.
    #[must_use]
    pub fn sign(&self, tree_size: u64, root: &Hash) -> Checkpoint {
        let ts = portcullis_core::now_rfc3339();
        let root = hex::encode(root);
        let signature = hex::encode(self.0.sign(&Checkpoint::message(tree_size, &root, &ts)).as_ref());
        Checkpoint {
            tree_size,
            root,
            ts,
            public_key: self.public_key(),
            signature,
        }
    }
}

/// Something wrong found by checking checkpoints against the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckpointProblem {
    /// The signature doesn't verify: the checkpoint was forged or edited.
    BadSignature {
        /// The checkpoint.
        tree_size: u64,
    },
    /// Signed by a key other than the one trusted.
    UntrustedKey {
        /// The checkpoint.
        tree_size: u64,
    },
    /// The log's first `tree_size` events no longer have the signed root: events up to
    /// there were changed, or the log was rebuilt.
    RootMismatch {
        /// The checkpoint.
        tree_size: u64,
    },
    /// The checkpoint covers more events than the log holds: the tail was cut off.
    Truncated {
        /// The checkpoint.
        tree_size: u64,
        /// Events in the log.
        events: u64,
    },
    /// A checkpoint kept outside is not in the database: it was deleted there.
    Missing {
        /// The checkpoint.
        tree_size: u64,
    },
    /// The database holds a different checkpoint for the same size than the one kept
    /// outside.
    Diverged {
        /// The checkpoint.
        tree_size: u64,
    },
}

impl fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadSignature { tree_size } => {
                write!(f, "checkpoint at {tree_size} events: the signature is invalid")
            }
            Self::UntrustedKey { tree_size } => {
                write!(
                    f,
                    "checkpoint at {tree_size} events: signed by a key that is not the gateway's"
                )
            }
            Self::RootMismatch { tree_size } => write!(
                f,
                "checkpoint at {tree_size} events: the log's first {tree_size} events don't have the signed root (they were changed)"
            ),
            Self::Truncated { tree_size, events } => write!(
                f,
                "checkpoint at {tree_size} events: the log holds only {events}: events after {events} were cut off"
            ),
            Self::Missing { tree_size } => {
                write!(
                    f,
                    "checkpoint at {tree_size} events is missing from the database: it was deleted"
                )
            }
            Self::Diverged { tree_size } => write!(
                f,
                "checkpoint at {tree_size} events differs from the copy kept outside the database"
            ),
        }
    }
}

/// What `verify_checkpoints` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointReport {
    /// Checkpoints checked (stored and given).
    pub checkpoints: u64,
    /// Events in the log.
    pub events: u64,
    /// The largest checkpoint that verified, if any.
    pub verified_up_to: Option<u64>,
    /// Problems, in checkpoint order.
    pub problems: Vec<CheckpointProblem>,
}

impl CheckpointReport {
    /// No problem found.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An inclusion proof of one event in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The event's sequence number (its leaf is `seq - 1`).
    pub seq: u64,
    /// The event's chain hash (the leaf's data), hex.
    pub chain_hash: String,
    /// The audit path, nearest sibling first, hex.
    pub path: Vec<String>,
    /// The checkpoint it is proven against.
    pub checkpoint: Checkpoint,
}

impl InclusionProof {
    /// Whether the proof holds: the checkpoint's signature is valid and the path leads
    /// from the event to its root.
    #[must_use]
    pub fn valid(&self) -> bool {
        let Some(leaf) = merkle::leaf_of_chain_hash(&self.chain_hash) else {
            return false;
        };
        let path: Option<Vec<Hash>> = self
            .path
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
            .collect();
        let root: Option<Hash> = hex::decode(&self.checkpoint.root).ok().and_then(|b| b.try_into().ok());
        let (Some(path), Some(root)) = (path, root) else {
            return false;
        };
        self.seq >= 1
            && self.checkpoint.signature_valid()
            && merkle::verify_inclusion(&leaf, self.seq - 1, self.checkpoint.tree_size, &path, &root)
    }
}

impl Store {
    /// Stores a checkpoint; `false` when one of that size is already there.
    ///
    /// # Errors
    /// When the write fails.
    pub async fn add_checkpoint(&self, c: &Checkpoint) -> Result<bool, StoreError> {
        let size = i64::try_from(c.tree_size).map_err(|_| StoreError::Encode("tree size too large".to_owned()))?;
        let done = on_pool!(self, |pool| sqlx::query(
            "INSERT INTO audit_checkpoints (tree_size, root, ts, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING"
        )
        .bind(size)
        .bind(c.root.as_str())
        .bind(c.ts.as_str())
        .bind(c.public_key.as_str())
        .bind(c.signature.as_str())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .map_err(StoreError::db("storing an audit checkpoint"))?;
        Ok(done == 1)
    }

    /// Every stored checkpoint, smallest first.
    ///
    /// # Errors
    /// When the read fails.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<(i64, String, String, String, String)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT tree_size, root, ts, public_key, signature FROM audit_checkpoints ORDER BY tree_size"
        )
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db("reading audit checkpoints"))?;
        Ok(rows
            .into_iter()
            .map(|(size, root, ts, public_key, signature)| Checkpoint {
                tree_size: u64::try_from(size).unwrap_or(0),
                root,
                ts,
                public_key,
                signature,
            })
            .collect())
    }

    /// Up to `limit` `(seq, chain hash)` pairs after `after_seq`, in order.
    ///
    /// # Errors
    /// When the read fails.
    pub async fn audit_hashes(&self, after_seq: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT seq, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db("reading audit hashes"))
    }

    /// Extends `frontier` (which holds the log's first `frontier.size()` events) with the
    /// events stored since, up to `until` events in all (`None`: to the end). Stops with an
    /// error at a sequence gap or a malformed hash: a broken chain is never checkpointed.
    ///
    /// # Errors
    /// The read fails or the chain is broken.
    pub async fn extend_frontier(&self, frontier: &mut Frontier, until: Option<u64>) -> Result<(), StoreError> {
        loop {
            let after = i64::try_from(frontier.size()).unwrap_or(i64::MAX);
            let want = until.map_or(PAGE, |u| {
                i64::try_from(u.saturating_sub(frontier.size()))
                    .unwrap_or(PAGE)
                    .min(PAGE)
            });
            if want == 0 {
                return Ok(());
            }
            let rows = self.audit_hashes(after, want).await?;
            let full = i64::try_from(rows.len()).unwrap_or(0) == want;
            for (seq, hash) in rows {
                let expected = i64::try_from(frontier.size() + 1).unwrap_or(i64::MAX);
                let leaf = merkle::leaf_of_chain_hash(&hash);
                match leaf {
                    Some(leaf) if seq == expected => frontier.push(leaf),
                    _ => {
                        return Err(StoreError::corrupt(
                            "walking the audit log",
                            format!("audit event {seq}"),
                            "the chain has a gap or a malformed hash; run `portcullis audit verify`",
                        ));
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The leaf hashes of the first `size` events, for proofs.
    async fn leaves(&self, size: u64) -> Result<Vec<Hash>, StoreError> {
        let mut leaves = Vec::new();
        let mut after = 0;
        while (leaves.len() as u64) < size {
            let want = i64::try_from(size - leaves.len() as u64).unwrap_or(PAGE).min(PAGE);
            let rows = self.audit_hashes(after, want).await?;
            if rows.is_empty() {
                break;
            }
            for (seq, hash) in rows {
                after = seq;
                leaves.push(merkle::leaf_of_chain_hash(&hash).ok_or_else(|| {
                    StoreError::corrupt("proving an audit event", format!("audit event {seq}"), "malformed hash")
                })?);
            }
        }
        Ok(leaves)
    }

    /// The inclusion proof of event `seq` in the smallest stored checkpoint that covers it.
    /// `Ok(None)` when no checkpoint covers it yet.
    ///
    /// # Errors
    /// When the log can't be read or no longer matches the checkpoint.
    pub async fn prove(&self, seq: u64) -> Result<Option<InclusionProof>, StoreError> {
        let Some(checkpoint) = self.checkpoints().await?.into_iter().find(|c| c.tree_size >= seq) else {
            return Ok(None);
        };
        let leaves = self.leaves(checkpoint.tree_size).await?;
        let mismatch = || {
            StoreError::corrupt(
                "proving an audit event",
                format!("the checkpoint at {} events", checkpoint.tree_size),
                "the log no longer matches it; run `portcullis audit verify`",
            )
        };
        if leaves.len() as u64 != checkpoint.tree_size || hex::encode(merkle::root_of(&leaves)) != checkpoint.root {
            return Err(mismatch());
        }
        let index = usize::try_from(seq.saturating_sub(1)).map_err(|_| mismatch())?;
        let path = merkle::inclusion_proof(&leaves, index).ok_or_else(mismatch)?;
        let chain_hash = self
            .audit_hashes(i64::try_from(seq).unwrap_or(i64::MAX) - 1, 1)
            .await?
            .into_iter()
            .next()
            .map(|(_, h)| h)
            .ok_or_else(mismatch)?;
        Ok(Some(InclusionProof {
            seq,
            chain_hash,
            path: path.iter().map(hex::encode).collect(),
            checkpoint,
        }))
    }

    /// Checks the stored checkpoints, and `kept` (copies kept outside the database), against
    /// the log: signatures (and, given `trusted_key`, the signer), each root recomputed from
    /// the log, and the log's length against the largest checkpoint.
    ///
    /// # Errors
    /// When the store can't be read.
    pub async fn verify_checkpoints(
        &self,
        kept: &[Checkpoint],
        trusted_key: Option<&str>,
    ) -> Result<CheckpointReport, StoreError> {
        let stored = self.checkpoints().await?;
        let mut report = CheckpointReport::default();
        let mut all: BTreeMap<u64, Checkpoint> = stored.iter().map(|c| (c.tree_size, c.clone())).collect();
        let mut problems: BTreeMap<u64, Vec<CheckpointProblem>> = BTreeMap::new();
        for c in kept {
            match all.get(&c.tree_size) {
                Some(s) if s == c => {}
                Some(_) => problems
                    .entry(c.tree_size)
                    .or_default()
                    .push(CheckpointProblem::Diverged { tree_size: c.tree_size }),
                None => {
                    problems
                        .entry(c.tree_size)
                        .or_default()
                        .push(CheckpointProblem::Missing { tree_size: c.tree_size });
                    // What was kept outside is what the log is checked against.
                    all.insert(c.tree_size, c.clone());
                }
            }
        }
        // A diverging copy kept outside is checked too.
        let extra: Vec<&Checkpoint> = kept.iter().filter(|c| all.get(&c.tree_size) != Some(c)).collect();
        let checks: Vec<&Checkpoint> = all.values().chain(extra).collect();
        report.checkpoints = checks.len() as u64;
        let mut by_size: Vec<&Checkpoint> = checks.clone();
        by_size.sort_by_key(|c| c.tree_size);
        let mut frontier = Frontier::default();
        let mut broken_chain = false;
        for c in &by_size {
            let mut found = Vec::new();
            if !c.signature_valid() {
                found.push(CheckpointProblem::BadSignature { tree_size: c.tree_size });
            } else if trusted_key.is_some_and(|k| k != c.public_key) {
                found.push(CheckpointProblem::UntrustedKey { tree_size: c.tree_size });
            }
            if !broken_chain
                && frontier.size() < c.tree_size
                && self.extend_frontier(&mut frontier, Some(c.tree_size)).await.is_err()
            {
                // The chain check reports the gap itself; roots past it can't be computed.
                broken_chain = true;
            }
            // Past a gap in the chain (which the chain check reports) no root can be computed.
            let mut checked = true;
            if frontier.size() < c.tree_size {
                if broken_chain {
                    checked = false;
                } else {
                    found.push(CheckpointProblem::Truncated {
                        tree_size: c.tree_size,
                        events: frontier.size(),
                    });
                }
            } else if hex::encode(frontier.root()) != c.root {
                found.push(CheckpointProblem::RootMismatch { tree_size: c.tree_size });
            }
            if checked && found.is_empty() && !problems.contains_key(&c.tree_size) {
                report.verified_up_to = Some(c.tree_size);
            }
            problems.entry(c.tree_size).or_default().extend(found);
        }
        if !broken_chain {
            let _ = self.extend_frontier(&mut frontier, None).await;
        }
        report.events = frontier.size();
        report.problems = problems.into_values().flatten().collect();
        Ok(report)
    }

    /// Stores `value` as the sealed secret `sealed.name` unless a secret of that name
    /// exists; `false` when one did (another instance created it first).
    ///
    /// # Errors
    /// When the write fails.
    pub async fn add_secret_if_absent(&self, sealed: &portcullis_secrets::SealedSecret) -> Result<bool, StoreError> {
        let now = portcullis_core::now_rfc3339();
        let done = on_pool!(self, |pool| sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, key_version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING"
        )
        .bind(sealed.name.as_str())
        .bind(sealed.nonce.as_slice())
        .bind(sealed.ciphertext.as_slice())
        .bind(i64::from(sealed.key_version))
        .bind(now.as_str())
        .bind(now.as_str())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .map_err(StoreError::db("storing a secret"))?;
        Ok(done == 1)
    }
}
