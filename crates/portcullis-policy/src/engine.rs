//! Loading, validating and evaluating policies.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Authorizer, Entities, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, Request, Schema, ValidationMode, Validator,
};
use serde_json::{Map, Value, json};

use portcullis_catalog::template::Part;
use portcullis_catalog::{ActionDef, Catalog, ValidInput};
use portcullis_core::{AgentId, ApprovalSpec, Decision, Diagnostic, Effect, line_at_offset};
use portcullis_redact::detect::JsonFinding;

use crate::authorize::{Compiled, Verdict};
use crate::context::{self, Pick, RecordShape, derivation};
use crate::counters::{self, CounterSpec, CounterState};
use crate::entities::{self, AgentEntity, EntityDecl};
use crate::permitted::Permitted;
use crate::provenance::{self, InputProvenance};
use crate::reads::Reads;
use crate::schema::record_type;

/// Everything policy loading needs.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInputs<'a> {
    /// The action catalog.
    pub catalog: &'a Catalog,
    /// Agents with attributes and groups, by id.
    pub agents: &'a BTreeMap<String, AgentEntity>,
    /// Trusted entity data from the configuration.
    pub entities: &'a [EntityDecl],
    /// The `.cedar` files.
    pub policy_files: &'a [PathBuf],
    /// The rate and spend quotas that apply to each action, by action name.
    pub counters: &'a BTreeMap<String, Vec<CounterSpec>>,
    /// Agent attributes that identity-provider claims may set (strings, optional).
    pub claim_attributes: &'a [String],
}

/// What an identity provider's token says about its agent, beyond its id: string
/// attributes and groups. Merged over the agent's configured entity for one decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Attribute name → value (names from `oidc.attributes`).
    pub attributes: BTreeMap<String, String>,
    /// Groups (`principal in AgentGroup::"…"`).
    pub groups: Vec<String>,
}

/// Loaded, validated policies, ready to decide.
#[derive(Debug)]
pub struct PolicyEngine {
    schema: Schema,
    schema_json: Value,
    policies: PolicySet,
    /// What each policy's annotations say, read once at load: Cedar parses the key on
    /// every `Policy::annotation` call, which cost a sixth of a decision.
    notes: HashMap<PolicyId, Notes>,
    /// Every policy, compiled for evaluation, for an action the catalog doesn't have.
    compiled: Vec<Compiled>,
    /// For each action of the catalog, the policies whose action scope can admit it: a
    /// decision evaluates only these, so its cost follows the policies about its action,
    /// not the size of the whole set (see [`policies_by_action`]).
    by_action: HashMap<String, Applicable>,
    entities: Entities,
    authorizer: Authorizer,
    agent_groups: HashMap<String, Vec<String>>,
    /// The configured agents, for merging identity-provider claims over them.
    agents: BTreeMap<String, AgentEntity>,
    /// Each action of the catalog as the schema knows it, by name.
    shapes: HashMap<String, Shape>,
}

/// The policies that can apply to one action: as a set for Cedar's authorizer (debug
/// builds and tests decide with both) and compiled for [`Verdict::of`].
#[derive(Debug)]
struct Applicable {
    set: PolicySet,
    compiled: Vec<Compiled>,
}

/// An action of the catalog the engine was loaded with, and what its context must hold
/// beyond what the context builders guarantee by construction (see [`Shape::fits`]).
#[derive(Debug)]
struct Shape {
    /// The definition the schema was generated from (held, so that no other definition
    /// can take its address).
    def: Arc<ActionDef>,
    /// The fields whose `context.derived` entry the schema requires.
    derived_required: Vec<String>,
    /// The quotas that apply to the action.
    counters: Vec<CounterSpec>,
    /// The action's entity, and its resource's type, parsed once (Cedar parses a type
    /// name with its full parser).
    action_uid: Option<EntityUid>,
    resource_type: Option<EntityTypeName>,
    /// The parts of the context that the policies which can apply to the action read: a
    /// decision that skips the schema check builds only these (see [`Reads`]).
    reads: Reads,
    /// The Cedar values of the action's input fields.
    input: RecordShape,
}

impl Shape {
    fn new(def: &Arc<ActionDef>, counters: &BTreeMap<String, Vec<CounterSpec>>, reads: Reads) -> Self {
        let derived_required = def
            .input_schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(name, prop)| derivation(prop).is_some() && derived_required(def, name, prop))
            .map(|(name, _)| name.clone())
            .collect();
        Self {
            def: Arc::clone(def),
            derived_required,
            counters: counters.get(def.name.as_str()).cloned().unwrap_or_default(),
            action_uid: uid("Action", def.name.as_str()).ok(),
            resource_type: EntityTypeName::from_str(&def.resource.entity_type).ok(),
            input: RecordShape::of(&def.input_schema)
                .reading(|k| reads.reads_field("input", k), |k| reads.reads_field("derived", k)),
            reads,
        }
    }

    /// Whether this context is sure to pass the schema check in `Request::new`, which can
    /// then be skipped (it cost a fifth of a decision). The check validates the principal,
    /// action and resource types and the context against the action's context type.
    ///
    /// - The types: `action` is the very definition the schema was generated from (its
    ///   action, resource type and `Agent` principal declared together).
    /// - `input`: [`context::input`] builds exactly the record type the schema gives the
    ///   same JSON Schema, or fails; `now` and `findings` have fixed shapes.
    /// - `derived`: its types follow the input's, which was validated against this action
    ///   (`ValidInput` names it); an entry the schema requires can still be missing, when
    ///   a valid value has no domain or host (a `urn:` URI), which is looked for here.
    /// - `counters` and `provenance` come from the caller: each counter must be one of the
    ///   action's quotas, of its kind, with every quota that applies to all agents there; and
    ///   each input field with a provenance mark one of the action's fields.
    ///
    /// When one of these fails, the schema check runs and denies as it always did.
    fn fits(
        &self,
        action: &ActionDef,
        input: &ValidInput,
        counters: &[CounterState],
        provenance: &InputProvenance,
    ) -> bool {
        let own = std::ptr::eq(Arc::as_ptr(&self.def), action) && input.action() == &action.name;
        if !own {
            return false;
        }
        let derived_ok = self
            .derived_required
            .iter()
            .all(|f| self.input.has_fact(input.value(), f));
        let quota = |c: &CounterState| self.counters.iter().any(|s| s.name == c.name && s.sum == c.sum);
        let counters_ok = counters.iter().all(quota)
            && self
                .counters
                .iter()
                .filter(|s| s.always)
                .all(|s| counters.iter().any(|c| c.name == s.name));
        let marked_ok = provenance.marked_fields().all(|k| self.input.has_property(&k));
        derived_ok && counters_ok && marked_ok
    }
}

