//! The hold path: a held intent is stored with its payload hash, people vote on it, and the
//! gateway itself executes it exactly once when the quorum is reached.

use std::time::Duration;
use tracing::Instrument as _;

use serde::Serialize;
use serde_json::{Value, json};

use portcullis_catalog::ActionDef;
use portcullis_core::{AgentId, AuditEvent, AuditKind, Decision, IntentId};
use portcullis_policy::{Claims, Decided, Facts, InputProvenance};
use portcullis_store::{HoldRecord, NewHold, NewVote, VoteOutcome};

use crate::IntentError;
use crate::config::Role;
use crate::gateway::{Gateway, Submitted, store_down};
use crate::intent::{DecisionView, IntentResponse, IntentStatus};
use crate::quota::Reservation;

/// The longest a long-poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a long-poll looks again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// How long an approved hold may stay unclaimed before any instance's maintenance loop
/// runs it: far longer than the instance that approved it takes to claim it.
const ORPHANED_APPROVAL: Duration = Duration::from_secs(30);

/// Added to the egress timeouts to bound how long an intent can be `executing`.
const EXECUTION_MARGIN: Duration = Duration::from_secs(15);

/// What an agent is told about an intent the gateway stopped in the middle of.
const OUTCOME_UNKNOWN: &str = "the gateway stopped while this intent was executing, so whether the upstream call was made is unknown; it will not be run again (check the upstream before retrying with a new idempotency key)";

/// An authenticated person (from `admins` in the config).
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    /// Their id.
    pub id: String,
    /// What they may do.
    #[serde(skip)]
    pub role: Role,
    /// Their approver groups.
    pub groups: Vec<String>,
}

impl Person {
    fn may_decide(&self, hold: &HoldRecord) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Approver => hold.approver_group.as_ref().is_none_or(|g| self.groups.contains(g)),
        }
    }
}

/// Why an approval request was refused. Each maps to one HTTP status in the server.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No valid login token.
    #[error("missing or invalid login token")]
    Unauthenticated,
    /// The person may not decide this hold (not in its approver group).
    #[error("you are not an approver for this hold")]
    Forbidden,
    /// Only admins may do this (reload the configuration).
    #[error("only admins (`role: admin`) may do this")]
    AdminOnly,
    /// The agent that asked can't approve its own intent.
    #[error("the agent that asked can't approve its own intent")]
    SelfApproval,
    /// No such hold (or not visible to this person).
    #[error("no held intent `{0}`")]
    NotFound(String),
    /// The payload hash the approver saw is not the held one.
    #[error("the payload you saw (sha256 `{0}`) is not the held payload; reload it and decide again")]
    PayloadMismatch(String),
    /// This person already voted on this hold.
    #[error("you have already decided on this intent; a second approval must come from someone else")]
    AlreadyVoted,
    /// The hold was already decided.
    #[error("this intent is already {0}")]
    NotPending(String),
    /// The hold expired before it was approved.
    #[error("this intent expired before it was approved")]
    Expired,
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; nothing changed.
    #[error("the gateway's store is unavailable")]
    Store(String),
}

impl From<IntentError> for ApprovalError {
    fn from(e: IntentError) -> Self {
        Self::Store(e.to_string())
    }
}

fn store(e: portcullis_store::StoreError) -> ApprovalError {
    ApprovalError::Store(e.to_string())
}

/// A held intent as approvers see it.
#[derive(Debug, Clone, Serialize)]
pub struct HoldView {
    /// The intent id.
    pub id: String,
    /// The agent that asked.
    pub agent: String,
    /// The action.
    pub action: String,
    /// `pending`, `approved`, `executing`, `executed`, `failed`, `denied` or `expired`.
    pub state: String,
    /// The policies' reasons for holding it.
    pub reasons: Vec<String>,
    /// Who may approve.
    pub approver_group: Option<String>,
    /// Distinct approvals needed.
    pub required: u32,
    /// The votes so far.
    pub votes: Vec<portcullis_store::Vote>,
    /// SHA-256 of the canonical payload: an approval must name it.
    pub payload_sha256: String,
    /// The payload that will be sent on approval.
    pub payload: Value,
    /// When it was held.
    pub created_at: String,
    /// When it expires.
    pub expires_at: String,
    /// When it was decided.
    pub decided_at: Option<String>,
}

