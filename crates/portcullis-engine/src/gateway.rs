//! The gateway: one function per pipeline stage, and [`Gateway::submit`] walking them.

use std::sync::Arc;

use tracing::Instrument as _;

use serde::Serialize;
use serde_json::{Value, json};

use portcullis_catalog::ValidInput;
use portcullis_catalog::{ActionDef, Hints, ResponseRedaction};
use portcullis_core::{AgentId, AuditEvent, AuditKind, Decision, Effect, IntentId, sha256_hex};
use portcullis_exec::prepare::{self, Credential, Rendered};
use portcullis_exec::{Egress, ExecError};
use portcullis_policy::Permitted;
use portcullis_policy::{Claims, CounterState, Facts, InputProvenance};
use portcullis_redact::detect::{Detector, JsonFinding, Treatment};
use portcullis_redact::{Detection, ResponsePolicy, Scrubber};
use portcullis_secrets::Keyring;
use portcullis_store::{Began, Charged, CounterView, NewIntent, Store};

use crate::credentials;
use crate::error::{IntentError, RateLimit, StartError};
use crate::intent::{DecisionView, IntentRequest, IntentResponse, IntentStatus, RequestView};
use crate::load::Loaded;
use crate::quota::{Charges, Reservation};
use portcullis_core::Diagnostic;

/// The running gateway: loaded configuration plus the store and the egress client.
#[derive(Debug)]
pub struct Gateway {
    loaded: Loaded,
    store: Store,
    egress: Egress,
    master_key: Option<Keyring>,
    vault: Option<crate::vault::Vault>,
    broker: crate::oauth2::Broker,
    oidc: Option<crate::oidc::Oidc>,
    notifier: Option<crate::notify::Notifier>,
    served_at: std::sync::OnceLock<String>,
    metrics: Arc<crate::metrics::Metrics>,
    checkpointer: Option<Arc<crate::checkpoint::Checkpointer>>,
    scrubbers: crate::scrubbers::Scrubbers,
    /// Whether some action is marked `provenance: untrusted` (else no session can hold a
    /// recorded value, and inputs need no lookup).
    tracks_provenance: bool,
}

/// What an intent call produced: its status (which decides the HTTP status) and the body
/// (an [`IntentResponse`], or the stored one for a replay).
///
/// The body is kept as the JSON text it was written as: an intent's response is written
/// once, stored as the intent's state and sent to the agent as it is. Adapters that read its
/// fields parse it ([`Submitted::body`]).
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Where the intent stands.
    pub status: IntentStatus,
    json: String,
}

impl Submitted {
    /// A result whose body is `body`.
    #[must_use]
    pub fn new(status: IntentStatus, body: &Value) -> Self {
        Self {
            status,
            json: body.to_string(),
        }
    }

    /// The body as JSON text.
    #[must_use]
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The body as JSON text, owned.
    #[must_use]
    pub fn into_json(self) -> String {
        self.json
    }

    /// The body as a JSON value. The text was written from a value, so it parses, unless
    /// an upstream's response nested deeper than `serde_json` reads back (128 levels);
    /// then the body says so.
    #[must_use]
    pub fn body(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or_else(|e| {
            json!({"status": self.status.as_str(),
                   "error": format!("the response can't be read back as JSON: {e}")})
        })
    }
}

/// An action as listed to an agent.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Input JSON Schema.
    pub input_schema: Value,
    /// Client hints.
    pub hints: HintsView,
}

/// Client hints as listed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HintsView {
    /// Only reads.
    pub read_only: bool,
    /// May destroy data.
    pub destructive: bool,
    /// Safe to repeat.
    pub idempotent: bool,
}

impl From<Hints> for HintsView {
    fn from(h: Hints) -> Self {
        Self {
            read_only: h.read_only,
            destructive: h.destructive,
            idempotent: h.idempotent,
        }
    }
}

