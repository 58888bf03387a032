//! `portcullis eval`: decide a batch of intents without executing anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use portcullis_core::{AgentId, Decision, Effect};
use portcullis_policy::{Facts, InputProvenance, Mark};

use crate::provenance::MemorySession;

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
    /// The earlier calls of the same session, oldest first, with what each returned to the
    /// agent: the results of actions marked `provenance: untrusted` are recorded as the
    /// gateway would, and the case's input is matched against them (`context.provenance`).
    /// Without a transcript the case has no session.
    #[serde(default)]
    pub transcript: Option<Vec<TranscriptCall>>,
}

/// One earlier call in a case's session transcript.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptCall {
    /// The action called.
    pub action: String,
    /// Its input (for the reader; not used).
    #[serde(default)]
    pub input: Value,
    /// What it returned to the agent (the result body).
    #[serde(default)]
    pub output: Value,
    /// When it returned, RFC 3339; default: the time of the evaluation.
    #[serde(default)]
    pub at: Option<String>,
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
    /// Input values that came from untrusted data in the case's transcript.
    pub provenance: Vec<Mark>,
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
    let (decision, provenance) = match decide(loaded, case, now) {
        Ok(decided) => decided,
        Err(decision) => (decision, Vec::new()),
    };
    let passed = case.expect.is_none_or(|e| e == decision.effect);
    EvalOutcome {
        line,
        name,
        decision,
        expect: case.expect,
        passed,
        provenance,
    }
}

/// The case's decision and the provenance marks it saw, or a gateway denial when it can't
/// be decided.
fn decide(loaded: &Loaded, case: &EvalCase, now: time::OffsetDateTime) -> Result<(Decision, Vec<Mark>), Decision> {
    let agent = match AgentId::new(case.agent.clone()) {
        Ok(a) => a,
        Err(e) => return Err(Decision::gateway_deny(e.to_string())),
    };
    let Some(action) = loaded
        .catalog
        .get(&case.action)
        .filter(|a| loaded.policy.visible(&agent, a))
    else {
        return Err(Decision::gateway_deny(format!(
            "unknown action `{}` (or not visible to agent `{agent}`)",
            case.action
        )));
    };
    let input = if case.input.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        case.input.clone()
    };
    let valid = match action.validate(input) {
        Ok(v) => v,
        Err(e) => return Err(Decision::gateway_deny(e.to_string())),
    };
    // The gateway refuses an input that can't fill its request slots before deciding.
    if let Err(e) = portcullis_exec::prepare::check(action, valid.value()) {
        return Err(Decision::gateway_deny(format!("invalid input: {e}")));
    }
    let charges = match loaded
        .config
        .quotas
        .charges(&agent, action.name.as_str(), valid.value())
    {
        Ok(c) => c,
        Err(e) => return Err(Decision::gateway_deny(format!("invalid input: {e}"))),
    };
    let counters = charges.states(&charges.assumed(&case.counters, now.unix_timestamp()));
    let findings = loaded.config.detector.scan_json(valid.value());
    let provenance = match &case.transcript {
        None => InputProvenance::NONE,
        Some(calls) => {
            let session = replay(loaded, calls, now).map_err(Decision::gateway_deny)?;
            let settings = &loaded.config.provenance;
            session.provenance(&settings.probe(&loaded.config.detector, agent.as_str(), valid.value()))
        }
    };
    let facts = Facts {
        findings: &findings,
        counters: &counters,
        provenance: &provenance,
        now,
    };
    let decision = loaded
        .policy
        .decide_with(&agent, None, action, valid, &facts)
        .decision()
        .clone();
    Ok((decision, provenance.marks))
}

/// Records a transcript's untrusted results as the gateway would have, leaving out those
/// older than the provenance `ttl`.
fn replay(loaded: &Loaded, calls: &[TranscriptCall], now: time::OffsetDateTime) -> Result<MemorySession, String> {
    let settings = &loaded.config.provenance;
    let mut session = MemorySession::default();
    for (i, call) in calls.iter().enumerate() {
        let Some(source) = loaded.catalog.get(&call.action) else {
            return Err(format!("transcript call {}: unknown action `{}`", i + 1, call.action));
        };
        let at = match &call.at {
            None => now,
            Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("transcript call {}: `at` is not an RFC 3339 time: {e}", i + 1))?,
        };
        let live = at.unix_timestamp().saturating_add(settings.limits.ttl_secs) > now.unix_timestamp();
        if source.provenance == portcullis_catalog::Provenance::Untrusted && live {
            let hashes = settings.harvest(&loaded.config.detector, &call.output);
            session.record(hashes, source.name.as_str(), at.unix_timestamp());
        }
    }
    Ok(session)
}
