//! The live gateway: the current [`Gateway`], swapped whole when the configuration is
//! reloaded, and the serving state (draining at shutdown) that readiness reports.
//!
//! Every request takes the current gateway once, at its start, and uses that one to the
//! end: an intent in flight during a reload finishes under the configuration it started
//! with, while the next request sees the new one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

use portcullis_core::Diagnostic;

use crate::error::IntentError;
use crate::gateway::Gateway;

/// The current gateway and the process's serving state.
#[derive(Debug)]
pub struct Live {
    current: RwLock<Arc<Gateway>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    generation: AtomicU64,
    on_reload: std::sync::OnceLock<ReloadHook>,
}

/// Called with the new gateway after each applied reload.
struct ReloadHook(Box<dyn Fn(&Gateway) + Send + Sync>);

impl std::fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadHook")
    }
}

/// A new intent's gateway, counted as in flight until dropped.
#[derive(Debug)]
pub struct Admitted {
    /// The gateway to submit it to.
    pub gateway: Arc<Gateway>,
    _in_flight: crate::metrics::InFlight,
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    /// Counts applied configurations: 1 at start, then one more per applied reload.
    pub generation: u64,
    /// Actions in the new catalog.
    pub actions: usize,
    /// Policies in the new policy set.
    pub policies: usize,
}

/// Why a reload was refused; the old configuration keeps serving.
#[derive(Debug, Clone)]
pub struct ReloadRefused(pub Vec<Diagnostic>);

impl std::fmt::Display for ReloadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the new configuration was refused; the old one keeps serving")?;
        for d in &self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReloadRefused {}

/// One check of `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Why not, or what was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Every check passed.
    pub ready: bool,
    /// Each check.
    pub checks: Vec<Check>,
    /// The configuration generation serving.
    pub generation: u64,
}

impl Live {
    /// Serves `gateway` until a reload replaces it.
    #[must_use]
    pub fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(gateway),
            reloading: tokio::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            on_reload: std::sync::OnceLock::new(),
        })
    }

    /// Runs `hook` with the new gateway after every applied reload (once set, it stays).
    /// The binary uses it to give its log and trace redaction the new detection rules.
    pub fn on_reload(&self, hook: impl Fn(&Gateway) + Send + Sync + 'static) {
        let _ = self.on_reload.set(ReloadHook(Box::new(hook)));
    }

    /// The gateway serving now. Hold on to it for the whole request.
    #[must_use]
    pub fn current(&self) -> Arc<Gateway> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configuration generation serving now.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Re-reads the configuration file, catalog and policies the current gateway was
    /// started from and, when they are valid, serves them from the next request on.
    ///
    /// # Errors
    /// [`ReloadRefused`] with every problem found; nothing changes then.
    pub async fn reload(&self) -> Result<Reloaded, ReloadRefused> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.current();
        let path = PathBuf::from(&current.loaded().config.path);
        let outcome = match crate::load::check(&path) {
            Err(problems) => Err(ReloadRefused(problems)),
            Ok(loaded) => current.successor(loaded).await.map_err(|e| ReloadRefused(e.0)),
        };
        current.metrics().reload(outcome.is_ok());
        match outcome {
            Ok(next) => {
                let reloaded = Reloaded {
                    generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
                    actions: next.loaded().catalog.len(),
                    policies: next.loaded().policy.policy_count(),
                };
                let next = Arc::new(next);
                if let Some(hook) = self.on_reload.get() {
                    (hook.0)(&next);
                }
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
                tracing::warn!(
                    generation = reloaded.generation,
                    actions = reloaded.actions,
                    policies = reloaded.policies,
                    "configuration reloaded"
                );
                Ok(reloaded)
            }
            Err(refused) => {
                for problem in &refused.0 {
                    tracing::error!(%problem, "reload refused");
                }
                tracing::error!("configuration reload refused: the previous configuration keeps serving");
                Err(refused)
            }
        }
    }

    /// Stops taking intents (shutdown has begun): `/readyz` says so, and new intents are
    /// refused with 503 while those in flight finish.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The gateway to submit a new intent to, unless shutdown has begun or the audit
    /// writer has stopped (then nothing could be recorded, so nothing may start).
    ///
    /// # Errors
    /// [`IntentError::NotAccepting`].
    pub fn admit(&self) -> Result<Admitted, IntentError> {
        let gateway = self.current();
        // Counted first, checked second: shutdown sets `draining` and then waits for the
        // count to reach zero, so an intent is either refused here or waited for.
        let in_flight = gateway.metrics().start_intent();
        if self.draining() {
            return Err(IntentError::NotAccepting("shutting down"));
        }
        if !gateway.store().audit_writer_running() {
            return Err(IntentError::NotAccepting("the audit writer stopped"));
        }
        Ok(Admitted {
            gateway,
            _in_flight: in_flight,
        })
    }

    /// Waits until no intent is in flight, at most `limit`; returns how many still are.
    pub async fn settle(&self, limit: std::time::Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        let metrics = Arc::clone(self.current().metrics());
        loop {
            let running = metrics.in_flight();
            if running == 0 || tokio::time::Instant::now() >= deadline {
                return running;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Runs every readiness check: not shutting down, the store answers, the audit log
    /// can be written, the catalog and policies are loaded.
    pub async fn readiness(&self) -> Readiness {
        let gateway = self.current();
        let mut checks = Vec::with_capacity(4);
        let draining = self.draining();
        checks.push(Check {
            name: "serving",
            ok: !draining,
            detail: draining.then(|| "shutting down".to_owned()),
        });
        let store = gateway.store().list_secrets().await;
        checks.push(Check {
            name: "store",
            ok: store.is_ok(),
            detail: store.err().map(|e| e.to_string()),
        });
        let writable = gateway.store().audit_writable();
        checks.push(Check {
            name: "audit",
            ok: writable,
            detail: (!writable).then(|| "the audit writer stopped, or a write failed in the last 10 s".to_owned()),
        });
        // A gateway exists only once its catalog and policies loaded and validated; the
        // check names what is serving.
        let loaded = gateway.loaded();
        checks.push(Check {
            name: "policies",
            ok: true,
            detail: Some(format!(
                "{} action(s), {} policies",
                loaded.catalog.len(),
                loaded.policy.policy_count()
            )),
        });
        Readiness {
            ready: checks.iter().all(|c| c.ok),
            checks,
            generation: self.generation(),
        }
    }
}
