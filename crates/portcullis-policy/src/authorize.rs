//! Deciding a request over policies whose conditions are built once, at load.
//!
//! Cedar's authorizer builds each policy's condition (its scope constraints joined to its
//! `when` and `unless` clauses) as a new expression every time it evaluates the policy, and
//! drops it afterwards: in the `decide` bench (eleven policies can apply to each intent),
//! that was a fifth of a decision's instructions (callgrind). Here the condition of each policy is
//! built once and evaluated by Cedar's own evaluator, with Cedar's rules for combining the
//! results: a satisfied `forbid` denies, else a satisfied `permit` allows, else the
//! request is denied by default; a policy whose condition errors or is not a boolean is
//! not satisfied and is reported. In debug builds and tests every decision is also made by
//! Cedar's authorizer and the two must agree (see `PolicyEngine::evaluate`).

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy::{Entities, Policy, PolicyId, Request};
use cedar_policy_core::ast::{self, EntityReference, EntityUID, EntityUIDEntry, Literal, ValueKind};
use cedar_policy_core::entities::Dereference;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

/// One policy, ready to be evaluated.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    id: PolicyId,
    forbid: bool,
    /// The policy itself, for its slot values (none for a static policy).
    policy: ast::Policy,
    /// The entity its principal scope names, tested before the condition is evaluated.
    principal: Option<Principal>,
    /// What the policy's effect applies under, built once (see [`Compiled::new`]).
    condition: ast::Expr,
}

impl Compiled {
    /// `policy`, for a request with any action.
    pub(crate) fn of(policy: &Policy) -> Self {
        Self::new(policy, false)
    }

    /// `policy`, for requests whose action its action scope is known to admit (an action
    /// it names): the scope's test is then true and left out of the condition.
    pub(crate) fn admitting(policy: &Policy) -> Self {
        Self::new(policy, true)
    }

    /// The condition is Cedar's (`principal` scope `&&` `action` scope `&&` `resource`
    /// scope `&&` the `when`/`unless` clauses), without the parts that are true whatever
    /// the request (an unconstrained scope, and the action scope where it is admitted) and
    /// without a principal test made before evaluating ([`Principal`]).
    /// `true && x` is `x` (or an error when `x` is not a boolean, which a policy not
    /// evaluating to a boolean is here too).
    fn new(policy: &Policy, action_admitted: bool) -> Self {
        let core: &ast::Policy = policy.as_ref();
        let principal = core.principal_constraint();
        let resource = core.resource_constraint();
        // `principal == E` and `principal in E` are tested before evaluating (see
        // [`Principal`]), so they are left out of the condition; `is … in E` keeps its
        // whole test, since only its `in` part is tested first.
        let (tested, principal_test) = match principal.as_inner() {
            ast::PrincipalOrResourceConstraint::Any => (None, None),
            ast::PrincipalOrResourceConstraint::Eq(EntityReference::EUID(uid)) => {
                (Some(Principal::Eq(Arc::clone(uid))), None)
            }
            ast::PrincipalOrResourceConstraint::In(EntityReference::EUID(uid)) => {
                (Some(Principal::In(Arc::clone(uid))), None)
            }
            ast::PrincipalOrResourceConstraint::IsIn(_, EntityReference::EUID(uid)) => {
                (Some(Principal::In(Arc::clone(uid))), Some(principal.as_expr()))
            }
            _ => (None, Some(principal.as_expr())),
        };
        let scope = [
            principal_test,
            (!action_admitted && *core.action_constraint() != ast::ActionConstraint::Any)
                .then(|| core.action_constraint().as_expr()),
            (*resource.as_inner() != ast::PrincipalOrResourceConstraint::Any).then(|| resource.as_expr()),
        ];
        let parts: Vec<ast::Expr> = scope
            .into_iter()
            .flatten()
            .chain(core.non_scope_constraints().cloned())
            .collect();
        let condition = parts
            .into_iter()
            .rev()
            .reduce(|rest, part| ast::Expr::and(part, rest))
            .unwrap_or_else(|| ast::Expr::val(true));
        Self {
            id: policy.id().clone(),
            forbid: policy.effect() == cedar_policy::Effect::Forbid,
            policy: core.clone(),
            principal: tested,
            condition,
        }
    }
}

/// A principal scope that names an entity: `principal == E`, or `principal in E` (also
/// with `is`). A request whose principal isn't `E` (or in `E`) can't satisfy the policy,
/// which is then not evaluated at all: most policies that name an agent or a group don't
/// apply to a given agent.
#[derive(Debug, Clone)]
enum Principal {
    Eq(Arc<EntityUID>),
    In(Arc<EntityUID>),
}