impl From<HoldRecord> for HoldView {
    fn from(h: HoldRecord) -> Self {
        let reasons = h
            .decision
            .get("reasons")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |r| {
                r.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            });
        Self {
            id: h.intent_id,
            agent: h.agent,
            action: h.action,
            state: h.state,
            reasons,
            approver_group: h.approver_group,
            required: h.required,
            votes: h.votes,
            payload_sha256: h.payload_sha256,
            payload: h.input,
            created_at: h.created_at,
            expires_at: h.expires_at,
            decided_at: h.decided_at,
        }
    }
}

/// What a vote did.
#[derive(Debug, Clone, Serialize)]
pub struct VoteResult {
    /// The hold's state after the vote.
    pub state: String,
    /// Approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub required: u32,
    /// When the vote completed the quorum and the gateway executed the intent: its result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<Value>,
}

/// Where a held intent came from, kept with the hold so that its approval re-decides as
/// the intent was then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// The identity provider's claims about the agent, if it had any.
    pub claims: Option<&'a Claims>,
    /// The agent's session.
    pub session: Option<&'a str>,
    /// Which input values came from untrusted data.
    pub provenance: &'a InputProvenance,
}

impl Gateway {
    /// Stores a held intent and answers `pending_approval`. The decision was audited before.
    pub(crate) async fn hold(
        &self,
        id: &IntentId,
        agent: &AgentId,
        origin: &Origin<'_>,
        action: &ActionDef,
        decided: Decided,
    ) -> Result<Submitted, IntentError> {
        let claims = origin.claims;
        let decision = decided.decision().clone();
        let spec = decision.approval.clone().unwrap_or(portcullis_core::ApprovalSpec {
            group: None,
            required: 1,
        });
        let expiry = time::OffsetDateTime::now_utc() + self.loaded().config.hold_expiry;
        let expires_at = portcullis_core::format_rfc3339(expiry);
        let hold = NewHold {
            intent_id: id.clone(),
            agent: agent.to_string(),
            action: action.name.to_string(),
            payload_sha256: decided.input().sha256().to_owned(),
            input: decided.input().canonical_json().to_owned(),
            decision: {
                let mut held = serde_json::to_value(&decision).unwrap_or(Value::Null);
                // The identity provider's claims at hold time: the approval re-decides as
                // the agent was then, not as whoever presents a token later.
                if let (Some(c), Value::Object(map)) = (claims, &mut held) {
                    map.insert(
                        "principal_claims".into(),
                        json!({"attributes": c.attributes, "groups": c.groups}),
                    );
                }
                // Likewise its session and where its input came from: the approver decides
                // on the provenance the policy saw, which does not expire while it waits.
                if let (Some(session), Value::Object(map)) = (origin.session, &mut held) {
                    map.insert("session".into(), json!(session));
                    map.insert("provenance".into(), json!(origin.provenance));
                }
                held
            },
            approver_group: spec.group.clone(),
            required: spec.required,
            expires_at: expires_at.clone(),
            expires_unix: expiry.unix_timestamp(),
        };
        self.store().put_hold(&hold).await.map_err(store_down)?;
        let approval = json!({
            "payload_sha256": hold.payload_sha256,
            "approver_group": spec.group,
            "required": spec.required,
            "expires_at": expires_at,
        });
        tracing::info!(intent = %id, action = %action.name, "held for approval");
        let response = IntentResponse {
            id: id.clone(),
            status: IntentStatus::PendingApproval,
            decision: DecisionView::from(&decision),
            result: None,
            request: None,
            error: None,
            approval: Some(approval),
        };
        let submitted = self.record(response).await?;
        if let Ok(Some(h)) = self.store().get_hold(id).await {
            self.notify_hold(&HoldView::from(h));
        }
        Ok(submitted)
    }

    /// The person a login token belongs to, with their role from the configuration.
    ///
    /// # Errors
    /// [`ApprovalError::Unauthenticated`] for unknown tokens and for people no longer in `admins`.
    pub async fn authenticate_person(&self, token: &str) -> Result<Person, ApprovalError> {
        if token.is_empty() || token.len() > 512 {
            return Err(ApprovalError::Unauthenticated);
        }
        let hash = portcullis_core::sha256_hex(token.as_bytes());
        let id = self
            .store()
            .person_for_token_hash(&hash)
            .await
            .map_err(store)?
            .ok_or(ApprovalError::Unauthenticated)?;
        let admin = self
            .loaded()
            .config
            .admins
            .get(&id)
            .ok_or(ApprovalError::Unauthenticated)?;
        Ok(Person {
            id,
            role: admin.role,
            groups: admin.groups.clone(),
        })
    }