/// Whether the `context.derived` entry of input field `name` is a required attribute: the
/// field is required and can't be null.
fn derived_required(action: &ActionDef, name: &str, prop: &Value) -> bool {
    action.input_fields().any(|(n, r)| r && n == name) && !prop.get("type").is_some_and(Value::is_array)
}

/// Whether every decision checks its request against the schema, even one that
/// [`Shape::fits`] it: in debug builds and tests, so that a context builder that strays from
/// the schema fails there.
const ALWAYS_CHECK: bool = cfg!(debug_assertions);

/// The annotations of one policy that shape a decision.
#[derive(Debug, Default)]
struct Notes {
    /// `@hold`: the reason the intent is held.
    hold: Option<String>,
    /// `@approvers`: the group whose members may approve.
    approvers: Option<String>,
    /// `@approvals`: how many distinct approvals (when it is a number).
    approvals: Option<u32>,
    /// `@reason`: the reason of the decision.
    reason: Option<String>,
}

impl Notes {
    fn of(policy: &Policy) -> Self {
        let text = |key: &str| policy.annotation(key).map(str::to_owned);
        Self {
            hold: text(HOLD_ANNOTATION),
            approvers: text(APPROVERS_ANNOTATION),
            approvals: policy
                .annotation(APPROVALS_ANNOTATION)
                .and_then(|n| n.trim().parse::<u32>().ok()),
            reason: text(REASON_ANNOTATION),
        }
    }
}

/// The facts a decision weighs besides the agent, the action and the input.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// What the detector found in the input (`context.findings`).
    pub findings: &'a [JsonFinding],
    /// The state of the quotas that apply (`context.counters`).
    pub counters: &'a [CounterState],
    /// Which input values came from untrusted data (`context.provenance`).
    pub provenance: &'a InputProvenance,
    /// The decision time (`context.now`).
    pub now: time::OffsetDateTime,
}

/// A decision together with the input it was made on.
#[derive(Debug, Clone)]
pub struct Decided {
    decision: Decision,
    input: ValidInput,
}

impl Decided {
    /// The decision.
    #[must_use]
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The input decided on.
    #[must_use]
    pub fn input(&self) -> &ValidInput {
        &self.input
    }

    /// The proof of an allow for a held intent that the required people approved: a hold
    /// (re-decided at execution time) becomes permitted; a deny stays refused. The caller
    /// (the gateway) has checked the approvals in the store: distinct approvers, the same
    /// payload hash, not expired, claimed for execution exactly once.
    ///
    /// # Errors
    /// When the effect is deny.
    pub fn into_permitted_after_approval(self, approved_by: &[String]) -> Result<Permitted<ValidInput>, Box<Self>> {
        match self.decision.effect {
            Effect::Allow | Effect::Hold if !approved_by.is_empty() => {
                let mut decision = self.decision;
                decision.effect = Effect::Allow;
                decision.reasons.push(format!("approved by {}", approved_by.join(", ")));
                Ok(Permitted::new(self.input, decision))
            }
            _ => Err(Box::new(self)),
        }
    }

    /// The proof of an allow, or the decision back when it was not an allow.
    ///
    /// # Errors
    /// When the effect is deny or hold.
    pub fn into_permitted(self) -> Result<Permitted<ValidInput>, Box<Self>> {
        if self.decision.effect == Effect::Allow {
            Ok(Permitted::new(self.input, self.decision))
        } else {
            Err(Box::new(self))
        }
    }
}

/// The annotation that turns a permit into a hold.
pub const HOLD_ANNOTATION: &str = "hold";
/// The annotation naming the approver group of a hold.
pub const APPROVERS_ANNOTATION: &str = "approvers";
/// The annotation giving the number of distinct approvals a hold needs.
pub const APPROVALS_ANNOTATION: &str = "approvals";
/// The most approvals a hold may require.
pub const MAX_APPROVALS: u32 = 10;

/// The annotation whose text becomes the reason of a decision.
pub const REASON_ANNOTATION: &str = "reason";
/// The annotation that names a policy.
pub const ID_ANNOTATION: &str = "id";

