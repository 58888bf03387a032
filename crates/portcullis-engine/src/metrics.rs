//! Prometheus metrics: counters and fixed-bucket histograms on atomics, rendered in the text
//! exposition format 0.0.4 by hand (no metrics dependency).
//!
//! Label values are only ever names an operator wrote (actions, quotas, credentials) or
//! values from a fixed set (statuses, effects, stages, HTTP status classes), never what an
//! agent sent; and every family holds at most [`MAX_SERIES`] label sets, so nothing an agent
//! does can grow the registry without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Most label sets one family holds; increments for new label sets beyond it are counted in
/// `portcullis_metrics_series_dropped_total` instead.
pub const MAX_SERIES: usize = 2048;

/// Upper bounds of the latency histograms' buckets, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `action` label of an intent that named no action in the catalog: what it named came
/// from the agent and is never a label value.
pub const UNKNOWN_ACTION: &str = "";

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// One metric family: a value per label set.
#[derive(Debug)]
struct Family<T> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: RwLock<BTreeMap<Vec<String>, Arc<T>>>,
}

impl<T: Default> Family<T> {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// The series of `values` (one per label), created if there is room.
    fn get(&self, values: &[&str], dropped: &AtomicU64) -> Option<Arc<T>> {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Some(s) = self.series.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Some(Arc::clone(s));
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        if series.len() >= MAX_SERIES && !series.contains_key(&key) {
            dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Arc::clone(series.entry(key).or_default()))
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<T>)> {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        series.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }
}

impl Family<AtomicU64> {
    fn inc(&self, values: &[&str], dropped: &AtomicU64) {
        if let Some(c) = self.get(values, dropped) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, out: &mut String) {
        self.header(out, "counter");
        for (values, c) in self.snapshot() {
            let labels = label_set(self.labels, &values, None);
            let _ = writeln!(out, "{}{labels} {}", self.name, c.load(Ordering::Relaxed));
        }
    }
}

impl Family<Histogram> {
    fn observe(&self, values: &[&str], d: Duration, dropped: &AtomicU64) {
        if let Some(h) = self.get(values, dropped) {
            h.observe(d);
        }
    }

    fn render(&self, out: &mut String) {
        self.header(out, "histogram");
        for (values, h) in self.snapshot() {
            // `_count` is the `+Inf` bucket as read here, so the two always agree.
            let mut cumulative = 0;
            for (i, bucket) in h.buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), |b| format_float(*b));
                let labels = label_set(self.labels, &values, Some(&le));
                let _ = writeln!(out, "{}_bucket{labels} {cumulative}", self.name);
            }
            let labels = label_set(self.labels, &values, None);
            #[expect(clippy::cast_precision_loss, reason = "a sum of nanoseconds shown as seconds")]
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{}_sum{labels} {}", self.name, format_float(sum));
            let _ = writeln!(out, "{}_count{labels} {}", self.name, cumulative);
        }
    }
}

