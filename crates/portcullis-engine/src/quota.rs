//! Rate and spend quotas: "at most 20 issues per hour per agent", "refunds total at most
//! 500.00 per agent per day".
//!
//! A quota names the actions it covers, whose counter an intent charges (the agent's own,
//! or one shared by all agents), a fixed window and a maximum, and either counts intents
//! or sums a numeric input field. Counters live in the store, so every gateway instance
//! sharing it enforces the same quota; a charge is atomic and all-or-nothing, so no
//! concurrency overshoots. Policies see the counters as `context.counters`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use portcullis_catalog::{ActionDef, Catalog};
use portcullis_core::AgentId;
use portcullis_policy::{CounterSpec, CounterState, SUM_SCALE};
use portcullis_store::{Charge, CounterView};

/// A quota as written under `quotas:` in the configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    /// Action names it covers; `*` matches any run of characters (`billing.*`).
    pub actions: Vec<String>,
    /// Only these agents are counted (default: every agent).
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// `agent` (default): each agent has its own counter. `all`: one counter shared by
    /// every agent the quota covers.
    #[serde(default)]
    pub per: Per,
    /// The window: `90s`, `15m`, `1h`, `1d` (or seconds as a number). Windows are fixed
    /// and aligned to the Unix epoch (a `1d` window resets at 00:00 UTC).
    pub window: WindowText,
    /// The most a window may hold: intents, or the sum of `sum`'s field.
    pub max: f64,
    /// A JSON pointer to a required numeric input field (e.g. `/amount`) to sum instead of
    /// counting intents. Amounts are exact to four decimal places (more are rounded up).
    #[serde(default)]
    pub sum: Option<String>,
}

/// Whose counter an intent charges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// One counter per agent.
    #[default]
    Agent,
    /// One counter for all agents.
    All,
}

/// A window length: text with a unit, or seconds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum WindowText {
    /// Seconds.
    Seconds(u64),
    /// `90s`, `15m`, `1h`, `1d`.
    Text(String),
}

/// A validated quota.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// Its name (the key under `quotas:` and under `context.counters`).
    pub name: String,
    actions: Vec<String>,
    agents: Option<Vec<String>>,
    per: Per,
    /// Window length, seconds.
    pub window_secs: i64,
    /// Maximum, in units.
    pub max: i64,
    /// The summed field, if any.
    pub sum: Option<String>,
    /// Its line in the config file, for messages.
    pub line: Option<u64>,
}

/// Longest window: a year.
const MAX_WINDOW_SECS: i64 = 366 * 86_400;