impl PolicyEngine {
    /// Generates the schema, loads and validates every policy file, and builds the
    /// entity store.
    ///
    /// # Errors
    /// Every problem found, each with its file and line where known.
    pub fn load(inputs: PolicyInputs<'_>) -> Result<Self, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let (entity_types, entity_list) = match entities::build(inputs.agents, inputs.entities, inputs.claim_attributes)
        {
            Ok(x) => x,
            Err(errs) => {
                return Err(errs
                    .into_iter()
                    .map(|e| Diagnostic::general(format!("in `entities`/`agents`: {e}")))
                    .collect());
            }
        };
        let schema_json = generate_schema(inputs.catalog, entity_types, inputs.counters);
        let schema = Schema::from_json_value(schema_json.clone()).map_err(|e| {
            vec![Diagnostic::general(format!(
                "the generated Cedar schema is invalid: {e}"
            ))]
        })?;
        let mut policies = PolicySet::new();
        let mut sources: HashMap<PolicyId, (PathBuf, Arc<str>)> = HashMap::new();
        for file in inputs.policy_files {
            load_file(file, &mut policies, &mut sources, &mut problems);
        }
        if problems.is_empty() {
            let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
            for err in result.validation_errors() {
                let (file, src) = sources
                    .get(err.policy_id())
                    .map_or((None, ""), |(f, s)| (Some(f.clone()), &**s));
                let line = first_label_offset(err).map(|o| line_at_offset(src, o));
                let message = format!("policy `{}`: {}", err.policy_id(), one_line(&err.to_string()));
                problems.push(Diagnostic { file, line, message });
            }
        }
        let entities = match Entities::from_json_value(Value::Array(entity_list), Some(&schema)) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Diagnostic::general(format!(
                    "in `entities`: {}",
                    one_line(&e.to_string())
                )));
                Entities::empty()
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let agent_groups = inputs
            .agents
            .iter()
            .map(|(id, a)| (id.clone(), a.groups.clone()))
            .collect();
        let by_action = policies_by_action(&policies, inputs.catalog);
        let notes = policies.policies().map(|p| (p.id().clone(), Notes::of(p))).collect();
        let reads: HashMap<&PolicyId, Reads> = policies.policies().map(|p| (p.id(), Reads::of(p))).collect();
        let reads_of = |set: &PolicySet| {
            let mut all = Reads::default();
            set.policies()
                .filter_map(|p| reads.get(p.id()))
                .for_each(|r| all.add(r));
            all
        };
        let shapes = inputs
            .catalog
            .iter()
            .map(|a| {
                let set = by_action.get(a.name.as_str()).map_or(&policies, |a| &a.set);
                (a.name.to_string(), Shape::new(a, inputs.counters, reads_of(set)))
            })
            .collect();
        Ok(Self {
            schema,
            schema_json,
            compiled: policies.policies().map(Compiled::of).collect(),
            policies,
            notes,
            by_action,
            entities,
            authorizer: Authorizer::new(),
            agent_groups,
            agents: inputs.agents.clone(),
            shapes,
        })
    }

    /// The generated Cedar schema (JSON format), for `portcullis check --print-schema`.
    #[must_use]
    pub fn schema_json(&self) -> &Value {
        &self.schema_json
    }

    /// How many policies are loaded.
    #[must_use]
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// Decides whether `agent` may run `action` with `input` at time `now`, given what
    /// the detectors found in the input and the state of the quotas that apply.
    ///
    /// Default deny; forbid wins; an evaluation error, or an input that can't be put
    /// into the context, denies.
    #[must_use]
    pub fn decide(
        &self,
        agent: &AgentId,
        action: &ActionDef,
        input: ValidInput,
        findings: &[JsonFinding],
        counters: &[CounterState],
        now: time::OffsetDateTime,
    ) -> Decided {
        self.decide_as(agent, None, action, input, findings, counters, now)
    }

    /// [`PolicyEngine::decide`] for an agent whose identity provider's token carried
    /// `claims`: its attributes and groups are merged over the configured ones (configured
    /// attributes win; groups add up) for this decision only.
    #[must_use]
    #[expect(
        clippy::too_many_arguments,
        reason = "the facts of one decision, each a different kind"
    )]
    pub fn decide_as(
        &self,
        agent: &AgentId,
        claims: Option<&Claims>,
        action: &ActionDef,
        input: ValidInput,
        findings: &[JsonFinding],
        counters: &[CounterState],
        now: time::OffsetDateTime,
    ) -> Decided {
        let facts = Facts {
            findings,
            counters,
            provenance: &InputProvenance::NONE,
            now,
        };
        self.decide_with(agent, claims, action, input, &facts)
    }

    /// [`PolicyEngine::decide_as`] with every fact of the decision, including where the
    /// input came from (`context.provenance`).
    #[must_use]
    pub fn decide_with(
        &self,
        agent: &AgentId,
        claims: Option<&Claims>,
        action: &ActionDef,
        input: ValidInput,
        facts: &Facts<'_>,
    ) -> Decided {
        let decision = self
            .evaluate(agent, claims, action, &input, facts, ALWAYS_CHECK)
            .unwrap_or_else(Decision::gateway_deny);
        Decided { decision, input }
    }

    /// The entity store with `agent` as its claims describe it.
    fn entities_with(&self, agent: &AgentId, claims: &Claims) -> Result<Entities, String> {
        let configured = self.agents.get(agent.as_str()).cloned().unwrap_or_default();
        let mut attrs = configured.attributes.clone();
        for (k, v) in &claims.attributes {
            attrs.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
        }
        let mut groups: Vec<String> = configured.groups.clone();
        groups.extend(claims.groups.iter().cloned());
        groups.sort();
        groups.dedup();
        let mut list: Vec<Value> = groups
            .iter()
            .map(|g| json!({"uid": {"type": "AgentGroup", "id": g}, "attrs": {}, "parents": []}))
            .collect();
        let parents: Vec<Value> = groups.iter().map(|g| json!({"type": "AgentGroup", "id": g})).collect();
        list.push(json!({"uid": {"type": "Agent", "id": agent.as_str()}, "attrs": attrs, "parents": parents}));
        let mut new = Vec::with_capacity(list.len());
        for e in list {
            new.push(
                cedar_policy::Entity::from_json_value(e, Some(&self.schema)).map_err(|e| {
                    format!(
                        "the agent's claims can't be evaluated by policy: {}",
                        one_line(&e.to_string())
                    )
                })?,
            );
        }
        self.entities
            .clone()
            .upsert_entities(new, Some(&self.schema))
            .map_err(|e| {
                format!(
                    "the agent's claims can't be evaluated by policy: {}",
                    one_line(&e.to_string())
                )
            })
    }

    fn evaluate(
        &self,
        agent: &AgentId,
        claims: Option<&Claims>,
        action: &ActionDef,
        input: &ValidInput,
        facts: &Facts<'_>,
        always_check: bool,
    ) -> Result<Decision, String> {
        let shape = self.shapes.get(action.name.as_str());
        let principal = match AGENT_TYPE.as_ref() {
            Some(t) => EntityUid::from_type_name_and_id(t.clone(), EntityId::new(agent.as_str())),
            None => uid("Agent", agent.as_str())?,
        };
        let action_uid = match shape.and_then(|s| s.action_uid.clone()) {
            Some(u) => u,
            None => uid("Action", action.name.as_str())?,
        };
        let resource_id = render_id(action, input.value());
        let resource = match shape
            .filter(|s| s.def.resource.entity_type == action.resource.entity_type)
            .and_then(|s| s.resource_type.clone())
        {
            Some(t) => EntityUid::from_type_name_and_id(t, EntityId::new(resource_id)),
            None => uid(&action.resource.entity_type, &resource_id)?,
        };
        // Built as Cedar values directly: Cedar's JSON parser tries every escape form on
        // every value and was the largest single cost of a decision.
        // The shape of the very definition decided on: another one is worked out here.
        let own_shape = shape.filter(|s| std::ptr::eq(Arc::as_ptr(&s.def), action));
        let compiled;
        let input_shape = match own_shape {
            Some(s) => &s.input,
            None => {
                compiled = RecordShape::of(&action.input_schema);
                &compiled
            }
        };
        let fits = shape.is_some_and(|s| s.fits(action, input, facts.counters, facts.provenance));
        // The schema check in `Request::new` cost a fifth of a decision. It only checks (the
        // request and its context are the same with or without it), so skipping it where it
        // can't fail changes no decision: `fits` shows the principal, action and resource
        // types come from the catalog the schema was generated from, the context follows
        // the same JSON Schema (`context::input` converts strictly or fails), and the parts
        // from the caller match the action's quotas and fields.
        let schema = (always_check || !fits).then_some(&self.schema);
        // A checked context holds every attribute the schema wants; one that skips the
        // check holds only what the action's policies read, which can't change a decision.
        let everything = Reads::everything();
        let build = |pruned: bool| {
            let (reads, pick) = match shape {
                // `input_shape` is then the action's own, marked with what its policies read.
                Some(shape) if pruned && std::ptr::eq(input_shape, &shape.input) => (&shape.reads, Pick::Read),
                _ => (&everything, Pick::All),
            };
            let attribute = |name: &str, value: &Value| {
                context::restricted_picking(value, &|k| reads.reads_field(name, k))
                    .map_err(|e| format!("the input can't be evaluated by policy: {e}"))
            };
            let part = |name: &str| if reads.reads(name) { pick } else { Pick::Nothing };
            // Refused or not whatever the policies read: every input field is checked.
            let built = context::from_input(input.value(), input_shape, part("input"), part("derived"))
                .map_err(|e| format!("the input can't be evaluated by policy: {e}"))?;
            let mut attributes = context::Attributes::new();
            if let Some(record) = built.input {
                attributes.insert("input".into(), record);
            }
            if let Some(record) = built.derived {
                attributes.insert("derived".into(), record);
            }
            if reads.reads("now") {
                attributes.insert("now".into(), context::now(facts.now, |k| reads.reads_field("now", k)));
            }
            if reads.reads("findings") {
                let findings = context::findings(facts.findings, |k| reads.reads_field("findings", k));
                attributes.insert("findings".into(), findings);
            }
            if reads.reads("counters") {
                attributes.insert(
                    "counters".into(),
                    attribute("counters", &counters::counters(facts.counters))?,
                );
            }
            if reads.reads("provenance") {
                let provenance = provenance::provenance(facts.provenance);
                attributes.insert("provenance".into(), attribute("provenance", &provenance)?);
            }
            Ok::<_, String>(context::context(attributes))
        };
        // Where the check runs although it can't fail (debug builds and tests), the request
        // a release build decides (its context pruned to what the policies read) is
        // decided too, over the compiled policies, and Cedar's authorizer decides the
        // checked one: the two must agree.
        let pruned = match shape {
            Some(_) if always_check && fits => {
                Some((build(true)?, principal.clone(), action_uid.clone(), resource.clone()))
            }
            _ => None,
        };
        let request = Request::new(principal, action_uid, resource, build(schema.is_none())?, schema)
            .map_err(|e| format!("the request can't be evaluated by policy: {}", one_line(&e.to_string())))?;
        let with_claims = claims.map(|c| self.entities_with(agent, c)).transpose()?;
        let entities = with_claims.as_ref().unwrap_or(&self.entities);
        let (set, compiled) = self
            .by_action
            .get(action.name.as_str())
            .map_or((&self.policies, &self.compiled), |a| (&a.set, &a.compiled));
        let verdict = if always_check {
            let reference = Verdict::of_response(&self.authorizer.is_authorized(&request, set, entities));
            let verdict = match pruned {
                Some((context, principal, action_uid, resource)) => {
                    let request = Request::new(principal, action_uid, resource, context, None).map_err(|e| {
                        format!("the request can't be evaluated by policy: {}", one_line(&e.to_string()))
                    })?;
                    Verdict::of(compiled, &request, entities)
                }
                None => Verdict::of(compiled, &request, entities),
            };
            if !verdict.agrees_with(&reference) {
                return Err(format!(
                    "the decision on `{}` over the compiled policies (and the context pruned to what they read) \
                     differs from Cedar's authorizer's, so the intent is denied",
                    action.name
                ));
            }
            verdict
        } else {
            Verdict::of(compiled, &request, entities)
        };
        if let Some(id) = verdict.errors.first() {
            return Err(format!("policy `{id}` could not be evaluated, so the intent is denied"));
        }
        let determining: Vec<(&PolicyId, &Notes)> = verdict
            .determining
            .iter()
            .filter_map(|id| self.notes.get_key_value(id))
            .collect();
        let ids = determining.iter().map(|(id, _)| id.to_string()).collect();
        if !verdict.allow {
            let reasons = if determining.is_empty() {
                vec![format!("no policy permits agent `{agent}` to run `{}`", action.name)]
            } else {
                reasons(&determining, "forbidden by policy")
            };
            return Ok(Decision {
                effect: Effect::Deny,
                reasons,
                policies: ids,
                approval: None,
            });
        }
        let holding: Vec<(&PolicyId, &Notes)> = determining.iter().copied().filter(|(_, n)| n.hold.is_some()).collect();
        Ok(if holding.is_empty() {
            Decision {
                effect: Effect::Allow,
                reasons: reasons(&determining, "permitted by policy"),
                policies: ids,
                approval: None,
            }
        } else {
            Decision {
                effect: Effect::Hold,
                reasons: holding.iter().filter_map(|(_, n)| n.hold.clone()).collect(),
                policies: ids,
                approval: Some(approval_spec(&holding)),
            }
        })
    }

    /// Every approver group named by an `@approvers` annotation, with the policy naming it,
    /// so that the configuration can check the group exists.
    #[must_use]
    pub fn approver_groups(&self) -> Vec<(String, String)> {
        self.policies
            .policies()
            .filter_map(|p| {
                p.annotation(APPROVERS_ANNOTATION)
                    .map(|g| (p.id().to_string(), g.to_owned()))
            })
            .collect()
    }

    /// Whether some permit policy's scope admits `agent` and `action`: the actions an agent
    /// may call are the ones it is shown. Conditions are not evaluated (they need an input).
    #[must_use]
    pub fn visible(&self, agent: &AgentId, action: &ActionDef) -> bool {
        self.visible_as(agent, None, action)
    }

    /// [`PolicyEngine::visible`] for an agent whose identity provider's token carried
    /// `claims`: the groups it names count, as they do in [`PolicyEngine::decide_as`].
    #[must_use]
    pub fn visible_as(&self, agent: &AgentId, claims: Option<&Claims>, action: &ActionDef) -> bool {
        self.some_permit_admits(agent, claims, action, |_| true)
    }

    /// Whether some permit annotated `@hold` has a scope that admits `agent` and `action`,
    /// so that an intent of this agent may be held for approval (conditions are not
    /// evaluated: this says "may", not "will"). The MCP server lists its intent-status tool
    /// only to agents for whom this holds for some action.
    #[must_use]
    pub fn may_hold(&self, agent: &AgentId, claims: Option<&Claims>, action: &ActionDef) -> bool {
        self.some_permit_admits(agent, claims, action, |p| {
            self.notes.get(p.id()).is_some_and(|n| n.hold.is_some())
        })
    }

    /// Whether a permit policy accepted by `filter` has a scope (principal and action
    /// constraints) that admits `agent`, a member of its configured groups and of the groups
    /// its `claims` name, and `action`.
    fn some_permit_admits(
        &self,
        agent: &AgentId,
        claims: Option<&Claims>,
        action: &ActionDef,
        filter: impl Fn(&Policy) -> bool,
    ) -> bool {
        let (Ok(me), Ok(act)) = (uid("Agent", agent.as_str()), uid("Action", action.name.as_str())) else {
            return false;
        };
        let groups: Vec<EntityUid> = self
            .agent_groups
            .get(agent.as_str())
            .into_iter()
            .flatten()
            .chain(claims.into_iter().flat_map(|c| c.groups.iter()))
            .filter_map(|g| uid("AgentGroup", g).ok())
            .collect();
        let principal_ok = |c: PrincipalConstraint| match c {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(u) => u == me,
            PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => u == me || groups.contains(&u),
            PrincipalConstraint::Is(t) => t.to_string() == "Agent",
        };
        let action_ok = |c: ActionConstraint| match c {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(u) => u == act,
            ActionConstraint::In(us) => us.contains(&act),
        };
        self.policies
            .policies()
            .filter(|p| p.effect() == cedar_policy::Effect::Permit && filter(p))
            .any(|p| principal_ok(p.principal_constraint()) && action_ok(p.action_constraint()))
    }
}