/// Values read at scrape time from outside the registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Holds waiting for approval (`None` when the store could not be read).
    pub pending_approvals: Option<u64>,
    /// Audit events queued and not yet committed.
    pub audit_queue_depth: u64,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    intents: Family<AtomicU64>,
    decisions: Family<AtomicU64>,
    intent_duration: Family<Histogram>,
    stage_duration: Family<Histogram>,
    upstream: Family<AtomicU64>,
    audit_append: Family<Histogram>,
    rate_limited: Family<AtomicU64>,
    oauth2: Family<AtomicU64>,
    approvals: Family<AtomicU64>,
    credential_failures: Family<AtomicU64>,
    reloads: Family<AtomicU64>,
    in_flight: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            intents: Family::new(
                "portcullis_intents_total",
                "Intents submitted, by action and final status.",
                &["action", "status"],
            ),
            decisions: Family::new(
                "portcullis_decisions_total",
                "Policy decisions, by effect.",
                &["effect"],
            ),
            intent_duration: Family::new(
                "portcullis_intent_duration_seconds",
                "Time from an intent's submission to its answer, by action.",
                &["action"],
            ),
            stage_duration: Family::new(
                "portcullis_stage_duration_seconds",
                "Time spent in one pipeline stage.",
                &["stage"],
            ),
            upstream: Family::new(
                "portcullis_upstream_responses_total",
                "Upstream answers, by action and HTTP status class (`error` when none came).",
                &["action", "code"],
            ),
            audit_append: Family::new(
                "portcullis_audit_append_seconds",
                "Time from queueing an audit event to its commit.",
                &[],
            ),
            rate_limited: Family::new(
                "portcullis_rate_limited_total",
                "Intents refused because a quota was exhausted, by quota.",
                &["quota"],
            ),
            oauth2: Family::new(
                "portcullis_oauth2_token_requests_total",
                "OAuth2 token requests, by credential and outcome.",
                &["credential", "outcome"],
            ),
            approvals: Family::new(
                "portcullis_approvals_total",
                "Held intents settled by people or by time, by outcome (`approved`, `denied`, `expired`).",
                &["outcome"],
            ),
            credential_failures: Family::new(
                "portcullis_credential_failures_total",
                "Intents whose credential could not be resolved (store, environment, Vault or OAuth2), by credential.",
                &["credential"],
            ),
            reloads: Family::new(
                "portcullis_config_reloads_total",
                "Configuration reloads, by outcome (`applied` or `rejected`).",
                &["outcome"],
            ),
            in_flight: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts an intent's final status.
    pub fn intent(&self, action: &str, status: &str, took: Duration) {
        self.intents.inc(&[action, status], &self.dropped);
        self.intent_duration.observe(&[action], took, &self.dropped);
    }

    /// Counts a decision.
    pub fn decision(&self, effect: &str) {
        self.decisions.inc(&[effect], &self.dropped);
    }

    /// Records the time one stage took.
    pub fn stage(&self, stage: &'static str, took: Duration) {
        self.stage_duration.observe(&[stage], took, &self.dropped);
    }

    /// Counts an upstream answer: its HTTP status, or `None` when the call failed.
    pub fn upstream(&self, action: &str, status: Option<u16>) {
        let code = status.map_or_else(|| "error".to_owned(), status_class);
        self.upstream.inc(&[action, &code], &self.dropped);
    }

    /// Records an audit append's latency.
    pub fn audit_append(&self, took: Duration) {
        self.audit_append.observe(&[], took, &self.dropped);
    }

    /// Counts a quota refusal.
    pub fn rate_limited(&self, quota: &str) {
        self.rate_limited.inc(&[quota], &self.dropped);
    }

    /// Counts an OAuth2 token request's outcome (`ok` or `failed`).
    pub fn oauth2_token_request(&self, credential: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.oauth2.inc(&[credential, outcome], &self.dropped);
    }

    /// Counts a hold settled as `outcome`.
    pub fn approval(&self, outcome: &'static str) {
        self.approvals.inc(&[outcome], &self.dropped);
    }

    /// Counts a credential that could not be resolved for an intent.
    pub fn credential_failure(&self, credential: &str) {
        self.credential_failures.inc(&[credential], &self.dropped);
    }

    /// Counts a reload, applied or rejected.
    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.reloads.inc(&[outcome], &self.dropped);
    }

    /// Marks an intent as running until the guard is dropped.
    #[must_use]
    pub fn start_intent(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Intents being processed now (submitted and not yet answered, or approved and running).
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The text exposition (format 0.0.4) of every metric, with `gauges` read by the caller.
    #[must_use]
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        self.intents.render(&mut out);
        self.decisions.render(&mut out);
        self.intent_duration.render(&mut out);
        self.stage_duration.render(&mut out);
        self.upstream.render(&mut out);
        self.audit_append.render(&mut out);
        self.rate_limited.render(&mut out);
        self.oauth2.render(&mut out);
        self.approvals.render(&mut out);
        self.credential_failures.render(&mut out);
        self.reloads.render(&mut out);
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        if let Some(pending) = gauges.pending_approvals {
            gauge(
                &mut out,
                "portcullis_pending_approvals",
                "Holds waiting for approval.",
                pending,
            );
        }
        gauge(
            &mut out,
            "portcullis_intents_in_flight",
            "Intents being processed now.",
            self.in_flight(),
        );
        let depth = gauges.audit_queue_depth;
        gauge(
            &mut out,
            "portcullis_audit_queue_depth",
            "Audit events queued and not yet committed.",
            depth,
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_metrics_series_dropped_total Increments lost because a family reached its label-set cap.\n\
             # TYPE portcullis_metrics_series_dropped_total counter\n\
             portcullis_metrics_series_dropped_total {}",
            self.dropped.load(Ordering::Relaxed)
        );
        out
    }
}

/// An intent being processed; counted in [`Metrics::in_flight`] until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `2xx` for 204 and so on: the class, so that the label set stays small.
fn status_class(status: u16) -> String {
    format!("{}xx", (status / 100).min(9))
}

/// `{a="x",le="0.5"}`, or nothing when there are no labels.
fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A label value as the format requires: backslash, double quote and line feed escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// Help text as the format requires: backslash and line feed escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

/// A float as Prometheus writes it (`1`, `0.25`, `30`).
fn format_float(v: f64) -> String {
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.rate_limited("a\"b\\c\nd");
        let text = m.render(Gauges::default());
        assert!(
            text.contains("portcullis_rate_limited_total{quota=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let m = Metrics::default();
        for ms in [0, 3, 3, 200, 60_000] {
            m.audit_append(Duration::from_millis(ms));
        }
        let text = m.render(Gauges::default());
        let line = |le: &str| format!("portcullis_audit_append_seconds_bucket{{le=\"{le}\"}} ");
        let value = |le: &str| -> u64 {
            let prefix = line(le);
            let l = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
            l[prefix.len()..].parse().unwrap()
        };
        assert_eq!(value("0.001"), 1);
        assert_eq!(value("0.0025"), 1);
        assert_eq!(value("0.005"), 3);
        assert_eq!(value("0.25"), 4);
        assert_eq!(value("30"), 4);
        assert_eq!(value("+Inf"), 5);
        assert!(text.contains("portcullis_audit_append_seconds_count 5\n"), "{text}");
        assert!(text.contains("portcullis_audit_append_seconds_sum 60.206\n"), "{text}");
        assert!(
            text.contains("# TYPE portcullis_audit_append_seconds histogram\n"),
            "{text}"
        );
    }

    #[test]
    fn statuses_are_classes_and_families_are_capped() {
        let m = Metrics::default();
        m.upstream("a", Some(204));
        m.upstream("a", Some(201));
        m.upstream("a", None);
        for i in 0..=MAX_SERIES {
            m.rate_limited(&format!("q{i}"));
        }
        let text = m.render(Gauges {
            pending_approvals: Some(2),
            audit_queue_depth: 0,
        });
        assert!(
            text.contains("portcullis_upstream_responses_total{action=\"a\",code=\"2xx\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("portcullis_upstream_responses_total{action=\"a\",code=\"error\"} 1\n"));
        assert!(text.contains("portcullis_metrics_series_dropped_total 1\n"));
        assert!(text.contains("portcullis_pending_approvals 2\n"));
        let quotas = text
            .lines()
            .filter(|l| l.starts_with("portcullis_rate_limited_total{"))
            .count();
        assert_eq!(quotas, MAX_SERIES);
    }
}
