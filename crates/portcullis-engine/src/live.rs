//! The live gateway: the current [`Gateway`], swapped whole when the configuration is
//! reloaded, and the serving state (draining at shutdown, the store's last check) that
//! readiness reports and admission follows.
//!
//! Every request takes the current gateway once, at its start, and uses that one to the
//! end: an intent in flight during a reload finishes under the configuration it started
//! with, while the next request sees the new one.
//!
//! A new intent is admitted only while `/readyz` would pass. Admission asks nothing of the
//! store: it reads the last store check (made every second by [`Live::watch_store`] and by
//! each `/readyz`) and the audit writer's own state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

use portcullis_core::Diagnostic;

use crate::error::{IntentError, NotReady};
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
    /// Whether the last store check passed (the store answered when the gateway opened).
    store_ok: AtomicBool,
}

/// How often [`Live::watch_store`] checks the store.
const STORE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a store check may take before it counts as failed.
const STORE_CHECK_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refused while shutting down.
const SHUTTING_DOWN: NotReady = NotReady {
    check: "serving",
    reason: "shutting down",
};
/// Refused while the store doesn't answer.
const STORE_DOWN: NotReady = NotReady {
    check: "store",
    reason: "the store did not answer",
};
/// Refused while the audit log can't be written.
const AUDIT_DOWN: NotReady = NotReady {
    check: "audit",
    reason: "the audit writer stopped, or a write failed in the last 10 s",
};

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
            store_ok: AtomicBool::new(true),
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

    /// The gateway to submit a new intent to, unless a readiness check fails: shutdown has
    /// begun, the last store check failed, or the audit log can't be written (then nothing
    /// could be recorded, so nothing may start). No store round trip: see the module docs.
    ///
    /// # Errors
    /// [`IntentError::NotAccepting`] naming the failing check.
    pub fn admit(&self) -> Result<Admitted, IntentError> {
        let gateway = self.current();
        // Counted first, checked second: shutdown sets `draining` and then waits for the
        // count to reach zero, so an intent is either refused here or waited for.
        let in_flight = gateway.metrics().start_intent();
        if let Some(refusal) = self.refusal(&gateway) {
            return Err(IntentError::NotAccepting(refusal));
        }
        Ok(Admitted {
            gateway,
            _in_flight: in_flight,
        })
    }

    /// The first readiness check that fails, from what is known without asking the store.
    fn refusal(&self, gateway: &Gateway) -> Option<NotReady> {
        if self.draining() {
            Some(SHUTTING_DOWN)
        } else if !self.store_ok.load(Ordering::SeqCst) {
            Some(STORE_DOWN)
        } else if !gateway.store().audit_writable() {
            Some(AUDIT_DOWN)
        } else {
            None
        }
    }

    /// Asks the store a question (at most [`STORE_CHECK_LIMIT`]) and keeps the answer for
    /// admission; returns the error when it failed.
    pub async fn check_store(&self) -> Result<(), String> {
        let gateway = self.current();
        let answer = match tokio::time::timeout(STORE_CHECK_LIMIT, gateway.store().list_secrets()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", STORE_CHECK_LIMIT.as_secs())),
        };
        let was_ok = self.store_ok.swap(answer.is_ok(), Ordering::SeqCst);
        match (&answer, was_ok) {
            (Err(e), true) => tracing::error!(error = %e, "the store check failed: taking no new intents"),
            (Ok(()), false) => tracing::warn!("the store answers again: taking intents"),
            _ => {}
        }
        answer
    }

    /// Checks the store every second, forever, so that admission follows it. Spawn it
    /// beside the server.
    pub async fn watch_store(&self) {
        loop {
            tokio::time::sleep(STORE_CHECK_EVERY).await;
            let _ = self.check_store().await;
        }
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

    /// Runs every readiness check: not shutting down, the store answers (a fresh check,
    /// which admission then follows), the audit log can be written, the catalog and
    /// policies are loaded.
    pub async fn readiness(&self) -> Readiness {
        let gateway = self.current();
        let mut checks = Vec::with_capacity(4);
        let draining = self.draining();
        checks.push(Check {
            name: SHUTTING_DOWN.check,
            ok: !draining,
            detail: draining.then(|| SHUTTING_DOWN.reason.to_owned()),
        });
        let store = self.check_store().await;
        checks.push(Check {
            name: STORE_DOWN.check,
            ok: store.is_ok(),
            detail: store.err(),
        });
        let writable = gateway.store().audit_writable();
        checks.push(Check {
            name: AUDIT_DOWN.check,
            ok: writable,
            detail: (!writable).then(|| AUDIT_DOWN.reason.to_owned()),
        });
        // Passes by construction, and so admission doesn't look at it: a `Gateway` is built
        // only from a configuration whose catalog and policies loaded and validated (`serve`
        // exits when the first one doesn't; a reload that doesn't is refused and the gateway
        // serving stays), and it keeps them, unchanged, for its life. The check says what is
        // serving.
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
