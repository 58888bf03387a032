//! Rate and spend counters in fixed windows, charged all-or-nothing, never past their
//! maximum however many instances charge at once.

use portcullis_store::{Charge, Charged, CounterView, Store, StoreError};

use crate::support::TestDb;

/// An hour-window timestamp: `NOW` is 800 s into the window `[WINDOW, WINDOW + 3600)`.
const WINDOW: i64 = 1_699_999_200;
const NOW: i64 = WINDOW + 800;
const HOUR: i64 = 3600;

fn charge(limit: &str, max: i64, amount: i64) -> Charge {
    Charge {
        limit: limit.into(),
        subject: "billing-bot".into(),
        window_secs: HOUR,
        max,
        amount,
    }
}

fn view(limit: &str, used: i64, max: i64, resets_at_unix: i64) -> CounterView {
    CounterView {
        limit: limit.into(),
        used,
        max,
        resets_at_unix,
    }
}

async fn used(store: &Store, c: &Charge, now_unix: i64) -> i64 {
    store.counters(std::slice::from_ref(c), now_unix).await.unwrap()[0].used
}

#[test]
fn windows_are_aligned_to_their_length() {
    assert_eq!(WINDOW % HOUR, 0);
    assert_eq!(charge("x", 1, 1).window(NOW), (WINDOW, WINDOW + HOUR));
    assert_eq!(
        charge("x", 1, 1).window(WINDOW + HOUR),
        (WINDOW + HOUR, WINDOW + 2 * HOUR)
    );
}

async fn charges_succeed_up_to_the_maximum_and_then_report_the_counter(db: TestDb) {
    let store = db.open().await;
    let c = charge("refunds", 3, 1);
    for n in 1..=3 {
        assert_eq!(
            store.charge(std::slice::from_ref(&c), NOW).await.unwrap(),
            Charged::Charged(vec![view("refunds", n, 3, WINDOW + HOUR)])
        );
    }
    assert_eq!(
        store.charge(std::slice::from_ref(&c), NOW).await.unwrap(),
        Charged::Exceeded(view("refunds", 3, 3, WINDOW + HOUR))
    );
    assert_eq!(
        store.counters(std::slice::from_ref(&c), NOW).await.unwrap(),
        [view("refunds", 3, 3, WINDOW + HOUR)]
    );
    // Another subject has its own counter.
    let other = Charge {
        subject: "triage-bot".into(),
        ..c
    };
    assert!(matches!(
        store.charge(std::slice::from_ref(&other), NOW).await.unwrap(),
        Charged::Charged(_)
    ));
    assert_eq!(used(&store, &other, NOW).await, 1);
}
on_both!(charges_succeed_up_to_the_maximum_and_then_report_the_counter);

async fn a_charge_is_all_or_nothing(db: TestDb) {
    let store = db.open().await;
    let count = charge("a-count", 10, 1);
    let spend = charge("b-spend", 3_0000, 2_0000);
    assert_eq!(
        store.charge(&[spend.clone(), count.clone()], NOW).await.unwrap(),
        // In the order given, not the order charged.
        Charged::Charged(vec![
            view("b-spend", 2_0000, 3_0000, WINDOW + HOUR),
            view(&count.limit, count.amount, count.max, WINDOW + HOUR)
        ])
    );
    // `a-count` is charged first and fits; `b-spend` then overflows, and takes the
    // `a-count` charge back with it.
    for charges in [[count.clone(), spend.clone()], [spend.clone(), count.clone()]] {
        assert_eq!(
            store.charge(&charges, NOW).await.unwrap(),
            Charged::Exceeded(view("b-spend", 2_0000, 3_0000, WINDOW + HOUR))
        );
    }
    assert_eq!(
        store.counters(&[count.clone(), spend.clone()], NOW).await.unwrap(),
        [
            view("a-count", 1, 10, WINDOW + HOUR),
            view("b-spend", 2_0000, 3_0000, WINDOW + HOUR)
        ]
    );
    let smaller = Charge {
        amount: 1_0000,
        ..spend
    };
    assert!(matches!(
        store.charge(&[count.clone(), smaller.clone()], NOW).await.unwrap(),
        Charged::Charged(_)
    ));
    assert_eq!(used(&store, &count, NOW).await, 2);
    assert_eq!(used(&store, &smaller, NOW).await, 3_0000);
}
on_both!(a_charge_is_all_or_nothing);