async fn webhook_key(
    store: &Store,
    key: Option<&Keyring>,
    name: &str,
) -> Result<portcullis_core::Secret<String>, String> {
    let key = key.ok_or_else(|| format!("the webhook secret `{name}` needs a `master_key`"))?;
    let sealed = store
        .get_secret(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the webhook secret `{name}` is not in the store (`portcullis secret set {name}`)"))?;
    portcullis_secrets::open(key, &sealed).map_err(|e| e.to_string())
}

/// What the agent is told when the action's credential can't be resolved.
const CREDENTIAL_UNAVAILABLE: &str =
    "the action's credential is unavailable; an operator must fix the gateway's configuration";
/// What the agent is told when masking the input (`request.redact`) broke its schema.
const OUTBOUND_REDACTION_INVALID: &str = "the input carries secrets or personal data this action redacts before sending, and the redacted input no longer matches the action's schema; nothing was sent";
/// What the agent is told when an untrusted result could not be recorded for provenance.
const UNRECORDED: &str = "the action ran, but its result comes from an untrusted source and the gateway could not record it for provenance tracking, so it is withheld; try again later";
/// What the agent is told when the request can't be assembled after the decision.
const NOT_PREPARED: &str = "the action could not be prepared; the credential was not sent";

impl Gateway {
    /// Opens the store, loads the master key and builds the egress client.
    ///
    /// # Errors
    /// When any of them fails.
    pub async fn open(loaded: Loaded) -> Result<Self, StartError> {
        let general = |m: String| StartError(vec![Diagnostic::general(m)]);
        let store = Store::open(&loaded.config.store)
            .await
            .map_err(|e| general(e.to_string()))?;
        Self::with_store(loaded, store).await
    }

    /// Builds a gateway over an already-open store.
    ///
    /// # Errors
    /// When the master key can't be loaded or the egress client can't be built.
    pub async fn with_store(loaded: Loaded, store: Store) -> Result<Self, StartError> {
        Self::build(loaded, store, Arc::new(crate::metrics::Metrics::default())).await
    }

    /// The gateway for a reloaded configuration: the same store, metrics and address, and
    /// everything else (catalog, policies, credentials, egress, Vault, OAuth2 and OIDC
    /// caches) built anew from `loaded`. This gateway keeps serving what already started.
    ///
    /// # Errors
    /// When `loaded` changes what only a restart can change (`store`), or as
    /// [`Gateway::with_store`].
    pub async fn successor(&self, loaded: Loaded) -> Result<Self, StartError> {
        let general = |m: String| StartError(vec![Diagnostic::general(m)]);
        if loaded.config.store != self.loaded.config.store {
            return Err(general(
                "`store` changed: a running gateway keeps its store; restart it to use another".to_owned(),
            ));
        }
        if loaded.config.listen != self.loaded.config.listen {
            tracing::warn!(
                listen = %loaded.config.listen,
                "`listen` changed: the gateway keeps its address until it is restarted"
            );
        }
        let same_audit = loaded.config.audit == self.loaded.config.audit
            && loaded.config.master_key == self.loaded.config.master_key;
        let mut next = Self::build(loaded, self.store.clone(), Arc::clone(&self.metrics)).await?;
        if same_audit && self.checkpointer.is_some() {
            // Keeps its Merkle frontier: no need to read the whole log again.
            next.checkpointer.clone_from(&self.checkpointer);
        }
        if let Some(at) = self.served_at.get() {
            let _ = next.served_at.set(at.clone());
        }
        Ok(next)
    }

    async fn build(loaded: Loaded, store: Store, metrics: Arc<crate::metrics::Metrics>) -> Result<Self, StartError> {
        let general = |m: String| StartError(vec![Diagnostic::general(m)]);
        let master_key = loaded.config.keyring().map_err(|e| general(e.to_string()))?;
        let egress = Egress::new(loaded.config.egress.clone()).map_err(|e| general(e.to_string()))?;
        let notifier = match &loaded.config.webhook {
            None => None,
            Some(spec) => {
                let key = match &spec.secret {
                    None => None,
                    Some(name) => Some(webhook_key(&store, master_key.as_ref(), name).await.map_err(general)?),
                };
                Some(crate::notify::Notifier::new(spec, key, egress.clone()).map_err(general)?)
            }
        };
        let vault = loaded
            .config
            .vault
            .clone()
            .map(|spec| crate::vault::Vault::new(spec, egress.clone()));
        let broker = crate::oauth2::Broker::new(egress.clone()).with_metrics(Arc::clone(&metrics));
        let oidc = loaded
            .config
            .oidc
            .clone()
            .map(|spec| crate::oidc::Oidc::new(spec, egress.clone()));
        for (name, spec) in &loaded.config.credentials {
            let client_secret = spec.oauth2.as_ref().and_then(|o| o.client_secret.as_ref());
            for source in [spec.secret.as_ref(), client_secret].into_iter().flatten() {
                if let credentials::SecretSource::Env(_) = source {
                    tracing::warn!(
                        credential = %name,
                        source = %source.describe(),
                        "credential reads a secret from an environment variable: for development only; use the encrypted store or Vault in production"
                    );
                }
            }
        }
        // Checkpoints are a layer over the hash chain: when their key can't be opened (a
        // master key rotated without `previous_master_keys`, say), the gateway runs without
        // them and says so loudly, rather than not at all.
        let checkpointer =
            match crate::checkpoint::Checkpointer::load(&store, master_key.as_ref(), &loaded.config.audit).await {
                Ok(c) => c.map(Arc::new),
                Err(e) => {
                    tracing::error!(error = %e, "audit checkpoints are off: their signing key can't be used");
                    None
                }
            };
        let tracks_provenance = loaded
            .catalog
            .iter()
            .any(|a| a.provenance == portcullis_catalog::Provenance::Untrusted);
        Ok(Self {
            tracks_provenance,
            loaded,
            store,
            egress,
            master_key,
            vault,
            broker,
            oidc,
            notifier,
            served_at: std::sync::OnceLock::new(),
            metrics,
            checkpointer,
            scrubbers: crate::scrubbers::Scrubbers::default(),
        })
    }

    /// What signs audit checkpoints, when they are on.
    #[must_use]
    pub fn checkpointer(&self) -> Option<&crate::checkpoint::Checkpointer> {
        self.checkpointer.as_deref()
    }

    /// Records the address the server actually listens on (links in notifications use it
    /// unless `approvals.public_url` is set).
    pub fn set_served_at(&self, addr: std::net::SocketAddr) {
        let _ = self.served_at.set(format!("http://{addr}"));
    }

    /// Tells the webhook (if any) about a new hold, without waiting for it.
    pub(crate) fn notify_hold(&self, hold: &crate::approvals::HoldView) {
        if let Some(n) = &self.notifier {
            let base = self
                .loaded
                .config
                .public_url
                .clone()
                .or_else(|| self.served_at.get().cloned());
            let base = base.unwrap_or_else(|| format!("http://{}", self.loaded.config.listen));
            // The notification leaves for a chat or ticketing system: the payload is masked
            // there (people see it whole in the UI and the approvals API).
            let mut hold = hold.clone();
            self.detector().redact_json(&mut hold.payload, Treatment::Mask);
            n.notify(&hold, Some(&base));
        }
    }

    /// The loaded configuration, catalog and policies.
    #[must_use]
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics registry.
    #[must_use]
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The metrics in the Prometheus text format, with the gauges read now.
    pub async fn render_metrics(&self) -> String {
        let pending = match self.store.count_holds("pending").await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: could not count pending holds");
                None
            }
        };
        self.metrics.render(crate::metrics::Gauges {
            pending_approvals: pending,
            audit_queue_depth: self.store.audit_queue_depth(),
        })
    }

    /// The detector for secrets and personal data.
    #[must_use]
    pub fn detector(&self) -> &Detector {
        &self.loaded.config.detector
    }

    /// Stage 1: the agent a bearer token belongs to. Only token hashes are stored.
    ///
    /// # Errors
    /// [`IntentError::Unauthenticated`], or the store being unavailable.
    pub async fn authenticate(&self, token: &str) -> Result<AgentId, IntentError> {
        Ok(self.authenticate_with_claims(token).await?.0)
    }

    /// Stage 1 for any bearer token: a JWT from the configured OpenID Connect issuer (with
    /// what its claims say about the agent), or a static agent token.
    ///
    /// # Errors
    /// [`IntentError::Unauthenticated`] (the reason a JWT was refused is logged, not told),
    /// or the store being unavailable.
    pub async fn authenticate_with_claims(&self, token: &str) -> Result<(AgentId, Option<Claims>), IntentError> {
        if let Some(oidc) = &self.oidc
            && crate::oidc::looks_like_jwt(token)
        {
            return match oidc.verify(token).await {
                Ok((agent, claims)) => Ok((agent, Some(claims))),
                Err(reason) => {
                    tracing::info!(%reason, "agent JWT refused");
                    Err(IntentError::Unauthenticated)
                }
            };
        }
        self.authenticate_static(token).await.map(|a| (a, None))
    }

    async fn authenticate_static(&self, token: &str) -> Result<AgentId, IntentError> {
        if token.is_empty() || token.len() > 512 {
            return Err(IntentError::Unauthenticated);
        }
        let hash = sha256_hex(token.as_bytes());
        self.store
            .agent_for_token_hash(&hash)
            .await
            .map_err(|e| IntentError::StoreUnavailable(e.to_string()))?
            .ok_or(IntentError::Unauthenticated)
    }

    /// The actions `agent` may call (with the groups its identity provider's `claims` name).
    #[must_use]
    pub fn actions_for(&self, agent: &AgentId, claims: Option<&Claims>) -> Vec<ActionView> {
        self.loaded
            .catalog
            .iter()
            .filter(|a| self.loaded.policy.visible_as(agent, claims, a))
            .map(|a| ActionView {
                name: a.name.to_string(),
                description: a.description.clone(),
                input_schema: a.input_schema.clone(),
                hints: a.hints.into(),
            })
            .collect()
    }

    /// Whether some intent of `agent` may be held for approval: a permit annotated `@hold`
    /// has a scope that admits this agent and one of the catalog's actions. Adapters use it
    /// to offer a way to fetch held outcomes only to agents that can have any.
    #[must_use]
    pub fn may_hold(&self, agent: &AgentId, claims: Option<&Claims>) -> bool {
        self.loaded
            .catalog
            .iter()
            .any(|a| self.loaded.policy.may_hold(agent, claims, a))
    }

    /// Stage 2: the action, if it exists and this agent may see it. Both failures look the same.
    fn resolve(&self, agent: &AgentId, claims: Option<&Claims>, name: &str) -> Option<Arc<ActionDef>> {
        self.loaded
            .catalog
            .get(name)
            .filter(|a| self.loaded.policy.visible_as(agent, claims, a))
            .cloned()
    }

    /// Walks an intent through the whole pipeline.
    ///
    /// # Errors
    /// For requests that never reach a decision (unknown action, invalid input, idempotency
    /// conflicts) and when the store or audit log can't be written (nothing runs then).
    pub async fn submit(&self, agent: &AgentId, req: IntentRequest) -> Result<Submitted, IntentError> {
        self.submit_as(agent, None, req).await
    }

    /// [`Gateway::submit`] for an agent authenticated by a JWT whose `claims` policy sees as
    /// the agent's attributes and groups.
    ///
    /// # Errors
    /// As [`Gateway::submit`].
    pub async fn submit_as(
        &self,
        agent: &AgentId,
        claims: Option<&Claims>,
        req: IntentRequest,
    ) -> Result<Submitted, IntentError> {
        let started = std::time::Instant::now();
        // Only a catalog name becomes a label: what an agent names is not bounded.
        let action = self.loaded.catalog.get(&req.action).map(|a| a.name.clone());
        let action = action.as_ref().map_or(crate::metrics::UNKNOWN_ACTION, |a| a.as_str());
        let id = new_intent_id();
        let span = crate::trace::current_or_new();
        span.record("intent_id", tracing::field::display(&id));
        span.record("agent", tracing::field::display(agent));
        if action != crate::metrics::UNKNOWN_ACTION {
            span.record("action", action);
        }
        let result = self.pipeline(id, agent, claims, req).instrument(span.clone()).await;
        let status = match &result {
            Ok(s) => s.status.as_str(),
            Err(e) => error_status(e),
        };
        span.record("status", status);
        self.metrics.intent(action, status, started.elapsed());
        result
    }

    /// Stage 2: the action resolved, the input validated against its schema and template,
    /// and the quotas it would charge worked out. Failures are audited as rejections.
    async fn validate(
        &self,
        id: &IntentId,
        agent: &AgentId,
        claims: Option<&Claims>,
        action: &str,
        input: Value,
        dry_run: bool,
    ) -> Result<(Arc<ActionDef>, ValidInput, Charges), IntentError> {
        let Some(action) = self.resolve(agent, claims, action) else {
            let detail = json!({"error": "unknown_action"});
            self.audit(AuditKind::Rejected, id, agent, None, None, None, dry_run, detail)
                .await?;
            return Err(IntentError::UnknownAction(action.to_owned()));
        };
        let input = match action.validate(input) {
            Ok(i) => i,
            Err(e) => return Err(self.reject(id, agent, &action, dry_run, e.problems()).await),
        };
        if let Err(e) = prepare::check(&action, input.value()) {
            return Err(self.reject(id, agent, &action, dry_run, vec![e.to_string()]).await);
        }
        match self
            .loaded
            .config
            .quotas
            .charges(agent, action.name.as_str(), input.value())
        {
            Ok(charges) => Ok((action, input, charges)),
            Err(e) => Err(self.reject(id, agent, &action, dry_run, vec![e]).await),
        }
    }

    async fn pipeline(
        &self,
        id: IntentId,
        agent: &AgentId,
        claims: Option<&Claims>,
        req: IntentRequest,
    ) -> Result<Submitted, IntentError> {
        let validating = std::time::Instant::now();
        let validated = self
            .validate(&id, agent, claims, &req.action, req.input, req.dry_run)
            .instrument(tracing::info_span!("validate"))
            .await;
        self.metrics.stage("validate", validating.elapsed());
        let (action, input, charges) = validated?;
        if let Some(t) = self.loaded.config.tracing.as_ref().filter(|t| t.payloads) {
            let payload = crate::trace::payload_attribute(self.detector(), input.value(), t.payload_max_bytes);
            tracing::Span::current().record("input", payload.as_str());
        }
        let key = if req.dry_run { None } else { req.idempotency_key.clone() };
        let new = NewIntent {
            id: id.clone(),
            agent: agent.clone(),
            action: action.name.clone(),
            payload_sha256: input.sha256().to_owned(),
            idempotency_key: key.clone(),
            status: IntentStatus::Executing.as_str().to_owned(),
            response: Value::Null,
        };
        // Payloads appear only at debug level, and like every log line pass through the
        // detector on their way out.
        tracing::debug!(intent = %id, action = %action.name, input = %input.canonical_json(), "validated");
        let findings = self.detector().scan_json(input.value());
        let now = time::OffsetDateTime::now_utc();
        let decide_span = tracing::info_span!("decide");
        let deciding = std::time::Instant::now();
        let session = req.session.as_deref();
        let provenance = match self
            .input_provenance(agent, session, input.value(), now)
            .instrument(decide_span.clone())
            .await
        {
            Ok(p) => p,
            // Nothing was recorded, decided or run.
            Err(e) => return Err(e),
        };
        let (counters, reservation) = self
            .reserve(&charges, now, req.dry_run)
            .instrument(decide_span.clone())
            .await?;
        let decided = decide_span.in_scope(|| {
            let facts = Facts {
                findings: &findings,
                counters: &counters,
                provenance: &provenance,
                now,
            };
            self.loaded.policy.decide_with(agent, claims, &action, input, &facts)
        });
        drop(decide_span);
        self.metrics.stage("decide", deciding.elapsed());
        let decision = decided.decision().clone();
        self.metrics.decision(decision.effect.as_str());
        crate::trace::record_decision(&tracing::Span::current(), &decision);
        let hash = decided.input().sha256().to_owned();
        let mut detail = if findings.is_empty() {
            Value::Null
        } else {
            json!({ "input_findings": findings_view(&findings) })
        };
        provenance_detail(&mut detail, session, &provenance);
        // The intent's record (which takes its idempotency key) and its `decided` event are
        // written together, after the decision: on SQLite one commit of the audit writer.
        // A retry racing this one decides too, which has no effect, and finds the key taken.
        let event = self.audit_event(
            None,
            AuditKind::Decided,
            &id,
            agent,
            Some(&action),
            Some(&hash),
            Some(&decision),
            req.dry_run,
            detail,
        );
        let recording = std::time::Instant::now();
        let began = self
            .store
            .begin_decided_intent(&new, &event)
            .instrument(tracing::info_span!("audit", kind = AuditKind::Decided.as_str()))
            .await;
        self.metrics.audit_append(recording.elapsed());
        match began {
            Ok(Began::Decided(_)) => {}
            Ok(Began::Existing(prev)) => {
                self.give_back(&charges, &reservation, now).await;
                let replayed = replay(prev, &hash, key.unwrap_or_default())?;
                return self.replayed_in_session(&id, agent, &action, session, replayed).await;
            }
            Ok(Began::Undecided(e)) => {
                // Nothing ran. Free the idempotency key, so a retry after the outage runs.
                self.give_back(&charges, &reservation, now).await;
                if let Err(forget) = self.store.abandon_intent(&id).await {
                    tracing::error!(intent = %id, error = %forget, "could not release the intent after an audit failure");
                }
                return Err(audit_failed(&id, &e));
            }
            Err(e) => {
                // Nothing was written or run.
                self.give_back(&charges, &reservation, now).await;
                return Err(audit_failed(&id, &e));
            }
        }
        tracing::info!(intent = %id, agent = %agent, action = %action.name, effect = decision.effect.as_str(), "decided");
        if req.dry_run && decision.effect != Effect::Deny {
            // A dry run shows what would be sent (a hold shows as a hold); nothing is stored.
            let credential = match self.credential(&action).await {
                Ok(c) => c,
                Err(e) => {
                    return self
                        .fail(&id, agent, &action, &decision, true, CREDENTIAL_UNAVAILABLE, e)
                        .await;
                }
            };
            let mut input = decided.input().value().clone();
            if action.redacts_input() {
                self.detector().redact_json(&mut input, Treatment::Mask);
            }
            return self
                .dry_run(&id, agent, &action, &decision, &input, credential.as_ref())
                .await;
        }
        match decided.into_permitted() {
            Ok(permitted) => {
                if let Reservation::Exceeded(view) = reservation {
                    let limited = self.rate_limited(&id, agent, &action, &charges, view, now).await;
                    // Nothing ran: the key is free again for a retry after the reset.
                    if let Err(forget) = self.store.abandon_intent(&id).await {
                        tracing::error!(intent = %id, error = %forget, "could not release a rate-limited intent");
                    }
                    return Err(limited);
                }
                self.run(&id, agent, &action, &decision, permitted, &findings, session)
                    .await
            }
            // Held intents are charged when they run; refused ones never.
            Err(refused) if refused.decision().effect == Effect::Hold => {
                self.give_back(&charges, &reservation, now).await;
                let origin = crate::approvals::Origin {
                    claims,
                    session,
                    provenance: &provenance,
                };
                self.hold(&id, agent, &origin, &action, *refused)
                    .instrument(tracing::info_span!("hold"))
                    .await
            }
            Err(refused) => {
                self.give_back(&charges, &reservation, now).await;
                self.finish(&id, IntentStatus::Denied, refused.decision(), None, None, None)
                    .await
            }
        }
    }

    /// Takes the quotas covering an intent before it is decided, so that policy sees the
    /// counters exactly as this intent finds them: concurrent intents are charged one after
    /// another, and each sees what those before it used (a "hold from half the budget on"
    /// policy can't be slipped past by a burst). What is taken is given back unless the
    /// decision is an allow. A dry run takes nothing and sees the counters as they stand.
    pub(crate) async fn reserve(
        &self,
        charges: &Charges,
        now: time::OffsetDateTime,
        dry_run: bool,
    ) -> Result<(Vec<CounterState>, Reservation), IntentError> {
        if charges.is_empty() {
            return Ok((Vec::new(), Reservation::Nothing));
        }
        let at = now.unix_timestamp();
        // The store's transactions are boxed: their futures (sqlx's, for either backend) are
        // about 15 KB, and unboxed they would make every intent's future that much larger,
        // copied whole when its task is spawned, quotas or not.
        if dry_run {
            let views = Box::pin(self.store.counters(&charges.charges, at))
                .await
                .map_err(store_down)?;
            return Ok((charges.states(&views), Reservation::Nothing));
        }
        match Box::pin(self.store.charge(&charges.charges, at))
            .await
            .map_err(store_down)?
        {
            Charged::Charged(after) => Ok((charges.states_after(&after), Reservation::Taken)),
            Charged::Exceeded(view) => {
                // Nothing was taken; policy sees the counters as they stand.
                let views = Box::pin(self.store.counters(&charges.charges, at))
                    .await
                    .map_err(store_down)?;
                Ok((charges.states(&views), Reservation::Exceeded(view)))
            }
        }
    }

    /// Gives back what [`Gateway::reserve`] took, for an intent that will not run now.
    pub(crate) async fn give_back(&self, charges: &Charges, reservation: &Reservation, now: time::OffsetDateTime) {
        if matches!(reservation, Reservation::Taken)
            && let Err(e) = Box::pin(self.store.release(&charges.charges, now.unix_timestamp())).await
        {
            // The counter stays higher than it should until its window ends: conservative.
            tracing::error!(error = %e, "could not give back quota that an intent did not use");
        }
    }

    /// An allowed intent that a quota can't take: the `outcome` audit event, and the error
    /// the agent gets (or the audit failure, which is what the agent must hear then).
    pub(crate) async fn rate_limited(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        charges: &Charges,
        view: CounterView,
        now: time::OffsetDateTime,
    ) -> IntentError {
        let resets = time::OffsetDateTime::from_unix_timestamp(view.resets_at_unix).unwrap_or(now);
        let resets_at = portcullis_core::format_rfc3339(resets);
        let retry_after_secs = u64::try_from((view.resets_at_unix - now.unix_timestamp()).max(1)).unwrap_or(1);
        let used = charges.display(&view.limit, view.used);
        let max = charges.display(&view.limit, view.max);
        let requested = charges.display(&view.limit, charges.amount_of(&view.limit));
        tracing::info!(intent = %id, quota = %view.limit, %used, %max, %requested, %resets_at, "rate limited");
        self.metrics.rate_limited(&view.limit);
        let detail = json!({"status": "rate_limited", "quota": view.limit, "used": used, "max": max,
                            "requested": requested, "resets_at": resets_at});
        if let Err(e) = self
            .audit(AuditKind::Outcome, id, agent, Some(action), None, None, false, detail)
            .await
        {
            return e;
        }
        IntentError::RateLimited(Box::new(RateLimit {
            quota: view.limit,
            used,
            max,
            requested,
            resets_at,
            retry_after_secs,
        }))
    }

    /// Which of an input's values the agent read from an untrusted action's result earlier
    /// in its session (see [`crate::provenance`]).
    ///
    /// # Errors
    /// When the store can't be read: the intent is then not decided.
    pub(crate) async fn input_provenance(
        &self,
        agent: &AgentId,
        session: Option<&str>,
        input: &Value,
        now: time::OffsetDateTime,
    ) -> Result<InputProvenance, IntentError> {
        let Some(session) = session else {
            return Ok(InputProvenance::NONE);
        };
        let mut provenance = InputProvenance {
            session: true,
            marks: Vec::new(),
        };
        if !self.tracks_provenance {
            return Ok(provenance);
        }
        let probe = self
            .loaded
            .config
            .provenance
            .probe(self.detector(), agent.as_str(), input);
        if probe.is_empty() {
            return Ok(provenance);
        }
        let seen = self
            .store
            .provenance(agent.as_str(), session, &probe.hashes(), now.unix_timestamp())
            .await
            .map_err(store_down)?;
        let mut found: std::collections::HashMap<String, Vec<(String, i64)>> = std::collections::HashMap::new();
        for s in seen {
            found.entry(s.value_sha256).or_default().push((s.source, s.read_unix));
        }
        provenance.marks = probe.marks(&found);
        Ok(provenance)
    }

    /// Records what an untrusted action's result gave the agent in `session`; returns how
    /// many values.
    async fn remember(
        &self,
        intent_id: &str,
        agent: &AgentId,
        action: &ActionDef,
        session: &str,
        body: &Value,
    ) -> Result<usize, portcullis_store::StoreError> {
        let settings = &self.loaded.config.provenance;
        let hashes = settings.harvest(self.detector(), body);
        if hashes.is_empty() {
            return Ok(0);
        }
        let values = portcullis_store::NewValues {
            agent: agent.as_str(),
            session,
            source: action.name.as_str(),
            intent_id,
            read_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
            hashes: &hashes,
        };
        // Boxed, like every store transaction on an intent's path: its future is ~15 KB, and
        // unboxed it would be part of every intent's future (see `Gateway::reserve`).
        Box::pin(self.store.record_provenance(&values, settings.limits)).await?;
        Ok(hashes.len())
    }

    /// A replayed result of an untrusted action reaches the agent again, maybe in another
    /// session than the one it was first read in: it is recorded in this one too, or, if
    /// that fails, not given.
    async fn replayed_in_session(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        session: Option<&str>,
        replayed: Submitted,
    ) -> Result<Submitted, IntentError> {
        let Some(session) = session else { return Ok(replayed) };
        if action.provenance != portcullis_catalog::Provenance::Untrusted || replayed.status != IntentStatus::Executed {
            return Ok(replayed);
        }
        let replayed_body = replayed.body();
        let Some(body) = replayed_body.get("result").and_then(|r| r.get("body")) else {
            return Ok(replayed);
        };
        let first = replayed_body.get("id").and_then(Value::as_str).unwrap_or(id.as_str());
        match self.remember(first, agent, action, session, body).await {
            Ok(_) => Ok(replayed),
            Err(e) => {
                tracing::error!(intent = %first, error = %e, "could not record a replayed untrusted result for provenance");
                Err(store_down(e))
            }
        }
    }

    async fn credential(&self, action: &ActionDef) -> Result<Option<Credential>, String> {
        let started = std::time::Instant::now();
        let resolved = credentials::resolve(action, &self.loaded.config.credentials, self.sources()).await;
        self.metrics.stage("credential", started.elapsed());
        if resolved.is_err()
            && let Some(name) = action.credential.as_deref()
        {
            self.metrics.credential_failure(name);
        }
        resolved.map_err(|e| e.to_string())
    }

    /// Stage: the upstream call, timed.
    async fn execute(&self, prepared: prepare::PreparedRequest) -> Result<portcullis_core::RawResponse, ExecError> {
        let span = tracing::info_span!("execute", upstream_status = tracing::field::Empty);
        let started = std::time::Instant::now();
        let executed = self.egress.execute(prepared).instrument(span.clone()).await;
        self.executed(&span, started.elapsed(), executed.as_ref().ok().map(|r| r.status));
        executed
    }

    /// Records an upstream call's latency and status on its span, the intent's span and the
    /// metrics.
    fn executed(&self, span: &tracing::Span, took: std::time::Duration, status: Option<u16>) {
        if let Some(status) = status {
            span.record("upstream_status", status);
        }
        // The caller runs in the intent's span.
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        tracing::Span::current().record("upstream_latency_ms", millis);
        self.metrics.stage("execute", took);
    }

    /// Where secrets come from.
    fn sources(&self) -> credentials::Sources<'_> {
        credentials::Sources {
            store: &self.store,
            keyring: self.master_key.as_ref(),
            vault: self.vault.as_ref(),
            broker: &self.broker,
        }
    }

    /// The OAuth2 token broker (for tests and metrics: how many token requests it sent).
    #[must_use]
    pub fn oauth2_token_requests(&self) -> u64 {
        self.broker.token_requests()
    }

    /// The execution stages for a permitted input: credential → prepare → execute →
    /// redact → record → audit(outcome). Used for allowed intents and approved holds.
    /// `session` is where an untrusted action's result is recorded for provenance.
    #[expect(clippy::too_many_arguments, reason = "the execution context of one intent")]
    pub(crate) async fn run(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        decision: &Decision,
        permitted: Permitted<ValidInput>,
        findings: &[JsonFinding],
        session: Option<&str>,
    ) -> Result<Submitted, IntentError> {
        let hash = permitted.get().sha256().to_owned();
        // The audit log hashes the input as decided; when what was sent differs (masked),
        // the outcome says so, with the hash of what was sent.
        let mut sent_sha256 = None;
        let permitted = if action.redacts_input() && !findings.is_empty() {
            match permitted.redacted(action, self.detector()) {
                Ok(p) => {
                    sent_sha256 = Some(p.get().sha256().to_owned());
                    p
                }
                Err(e) => {
                    let detail = format!("the input no longer matches the schema once redacted: {e}");
                    return self
                        .fail(id, agent, action, decision, false, OUTBOUND_REDACTION_INVALID, detail)
                        .await;
                }
            }
        } else {
            permitted
        };
        // Stage: prepare (the credential resolved, the request rendered with it).
        let preparing = tracing::info_span!("prepare");
        let credential = match self.credential(action).instrument(preparing.clone()).await {
            Ok(c) => c,
            Err(e) => {
                return self
                    .fail(id, agent, action, decision, false, CREDENTIAL_UNAVAILABLE, e)
                    .await;
            }
        };
        if action.smtp().is_some() {
            drop(preparing);
            return self
                .run_mail(id, agent, action, decision, permitted, credential, sent_sha256, session)
                .await;
        }
        // An OAuth2 token the upstream refuses (401) is refreshed and the call made once more,
        // but only for an action marked idempotent: running it twice must be harmless.
        let oauth2 = action.credential.as_deref().filter(|name| {
            self.loaded
                .config
                .credentials
                .get(*name)
                .is_some_and(|s| s.oauth2.is_some())
        });
        let retry = oauth2
            .filter(|_| action.hints.idempotent)
            .map(|name| (name, permitted.clone()));
        let prepared = preparing.in_scope(|| prepare::prepare(permitted, action, credential.as_ref()));
        drop(preparing);
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                return self
                    .fail(id, agent, action, decision, false, NOT_PREPARED, e.to_string())
                    .await;
            }
        };
        let mut scrub = credential.as_ref().map(Credential::scrub_values).unwrap_or_default();
        let mut executed = self.execute(prepared).await;
        if let (Ok(raw), Some((name, permitted))) = (&executed, retry)
            && raw.status == 401
        {
            tracing::info!(intent = %id, credential = %name, "the upstream refused the OAuth2 token: refreshing it and retrying once");
            let refused = credential.as_ref().map(Credential::scrub_values).unwrap_or_default();
            for value in &refused {
                self.broker.invalidate(name, value);
            }
            let fresh = match self.credential(action).await {
                Ok(c) => c,
                Err(e) => {
                    return self
                        .fail(id, agent, action, decision, false, CREDENTIAL_UNAVAILABLE, e)
                        .await;
                }
            };
            match prepare::prepare(permitted, action, fresh.as_ref()) {
                Ok(p) => {
                    scrub.extend(fresh.as_ref().map(Credential::scrub_values).unwrap_or_default());
                    executed = self.execute(p).await;
                }
                Err(e) => {
                    return self
                        .fail(id, agent, action, decision, false, NOT_PREPARED, e.to_string())
                        .await;
                }
            }
        }
        let scrubber = self.scrubbers.get(scrub);
        let ran = Ran {
            hash: &hash,
            sent_sha256,
            session,
        };
        self.conclude(id, agent, action, decision, ran, executed, &scrubber)
            .await
    }

    /// [`Gateway::run`] for an `smtp:` action: the email is prepared with its login and sent.
    #[expect(clippy::too_many_arguments, reason = "the execution context, as for HTTP")]
    async fn run_mail(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        decision: &Decision,
        permitted: Permitted<ValidInput>,
        credential: Option<Credential>,
        sent_sha256: Option<String>,
        session: Option<&str>,
    ) -> Result<Submitted, IntentError> {
        let hash = permitted.get().sha256().to_owned();
        let prepared =
            tracing::info_span!("prepare").in_scope(|| prepare::prepare_mail(permitted, action, credential.as_ref()));
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                return self
                    .fail(id, agent, action, decision, false, NOT_PREPARED, e.to_string())
                    .await;
            }
        };
        let scrub = credential.as_ref().map(Credential::scrub_values).unwrap_or_default();
        let scrubber = self.scrubbers.get(scrub);
        let span = tracing::info_span!("execute", upstream_status = tracing::field::Empty);
        let started = std::time::Instant::now();
        let executed = self.egress.send_mail(prepared).instrument(span.clone()).await;
        self.executed(&span, started.elapsed(), None);
        let ran = Ran {
            hash: &hash,
            sent_sha256,
            session,
        };
        self.conclude(id, agent, action, decision, ran, executed, &scrubber)
            .await
    }

    /// The stages after execution: redact, record, audit(outcome).
    #[expect(clippy::too_many_arguments, reason = "the execution context and its result")]
    async fn conclude(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        decision: &Decision,
        ran: Ran<'_>,
        executed: Result<portcullis_core::RawResponse, ExecError>,
        scrubber: &Scrubber,
    ) -> Result<Submitted, IntentError> {
        let Ran {
            hash,
            sent_sha256,
            session,
        } = ran;
        let status = executed.as_ref().ok().map(|raw| raw.status);
        self.metrics.upstream(action.name.as_str(), status);
        if let Some(status) = status {
            tracing::Span::current().record("upstream_status", status);
        }
        match executed {
            Ok(raw) => {
                let keep = self.loaded.projections.get(&action.name).map(AsRef::as_ref);
                let policy = ResponsePolicy {
                    keep,
                    expose_headers: &action.response.headers,
                    detection: Some(Detection {
                        detector: self.detector(),
                        treatment: match action.response.redact {
                            ResponseRedaction::Drop => Treatment::Drop,
                            ResponseRedaction::Mask | ResponseRedaction::Block => Treatment::Mask,
                        },
                        allow: &action.response.allow,
                    }),
                };
                let redacting = std::time::Instant::now();
                let (result, found) =
                    tracing::info_span!("redact").in_scope(|| portcullis_redact::redact(raw, scrubber, &policy));
                self.metrics.stage("redact", redacting.elapsed());
                let upstream_status = result.status();
                let mut withheld = action.response.redact == ResponseRedaction::Block && !found.is_empty();
                let mut detail = json!({"status": "executed", "upstream_status": upstream_status});
                // What an untrusted action returned is recorded before the agent can see it,
                // so that no later intent of the session can carry it unnoticed. If that
                // fails, the agent doesn't get it.
                let mut unrecorded = false;
                if !withheld
                    && action.provenance == portcullis_catalog::Provenance::Untrusted
                    && let Some(session) = session
                {
                    match self.remember(id.as_str(), agent, action, session, result.body()).await {
                        Ok(n) => detail["provenance_recorded"] = json!({"session": session, "values": n}),
                        Err(e) => {
                            tracing::error!(intent = %id, error = %e, "could not record an untrusted result for provenance; it is withheld");
                            detail["provenance_error"] =
                                json!("the result could not be recorded for provenance tracking");
                            withheld = true;
                            unrecorded = true;
                        }
                    }
                }
                if let Some(sha) = &sent_sha256 {
                    detail["request_redacted"] = json!({"sent_payload_sha256": sha});
                }
                if !found.is_empty() {
                    detail["response_findings"] = findings_view(&found);
                    detail["response_redaction"] = json!(redaction_name(action.response.redact));
                }
                tracing::info!(intent = %id, upstream_status, withheld, "executed");
                if withheld {
                    detail["status"] = json!(IntentStatus::Withheld.as_str());
                }
                // The outcome event first, then the result: a crash between the two leaves
                // an intent that recovery settles from the audit log, never one whose
                // outcome is missing from it. The result is stored even when the event can't
                // be written, so that the agent can fetch what happened.
                let (status, result, error) = if unrecorded {
                    (IntentStatus::Withheld, None, Some(UNRECORDED.to_owned()))
                } else if withheld {
                    (IntentStatus::Withheld, None, Some(withheld_message(&found)))
                } else {
                    (IntentStatus::Executed, Some(result), None)
                };
                let event = self.audit_event(
                    None,
                    AuditKind::Outcome,
                    id,
                    agent,
                    Some(action),
                    Some(hash),
                    None,
                    false,
                    detail,
                );
                let response = IntentResponse {
                    id: id.clone(),
                    status,
                    decision: DecisionView::from(decision),
                    result,
                    request: None,
                    error,
                    approval: None,
                };
                let (audited, done) = self.audit_then_record(event, response).await;
                match (done, audited) {
                    (Ok(submitted), Ok(())) => Ok(submitted),
                    _ => Err(IntentError::OutcomeNotRecorded(id.to_string())),
                }
            }
            Err(e) => {
                let detail = portcullis_redact::scrub_error(scrubber, &e.to_string());
                self.fail(id, agent, action, decision, false, &upstream_failure(&e), detail)
                    .await
            }
        }
    }

    async fn dry_run(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        decision: &Decision,
        input: &Value,
        credential: Option<&Credential>,
    ) -> Result<Submitted, IntentError> {
        let view = if action.smtp().is_some() {
            prepare::mail_dry_run_view(action, input, credential)
        } else {
            prepare::render(action, input).and_then(|r| prepare::dry_run_view(r, credential))
        };
        match view {
            Ok(r) => {
                let detail = json!({"status": "dry_run"});
                self.audit(AuditKind::Outcome, id, agent, Some(action), None, None, true, detail)
                    .await?;
                self.finish(id, IntentStatus::DryRun, decision, None, Some(request_view(r)), None)
                    .await
            }
            Err(e) => {
                let agent_message = "the action could not be prepared; the credential was not sent";
                self.fail(id, agent, action, decision, true, agent_message, e.to_string())
                    .await
            }
        }
    }

    /// An allowed intent that could not run: audited as a failed outcome. The agent gets
    /// `agent_message`, which names no host, secret or configuration detail; the audit log
    /// and the gateway's log get the (scrubbed) `detail`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the failure's context, split for agent and operator"
    )]
    pub(crate) async fn fail(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        decision: &Decision,
        dry_run: bool,
        agent_message: &str,
        detail: String,
    ) -> Result<Submitted, IntentError> {
        tracing::warn!(intent = %id, error = %detail, "failed");
        let audit_detail = json!({"status": "failed", "error": detail});
        self.audit(
            AuditKind::Outcome,
            id,
            agent,
            Some(action),
            None,
            None,
            dry_run,
            audit_detail,
        )
        .await?;
        self.finish(
            id,
            IntentStatus::Failed,
            decision,
            None,
            None,
            Some(agent_message.to_owned()),
        )
        .await
    }

    async fn reject(
        &self,
        id: &IntentId,
        agent: &AgentId,
        action: &ActionDef,
        dry_run: bool,
        problems: Vec<String>,
    ) -> IntentError {
        // Schema messages may quote what the agent sent, which may hold a secret.
        let problems: Vec<String> = problems
            .iter()
            .map(|p| self.detector().redact(p).into_owned())
            .collect();
        let detail = json!({"error": "invalid_input", "problems": problems});
        if let Err(e) = self
            .audit(
                AuditKind::Rejected,
                id,
                agent,
                Some(action),
                None,
                None,
                dry_run,
                detail,
            )
            .await
        {
            return e;
        }
        IntentError::InvalidInput {
            action: action.name.to_string(),
            problems,
        }
    }

    pub(crate) async fn finish(
        &self,
        id: &IntentId,
        status: IntentStatus,
        decision: &Decision,
        result: Option<portcullis_redact::AgentResult>,
        request: Option<RequestView>,
        error: Option<String>,
    ) -> Result<Submitted, IntentError> {
        let response = IntentResponse {
            id: id.clone(),
            status,
            decision: DecisionView::from(decision),
            result,
            request,
            error,
            approval: None,
        };
        let recording = std::time::Instant::now();
        let recorded = self.record(response).instrument(tracing::info_span!("record")).await;
        self.metrics.stage("record", recording.elapsed());
        recorded
    }

    /// Stores a response as the intent's current state and returns it.
    pub(crate) async fn record(&self, response: IntentResponse) -> Result<Submitted, IntentError> {
        let (id, status) = (response.id.clone(), response.status);
        let json = serde_json::to_string(&response).map_err(|e| IntentError::StoreUnavailable(e.to_string()))?;
        self.store
            .finish_intent_json(&id, status.as_str(), &json)
            .await
            .map_err(store_down)?;
        Ok(Submitted { status, json })
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "an audit event has this many independent parts"
    )]
    pub(crate) async fn audit(
        &self,
        kind: AuditKind,
        id: &IntentId,
        agent: &AgentId,
        action: Option<&ActionDef>,
        payload: Option<&str>,
        decision: Option<&Decision>,
        dry_run: bool,
        detail: Value,
    ) -> Result<(), IntentError> {
        self.audit_as(None, kind, id, agent, action, payload, decision, dry_run, detail)
            .await
    }

    /// An audit event naming the person who acted (approvals, denials).
    #[expect(
        clippy::too_many_arguments,
        reason = "an audit event has this many independent parts"
    )]
    pub(crate) async fn audit_as(
        &self,
        actor: Option<&str>,
        kind: AuditKind,
        id: &IntentId,
        agent: &AgentId,
        action: Option<&ActionDef>,
        payload: Option<&str>,
        decision: Option<&Decision>,
        dry_run: bool,
        detail: Value,
    ) -> Result<(), IntentError> {
        let event = self.audit_event(actor, kind, id, agent, action, payload, decision, dry_run, detail);
        let started = std::time::Instant::now();
        let appended = self
            .store
            .append(&event)
            .instrument(tracing::info_span!("audit", kind = kind.as_str()))
            .await;
        self.metrics.audit_append(started.elapsed());
        Self::audit_appended(id, appended)
    }

    /// An audit event, its detail redacted: whatever a detail quotes (an upstream's error, a
    /// schema message, a person's comment) is redacted before it becomes permanent.
    #[expect(
        clippy::too_many_arguments,
        reason = "an audit event has this many independent parts"
    )]
    fn audit_event(
        &self,
        actor: Option<&str>,
        kind: AuditKind,
        id: &IntentId,
        agent: &AgentId,
        action: Option<&ActionDef>,
        payload: Option<&str>,
        decision: Option<&Decision>,
        dry_run: bool,
        mut detail: Value,
    ) -> AuditEvent {
        self.detector().redact_json(&mut detail, Treatment::Mask);
        AuditEvent {
            actor: actor.map(str::to_owned),
            kind,
            intent_id: id.clone(),
            agent: agent.clone(),
            action: action.map(|a| a.name.clone()),
            payload_sha256: payload.map(str::to_owned),
            decision: decision.cloned(),
            dry_run,
            detail,
        }
    }

    /// Appends an intent's `outcome` event and then stores its response as its final state,
    /// in that order, sharing one commit where the store can (SQLite); returns what became
    /// of each. The response is stored even when the event can't be written, so that the
    /// agent can fetch what happened.
    async fn audit_then_record(
        &self,
        event: AuditEvent,
        response: IntentResponse,
    ) -> (Result<(), IntentError>, Result<Submitted, IntentError>) {
        let (id, status) = (response.id.clone(), response.status);
        let json = match serde_json::to_string(&response) {
            Ok(j) => j,
            Err(e) => {
                let audited = Self::audit_appended(&id, self.store.append(&event).await);
                return (audited, Err(IntentError::StoreUnavailable(e.to_string())));
            }
        };
        let started = std::time::Instant::now();
        let record = tracing::info_span!("record");
        let audit = tracing::info_span!(parent: &record, "audit", kind = event.kind.as_str());
        let (appended, finished) = self
            .store
            .append_then_finish_intent(&event, status.as_str(), &json)
            .instrument(audit)
            .instrument(record)
            .await;
        let took = started.elapsed();
        self.metrics.audit_append(took);
        self.metrics.stage("record", took);
        let recorded = finished.map(|()| Submitted { status, json }).map_err(store_down);
        (Self::audit_appended(&id, appended), recorded)
    }

    /// What an append's result means for the intent: an error fails closed.
    fn audit_appended(
        id: &IntentId,
        appended: Result<portcullis_store::AppendReceipt, portcullis_store::StoreError>,
    ) -> Result<(), IntentError> {
        appended.map(|_| ()).map_err(|e| audit_failed(id, &e))
    }

    /// Records an authenticated request that was refused before it named a usable action
    /// (malformed JSON, wrong content type, oversized body), then hands the error back.
    pub async fn reject_request(&self, agent: &AgentId, error: IntentError) -> IntentError {
        let no_time = std::time::Duration::ZERO;
        self.metrics.intent(crate::metrics::UNKNOWN_ACTION, "rejected", no_time);
        let detail = json!({"error": "malformed_request", "message": error.to_string()});
        match self
            .audit(
                AuditKind::Rejected,
                &new_intent_id(),
                agent,
                None,
                None,
                None,
                false,
                detail,
            )
            .await
        {
            Ok(()) => error,
            Err(e) => e,
        }
    }

    /// An intent of `agent` by id. Another agent's intent is "not found".
    ///
    /// # Errors
    /// [`IntentError::IntentNotFound`], or the store being unavailable.
    pub async fn intent(&self, agent: &AgentId, id: &str) -> Result<Submitted, IntentError> {
        let id = IntentId::new(id).map_err(|_| IntentError::IntentNotFound)?;
        let rec = self
            .store
            .get_intent(&id)
            .await
            .map_err(store_down)?
            .filter(|r| r.agent == *agent)
            .ok_or(IntentError::IntentNotFound)?;
        let status = parse_status(&rec.status);
        let body = if rec.response.is_null() {
            json!({"id": rec.id, "status": rec.status})
        } else {
            rec.response
        };
        Ok(Submitted::new(status, &body))
    }
}

