//! `portcullis eval`: decide a batch of intents without executing anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use portcullis_core::{AgentId, Decision, Effect};

use crate::load::Loaded;

/// One line of a cases file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalCase {
    /// The agent id.
    pub agent: String,
    /// The action name.
    pub action: String,
    /// The input.
    #[serde(default)]
    pub input: Value,
    /// The expected effect.
    #[serde(default)]
    pub expect: Option<Effect>,
    /// A label for the case, shown in the output.
    #[serde(default)]
    pub name: Option<String>,
    /// What each quota has already used in the current window, by quota name (intents,
    /// or the summed amount); quotas not named are unused.
    #[serde(default)]
    pub counters: BTreeMap<String, f64>,
}

/// What happened to one case.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOutcome {
    /// 1-based line number in the cases file.
    pub line: usize,
    /// The case's label, or `agent → action`.
    pub name: String,
    /// The decision (a deny when the case can't be decided: unknown action, invalid input).
    pub decision: Decision,
    /// The expected effect.
    pub expect: Option<Effect>,
    /// Whether the expectation held (true when there was none).
    pub passed: bool,
}

/// Decides every case. Unknown actions and invalid inputs are denials with the reason,
/// exactly as the gateway would refuse them.
#[must_use]
pub fn evaluate_cases(loaded: &Loaded, cases: &[(usize, EvalCase)], now: time::OffsetDateTime) -> Vec<EvalOutcome> {
    cases
        .iter()
        .map(|(line, case)| evaluate_one(loaded, *line, case, now))
        .collect()
}

fn evaluate_one(loaded: &Loaded, line: usize, case: &EvalCase, now: time::OffsetDateTime) -> EvalOutcome {
    let name = case
        .name
        .clone()
        .unwrap_or_else(|| format!("{} → {}", case.agent, case.action));
    let decision = decide(loaded, case, now);
    let passed = case.expect.is_none_or(|e| e == decision.effect);
    EvalOutcome {
        line,
        name,
        decision,
        expect: case.expect,
        passed,
    }
}

fn decide(loaded: &Loaded, case: &EvalCase, now: time::OffsetDateTime) -> Decision {
    let agent = match AgentId::new(case.agent.clone()) {
        Ok(a) => a,
        Err(e) => return Decision::gateway_deny(e.to_string()),
    };
    let Some(action) = loaded
        .catalog
        .get(&case.action)
        .filter(|a| loaded.policy.visible(&agent, a))
    else {
        return Decision::gateway_deny(format!(
            "unknown action `{}` (or not visible to agent `{agent}`)",
            case.action
        ));
    };
    let input = if case.input.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        case.input.clone()
    };
    let valid = match action.validate(input) {
        Ok(v) => v,
        Err(e) => return Decision::gateway_deny(e.to_string()),
    };
    // The gateway refuses an input that can't fill its request slots before deciding.
    if let Err(e) = portcullis_exec::prepare::check(action, valid.value()) {
        return Decision::gateway_deny(format!("invalid input: {e}"));
    }
    let charges = match loaded
        .config
        .quotas
        .charges(&agent, action.name.as_str(), valid.value())
    {
        Ok(c) => c,
        Err(e) => return Decision::gateway_deny(format!("invalid input: {e}")),
    };
    let counters = charges.states(&charges.assumed(&case.counters, now.unix_timestamp()));
    let findings = loaded.config.detector.scan_json(valid.value());
    loaded
        .policy
        .decide(&agent, action, valid, &findings, &counters, now)
        .decision()
        .clone()
}