/// The policies that can apply to each action of `catalog`.
///
/// A policy whose action scope doesn't admit the request's action is not applicable: Cedar
/// never evaluates its conditions, so it can neither determine the decision nor raise an
/// error, and leaving it out changes nothing. Kept for an action: scopes `action`,
/// `action == Action::"it"`, and `action in [...]` listing it or naming an entity that is not
/// an action of the catalog (conservatively: it could be a group). Without this, every
/// decision would walk every policy of every action.
fn policies_by_action(policies: &PolicySet, catalog: &Catalog) -> HashMap<String, Applicable> {
    // Each policy with whether its action scope names the action (and so admits it).
    let mut applicable: HashMap<EntityUid, Vec<(Policy, bool)>> = catalog
        .iter()
        .filter_map(|a| uid("Action", a.name.as_str()).ok())
        .map(|u| (u, Vec::new()))
        .collect();
    // Each policy's scope is read once and the policy filed under the actions it admits.
    let mut everywhere = Vec::new();
    for policy in policies.policies() {
        let named = match policy.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(u) => Some(vec![u]),
            ActionConstraint::In(us) if us.iter().all(|u| applicable.contains_key(u)) => Some(us),
            ActionConstraint::In(_) => None,
        };
        match named {
            Some(actions) => {
                for action in actions {
                    if let Some(list) = applicable.get_mut(&action) {
                        list.push((policy.clone(), true));
                    }
                }
            }
            None => everywhere.push((policy.clone(), false)),
        }
    }
    applicable
        .into_iter()
        .filter_map(|(action, mut list)| {
            list.extend(everywhere.iter().cloned());
            let compiled = list
                .iter()
                .map(|(p, named)| {
                    if *named {
                        Compiled::admitting(p)
                    } else {
                        Compiled::of(p)
                    }
                })
                .collect();
            // A set that can't be rebuilt falls back to all of them (no entry).
            let set = PolicySet::from_policies(list.into_iter().map(|(p, _)| p)).ok()?;
            Some((action.id().unescaped().to_owned(), Applicable { set, compiled }))
        })
        .collect()
}