async fn invalid_charges_are_refused_and_charge_nothing(db: TestDb) {
    let store = db.open().await;
    let fine = charge("a-count", 10, 1);
    let err = store
        .charge(&[fine.clone(), charge("b-spend", 10, -1)], NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { what: "charge", .. }), "{err:?}");
    assert_eq!(err.to_string(), "invalid charge: an amount can't be negative");
    let no_window = Charge {
        window_secs: 0,
        ..charge("b-spend", 10, 1)
    };
    let err = store.charge(&[fine.clone(), no_window], NOW).await.unwrap_err();
    assert_eq!(err.to_string(), "invalid charge: a window is at least one second");
    assert_eq!(used(&store, &fine, NOW).await, 0);
}
on_both!(invalid_charges_are_refused_and_charge_nothing);

async fn an_amount_larger_than_the_maximum_never_fits(db: TestDb) {
    let store = db.open().await;
    let fine = charge("a-count", 10, 1);
    let huge = charge("b-spend", 100_0000, 100_0001);
    let Charged::Exceeded(exceeded) = store.charge(&[fine.clone(), huge.clone()], NOW).await.unwrap() else {
        panic!("an amount above the maximum was charged");
    };
    assert_eq!(
        (exceeded.limit.as_str(), exceeded.max, exceeded.resets_at_unix),
        ("b-spend", 100_0000, WINDOW + HOUR)
    );
    assert_eq!(used(&store, &fine, NOW).await, 0);
    assert_eq!(used(&store, &huge, NOW).await, 0);
}
on_both!(an_amount_larger_than_the_maximum_never_fits);

async fn an_oversized_amount_reports_what_is_really_used(db: TestDb) {
    let store = db.open().await;
    let small = charge("spend", 10, 5);
    assert!(matches!(
        store.charge(std::slice::from_ref(&small), NOW).await.unwrap(),
        Charged::Charged(_)
    ));
    let huge = charge("spend", 10, 11);
    assert_eq!(
        store.charge(&[huge], NOW).await.unwrap(),
        Charged::Exceeded(view("spend", 5, 10, WINDOW + HOUR))
    );
    assert_eq!(used(&store, &small, NOW).await, 5);
}
on_both!(an_oversized_amount_reports_what_is_really_used);

async fn a_new_window_starts_from_zero(db: TestDb) {
    let store = db.open().await;
    let c = charge("refunds", 2, 1);
    let next = WINDOW + HOUR;
    for _ in 0..2 {
        assert!(matches!(
            store.charge(std::slice::from_ref(&c), NOW).await.unwrap(),
            Charged::Charged(_)
        ));
    }
    // The last second of the window is still in it.
    assert_eq!(
        store.charge(std::slice::from_ref(&c), next - 1).await.unwrap(),
        Charged::Exceeded(view("refunds", 2, 2, next))
    );
    assert!(matches!(
        store.charge(std::slice::from_ref(&c), next).await.unwrap(),
        Charged::Charged(_)
    ));
    assert_eq!(
        store.counters(std::slice::from_ref(&c), next + 5).await.unwrap(),
        [view("refunds", 1, 2, next + HOUR)]
    );
    assert_eq!(used(&store, &c, NOW).await, 2, "the old window is unchanged");
}
on_both!(a_new_window_starts_from_zero);

/// Charges each of `amounts` at once, spread over `stores`; returns the amounts that
/// were charged and the views of those that were refused.
async fn charge_concurrently(
    stores: &[Store],
    template: &Charge,
    amounts: &[i64],
) -> (Vec<i64>, Vec<(i64, CounterView)>) {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(amounts.len()));
    let tasks: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, &amount)| {
            let store = stores[i % stores.len()].clone();
            let c = Charge {
                amount,
                ..template.clone()
            };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                (amount, store.charge(&[c], NOW).await.unwrap())
            })
        })
        .collect();
    let (mut charged, mut refused) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            (amount, Charged::Charged(_)) => charged.push(amount),
            (amount, Charged::Exceeded(view)) => refused.push((amount, view)),
        }
    }
    (charged, refused)
}