/// The `status` label of an intent that ended in an error.
fn error_status(e: &IntentError) -> &'static str {
    match e {
        IntentError::RateLimited(_) => "rate_limited",
        IntentError::Unauthenticated
        | IntentError::Malformed(_)
        | IntentError::UnknownAction(_)
        | IntentError::InvalidInput { .. } => "rejected",
        IntentError::IdempotencyConflict(_) | IntentError::IdempotencyInProgress(_) => "conflict",
        IntentError::IntentNotFound
        | IntentError::OutcomeNotRecorded(_)
        | IntentError::StoreUnavailable(_)
        | IntentError::NotAccepting(_) => "error",
    }
}

fn replay(prev: portcullis_store::IntentRecord, sha256: &str, key: String) -> Result<Submitted, IntentError> {
    if prev.payload_sha256 != sha256 {
        return Err(IntentError::IdempotencyConflict(key));
    }
    let status = parse_status(&prev.status);
    if status == IntentStatus::Executing {
        return Err(IntentError::IdempotencyInProgress(key));
    }
    Ok(Submitted::new(status, &prev.response))
}

pub(crate) fn parse_status(s: &str) -> IntentStatus {
    match s {
        "expired" => IntentStatus::Expired,
        "executed" => IntentStatus::Executed,
        "denied" => IntentStatus::Denied,
        "pending_approval" => IntentStatus::PendingApproval,
        "dry_run" => IntentStatus::DryRun,
        "withheld" => IntentStatus::Withheld,
        "outcome_unknown" => IntentStatus::OutcomeUnknown,
        "executing" => IntentStatus::Executing,
        _ => IntentStatus::Failed,
    }
}

