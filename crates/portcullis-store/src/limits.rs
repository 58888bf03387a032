//! Rate and spend counters in fixed windows, charged atomically across every instance that
//! shares the store.
//!
//! A window is `[start, start + length)` with `start` a multiple of its length since the
//! Unix epoch, so every instance computes the same window for the same moment and the
//! reset time is the window's end. Amounts are integers in the limit's unit (one per
//! intent for a count limit; ten-thousandths for a sum limit).

use serde::Serialize;

use crate::{Store, StoreError};

/// One counter an intent is charged against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The limit's name.
    pub limit: String,
    /// Whose counter: an agent id, or `*` for a limit shared by all agents.
    pub subject: String,
    /// The window's length in seconds (at least 1).
    pub window_secs: i64,
    /// The most a window may hold.
    pub max: i64,
    /// What this intent adds (not negative).
    pub amount: i64,
}

impl Charge {
    /// The window holding `now_unix`: `(start, end)`.
    #[must_use]
    pub fn window(&self, now_unix: i64) -> (i64, i64) {
        let len = self.window_secs.max(1);
        let start = now_unix - now_unix.rem_euclid(len);
        (start, start.saturating_add(len))
    }
}

/// A counter's state in the current window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterView {
    /// The limit's name.
    pub limit: String,
    /// Used so far in this window.
    pub used: i64,
    /// The window's maximum.
    pub max: i64,
    /// When the window ends and the counter starts again from zero, Unix seconds.
    pub resets_at_unix: i64,
}

/// What [`Store::charge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Every counter was charged; their state after the charge, in the order given.
    Charged(Vec<CounterView>),
    /// Charging would take this counter past its maximum; nothing was charged.
    Exceeded(CounterView),
}

const READ_CONTEXT: &str = "reading rate and spend counters";
const CHARGE_CONTEXT: &str = "charging rate and spend counters";