    /// The person with this id as the configuration describes them now, or `None` when
    /// they are no longer in `admins`. The web UI re-checks its sessions with it on every
    /// request, so removing a person (or changing their role) takes effect at once.
    #[must_use]
    pub fn person_by_id(&self, id: &str) -> Option<Person> {
        self.loaded().config.admins.get(id).map(|admin| Person {
            id: id.to_owned(),
            role: admin.role,
            groups: admin.groups.clone(),
        })
    }

    /// Held intents this person may decide, newest first. `pending_only` limits to pending ones.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn approvals_for(&self, person: &Person, pending_only: bool) -> Result<Vec<HoldView>, ApprovalError> {
        self.sweep().await;
        let states: &[&str] = if pending_only { &["pending"] } else { &[] };
        let holds = self.store().list_holds(states, 200).await.map_err(store)?;
        Ok(holds
            .into_iter()
            .filter(|h| person.may_decide(h))
            .map(HoldView::from)
            .collect())
    }

    /// One held intent, if this person may decide it.
    ///
    /// # Errors
    /// [`ApprovalError::NotFound`] when it doesn't exist or isn't theirs to decide.
    pub async fn approval(&self, person: &Person, id: &str) -> Result<HoldView, ApprovalError> {
        self.sweep().await;
        let hold = self.visible_hold(person, id).await?;
        Ok(HoldView::from(hold))
    }

    async fn visible_hold(&self, person: &Person, id: &str) -> Result<HoldRecord, ApprovalError> {
        let intent = IntentId::new(id).map_err(|_| ApprovalError::NotFound(id.to_owned()))?;
        let hold = self
            .store()
            .get_hold(&intent)
            .await
            .map_err(store)?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        if !person.may_decide(&hold) {
            return Err(ApprovalError::NotFound(id.to_owned()));
        }
        Ok(hold)
    }

    /// Approves or denies a held intent. The approver names the payload hash they saw; it
    /// must be the held one. When the vote completes the quorum, the gateway executes the
    /// stored payload (once, whoever else votes at the same moment) and returns its result.
    ///
    /// # Errors
    /// For every rule that refuses the vote; nothing changes then.
    pub async fn vote(
        &self,
        person: &Person,
        id: &str,
        approve: bool,
        reason: &str,
        payload_sha256: &str,
    ) -> Result<VoteResult, ApprovalError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 2000 {
            return Err(ApprovalError::Invalid(
                "a reason of 1 to 2000 characters is required".into(),
            ));
        }
        let hold = self.visible_hold(person, id).await?;
        if person.id == hold.agent {
            return Err(ApprovalError::SelfApproval);
        }
        let intent = IntentId::new(id).map_err(|_| ApprovalError::NotFound(id.to_owned()))?;
        let agent = AgentId::new(hold.agent.clone()).map_err(|e| ApprovalError::Store(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let vote = NewVote {
            intent_id: &intent,
            approver: &person.id,
            approve,
            reason,
            payload_sha256,
            now_unix: now,
        };
        let outcome = self.store().vote(&vote).await.map_err(store)?;
        let detail = json!({"reason": reason, "payload_sha256": payload_sha256});
        let action = self.loaded().catalog.get(&hold.action).cloned();
        let kind = if approve {
            AuditKind::Approval
        } else {
            AuditKind::Denial
        };
        // A vote that counted is audited before anything follows from it.
        if matches!(
            outcome,
            VoteOutcome::Recorded { .. } | VoteOutcome::Denied | VoteOutcome::Approved(_)
        ) {
            self.audit_vote(
                person,
                kind,
                &intent,
                &agent,
                action.as_deref(),
                &hold.payload_sha256,
                detail,
            )
            .await?;
        }
        let (state, approvals, intent_result) = match outcome {
            VoteOutcome::NotFound => return Err(ApprovalError::NotFound(id.to_owned())),
            VoteOutcome::NotPending(s) => return Err(ApprovalError::NotPending(s)),
            VoteOutcome::PayloadMismatch => return Err(ApprovalError::PayloadMismatch(payload_sha256.to_owned())),
            VoteOutcome::AlreadyVoted => return Err(ApprovalError::AlreadyVoted),
            VoteOutcome::Expired => {
                self.expired(&hold).await;
                return Err(ApprovalError::Expired);
            }
            VoteOutcome::Recorded { have, .. } => ("pending".to_owned(), have, None),
            VoteOutcome::Denied => {
                let mut decision: Decision =
                    serde_json::from_value(hold.decision.clone()).unwrap_or_else(|_| Decision::gateway_deny("denied"));
                decision.effect = portcullis_core::Effect::Deny;
                decision.reasons.push(format!("denied by {}: {reason}", person.id));
                self.metrics().approval("denied");
                self.finish(&intent, IntentStatus::Denied, &decision, None, None, None)
                    .await?;
                ("denied".to_owned(), approved_count(&hold), None)
            }
            VoteOutcome::Approved(approvers) => {
                let n = u32::try_from(approvers.len()).unwrap_or(u32::MAX);
                self.metrics().approval("approved");
                let result = {
                    let _running = self.metrics().start_intent();
                    self.execute_approved(&intent, &approvers).await?
                };
                let state = self
                    .store()
                    .get_hold(&intent)
                    .await
                    .map_err(store)?
                    .map_or_else(|| "approved".to_owned(), |h| h.state);
                (state, n, result.map(|s| s.body()))
            }
        };
        Ok(VoteResult {
            state,
            approvals,
            required: hold.required,
            intent: intent_result,
        })
    }

    /// Audits a recorded vote; when the event can't be written, the vote is taken back so
    /// that no approval or denial stands (or runs) without its audit event.
    #[expect(
        clippy::too_many_arguments,
        reason = "an audit event has this many independent parts"
    )]
    async fn audit_vote(
        &self,
        person: &Person,
        kind: AuditKind,
        intent: &IntentId,
        agent: &AgentId,
        action: Option<&ActionDef>,
        payload_sha256: &str,
        detail: Value,
    ) -> Result<(), ApprovalError> {
        let audited = self
            .audit_as(
                Some(&person.id),
                kind,
                intent,
                agent,
                action,
                Some(payload_sha256),
                None,
                false,
                detail,
            )
            .await;
        if let Err(e) = audited {
            if let Err(undo) = self.store().retract_vote(intent, &person.id).await {
                tracing::error!(intent = %intent, error = %undo, "could not take back an unaudited vote");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Executes an approved hold if this call wins the claim; `None` when another call
    /// (another approver, another instance, recovery) already runs it.
    pub(crate) async fn execute_approved(
        &self,
        id: &IntentId,
        approvers: &[String],
    ) -> Result<Option<Submitted>, IntentError> {
        // The claim marks the intent `executing` with its clock restarted, in the same
        // transaction: if this instance dies now, any instance settles it as
        // `outcome_unknown` once it is older than an execution can take, exactly like an
        // intent that was never held. A hold whose intent is no longer `pending_approval`
        // is not claimed (and is failed by the claim): nothing runs it.
        let running = json!({"id": id, "status": IntentStatus::Executing.as_str()});
        let claimed = self
            .store()
            .claim_execution(
                id,
                IntentStatus::PendingApproval.as_str(),
                IntentStatus::Executing.as_str(),
                &running,
            )
            .await
            .map_err(store_down)?;
        if !claimed {
            return Ok(None);
        }
        let Some(hold) = self.store().get_hold(id).await.map_err(store_down)? else {
            return Ok(None);
        };
        // The approved run is an intent span of its own (the submission's ended at the hold).
        let span = crate::trace::intent_span();
        span.record("intent_id", tracing::field::display(id));
        span.record("agent", hold.agent.as_str());
        span.record("action", hold.action.as_str());
        span.record("approved_by", approvers.join(",").as_str());
        let submitted = self.run_hold(id, &hold, approvers).instrument(span.clone()).await;
        span.record(
            "status",
            match &submitted {
                Ok(s) => s.status.as_str(),
                Err(_) => "error",
            },
        );
        let state = match &submitted {
            Ok(s) if s.status == IntentStatus::Executed => "executed",
            _ => "failed",
        };
        if let Err(e) = self.store().finish_hold(id, state).await {
            tracing::error!(intent = %id, error = %e, "could not record the hold's final state");
        }
        submitted.map(Some)
    }

    async fn run_hold(&self, id: &IntentId, hold: &HoldRecord, approvers: &[String]) -> Result<Submitted, IntentError> {
        let agent = AgentId::new(hold.agent.clone()).map_err(|e| IntentError::StoreUnavailable(e.to_string()))?;
        let held: Decision =
            serde_json::from_value(hold.decision.clone()).unwrap_or_else(|_| Decision::gateway_deny("unreadable"));
        let Some(action) = self.loaded().catalog.get(&hold.action).cloned() else {
            let d = Decision::gateway_deny(format!("action `{}` is no longer in the catalog", hold.action));
            return self
                .finish(id, IntentStatus::Failed, &d, None, None, Some(d.reasons[0].clone()))
                .await;
        };
        // Re-validate and re-decide on the stored payload: the catalog or the policies may
        // have changed since the hold, and the approval covers exactly this payload.
        let input = match action.validate(hold.input.clone()) {
            Ok(i) if i.sha256() == hold.payload_sha256 => i,
            _ => {
                let message = "the held payload no longer validates to the approved payload; it was not executed";
                return self
                    .finish(id, IntentStatus::Failed, &held, None, None, Some(message.to_owned()))
                    .await;
            }
        };
        let findings = self.detector().scan_json(input.value());
        let now = time::OffsetDateTime::now_utc();
        let charges = match self
            .loaded()
            .config
            .quotas
            .charges(&agent, action.name.as_str(), input.value())
        {
            Ok(c) => c,
            Err(message) => {
                return self
                    .finish(id, IntentStatus::Failed, &held, None, None, Some(message))
                    .await;
            }
        };
        // Taken before the decision, as for any intent; an approval doesn't carry a budget
        // over into a later window, so a quota used up by now fails the held intent.
        let (session, provenance) = match held_provenance(hold) {
            Ok(p) => p,
            Err(message) => {
                return self
                    .finish(id, IntentStatus::Failed, &held, None, None, Some(message))
                    .await;
            }
        };
        let (counters, reservation) = self.reserve(&charges, now, false).await?;
        let facts = Facts {
            findings: &findings,
            counters: &counters,
            provenance: &provenance,
            now,
        };
        let decided = self
            .loaded()
            .policy
            .decide_with(&agent, held_claims(hold).as_ref(), &action, input, &facts);
        match decided.into_permitted_after_approval(approvers) {
            Ok(permitted) => {
                let decision = permitted.decision().clone();
                let hash = hold.payload_sha256.clone();
                if let Err(e) = self
                    .audit(
                        AuditKind::Decided,
                        id,
                        &agent,
                        Some(&action),
                        Some(&hash),
                        Some(&decision),
                        false,
                        json!({"approved_by": approvers}),
                    )
                    .await
                {
                    self.give_back(&charges, &reservation, now).await;
                    return Err(e);
                }
                if let Reservation::Exceeded(view) = reservation {
                    let limited = self.rate_limited(id, &agent, &action, &charges, view, now).await;
                    return self
                        .finish(
                            id,
                            IntentStatus::Failed,
                            &decision,
                            None,
                            None,
                            Some(limited.to_string()),
                        )
                        .await;
                }
                self.run(id, &agent, &action, &decision, permitted, &findings, session.as_deref())
                    .await
            }
            Err(refused) => {
                self.give_back(&charges, &reservation, now).await;
                let decision = refused.decision().clone();
                self.audit(
                    AuditKind::Decided,
                    id,
                    &agent,
                    Some(&action),
                    Some(&hold.payload_sha256),
                    Some(&decision),
                    false,
                    Value::Null,
                )
                .await?;
                self.finish(id, IntentStatus::Denied, &decision, None, None, None).await
            }
        }
    }

    /// Marks due holds expired, audits each expiry and settles their intents.
    pub async fn sweep(&self) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match self.store().expire_due(now).await {
            Ok(expired) => {
                for hold in expired {
                    self.expired(&hold).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "could not expire holds"),
        }
    }

    async fn expired(&self, hold: &HoldRecord) {
        let (Ok(id), Ok(agent)) = (IntentId::new(hold.intent_id.clone()), AgentId::new(hold.agent.clone())) else {
            return;
        };
        self.metrics().approval("expired");
        let action = self.loaded().catalog.get(&hold.action).cloned();
        let detail = json!({"expires_at": hold.expires_at});
        if let Err(e) = self
            .audit_as(
                Some("gateway"),
                AuditKind::Expiry,
                &id,
                &agent,
                action.as_deref(),
                Some(&hold.payload_sha256),
                None,
                false,
                detail,
            )
            .await
        {
            tracing::error!(intent = %id, error = %e, "could not audit an expiry");
        }
        let mut decision: Decision =
            serde_json::from_value(hold.decision.clone()).unwrap_or_else(|_| Decision::gateway_deny("expired"));
        decision
            .reasons
            .push(format!("not approved before {}", hold.expires_at));
        let message = Some("the approval window expired; the intent was not executed".to_owned());
        if let Err(e) = self
            .finish(&id, IntentStatus::Expired, &decision, None, None, message)
            .await
        {
            tracing::error!(intent = %id, error = %e, "could not record an expiry");
        }
    }

    /// At start-up: executes holds approved but never claimed (their instance stopped),
    /// settles intents (held or not) a crash interrupted, and expires due holds.
    pub async fn recover(&self) {
        // Holds claimed by a build that did not yet mark their intent `executing` at the
        // claim: nothing else would ever settle them.
        match self.store().holds_in_state("executing").await {
            Ok(holds) => {
                for hold in holds {
                    let Ok(id) = IntentId::new(hold.intent_id.clone()) else {
                        continue;
                    };
                    let unmarked = matches!(
                        self.store().get_intent(&id).await,
                        Ok(Some(i)) if i.status == IntentStatus::PendingApproval.as_str()
                    );
                    if unmarked {
                        self.fail_unmarked_hold(&id, &hold).await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "could not list interrupted holds"),
        }
        self.resume_approved(Duration::ZERO).await;
        self.settle_interrupted_intents().await;
        self.sweep().await;
    }

    /// Fails the intent of a hold claimed (`executing`) while its intent is still
    /// `pending_approval`: left so by a build that did not mark the intent at the claim.
    /// This build never passes through that state (it claims the hold and marks the intent
    /// in one transaction), so no running instance's claim is mistaken for one.
    async fn fail_unmarked_hold(&self, id: &IntentId, hold: &HoldRecord) {
        let held: Decision =
            serde_json::from_value(hold.decision.clone()).unwrap_or_else(|_| Decision::gateway_deny("interrupted"));
        let response = IntentResponse {
            id: id.clone(),
            status: IntentStatus::Failed,
            decision: DecisionView::from(&held),
            result: None,
            request: None,
            error: Some(
                "the gateway stopped while this intent was executing; it was not run again, to avoid running it twice"
                    .to_owned(),
            ),
            approval: None,
        };
        let Ok(body) = serde_json::to_value(&response) else {
            return;
        };
        let failed = self
            .store()
            .finish_intent_if(
                id,
                IntentStatus::PendingApproval.as_str(),
                IntentStatus::Failed.as_str(),
                &body,
            )
            .await;
        match failed {
            Ok(true) => {
                if let Err(e) = self.store().finish_hold(id, "failed").await {
                    tracing::error!(intent = %id, error = %e, "could not settle an interrupted hold");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(intent = %id, error = %e, "could not settle an interrupted hold"),
        }
    }

    /// How long an intent can legitimately stay `executing`: the upstream's connect and total
    /// timeouts, plus a margin for the decision, the audit appends and the store writes
    /// around them (each bounded by the store's busy timeout).
    fn longest_execution(&self) -> Duration {
        let egress = &self.loaded().config.egress;
        egress.connect_timeout + egress.timeout + EXECUTION_MARGIN
    }

    /// An intent `executing` for longer than any execution can take was interrupted by a
    /// gateway stopping (a crash, a kill) between its decision and its outcome. Whether the
    /// upstream call was made can't be known, so it is recorded as `outcome_unknown` (with an
    /// audit `outcome` event saying so), never run again, and its idempotency key stays taken.
    ///
    /// Age, not "whatever is executing at start-up", decides: another gateway instance on the
    /// same store may be executing right now, and its intents are younger than that bound.
    /// Runs at start-up and then every second with the hold sweep.
    async fn settle_interrupted_intents(&self) {
        let executing = match self.store().executing_intents().await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "could not list interrupted intents");
                return;
            }
        };
        let cutoff = time::OffsetDateTime::now_utc() - self.longest_execution();
        let interrupted = executing.into_iter().filter(|intent| {
            time::OffsetDateTime::parse(&intent.updated_at, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|t| t < cutoff)
        });
        for intent in interrupted {
            // What the audit log already holds for it says how far it got: the decision is
            // audited before anything runs, and the outcome before the result is stored.
            let events = match self.store().audit_events_of(&intent.id).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(intent = %intent.id, error = %e, "could not read an interrupted intent's audit events");
                    continue;
                }
            };
            if let Some(outcome) = events.iter().rev().find(|e| e.kind == AuditKind::Outcome) {
                self.settle_audited(&intent.id, outcome).await;
                continue;
            }
            let decided = events
                .iter()
                .any(|e| matches!(e.kind, AuditKind::Decided | AuditKind::Approval));
            if !decided {
                // Stopped before its decision was recorded: nothing was sent. The key is
                // freed, and a retry runs it as new.
                match self.store().abandon_intent(&intent.id).await {
                    Ok(_) => {
                        tracing::warn!(intent = %intent.id, "interrupted before its decision: nothing ran; released")
                    }
                    Err(e) => tracing::error!(intent = %intent.id, error = %e, "could not release an undecided intent"),
                }
                continue;
            }
            let body = json!({
                "id": intent.id,
                "status": IntentStatus::OutcomeUnknown.as_str(),
                "error": OUTCOME_UNKNOWN,
            });
            let event = AuditEvent {
                actor: None,
                kind: AuditKind::Outcome,
                intent_id: intent.id.clone(),
                agent: intent.agent.clone(),
                action: Some(intent.action.clone()),
                payload_sha256: Some(intent.payload_sha256.clone()),
                decision: None,
                dry_run: false,
                detail: json!({"status": IntentStatus::OutcomeUnknown.as_str()}),
            };
            // The status and its audit event in one transaction, and only while the intent
            // is still `executing`: every instance runs this loop, and of several settling
            // the same intent at once exactly one writes its `outcome` event. If the write
            // fails, neither is stored and the next round tries again.
            match self
                .store()
                .settle_intent(&event, IntentStatus::OutcomeUnknown.as_str(), &body)
                .await
            {
                Ok(Some(_)) => tracing::warn!(intent = %intent.id, "interrupted while executing: outcome unknown"),
                Ok(None) => {
                    tracing::debug!(intent = %intent.id, "an interrupted intent was settled by another instance");
                    continue;
                }
                Err(e) => {
                    tracing::error!(intent = %intent.id, error = %e, "could not settle an interrupted intent");
                    continue;
                }
            }
            // A held intent's hold ends with it (a no-op for intents that were never held).
            if let Err(e) = self.store().finish_hold(&intent.id, "failed").await {
                tracing::error!(intent = %intent.id, error = %e, "could not settle an interrupted hold");
            }
        }
    }

    /// An interrupted intent whose outcome event was written but whose result was not stored
    /// (the process stopped between the two): its status is the audited one; the result
    /// body is gone, and the agent is told where the outcome is.
    async fn settle_audited(&self, id: &IntentId, outcome: &AuditEvent) {
        let status = outcome.detail["status"]
            .as_str()
            .map_or(IntentStatus::OutcomeUnknown, crate::gateway::parse_status);
        let status = match status {
            IntentStatus::Executing | IntentStatus::PendingApproval => IntentStatus::OutcomeUnknown,
            s => s,
        };
        let mut body = json!({
            "id": id,
            "status": status.as_str(),
            "error": "the gateway stopped after recording this intent's outcome in the audit log and before storing its result; the audit log has the outcome",
        });
        if let Some(upstream) = outcome.detail.get("upstream_status") {
            body["upstream_status"] = upstream.clone();
        }
        // Only while still `executing`: another instance may have settled it first, or its
        // own (slow, not dead) instance stored the full result, which must not be replaced.
        match self
            .store()
            .finish_intent_if(id, IntentStatus::Executing.as_str(), status.as_str(), &body)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(intent = %id, error = %e, "could not settle an interrupted intent");
                return;
            }
        }
        let hold_state = if status == IntentStatus::Executed {
            "executed"
        } else {
            "failed"
        };
        if let Err(e) = self.store().finish_hold(id, hold_state).await {
            tracing::error!(intent = %id, error = %e, "could not settle an interrupted hold");
        }
        tracing::warn!(intent = %id, status = status.as_str(), "interrupted after its outcome was audited: settled from the audit log");
    }

    /// Executes holds approved at least `min_age` ago that nobody claimed: the instance that
    /// approved one stopped before running it. Claiming is atomic, so when several instances
    /// find the same hold, one runs it.
    async fn resume_approved(&self, min_age: Duration) {
        let holds = match self.store().holds_in_state("approved").await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "could not list approved holds");
                return;
            }
        };
        let cutoff = time::OffsetDateTime::now_utc() - min_age;
        for hold in holds {
            let old_enough = hold.decided_at.as_deref().is_none_or(|at| {
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|t| t <= cutoff)
            });
            let Ok(id) = IntentId::new(hold.intent_id.clone()) else {
                continue;
            };
            if !old_enough {
                continue;
            }
            let approvers: Vec<String> = hold
                .votes
                .iter()
                .filter(|v| v.verdict == "approve")
                .map(|v| v.approver.clone())
                .collect();
            if let Err(e) = self.execute_approved(&id, &approvers).await {
                tracing::error!(intent = %id, error = %e, "could not execute an approved hold");
            }
        }
    }

    /// Runs forever: every second, expires due holds and settles interrupted intents; every
    /// few seconds, runs approved holds their instance left behind. Spawn it beside the
    /// server.
    pub async fn maintain(&self) {
        let mut ticks: u64 = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ticks += 1;
            self.maintain_tick(ticks).await;
        }
    }

    /// One second's maintenance (`tick` counts seconds): expiries and interrupted intents
    /// every time, orphaned approvals every 5, old quota counters every 60. A reloading
    /// server calls it on whichever gateway is current.
    pub async fn maintain_tick(&self, tick: u64) {
        self.sweep().await;
        if let Some(checkpointer) = self.checkpointer() {
            checkpointer.tick(self.store()).await;
        }
        self.settle_interrupted_intents().await;
        if tick.is_multiple_of(5) {
            self.resume_approved(ORPHANED_APPROVAL).await;
        }
        if tick.is_multiple_of(60) {
            // Windows that ended are never read again; a minute's grace keeps a
            // counter that another instance is charging right at the boundary.
            let cutoff = time::OffsetDateTime::now_utc().unix_timestamp() - 60;
            if let Err(e) = self.store().prune_counters(cutoff).await {
                tracing::warn!(error = %e, "could not prune old quota counters");
            }
        }
    }

    /// An intent of `agent`, waiting up to `wait` while it is pending or executing.
    ///
    /// # Errors
    /// As [`Gateway::intent`].
    pub async fn wait_intent(&self, agent: &AgentId, id: &str, wait: Duration) -> Result<Submitted, IntentError> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let current = self.intent(agent, id).await?;
            let settled = !matches!(current.status, IntentStatus::PendingApproval | IntentStatus::Executing);
            if settled || tokio::time::Instant::now() >= deadline {
                return Ok(current);
            }
            tokio::time::sleep(POLL_EVERY).await;
            if current.status == IntentStatus::PendingApproval {
                self.sweep().await;
            }
        }
    }
}