/// What the holding permits ask for: the largest `@approvals` count (1 when none says), and
/// the `@approvers` group of the first holding policy by id.
fn approval_spec(holding: &[(&PolicyId, &Notes)]) -> ApprovalSpec {
    let required = holding
        .iter()
        .filter_map(|(_, n)| n.approvals)
        .max()
        .unwrap_or(1)
        .clamp(1, MAX_APPROVALS);
    let mut groups: Vec<(String, &str)> = holding
        .iter()
        .filter_map(|(id, n)| n.approvers.as_deref().map(|g| (id.to_string(), g)))
        .collect();
    groups.sort();
    ApprovalSpec {
        group: groups.first().map(|(_, g)| (*g).to_owned()),
        required,
    }
}

fn reasons(policies: &[(&PolicyId, &Notes)], fallback: &str) -> Vec<String> {
    policies
        .iter()
        .map(|(id, n)| n.reason.clone().unwrap_or_else(|| format!("{fallback} `{id}`")))
        .collect()
}

/// The principal's entity type, parsed once (`None` can't happen: it is a valid name).
static AGENT_TYPE: std::sync::LazyLock<Option<EntityTypeName>> =
    std::sync::LazyLock::new(|| EntityTypeName::from_str("Agent").ok());

fn uid(entity_type: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(entity_type).map_err(|_| format!("`{entity_type}` is not a Cedar entity type"))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

/// The resource id for an intent, from the action's `resource.id` template.
fn render_id(action: &ActionDef, input: &Value) -> String {
    action
        .resource
        .id
        .parts()
        .iter()
        .map(|p| match p {
            Part::Lit(l) => l.clone(),
            Part::Param(n) => match input.get(n) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            },
        })
        .collect()
}