/// What the agent is told about a failed upstream call: the kind of failure, never the host.
/// For SMTP, the step and the server's reply code, never the server's text (which may quote
/// the login).
fn upstream_failure(e: &ExecError) -> std::borrow::Cow<'static, str> {
    if let ExecError::Smtp(smtp) = e {
        let code = smtp.code.map(|c| format!(" (SMTP reply code {c})")).unwrap_or_default();
        let what = match smtp.stage {
            "auth" => "the mail server refused the gateway's login".to_owned(),
            "rcpt to" => "the mail server refused every recipient".to_owned(),
            "mail from" => "the mail server refused the sender".to_owned(),
            "data" => "the mail server refused the message".to_owned(),
            stage => format!("the mail exchange failed at `{stage}`"),
        };
        return format!("{what}{code}; nothing was sent").into();
    }
    upstream_failure_kind(e).into()
}

fn upstream_failure_kind(e: &ExecError) -> &'static str {
    match e {
        ExecError::EgressDenied { .. } | ExecError::UnsupportedScheme(_) => {
            "the upstream destination is not allowed by the gateway's egress rules"
        }
        ExecError::Resolve { .. } => "the upstream host name did not resolve",
        ExecError::Timeout => "the upstream timed out",
        ExecError::Connect { .. } => "the upstream could not be reached",
        ExecError::ResponseTooLarge { .. } => "the upstream response exceeded the gateway's size limit",
        ExecError::Redirect(_) => {
            "the upstream redirected too many times, or to a location the gateway does not follow"
        }
        ExecError::Upstream(_) | ExecError::Client(_) => "the upstream call failed",
        ExecError::Smtp(_) => "the mail exchange failed",
    }
}