/// The identity provider's claims stored with a hold, if the agent had any.
fn held_claims(hold: &HoldRecord) -> Option<Claims> {
    let stored = hold.decision.get("principal_claims")?;
    let attributes = stored
        .get("attributes")?
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let groups = stored
        .get("groups")?
        .as_array()?
        .iter()
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    Some(Claims { attributes, groups })
}

/// The session and input provenance stored with a hold (none for holds without a session).
///
/// # Errors
/// When a stored provenance can't be read (the store was edited): the intent must not run
/// on a decision that lost what it knew.
fn held_provenance(hold: &HoldRecord) -> Result<(Option<String>, InputProvenance), String> {
    let session = hold.decision.get("session").and_then(Value::as_str).map(str::to_owned);
    let provenance = match (&session, hold.decision.get("provenance")) {
        (Some(_), Some(p)) => serde_json::from_value(p.clone())
            .map_err(|e| format!("the held intent's recorded provenance can't be read ({e}); it was not executed"))?,
        (Some(_), None) => InputProvenance {
            session: true,
            marks: Vec::new(),
        },
        (None, _) => InputProvenance::NONE,
    };
    Ok((session, provenance))
}

fn approved_count(hold: &HoldRecord) -> u32 {
    u32::try_from(hold.votes.iter().filter(|v| v.verdict == "approve").count()).unwrap_or(u32::MAX)
}