impl Quota {
    /// Validates one quota.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn new(name: &str, raw: RawQuota) -> Result<Self, String> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "quota name `{name}` must be 1 to 64 lowercase letters, digits, `-`, `_` or `.`"
            ));
        }
        if raw.actions.is_empty() {
            return Err(format!("quota `{name}` covers no `actions`"));
        }
        let window_secs = window(&raw.window).map_err(|e| format!("quota `{name}`: {e}"))?;
        if let Some(p) = &raw.sum
            && !p.starts_with('/')
        {
            return Err(format!(
                "quota `{name}`: `sum` must be a JSON pointer such as `/amount`, not `{p}`"
            ));
        }
        let scale = if raw.sum.is_some() { SUM_SCALE } else { 1 };
        if !raw.max.is_finite() || raw.max < 0.0 || raw.max > 1e14 {
            return Err(format!("quota `{name}`: `max` must be a number from 0 to 10^14"));
        }
        let scaled = raw.max * f64::from(u32::try_from(scale).unwrap_or(1));
        if raw.sum.is_none() && raw.max.fract() != 0.0 {
            return Err(format!(
                "quota `{name}`: `max` counts intents, so it must be a whole number"
            ));
        }
        #[expect(clippy::cast_possible_truncation, reason = "bounded to 10^18 just above")]
        let max = scaled.round() as i64;
        Ok(Self {
            name: name.to_owned(),
            actions: raw.actions,
            agents: raw.agents,
            per: raw.per,
            window_secs,
            max,
            sum: raw.sum,
            line: None,
        })
    }

    /// Whether the quota covers this action (for any agent).
    #[must_use]
    pub fn covers_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| glob_match(p, action))
    }

    /// Whether the quota covers this action for this agent.
    #[must_use]
    pub fn covers(&self, agent: &str, action: &str) -> bool {
        self.covers_action(action) && self.agents.as_ref().is_none_or(|a| a.iter().any(|x| x == agent))
    }

    /// Problems with the quota against the catalog: it covers no action, or its summed
    /// field is not a required number in every action it covers.
    #[must_use]
    pub fn check(&self, catalog: &Catalog) -> Vec<String> {
        let covered: Vec<&ActionDef> = catalog
            .iter()
            .filter(|a| self.covers_action(a.name.as_str()))
            .map(AsRef::as_ref)
            .collect();
        if covered.is_empty() {
            return vec![format!(
                "quota `{}` covers no action in the catalog ({})",
                self.name,
                self.actions.join(", ")
            )];
        }
        let Some(pointer) = &self.sum else { return Vec::new() };
        covered
            .iter()
            .filter(|a| !required_number(&a.input_schema, pointer))
            .map(|a| {
                format!(
                    "quota `{}` sums `{pointer}`, which is not a required number in the input of `{}`",
                    self.name, a.name
                )
            })
            .collect()
    }

    fn subject(&self, agent: &AgentId) -> String {
        match self.per {
            Per::Agent => agent.as_str().to_owned(),
            Per::All => "*".to_owned(),
        }
    }

    /// What an intent with this input adds, in units.
    fn amount(&self, input: &Value) -> Result<i64, String> {
        let Some(pointer) = &self.sum else { return Ok(1) };
        let n = input.pointer(pointer).and_then(Value::as_number).ok_or_else(|| {
            format!(
                "quota `{}` sums `{pointer}`, which this input does not carry as a number",
                self.name
            )
        })?;
        units(n).ok_or_else(|| {
            format!(
                "quota `{}` sums `{pointer}`, which must be a number from 0 to 10^14",
                self.name
            )
        })
    }
}

/// The configured quotas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quotas {
    list: Vec<Quota>,
}

/// What [`crate::Gateway`] took from the quotas before deciding an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Nothing: no quota covers the intent, or it is a dry run.
    Nothing,
    /// Charged; given back unless the decision is an allow.
    Taken,
    /// It doesn't fit (nothing taken): an allow becomes 429.
    Exceeded(CounterView),
}

/// The counters an intent charges, and their state before it.
#[derive(Debug, Clone, Default)]
pub struct Charges {
    /// What to charge, one per covering quota.
    pub charges: Vec<Charge>,
    /// Whether each is a sum.
    sums: Vec<bool>,
}

impl Quotas {
    /// The quotas, validated, each with its line in the config (`line_of(name)`).
    ///
    /// # Errors
    /// Every problem found, as `(quota name, message)`.
    pub fn new(
        raw: BTreeMap<String, RawQuota>,
        line_of: impl Fn(&str) -> Option<u64>,
    ) -> (Self, Vec<(String, String)>) {
        let mut list = Vec::new();
        let mut problems = Vec::new();
        for (name, q) in raw {
            match Quota::new(&name, q) {
                Ok(q) => list.push(Quota {
                    line: line_of(&name),
                    ..q
                }),
                Err(e) => problems.push((name, e)),
            }
        }
        (Self { list }, problems)
    }

    /// Every quota.
    pub fn iter(&self) -> impl Iterator<Item = &Quota> {
        self.list.iter()
    }

    /// For the policy schema: the quotas covering each action of the catalog.
    #[must_use]
    pub fn specs(&self, catalog: &Catalog) -> BTreeMap<String, Vec<CounterSpec>> {
        catalog
            .iter()
            .map(|a| {
                let specs = self
                    .list
                    .iter()
                    .filter(|q| q.covers_action(a.name.as_str()))
                    .map(|q| CounterSpec {
                        name: q.name.clone(),
                        sum: q.sum.is_some(),
                        always: q.agents.is_none(),
                    })
                    .collect();
                (a.name.to_string(), specs)
            })
            .collect()
    }