pub(crate) fn store_down(e: portcullis_store::StoreError) -> IntentError {
    IntentError::StoreUnavailable(e.to_string())
}

fn request_view(r: Rendered) -> RequestView {
    RequestView {
        method: r.method.to_owned(),
        url: r.url.to_string(),
        headers: r.headers.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
        body: r.body,
    }
}

/// The most findings one audit event lists; a response with thousands (a list of customers,
/// each with an email) would otherwise make one enormous event.
const MAX_AUDITED_FINDINGS: usize = 100;

/// Findings as recorded in the audit log: kind, category and pointer, never a value; at most
/// [`MAX_AUDITED_FINDINGS`], then one `{"more": N}` entry saying how many were left out.
pub(crate) fn findings_view(found: &[JsonFinding]) -> Value {
    let mut listed: Vec<Value> = found
        .iter()
        .take(MAX_AUDITED_FINDINGS)
        .map(|f| json!({"kind": f.kind, "category": f.category.as_str(), "pointer": f.pointer}))
        .collect();
    if found.len() > MAX_AUDITED_FINDINGS {
        listed.push(json!({"more": found.len() - MAX_AUDITED_FINDINGS}));
    }
    Value::Array(listed)
}

fn redaction_name(r: ResponseRedaction) -> &'static str {
    match r {
        ResponseRedaction::Mask => "mask",
        ResponseRedaction::Drop => "drop",
        ResponseRedaction::Block => "block",
    }
}