impl Principal {
    /// Whether the scope admits `me`, whose entity (if the store has it) is `entity`: as
    /// Cedar's `==` and `in` decide, `in` being equality or ancestry.
    fn admits(&self, me: &EntityUID, entity: Option<&ast::Entity>) -> bool {
        match self {
            Self::Eq(uid) => **uid == *me,
            Self::In(uid) => **uid == *me || entity.is_some_and(|e| e.is_descendant_of(uid)),
        }
    }
}

/// What a set of policies decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) allow: bool,
    /// The policies that determined the decision: the satisfied forbids of a denial, the
    /// satisfied permits of an allow, none for a default denial. In load order.
    pub(crate) determining: Vec<PolicyId>,
    /// The policies whose condition could not be evaluated, in load order.
    pub(crate) errors: Vec<PolicyId>,
}

impl Verdict {
    /// `request` decided over `policies`.
    pub(crate) fn of(policies: &[Compiled], request: &Request, entities: &Entities) -> Self {
        let core: &ast::Request = request.as_ref();
        let evaluator = Evaluator::new(core.clone(), entities.as_ref(), Extensions::all_available());
        let me = match core.principal() {
            EntityUIDEntry::Known { euid, .. } => Some(euid.as_ref()),
            EntityUIDEntry::Unknown { .. } => None,
        };
        let entity = me.and_then(|me| match entities.as_ref().entity(me) {
            Dereference::Data(e) => Some(e),
            Dereference::NoSuchEntity | Dereference::Residual(_) => None,
        });
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut errors = Vec::new();
        for p in policies {
            match (&p.principal, me) {
                (Some(scope), Some(me)) if !scope.admits(me, entity) => continue,
                // Not a principal the scope can be tested on (never so for a request of the
                // gateway's): the policy can't be decided, which denies.
                (Some(_), None) => {
                    errors.push(p.id.clone());
                    continue;
                }
                _ => {}
            }
            match evaluator.interpret(&p.condition, p.policy.env()) {
                Ok(ast::Value {
                    value: ValueKind::Lit(Literal::Bool(satisfied)),
                    ..
                }) => {
                    if satisfied {
                        if p.forbid { &mut forbids } else { &mut permits }.push(p.id.clone());
                    }
                }
                Ok(_) | Err(_) => errors.push(p.id.clone()),
            }
        }
        let allow = forbids.is_empty() && !permits.is_empty();
        let determining = if forbids.is_empty() { permits } else { forbids };
        Self {
            allow,
            determining,
            errors,
        }
    }

    /// What Cedar's authorizer responded, for comparison.
    pub(crate) fn of_response(response: &cedar_policy::Response) -> Self {
        let diagnostics = response.diagnostics();
        Self {
            allow: response.decision() == cedar_policy::Decision::Allow,
            determining: diagnostics.reason().cloned().collect(),
            errors: diagnostics
                .errors()
                .map(|cedar_policy::AuthorizationError::PolicyEvaluationError(e)| e.policy_id().clone())
                .collect(),
        }
    }

