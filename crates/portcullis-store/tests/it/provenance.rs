//! Values untrusted actions returned, per agent session: found again only in the same
//! agent's session while live, bounded per session and overall with the oldest evicted,
//! and shared by every store handle on the same database.

use portcullis_store::{NewValues, ProvenanceLimits, SeenValue, Store};

use crate::support::TestDb;

const NOW: i64 = 1_800_000_000;

const LIMITS: ProvenanceLimits = ProvenanceLimits {
    ttl_secs: 3600,
    per_session: 100,
    total: 1000,
};

fn hashes(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

async fn record(
    store: &Store,
    agent: &str,
    session: &str,
    source: &str,
    at: i64,
    values: &[String],
    limits: ProvenanceLimits,
) {
    let v = NewValues {
        agent,
        session,
        source,
        intent_id: "int_test",
        read_unix: at,
        hashes: values,
    };
    store.record_provenance(&v, limits).await.unwrap();
}

async fn found(store: &Store, agent: &str, session: &str, values: &[String], now: i64) -> Vec<SeenValue> {
    let mut seen = store.provenance(agent, session, values, now).await.unwrap();
    seen.sort_by(|a, b| (&a.value_sha256, &a.source).cmp(&(&b.value_sha256, &b.source)));
    seen
}

async fn values_are_found_only_in_their_own_agents_session(db: TestDb) {
    let store = db.open().await;
    let read = vec!["aaa".to_owned(), "bbb".to_owned(), "aaa".to_owned()];
    record(&store, "assistant", "task-1", "mail.read", NOW, &read, LIMITS).await;

    let asked = vec!["aaa".to_owned(), "zzz".to_owned()];
    let seen = found(&store, "assistant", "task-1", &asked, NOW + 1).await;
    assert_eq!(
        seen,
        vec![SeenValue {
            value_sha256: "aaa".into(),
            source: "mail.read".into(),
            read_unix: NOW,
        }]
    );
    // Another session of the same agent, and the same session name used by another agent.
    assert!(found(&store, "assistant", "task-2", &asked, NOW + 1).await.is_empty());
    assert!(found(&store, "intruder", "task-1", &asked, NOW + 1).await.is_empty());
    // The intruder recording into "its" task-1 doesn't extend the assistant's.
    record(
        &store,
        "intruder",
        "task-1",
        "web.fetch",
        NOW,
        &["ccc".to_owned()],
        LIMITS,
    )
    .await;
    assert!(
        found(&store, "assistant", "task-1", &["ccc".to_owned()], NOW + 1)
            .await
            .is_empty()
    );
    assert_eq!(
        store
            .provenance_count(Some(("assistant", "task-1")), NOW + 1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.provenance_count(None, NOW + 1).await.unwrap(), 3);

    // Another handle on the same database (another gateway instance) sees the same session.
    let other = db.open().await;
    assert_eq!(found(&other, "assistant", "task-1", &asked, NOW + 1).await.len(), 1);
}
on_both!(values_are_found_only_in_their_own_agents_session);

async fn a_value_read_from_two_sources_is_found_with_each_and_keeps_its_first_read(db: TestDb) {
    let store = db.open().await;
    let v = vec!["iban".to_owned()];
    record(&store, "a", "s", "mail.read", NOW, &v, LIMITS).await;
    record(&store, "a", "s", "web.fetch", NOW + 10, &v, LIMITS).await;
    record(&store, "a", "s", "mail.read", NOW + 20, &v, LIMITS).await;
    let seen = found(&store, "a", "s", &v, NOW + 30).await;
    let got: Vec<(&str, i64)> = seen.iter().map(|s| (s.source.as_str(), s.read_unix)).collect();
    assert_eq!(got, vec![("mail.read", NOW), ("web.fetch", NOW + 10)]);
    // Read again from mail.read at NOW + 20, so that record lives until NOW + 20 + ttl;
    // the one from web.fetch expires ttl after NOW + 10.
    let later = NOW + 20 + LIMITS.ttl_secs - 1;
    let seen = found(&store, "a", "s", &v, later).await;
    let got: Vec<(&str, i64)> = seen.iter().map(|s| (s.source.as_str(), s.read_unix)).collect();
    assert_eq!(got, vec![("mail.read", NOW)]);
}
on_both!(a_value_read_from_two_sources_is_found_with_each_and_keeps_its_first_read);

async fn values_expire(db: TestDb) {
    let store = db.open().await;
    let v = vec!["memo".to_owned()];
    record(&store, "a", "s", "mail.read", NOW, &v, LIMITS).await;
    assert_eq!(found(&store, "a", "s", &v, NOW + LIMITS.ttl_secs - 1).await.len(), 1);
    assert!(found(&store, "a", "s", &v, NOW + LIMITS.ttl_secs).await.is_empty());
    // The next recording after expiry deletes the expired rows.
    record(
        &store,
        "a",
        "t",
        "mail.read",
        NOW + LIMITS.ttl_secs,
        &["x".to_owned()],
        LIMITS,
    )
    .await;
    assert_eq!(store.provenance_count(None, 0).await.unwrap(), 1);
}
on_both!(values_expire);

async fn a_full_session_evicts_its_oldest_values(db: TestDb) {
    let store = db.open().await;
    let limits = ProvenanceLimits {
        per_session: 10,
        ..LIMITS
    };
    let old = hashes("old", 6);
    let new = hashes("new", 6);
    record(&store, "a", "s", "mail.read", NOW, &old, limits).await;
    record(&store, "a", "s", "mail.read", NOW + 1, &new, limits).await;
    record(&store, "a", "other", "mail.read", NOW + 1, &hashes("o", 3), limits).await;
    assert_eq!(store.provenance_count(Some(("a", "s")), NOW + 2).await.unwrap(), 10);
    let all: Vec<String> = old.iter().chain(&new).cloned().collect();
    let kept: Vec<String> = found(&store, "a", "s", &all, NOW + 2)
        .await
        .into_iter()
        .map(|s| s.value_sha256)
        .collect();
    let mut expected: Vec<String> = old[2..].iter().chain(&new).cloned().collect();
    expected.sort();
    assert_eq!(kept, expected, "the two oldest values made room");
    // Other sessions are untouched by this session's limit.
    assert_eq!(store.provenance_count(Some(("a", "other")), NOW + 2).await.unwrap(), 3);

    // One result with more values than a session holds keeps only as many.
    record(&store, "a", "big", "mail.read", NOW, &hashes("b", 25), limits).await;
    assert_eq!(store.provenance_count(Some(("a", "big")), NOW + 2).await.unwrap(), 10);
}
on_both!(a_full_session_evicts_its_oldest_values);

async fn the_whole_table_is_bounded_with_the_oldest_evicted_first(db: TestDb) {
    let store = db.open().await;
    let limits = ProvenanceLimits { total: 8, ..LIMITS };
    record(&store, "a", "s1", "mail.read", NOW, &hashes("first", 5), limits).await;
    record(&store, "b", "s2", "mail.read", NOW + 1, &hashes("second", 5), limits).await;
    assert_eq!(store.provenance_count(None, NOW + 2).await.unwrap(), 8);
    assert_eq!(
        found(&store, "a", "s1", &hashes("first", 5), NOW + 2).await.len(),
        3,
        "two of the oldest session's values made room"
    );
    assert_eq!(found(&store, "b", "s2", &hashes("second", 5), NOW + 2).await.len(), 5);
}
on_both!(the_whole_table_is_bounded_with_the_oldest_evicted_first);

async fn a_lookup_of_many_values_is_answered_in_full(db: TestDb) {
    let store = db.open().await;
    let many = hashes("v", 1200);
    let limits = ProvenanceLimits {
        per_session: 5000,
        total: 5000,
        ..LIMITS
    };
    record(&store, "a", "s", "files.read", NOW, &many, limits).await;
    assert_eq!(found(&store, "a", "s", &many, NOW + 1).await.len(), 1200);
}
on_both!(a_lookup_of_many_values_is_answered_in_full);