impl Store {
    /// The current window's usage of each counter, in the order given.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn counters(&self, charges: &[Charge], now_unix: i64) -> Result<Vec<CounterView>, StoreError> {
        let mut out = Vec::with_capacity(charges.len());
        for c in charges {
            let (start, end) = c.window(now_unix);
            let used: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
                "SELECT used FROM limit_counters WHERE limit_name = $1 AND subject = $2 AND window_start = $3"
            )
            .bind(&c.limit)
            .bind(&c.subject)
            .bind(start)
            .fetch_optional(pool)
            .await)
            .map_err(StoreError::db(READ_CONTEXT))?;
            out.push(CounterView {
                limit: c.limit.clone(),
                used: used.unwrap_or(0),
                max: c.max,
                resets_at_unix: end,
            });
        }
        Ok(out)
    }

    /// Charges every counter, or none: in one transaction, each counter is raised by its
    /// amount only if that keeps it within its maximum; the first that would overflow rolls
    /// everything back and is reported.
    ///
    /// The check and the increment are one statement (`INSERT … ON CONFLICT DO UPDATE …
    /// WHERE used + amount <= max`), which PostgreSQL runs under the row's lock, so
    /// concurrent charges from any number of instances never overshoot. Counters are taken
    /// in a fixed order, so two transactions charging the same pair can't deadlock.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a negative amount or a window shorter than a second;
    /// otherwise when the database can't be written.
    pub async fn charge(&self, charges: &[Charge], now_unix: i64) -> Result<Charged, StoreError> {
        if charges.iter().any(|c| c.amount < 0) {
            return Err(StoreError::Invalid {
                what: "charge",
                reason: "an amount can't be negative",
            });
        }
        if charges.iter().any(|c| c.window_secs < 1) {
            return Err(StoreError::Invalid {
                what: "charge",
                reason: "a window is at least one second",
            });
        }
        let mut ordered: Vec<(usize, &Charge)> = charges.iter().enumerate().collect();
        ordered.sort_by(|(_, a), (_, b)| (&a.limit, &a.subject).cmp(&(&b.limit, &b.subject)));
        if let Some((_, c)) = ordered.iter().find(|(_, c)| c.amount > c.max) {
            // Never fits, whatever is used (and a first charge inserts without the check):
            // refuse here, reporting the counter as it stands.
            let (_, end) = c.window(now_unix);
            let used = self
                .counters(std::slice::from_ref(*c), now_unix)
                .await?
                .first()
                .map_or(0, |v| v.used);
            return Ok(Charged::Exceeded(CounterView {
                limit: c.limit.clone(),
                used,
                max: c.max,
                resets_at_unix: end,
            }));
        }
        let charged = in_tx!(self, CHARGE_CONTEXT, |tx| {
            let mut exceeded = None;
            let mut after_all: Vec<Option<CounterView>> = vec![None; charges.len()];
            for (i, c) in &ordered {
                let (start, end) = c.window(now_unix);
                let after: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO limit_counters (limit_name, subject, window_start, window_end, used) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (limit_name, subject, window_start) \
                     DO UPDATE SET used = limit_counters.used + excluded.used \
                     WHERE limit_counters.used + excluded.used <= $6 \
                     RETURNING used",
                )
                .bind(&c.limit)
                .bind(&c.subject)
                .bind(start)
                .bind(end)
                .bind(c.amount)
                .bind(c.max)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db(CHARGE_CONTEXT))?;
                if let Some(used) = after {
                    after_all[*i] = Some(CounterView {
                        limit: c.limit.clone(),
                        used,
                        max: c.max,
                        resets_at_unix: end,
                    });
                } else {
                    let used: i64 = sqlx::query_scalar(
                        "SELECT used FROM limit_counters WHERE limit_name = $1 AND subject = $2 AND window_start = $3",
                    )
                    .bind(&c.limit)
                    .bind(&c.subject)
                    .bind(start)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::db(CHARGE_CONTEXT))?;
                    exceeded = Some(CounterView {
                        limit: c.limit.clone(),
                        used,
                        max: c.max,
                        resets_at_unix: end,
                    });
                    break;
                }
            }
            if let Some(view) = exceeded {
                // Dropping the transaction rolls back the counters already raised.
                return Ok(Charged::Exceeded(view));
            }
            Charged::Charged(after_all.into_iter().flatten().collect())
        });
        Ok(charged)
    }

    /// Gives back what [`Store::charge`] took at `charged_at_unix` (an intent charged
    /// before its decision that was then not allowed to run). Counters never go below zero.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn release(&self, charges: &[Charge], charged_at_unix: i64) -> Result<(), StoreError> {
        const CONTEXT: &str = "releasing rate and spend counters";
        let mut ordered: Vec<&Charge> = charges.iter().filter(|c| c.amount > 0).collect();
        if ordered.is_empty() {
            return Ok(());
        }
        ordered.sort_by(|a, b| (&a.limit, &a.subject).cmp(&(&b.limit, &b.subject)));
        in_tx!(self, CONTEXT, |tx| {
            for c in &ordered {
                let (start, _) = c.window(charged_at_unix);
                sqlx::query(
                    "UPDATE limit_counters SET used = CASE WHEN used > $4 THEN used - $4 ELSE 0 END \
                     WHERE limit_name = $1 AND subject = $2 AND window_start = $3",
                )
                .bind(&c.limit)
                .bind(&c.subject)
                .bind(start)
                .bind(c.amount)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(CONTEXT))?;
            }
        });
        Ok(())
    }

    /// Deletes counters whose window ended before `before_unix`; returns how many.
    ///
    /// # Errors
    /// When the database can't be written.
    pub async fn prune_counters(&self, before_unix: i64) -> Result<u64, StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM limit_counters WHERE window_end < $1"
        )
        .bind(before_unix)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(StoreError::db("pruning old counters"))
    }
}
