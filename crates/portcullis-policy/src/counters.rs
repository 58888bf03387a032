//! Rate and spend counters in the policy context: `context.counters["NAME"]`.
//!
//! Each quota that applies to an action appears under its name with the current window's
//! `used` (before this intent), `this` (what this intent adds), `max`, `remaining`,
//! `percent` (of `max` used before this intent, rounded down) and `resets_at` (Unix
//! seconds). Counting quotas give Longs; summing quotas give decimals, exact to four
//! places, like the input amounts they sum. A policy can so hold an intent once a budget is
//! half used, or deny one that would spend more than what remains.

use serde_json::{Map, Value, json};

/// Units per 1 of a summed amount: four decimal places, Cedar's `decimal` precision.
pub const SUM_SCALE: i64 = 10_000;

/// A quota that applies to an action, as the schema declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// The quota's name: the key under `context.counters`.
    pub name: String,
    /// Sums an input amount (decimals) rather than counting intents (Longs).
    pub sum: bool,
    /// Present for every agent. A quota scoped to some agents is absent for the others, so
    /// policies must test `context.counters has "NAME"` first.
    pub always: bool,
}

/// A quota's state when an intent is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterState {
    /// The quota's name.
    pub name: String,
    /// Whether its units are ten-thousandths of a summed amount.
    pub sum: bool,
    /// Used in the current window before this intent, in units.
    pub used: i64,
    /// The window's maximum, in units.
    pub max: i64,
    /// What this intent adds, in units.
    pub this: i64,
    /// When the window ends, Unix seconds.
    pub resets_at_unix: i64,
}

/// The Cedar type of `context.counters` for an action with these quotas.
pub(crate) fn counters_type(specs: &[CounterSpec]) -> Value {
    let attributes: Map<String, Value> = specs
        .iter()
        .map(|s| {
            let amount = if s.sum {
                json!({"type": "Extension", "name": "decimal"})
            } else {
                json!({"type": "Long"})
            };
            let t = json!({"type": "Record", "required": s.always, "attributes": {
                "used": amount, "this": amount, "max": amount, "remaining": amount,
                "percent": {"type": "Long"}, "resets_at": {"type": "Long"},
            }});
            (s.name.clone(), t)
        })
        .collect();
    json!({"type": "Record", "attributes": attributes})
}

/// The value of `context.counters`.
pub(crate) fn counters(states: &[CounterState]) -> Value {
    let record: Map<String, Value> = states
        .iter()
        .map(|s| {
            let amount = |units: i64| {
                if s.sum {
                    let units = units.max(0);
                    json!({"__extn": {"fn": "decimal", "arg": format!("{}.{:04}", units / SUM_SCALE, units % SUM_SCALE)}})
                } else {
                    Value::from(units)
                }
            };
            let percent = if s.max <= 0 {
                100
            } else {
                i64::try_from(i128::from(s.used) * 100 / i128::from(s.max)).unwrap_or(i64::MAX)
            };
            let v = json!({
                "used": amount(s.used), "this": amount(s.this), "max": amount(s.max),
                "remaining": amount(s.max.saturating_sub(s.used)),
                "percent": percent, "resets_at": s.resets_at_unix,
            });
            (s.name.clone(), v)
        })
        .collect();
    Value::Object(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_decimals_and_counts_are_longs() {
        let states = [
            CounterState {
                name: "refunds".into(),
                sum: true,
                used: 2_500_000,
                max: 5_000_000,
                this: 125_005,
                resets_at_unix: 86_400,
            },
            CounterState {
                name: "issues".into(),
                sum: false,
                used: 3,
                max: 20,
                this: 1,
                resets_at_unix: 3_600,
            },
        ];
        let v = counters(&states);
        assert_eq!(v["refunds"]["used"]["__extn"]["arg"], "250.0000");
        assert_eq!(v["refunds"]["this"]["__extn"]["arg"], "12.5005");
        assert_eq!(v["refunds"]["remaining"]["__extn"]["arg"], "250.0000");
        assert_eq!(v["refunds"]["percent"], 50);
        assert_eq!(v["issues"]["used"], 3);
        assert_eq!(v["issues"]["remaining"], 17);
        assert_eq!(v["issues"]["percent"], 15);
        assert_eq!(v["issues"]["resets_at"], 3_600);
    }
}