/// A hundred intents on two gateway instances race for thirty slots.
async fn concurrent_counts_never_overshoot(db: TestDb) {
    let stores = [db.open().await, db.open().await];
    let c = charge("refunds", 30, 1);
    let (charged, refused) = charge_concurrently(&stores, &c, &[1; 100]).await;
    assert_eq!(charged.len(), 30);
    assert_eq!(refused.len(), 70);
    assert!(
        refused
            .iter()
            .all(|(_, v)| *v == view("refunds", 30, 30, WINDOW + HOUR)),
        "{refused:?}"
    );
    assert_eq!(used(&stores[1], &c, NOW).await, 30);
}
on_both!(concurrent_counts_never_overshoot);

/// Sums in ten-thousandths: 12.5 a time against 500 fits exactly 40 times; mixed
/// amounts add up exactly and stop only when the next one would not fit.
async fn concurrent_sums_never_overshoot(db: TestDb) {
    let stores = [db.open().await, db.open().await];
    let even = charge("spend-even", 500_0000, 0);
    let (charged, refused) = charge_concurrently(&stores, &even, &[12_5000; 100]).await;
    assert_eq!((charged.len(), refused.len()), (40, 60));
    assert_eq!(used(&stores[0], &even, NOW).await, 500_0000);

    let mixed = charge("spend-mixed", 500_0000, 0);
    let amounts: Vec<i64> = (0..100).map(|i| (i % 7 + 1) * 3_3333).collect();
    let (charged, refused) = charge_concurrently(&stores, &mixed, &amounts).await;
    let total = used(&stores[1], &mixed, NOW).await;
    assert_eq!(total, charged.iter().sum::<i64>());
    assert!(total <= 500_0000, "{total}");
    assert!(!refused.is_empty());
    // A refused amount did not fit when it was tried, and the counter only grew since.
    for (amount, view) in &refused {
        assert!(view.used + amount > 500_0000, "{amount} was refused at {}", view.used);
        assert!(total + amount > 500_0000, "{amount} was refused but fits in {total}");
    }
}
on_both!(concurrent_sums_never_overshoot);

async fn pruning_deletes_only_windows_that_have_ended(db: TestDb) {
    let store = db.open().await;
    let c = charge("refunds", 10, 1);
    let next = WINDOW + HOUR;
    store.charge(std::slice::from_ref(&c), NOW).await.unwrap();
    store.charge(std::slice::from_ref(&c), next).await.unwrap();
    store.charge(std::slice::from_ref(&c), next).await.unwrap();

    // The first window ends at `next`: not before `next`, but before `next + 1`.
    assert_eq!(store.prune_counters(next).await.unwrap(), 0);
    assert_eq!(used(&store, &c, NOW).await, 1);
    assert_eq!(store.prune_counters(next + 1).await.unwrap(), 1);
    assert_eq!(used(&store, &c, NOW).await, 0);
    assert_eq!(used(&store, &c, next).await, 2);
    assert_eq!(store.prune_counters(next + 1).await.unwrap(), 0);
}
on_both!(pruning_deletes_only_windows_that_have_ended);

async fn a_release_gives_back_what_a_charge_took(db: TestDb) {
    let store = db.open().await;
    let spend = charge("spend", 10, 4);
    let count = charge("count", 3, 1);
    for _ in 0..2 {
        assert!(matches!(
            store.charge(&[spend.clone(), count.clone()], NOW).await.unwrap(),
            Charged::Charged(_)
        ));
    }
    store.release(&[spend.clone(), count.clone()], NOW).await.unwrap();
    assert_eq!(
        (used(&store, &spend, NOW).await, used(&store, &count, NOW).await),
        (4, 1)
    );
    // Never below zero, and a window nobody charged is left alone.
    store.release(&[charge("spend", 10, 9)], NOW).await.unwrap();
    assert_eq!(used(&store, &spend, NOW).await, 0);
    store
        .release(std::slice::from_ref(&spend), NOW + 10 * HOUR)
        .await
        .unwrap();
    assert_eq!(used(&store, &spend, NOW + 10 * HOUR).await, 0);
}
on_both!(a_release_gives_back_what_a_charge_took);