    /// Whether two verdicts say the same: the decision, and the same policies determining
    /// it and failing, in whatever order (Cedar's response keeps them in a hash set).
    pub(crate) fn agrees_with(&self, other: &Self) -> bool {
        let set = |ids: &[PolicyId]| ids.iter().map(ToString::to_string).collect::<BTreeSet<_>>();
        self.allow == other.allow
            && set(&self.determining) == set(&other.determining)
            && set(&self.errors) == set(&other.errors)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::{Authorizer, Context, EntityUid, PolicySet, RestrictedExpression};

    use super::*;

    fn ids(list: &[PolicyId]) -> BTreeSet<String> {
        list.iter().map(ToString::to_string).collect()
    }

    /// Forbid wins, a permit allows, nothing denies by default, and a policy that fails to
    /// evaluate counts as unsatisfied and is reported: as Cedar's authorizer decides.
    #[test]
    fn compiled_policies_decide_as_cedars_authorizer_does() {
        let set = PolicySet::from_str(
            r"permit (principal, action, resource) when { context.n > 1 };
              forbid (principal, action, resource) when { context.n > 5 };
              permit (principal, action, resource) when { context.n + 9223372036854775807 > 0 };
              forbid (principal, action, resource) unless { context.n < 100 };",
        )
        .unwrap();
        let by_text = |text: &str| {
            set.policies()
                .find(|p| p.to_string().contains(text))
                .map(|p| p.id().to_string())
                .unwrap()
        };
        let (permit, forbid, overflow, unless) = (
            by_text("> 1"),
            by_text("> 5"),
            by_text("9223372036854775807"),
            by_text("unless"),
        );
        let compiled: Vec<Compiled> = set.policies().map(Compiled::of).collect();
        let uid = |t: &str| EntityUid::from_str(&format!("{t}::\"x\"")).unwrap();
        // (n, allow, determining, failing)
        let cases: [(i64, bool, Vec<&String>, Vec<&String>); 5] = [
            (-1, true, vec![&overflow], vec![]),
            (0, true, vec![&overflow], vec![]),
            (3, true, vec![&permit], vec![&overflow]),
            (7, false, vec![&forbid], vec![&overflow]),
            (200, false, vec![&forbid, &unless], vec![&overflow]),
        ];
        for (n, allow, determining, failing) in cases {
            let context = Context::from_pairs([("n".to_owned(), RestrictedExpression::new_long(n))]).unwrap();
            let request = Request::new(uid("Agent"), uid("Action"), uid("Repo"), context, None).unwrap();
            let ours = Verdict::of(&compiled, &request, &Entities::empty());
            assert_eq!(ours.allow, allow, "n = {n}: {ours:?}");
            assert_eq!(
                ids(&ours.determining),
                determining.into_iter().cloned().collect(),
                "n = {n}"
            );
            assert_eq!(ids(&ours.errors), failing.into_iter().cloned().collect(), "n = {n}");
            let cedar = Verdict::of_response(&Authorizer::new().is_authorized(&request, &set, &Entities::empty()));
            assert!(ours.agrees_with(&cedar), "n = {n}: {ours:?} against {cedar:?}");
        }
        // A verdict that differs in any part does not agree.
        let base = Verdict {
            allow: true,
            determining: vec![PolicyId::new(&permit)],
            errors: vec![],
        };
        for other in [
            Verdict {
                allow: false,
                ..base.clone()
            },
            Verdict {
                determining: vec![],
                ..base.clone()
            },
            Verdict {
                errors: vec![PolicyId::new(&overflow)],
                ..base.clone()
            },
        ] {
            assert!(!base.agrees_with(&other), "{other:?}");
        }
    }

    /// A condition without its true parts decides the same: unconstrained scopes, and an
    /// action scope for an action it names; and principal scopes tested before evaluating
    /// (`==`, `in` through two levels of groups, `is … in`, an agent without an entity).
    #[test]
    fn leaving_out_the_scope_tests_that_are_true_changes_no_decision() {
        let set = PolicySet::from_str(
            r#"permit (principal, action, resource);
              permit (principal == Agent::"a", action == Action::"go", resource);
              forbid (principal, action in [Action::"go", Action::"stop"], resource == Repo::"frozen");
              permit (principal, action == Action::"go", resource) when { context.n > 1 };
              forbid (principal == Agent::"b", action, resource) unless { context.n < 10 };
              permit (principal in Group::"outer", action == Action::"go", resource) when { context.n > 3 };
              forbid (principal is Agent in Group::"inner", action, resource == Repo::"open") when { context.n > 15 };
              permit (principal in Agent::"c", action, resource) when { context.n == 5 };"#,
        )
        .unwrap();
        // `a` is in `inner`, which is in `outer`; `c` is in no group; `ghost` has no entity.
        let entities = Entities::from_json_value(
            serde_json::json!([
                {"uid": {"type": "Agent", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "inner"}]},
                {"uid": {"type": "Agent", "id": "b"}, "attrs": {}, "parents": [{"type": "Group", "id": "outer"}]},
                {"uid": {"type": "Agent", "id": "c"}, "attrs": {}, "parents": []},
                {"uid": {"type": "Group", "id": "inner"}, "attrs": {}, "parents": [{"type": "Group", "id": "outer"}]},
                {"uid": {"type": "Group", "id": "outer"}, "attrs": {}, "parents": []}
            ]),
            None,
        )
        .unwrap();
        let full: Vec<Compiled> = set.policies().map(Compiled::of).collect();
        let admitting: Vec<Compiled> = set
            .policies()
            .map(|p| {
                if p.action_constraint() == cedar_policy::ActionConstraint::Any {
                    Compiled::of(p)
                } else {
                    Compiled::admitting(p)
                }
            })
            .collect();
        let uid = |t: &str, id: &str| EntityUid::from_str(&format!("{t}::\"{id}\"")).unwrap();
        let mut decided = BTreeSet::new();
        for agent in ["a", "b", "c", "ghost"] {
            for repo in ["frozen", "open"] {
                for n in [0, 5, 20] {
                    let context = Context::from_pairs([("n".to_owned(), RestrictedExpression::new_long(n))]).unwrap();
                    let request = Request::new(
                        uid("Agent", agent),
                        uid("Action", "go"),
                        uid("Repo", repo),
                        context,
                        None,
                    )
                    .unwrap();
                    let cedar = Verdict::of_response(&Authorizer::new().is_authorized(&request, &set, &entities));
                    for compiled in [&full, &admitting] {
                        let ours = Verdict::of(compiled, &request, &entities);
                        assert!(
                            ours.agrees_with(&cedar),
                            "{agent} {repo} {n}: {ours:?} against {cedar:?}"
                        );
                    }
                    decided.insert((cedar.allow, cedar.determining.len()));
                }
            }
        }
        // The requests reach allows and denials by one policy, several or none.
        assert!(decided.len() >= 4, "{decided:?}");
    }
}