fn generate_schema(
    catalog: &Catalog,
    mut entity_types: Map<String, Value>,
    quotas: &BTreeMap<String, Vec<CounterSpec>>,
) -> Value {
    let mut actions = Map::new();
    for action in catalog.iter() {
        entity_types
            .entry(action.resource.entity_type.clone())
            .or_insert_with(|| json!({}));
        let mut derived = Map::new();
        if let Some(Value::Object(props)) = action.input_schema.get("properties") {
            for (name, prop) in props {
                // Derived facts of a required field are present once it passed its `format`
                // check, unless a valid value has no domain or host (a `urn:` URI): such a
                // request fails the schema check and is denied. Those of optional fields
                // need `has`.
                let present = derived_required(action, name, prop);
                if let Some((kind, array)) = derivation(prop) {
                    let (attr, t) = if array {
                        (kind.plural(), json!({"type": "Set", "element": {"type": "String"}}))
                    } else {
                        (kind.single(), json!({"type": "String"}))
                    };
                    derived.insert(
                        name.clone(),
                        json!({"type": "Record", "required": present, "attributes": {attr: t}}),
                    );
                }
            }
        }
        let context = json!({"type": "Record", "attributes": {
            "input": record_type(&action.input_schema),
            "derived": {"type": "Record", "attributes": derived},
            "now": context::now_type(),
            "findings": context::findings_type(),
            "counters": counters::counters_type(quotas.get(action.name.as_str()).map_or(&[], Vec::as_slice)),
            "provenance": provenance::provenance_type(action.input_fields().map(|(n, _)| n)),
        }});
        actions.insert(
            action.name.to_string(),
            json!({"appliesTo": {"principalTypes": ["Agent"], "resourceTypes": [action.resource.entity_type], "context": context}}),
        );
    }
    json!({"": {"entityTypes": entity_types, "actions": actions}})
}