/// What the agent is told when its action's response was withheld (`response.redact: block`).
fn withheld_message(found: &[JsonFinding]) -> String {
    const SHOWN: usize = 10;
    let mut listed: Vec<String> = found
        .iter()
        .take(SHOWN)
        .map(|f| format!("{} at {}", f.kind, if f.pointer.is_empty() { "/" } else { &f.pointer }))
        .collect();
    if found.len() > SHOWN {
        listed.push(format!("{} more", found.len() - SHOWN));
    }
    format!(
        "the action was executed, but its response was withheld because it contains data this action may not return ({})",
        listed.join(", ")
    )
}

/// An audit append that failed: logged, and the intent fails closed.
fn audit_failed(id: &IntentId, e: &portcullis_store::StoreError) -> IntentError {
    tracing::error!(intent = %id, error = %e, "audit append failed; failing closed");
    IntentError::StoreUnavailable(e.to_string())
}

/// What [`Gateway::conclude`] needs to know of how an intent was run.
struct Ran<'a> {
    /// SHA-256 of the input as decided.
    hash: &'a str,
    /// SHA-256 of the input as sent, when masking changed it.
    sent_sha256: Option<String>,
    /// The agent's session, where an untrusted result is recorded.
    session: Option<&'a str>,
}

/// Adds the session and the provenance marks (pointers and sources, never values) to a
/// `decided` audit detail.
pub(crate) fn provenance_detail(detail: &mut Value, session: Option<&str>, provenance: &InputProvenance) {
    let Some(session) = session else { return };
    if detail.is_null() {
        *detail = json!({});
    }
    detail["session"] = json!(session);
    if !provenance.marks.is_empty() {
        detail["provenance"] = json!(provenance.marks);
    }
}