    /// The charges an intent of `agent` on `action` with `input` makes.
    ///
    /// # Errors
    /// When a summed field is missing or out of range (the input is then refused).
    pub fn charges(&self, agent: &AgentId, action: &str, input: &Value) -> Result<Charges, String> {
        let mut out = Charges::default();
        for q in self.list.iter().filter(|q| q.covers(agent.as_str(), action)) {
            out.charges.push(Charge {
                limit: q.name.clone(),
                subject: q.subject(agent),
                window_secs: q.window_secs,
                max: q.max,
                amount: q.amount(input)?,
            });
            out.sums.push(q.sum.is_some());
        }
        Ok(out)
    }
}

impl Charges {
    /// Whether no quota covers the intent.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.charges.is_empty()
    }

    /// The counters' state for the policy context, from the store's view of them.
    #[must_use]
    pub fn states(&self, views: &[CounterView]) -> Vec<CounterState> {
        self.charges
            .iter()
            .zip(&self.sums)
            .zip(views)
            .map(|((c, sum), v)| CounterState {
                name: c.limit.clone(),
                sum: *sum,
                used: v.used,
                max: c.max,
                this: c.amount,
                resets_at_unix: v.resets_at_unix,
            })
            .collect()
    }

    /// The counters' state for the policy context from their state right after this
    /// intent was charged: what was used before it.
    #[must_use]
    pub fn states_after(&self, after: &[CounterView]) -> Vec<CounterState> {
        let before: Vec<CounterView> = after
            .iter()
            .zip(&self.charges)
            .map(|(v, c)| CounterView {
                used: v.used.saturating_sub(c.amount),
                ..v.clone()
            })
            .collect();
        self.states(&before)
    }

    /// What this intent adds to the named quota, in units.
    #[must_use]
    pub fn amount_of(&self, limit: &str) -> i64 {
        self.charges.iter().find(|c| c.limit == limit).map_or(0, |c| c.amount)
    }

    /// Counters as if `used` (in each quota's own terms: intents, or the summed amount)
    /// were already spent in the current window, for `portcullis eval`. Quotas not named
    /// are unused.
    #[must_use]
    pub fn assumed(&self, used: &BTreeMap<String, f64>, now_unix: i64) -> Vec<CounterView> {
        self.charges
            .iter()
            .zip(&self.sums)
            .map(|(c, sum)| {
                let scale = if *sum { 10_000.0 } else { 1.0 };
                let amount = used.get(&c.limit).copied().unwrap_or(0.0).max(0.0) * scale;
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "a saturating float-to-int cast is what we want"
                )]
                let units = amount.ceil() as i64;
                CounterView {
                    limit: c.limit.clone(),
                    used: units,
                    max: c.max,
                    resets_at_unix: c.window(now_unix).1,
                }
            })
            .collect()
    }

    /// Formats a count of units of the named quota for people (`12.5` or `3`).
    #[must_use]
    pub fn display(&self, limit: &str, units: i64) -> String {
        let sum = self.charges.iter().zip(&self.sums).any(|(c, s)| c.limit == limit && *s);
        if sum {
            let whole = units / SUM_SCALE;
            let frac = units % SUM_SCALE;
            if frac == 0 {
                whole.to_string()
            } else {
                format!("{whole}.{frac:04}").trim_end_matches('0').to_owned()
            }
        } else {
            units.to_string()
        }
    }
}

/// A JSON number in ten-thousandths, rounded up; `None` when negative or above 10^14.
fn units(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return (0..=100_000_000_000_000).contains(&i).then(|| i * SUM_SCALE);
    }
    let text = n.to_string();
    if text.starts_with('-') {
        return None;
    }
    if !text.contains(['e', 'E']) {
        // Exact: whole and fractional digits as written.
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        let whole: i64 = whole.parse().ok()?;
        if whole > 100_000_000_000_000 {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(4).collect();
        let mut units = whole * SUM_SCALE + digits.parse::<i64>().ok()?;
        if frac.len() > 4 && frac[4..].bytes().any(|b| b != b'0') {
            units += 1;
        }
        return Some(units);
    }
    let f = n.as_f64()?;
    if !(0.0..=1e14).contains(&f) {
        return None;
    }
    #[expect(clippy::cast_possible_truncation, reason = "bounded to 10^18 just above")]
    Some((f * 1e4).ceil() as i64)
}

