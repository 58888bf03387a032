//! Agents and people, stored by the SHA-256 of their tokens.

use portcullis_core::{AgentId, sha256_hex};
use portcullis_store::StoreError;

use crate::support::TestDb;

async fn agents_are_stored_by_token_hash(db: TestDb) {
    let store = db.open().await;
    let bot = AgentId::new("triage-bot").unwrap();
    let hash = sha256_hex(b"token-1");
    store.add_agent(&bot, &hash).await.unwrap();

    let err = store.add_agent(&bot, &sha256_hex(b"token-2")).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(err.to_string(), "agent `triage-bot` already exists");

    let other = AgentId::new("other").unwrap();
    let err = store.add_agent(&other, &hash).await.unwrap_err();
    assert_eq!(err.to_string(), "an agent with the same token already exists");

    let err = store.add_agent(&other, "token-in-plain-text").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");

    assert_eq!(store.agent_for_token_hash(&hash).await.unwrap(), Some(bot.clone()));
    assert_eq!(store.agent_for_token_hash(&sha256_hex(b"nope")).await.unwrap(), None);
    let listed = store.list_agents().await.unwrap();
    assert_eq!(listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["triage-bot"]);

    assert!(store.remove_agent(&bot).await.unwrap());
    assert!(!store.remove_agent(&bot).await.unwrap());
    assert_eq!(store.agent_for_token_hash(&hash).await.unwrap(), None);
}
on_both!(agents_are_stored_by_token_hash);

async fn a_person_token_is_replaced_not_added(db: TestDb) {
    let store = db.open().await;
    let first = sha256_hex(b"lena-1");
    let second = sha256_hex(b"lena-2");
    store.set_person_token("lena", &first).await.unwrap();
    assert_eq!(
        store.person_for_token_hash(&first).await.unwrap().as_deref(),
        Some("lena")
    );
    store.set_person_token("lena", &second).await.unwrap();
    assert_eq!(store.person_for_token_hash(&first).await.unwrap(), None);
    assert_eq!(
        store.person_for_token_hash(&second).await.unwrap().as_deref(),
        Some("lena")
    );
    let err = store.set_person_token("omar", "not-a-hash").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}
on_both!(a_person_token_is_replaced_not_added);