/// A new intent id: 48 bits of the time in milliseconds, then 80 random bits (as in a
/// UUIDv7), as 32 hex digits. Ids made later sort after earlier ones, so the store's
/// indexes on them grow at their end: a batch of inserts dirties a page or two of each
/// instead of one random page per intent, which every commit would write to the log.
/// 80 random bits keep an id unguessable (and every read of an intent is checked against
/// its agent or approvers anyway).
fn new_intent_id() -> IntentId {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut bytes: [u8; 16] = rand::random();
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    IntentId::from_random(bytes)
}

#[cfg(test)]
mod tests {
    use portcullis_redact::detect::Category;

    use super::*;

    #[test]
    fn intent_ids_sort_by_time_and_keep_eighty_random_bits() {
        let first = new_intent_id();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let ids: Vec<IntentId> = (0..64).map(|_| new_intent_id()).collect();
        for id in &ids {
            assert!(first.as_str() < id.as_str(), "{first} then {id}");
            assert_eq!(id.as_str().len(), "int_".len() + 32, "{id}");
        }
        // Made in the same few milliseconds, they share their time prefix at most and
        // differ in the random part.
        let random: std::collections::HashSet<&str> = ids.iter().map(|id| &id.as_str()[4 + 12..]).collect();
        assert_eq!(random.len(), ids.len());
    }

    #[test]
    fn audited_findings_are_capped_with_a_count_of_the_rest() {
        let found: Vec<JsonFinding> = (0..150)
            .map(|i| JsonFinding {
                kind: "email".into(),
                category: Category::Pii,
                pointer: format!("/customers/{i}/email"),
            })
            .collect();
        let view = findings_view(&found);
        let listed = view.as_array().unwrap();
        assert_eq!(listed.len(), MAX_AUDITED_FINDINGS + 1);
        assert_eq!(
            listed[0],
            json!({"kind": "email", "category": "pii", "pointer": "/customers/0/email"})
        );
        assert_eq!(listed[MAX_AUDITED_FINDINGS], json!({"more": 50}));
        assert_eq!(findings_view(&found[..3]).as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_withheld_message_names_kinds_and_places_but_caps_the_list() {
        let found: Vec<JsonFinding> = (0..12)
            .map(|i| JsonFinding {
                kind: "payment-card".into(),
                category: Category::Pii,
                pointer: format!("/cards/{i}"),
            })
            .collect();
        let message = withheld_message(&found);
        assert!(message.contains("payment-card at /cards/0, "), "{message}");
        assert!(message.ends_with("payment-card at /cards/9, 2 more)"), "{message}");
    }
}