pub(crate) fn window(w: &WindowText) -> Result<i64, String> {
    let secs = match w {
        WindowText::Seconds(s) => i64::try_from(*s).ok(),
        WindowText::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (n, unit) = t.split_at(split);
            let n: i64 = n
                .parse()
                .map_err(|_| format!("window `{t}` is not like `90s`, `15m`, `1h` or `1d`"))?;
            let mult = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3_600,
                "d" => 86_400,
                _ => return Err(format!("window `{t}` is not like `90s`, `15m`, `1h` or `1d`")),
            };
            n.checked_mul(mult)
        }
    };
    match secs {
        Some(s) if (1..=MAX_WINDOW_SECS).contains(&s) => Ok(s),
        _ => Err("the window must be from 1 second to 366 days".to_owned()),
    }
}

/// Whether `pointer` names a numeric field required all the way down in `schema`.
fn required_number(schema: &Value, pointer: &str) -> bool {
    let mut at = schema;
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        let required = at
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|k| k == key.as_str()));
        match at.get("properties").and_then(|p| p.get(&key)) {
            Some(next) if required => at = next,
            _ => return false,
        }
    }
    matches!(at.get("type").and_then(Value::as_str), Some("number" | "integer"))
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else { return false };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(text: &str) -> serde_json::Number {
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::Number::from(0))
    }

    #[test]
    fn amounts_are_exact_ten_thousandths_rounded_up() {
        assert_eq!(units(&num("12")), Some(120_000));
        assert_eq!(units(&num("12.5")), Some(125_000));
        assert_eq!(units(&num("0.0001")), Some(1));
        assert_eq!(units(&num("0.00001")), Some(1));
        assert_eq!(units(&num("19.99")), Some(199_900));
        assert_eq!(units(&num("1e2")), Some(1_000_000));
        assert_eq!(units(&num("-1")), None);
        assert_eq!(units(&num("-0.5")), None);
        assert_eq!(units(&num("1e300")), None);
    }

    #[test]
    fn windows_parse_with_units() {
        assert_eq!(window(&WindowText::Text("90s".into())), Ok(90));
        assert_eq!(window(&WindowText::Text("15m".into())), Ok(900));
        assert_eq!(window(&WindowText::Text("1h".into())), Ok(3_600));
        assert_eq!(window(&WindowText::Text("1d".into())), Ok(86_400));
        assert_eq!(window(&WindowText::Seconds(30)), Ok(30));
        assert!(window(&WindowText::Text("1w".into())).is_err());
        assert!(window(&WindowText::Text("0s".into())).is_err());
        assert!(window(&WindowText::Text("999d".into())).is_err());
    }

    #[test]
    fn globs_match_action_names() {
        assert!(glob_match("billing.*", "billing.refund"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("github.create_issue", "github.create_issue"));
        assert!(!glob_match("github.create_issue", "github.create_issues"));
        assert!(glob_match("*.create_*", "github.create_issue"));
        assert!(!glob_match("billing.*", "github.refund"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn quotas_validate_their_fields() {
        let raw = |max: f64, sum: Option<&str>| RawQuota {
            actions: vec!["billing.refund".into()],
            agents: None,
            per: Per::Agent,
            window: WindowText::Text("1d".into()),
            max,
            sum: sum.map(str::to_owned),
        };
        assert_eq!(
            Quota::new("refunds", raw(500.0, Some("/amount"))).map(|q| q.max),
            Ok(5_000_000)
        );
        assert_eq!(Quota::new("issues", raw(20.0, None)).map(|q| q.max), Ok(20));
        assert!(Quota::new("issues", raw(2.5, None)).is_err());
        assert!(Quota::new("Bad Name", raw(1.0, None)).is_err());
        assert!(Quota::new("neg", raw(-1.0, None)).is_err());
        assert!(Quota::new("ptr", raw(1.0, Some("amount"))).is_err());
    }

    #[test]
    fn required_numbers_are_found_through_nested_objects() {
        let schema = serde_json::json!({"type": "object", "required": ["amount", "fee"], "properties": {
            "amount": {"type": "number"}, "note": {"type": "number"},
            "fee": {"type": "object", "required": ["value"], "properties": {"value": {"type": "integer"}}}
        }});
        assert!(required_number(&schema, "/amount"));
        assert!(required_number(&schema, "/fee/value"));
        assert!(!required_number(&schema, "/note"));
        assert!(!required_number(&schema, "/missing"));
    }
}