fn load_file(
    file: &Path,
    set: &mut PolicySet,
    sources: &mut HashMap<PolicyId, (PathBuf, Arc<str>)>,
    problems: &mut Vec<Diagnostic>,
) {
    let src = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            problems.push(Diagnostic::at(file, None, format!("cannot read policy file: {e}")));
            return;
        }
    };
    let parsed = match PolicySet::from_str(&src) {
        Ok(p) => p,
        Err(errs) => {
            for e in errs.iter() {
                let line = first_label_offset(e).map(|o| line_at_offset(&src, o));
                problems.push(Diagnostic::at(
                    file,
                    line,
                    format!("cedar syntax: {}", one_line(&e.to_string())),
                ));
            }
            return;
        }
    };
    if parsed.templates().next().is_some() {
        problems.push(Diagnostic::at(
            file,
            None,
            "policy templates (with `?principal`/`?resource`) are not supported",
        ));
    }
    // One copy of the text per file, shared by its policies (for error lines): a copy per
    // policy made loading a file of 10,000 policies take gigabytes.
    let shared: Arc<str> = Arc::from(src.as_str());
    let stem = file
        .file_name()
        .map_or_else(|| "policy".to_owned(), |n| n.to_string_lossy().into_owned());
    let mut numbered: Vec<&Policy> = parsed.policies().collect();
    numbered.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    for (i, policy) in numbered.into_iter().enumerate() {
        let id = policy
            .annotation(ID_ANNOTATION)
            .map_or_else(|| format!("{stem}#{}", i + 1), str::to_owned);
        let line = policy_line(&src, i);
        if let Some(h) = policy.annotation(HOLD_ANNOTATION) {
            if policy.effect() != cedar_policy::Effect::Permit {
                problems.push(Diagnostic::at(
                    file,
                    line,
                    format!("policy `{id}`: `@hold` only applies to `permit` policies"),
                ));
            } else if h.trim().is_empty() {
                problems.push(Diagnostic::at(
                    file,
                    line,
                    format!("policy `{id}`: `@hold` needs a reason, e.g. `@hold(\"refund above 100\")`"),
                ));
            }
        }
        check_approval_annotations(policy, &id, file, line, problems);
        let pid = PolicyId::new(&id);
        if sources.contains_key(&pid) {
            problems.push(Diagnostic::at(file, line, format!("policy id `{id}` is used twice")));
            continue;
        }
        if let Err(e) = set.add(policy.new_id(pid.clone())) {
            problems.push(Diagnostic::at(file, line, format!("policy `{id}`: {e}")));
            continue;
        }
        sources.insert(pid, (file.to_owned(), Arc::clone(&shared)));
    }
}

fn check_approval_annotations(
    policy: &Policy,
    id: &str,
    file: &Path,
    line: Option<u64>,
    problems: &mut Vec<Diagnostic>,
) {
    let holds = policy.annotation(HOLD_ANNOTATION).is_some();
    for key in [APPROVERS_ANNOTATION, APPROVALS_ANNOTATION] {
        if policy.annotation(key).is_some() && !holds {
            problems.push(Diagnostic::at(
                file,
                line,
                format!("policy `{id}`: `@{key}` only applies with `@hold`"),
            ));
        }
    }
    if let Some(n) = policy.annotation(APPROVALS_ANNOTATION) {
        let ok = n.trim().parse::<u32>().is_ok_and(|n| (1..=MAX_APPROVALS).contains(&n));
        if !ok {
            problems.push(Diagnostic::at(
                file,
                line,
                format!("policy `{id}`: `@approvals(\"{n}\")` must be a whole number from 1 to {MAX_APPROVALS}"),
            ));
        }
    }
    if let Some(g) = policy.annotation(APPROVERS_ANNOTATION)
        && (g.is_empty()
            || !g
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        problems.push(Diagnostic::at(
            file,
            line,
            format!("policy `{id}`: `@approvers(\"{g}\")` is not a group name"),
        ));
    }
}

/// The line where the `n`th policy (0-based) of a file starts: the line of its `permit`/`forbid`
/// keyword or of the first annotation before it.
fn policy_line(src: &str, n: usize) -> Option<u64> {
    let mut count = 0;
    let mut pending_annotation: Option<usize> = None;
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('@') && pending_annotation.is_none() {
            pending_annotation = Some(i);
        }
        if t.starts_with("permit") || t.starts_with("forbid") {
            if count == n {
                return u64::try_from(pending_annotation.unwrap_or(i) + 1).ok();
            }
            count += 1;
            pending_annotation = None;
        }
    }
    None
}

