//! Trusted entity data: agents with their attributes and groups, and the entities
//! declared in the configuration (allow-lists of payees, contacts, repositories…).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::schema::infer_type;

/// An agent's policy-visible data, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct AgentEntity {
    /// Attributes (`principal.team`…). All are optional in the generated schema because
    /// agents created with `agent add` may have none: test them with `has`.
    pub attributes: Map<String, Value>,
    /// Groups the agent belongs to (`principal in AgentGroup::"triage"`).
    pub groups: Vec<String>,
}

/// A reference to an entity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntityRef {
    /// The entity type.
    pub entity_type: String,
    /// The entity id.
    pub id: String,
}

/// An entity declared in the configuration.
#[derive(Debug, Clone)]
pub struct EntityDecl {
    /// Its type and id.
    pub uid: EntityRef,
    /// Its attributes.
    pub attrs: Map<String, Value>,
    /// Entities it is `in`.
    pub parents: Vec<EntityRef>,
}

/// Entity-type declarations (Cedar JSON schema) and entities (Cedar JSON), by [`build`].
pub(crate) type Built = (Map<String, Value>, Vec<Value>);

/// Builds the entity-type declarations (attribute types inferred from the values) and the
/// entity list in Cedar's JSON formats. Errors are messages naming the entity and attribute.
pub(crate) fn build(
    agents: &BTreeMap<String, AgentEntity>,
    decls: &[EntityDecl],
    claim_attributes: &[String],
) -> Result<Built, Vec<String>> {
    let mut errors = Vec::new();
    let mut types: BTreeMap<String, TypeShape> = BTreeMap::new();
    let mut list = Vec::new();
    let agent_shape = types.entry("Agent".into()).or_default();
    agent_shape.all_optional = true;
    agent_shape.parents.insert("AgentGroup".into());
    // Attributes taken from identity-provider claims are strings.
    let claimed: Map<String, Value> = claim_attributes
        .iter()
        .map(|a| (a.clone(), Value::String(String::new())))
        .collect();
    if !claimed.is_empty() {
        agent_shape.observe(&claimed, "the `oidc.attributes`", &mut errors);
    }
    types.entry("AgentGroup".into()).or_default();
    for (id, agent) in agents {
        let label = format!("agent `{id}`");
        if let Some(shape) = types.get_mut("Agent") {
            shape.observe(&agent.attributes, &label, &mut errors);
        }
        let parents: Vec<Value> = agent
            .groups
            .iter()
            .map(|g| json!({"type": "AgentGroup", "id": g}))
            .collect();
        for g in &agent.groups {
            list.push(json!({"uid": {"type": "AgentGroup", "id": g}, "attrs": {}, "parents": []}));
        }
        list.push(
            json!({"uid": {"type": "Agent", "id": id}, "attrs": cedar_attrs(&agent.attributes), "parents": parents}),
        );
    }
    for decl in decls {
        let label = format!("entity `{}::\"{}\"`", decl.uid.entity_type, decl.uid.id);
        if matches!(decl.uid.entity_type.as_str(), "Agent" | "AgentGroup" | "Action") {
            errors.push(format!(
                "{label}: type `{}` is reserved; configure agents under `agents`",
                decl.uid.entity_type
            ));
            continue;
        }
        let shape = types.entry(decl.uid.entity_type.clone()).or_default();
        shape.observe(&decl.attrs, &label, &mut errors);
        shape.parents.extend(decl.parents.iter().map(|p| p.entity_type.clone()));
        let parents: Vec<Value> = decl
            .parents
            .iter()
            .map(|p| json!({"type": p.entity_type, "id": p.id}))
            .collect();
        list.push(json!({"uid": {"type": decl.uid.entity_type, "id": decl.uid.id}, "attrs": cedar_attrs(&decl.attrs), "parents": parents}));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let decls = types
        .into_iter()
        .map(|(name, shape)| (name, shape.to_schema()))
        .collect();
    Ok((decls, list))
}

/// Attribute values in Cedar's entity JSON (the same as JSON for the types we accept).
fn cedar_attrs(attrs: &Map<String, Value>) -> Value {
    Value::Object(attrs.clone())
}

#[derive(Default)]
struct TypeShape {
    attrs: BTreeMap<String, Value>,
    seen_in: BTreeMap<String, usize>,
    count: usize,
    all_optional: bool,
    parents: BTreeSet<String>,
}

impl TypeShape {
    fn observe(&mut self, attrs: &Map<String, Value>, label: &str, errors: &mut Vec<String>) {
        self.count += 1;
        for (k, v) in attrs {
            match infer_type(v) {
                Ok(t) => match self.attrs.get(k) {
                    Some(prev) if *prev != t => {
                        errors.push(format!(
                            "{label}: attribute `{k}` has a different type than on other entities of its type"
                        ));
                    }
                    _ => {
                        self.attrs.insert(k.clone(), t);
                        *self.seen_in.entry(k.clone()).or_default() += 1;
                    }
                },
                Err(e) => errors.push(format!("{label}: attribute `{k}`: {e}")),
            }
        }
    }

    fn to_schema(&self) -> Value {
        let mut attrs = Map::new();
        for (k, t) in &self.attrs {
            let mut t = t.clone();
            let required = !self.all_optional && self.seen_in.get(k).copied() == Some(self.count);
            if let Value::Object(m) = &mut t {
                m.insert("required".into(), Value::Bool(required));
            }
            attrs.insert(k.clone(), t);
        }
        let mut out = json!({"shape": {"type": "Record", "attributes": attrs}});
        if !self.parents.is_empty() {
            out["memberOfTypes"] = json!(self.parents);
        }
        out
    }
}