fn first_label_offset(d: &dyn miette::Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::Mark;

    const ACTIONS: &str = r#"
name: links.post
input:
  type: object
  additionalProperties: true
  required: [link]
  properties:
    link: {type: string, format: uri}
    tags: {type: array, items: {type: string}}
    amount: {type: number}
resource: {type: Board, id: "main"}
request: {method: POST, url: "https://links.test/post", body: {link: "{link}"}}
"#;

    /// No policy reads `context.derived`, `context.counters` or `context.provenance.fields`:
    /// a context that breaks the schema there would pass unnoticed without the check.
    const POLICIES: &str = r#"
permit (principal, action == Action::"links.post", resource)
unless { context.input has tags && context.input.tags.contains("spam") };
"#;

    fn counter(name: &str, sum: bool) -> CounterState {
        CounterState {
            name: name.into(),
            sum,
            used: 1,
            max: 10,
            this: 1,
            resets_at_unix: 3_600,
        }
    }

    #[test]
    fn a_context_pruned_to_what_the_policies_read_still_refuses_what_cedar_cannot_hold() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("main.cedar");
        std::fs::write(&file, POLICIES).unwrap();
        let catalog = Catalog::from_source(Path::new("actions.yaml"), ACTIONS, Default::default()).unwrap();
        let engine = PolicyEngine::load(PolicyInputs {
            catalog: &catalog,
            agents: &BTreeMap::new(),
            entities: &[],
            policy_files: &[file],
            counters: &BTreeMap::new(),
            claim_attributes: &[],
        })
        .unwrap();
        let reads = &engine.shapes["links.post"].reads;
        assert!(reads.reads_field("input", "tags"));
        assert!(!reads.reads_field("input", "amount") && !reads.reads("now") && !reads.reads("findings"));
        let agent = AgentId::new("bot").unwrap();
        let action = catalog.get("links.post").unwrap();
        let facts = Facts {
            findings: &[],
            counters: &[],
            provenance: &InputProvenance::NONE,
            now: time::OffsetDateTime::UNIX_EPOCH,
        };
        let decide = |input: Value| {
            let input = action.validate(input).unwrap();
            let skipped = engine.evaluate(&agent, None, action, &input, &facts, false);
            let checked = engine.evaluate(&agent, None, action, &input, &facts, true);
            assert_eq!(skipped, checked, "{}", input.canonical_json());
            skipped
        };
        let allowed = decide(json!({"link": "https://a.example", "amount": 1.5})).unwrap();
        assert_eq!(allowed.effect, Effect::Allow);
        let spam = decide(json!({"link": "https://a.example", "tags": ["spam"], "amount": 1.5})).unwrap();
        assert_eq!(spam.effect, Effect::Deny);
        // No policy reads `amount`, yet a value Cedar can't hold exactly is refused.
        let refused = decide(json!({"link": "https://a.example", "amount": 1.23456})).unwrap_err();
        assert!(refused.contains("`/amount`"), "{refused}");
    }

    #[test]
    fn skipping_the_schema_check_changes_no_decision() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("main.cedar");
        std::fs::write(&file, POLICIES).unwrap();
        let load = || Catalog::from_source(Path::new("actions.yaml"), ACTIONS, Default::default()).unwrap();
        let catalog = load();
        let spec = CounterSpec {
            name: "posts".into(),
            sum: false,
            always: true,
        };
        let engine = PolicyEngine::load(PolicyInputs {
            catalog: &catalog,
            agents: &BTreeMap::new(),
            entities: &[],
            policy_files: &[file],
            counters: &BTreeMap::from([("links.post".to_owned(), vec![spec])]),
            claim_attributes: &[],
        })
        .unwrap();
        let agent = AgentId::new("bot").unwrap();
        let ours = catalog.get("links.post").unwrap();
        let other_catalog = load();
        let theirs = other_catalog.get("links.post").unwrap();
        let untrusted = |field: &str| InputProvenance {
            session: true,
            marks: vec![Mark {
                pointer: format!("/{field}"),
                source: "web.fetch".into(),
                read_at: 1,
            }],
        };
        let link = json!({"link": "https://a.example/x", "tags": ["news"], "amount": 2.5});
        let posts = [counter("posts", false)];
        // (action, input, counters, provenance, whether the check may be skipped, effect)
        let cases = [
            (ours, link.clone(), &posts[..], untrusted("link"), true, Effect::Allow),
            (
                ours,
                json!({"link": "https://a.example", "tags": ["spam"]}),
                &posts[..],
                InputProvenance::NONE,
                true,
                Effect::Deny,
            ),
            // A required `format: uri` field without a host has no `derived` entry.
            (
                ours,
                json!({"link": "urn:isbn:0451450523"}),
                &posts[..],
                InputProvenance::NONE,
                false,
                Effect::Deny,
            ),
            (ours, link.clone(), &[], InputProvenance::NONE, false, Effect::Deny),
            (
                ours,
                link.clone(),
                &[counter("posts", false), counter("other", false)],
                InputProvenance::NONE,
                false,
                Effect::Deny,
            ),
            (
                ours,
                link.clone(),
                &[counter("posts", true)],
                InputProvenance::NONE,
                false,
                Effect::Deny,
            ),
            (
                ours,
                json!({"link": "https://a.example", "extra": 1}),
                &posts[..],
                untrusted("extra"),
                false,
                Effect::Deny,
            ),
            (
                theirs,
                link.clone(),
                &posts[..],
                InputProvenance::NONE,
                false,
                Effect::Allow,
            ),
        ];
        for (action, input, counters, provenance, skips, effect) in cases {
            let input = action.validate(input).unwrap();
            let facts = Facts {
                findings: &[],
                counters,
                provenance: &provenance,
                now: time::OffsetDateTime::UNIX_EPOCH,
            };
            let fits = engine.shapes["links.post"].fits(action, &input, counters, &provenance);
            let checked = engine
                .evaluate(&agent, None, action, &input, &facts, true)
                .unwrap_or_else(Decision::gateway_deny);
            let skipped = engine
                .evaluate(&agent, None, action, &input, &facts, false)
                .unwrap_or_else(Decision::gateway_deny);
            let what = format!("{} {counters:?} {provenance:?}", input.canonical_json());
            assert_eq!(fits, skips, "{what}");
            assert_eq!(checked.effect, effect, "{what}: {checked:?}");
            assert_eq!(checked, skipped, "{what}");
        }
    }
}
