//! Sealed secrets: ciphertext in, ciphertext out, never plaintext at rest.

use portcullis_secrets::{MasterKey, open, seal};

use crate::support::TestDb;

/// A keyring of one key made of `byte`.
fn ring(byte: u8) -> portcullis_secrets::Keyring {
    MasterKey::from_bytes([byte; 32]).into()
}

const PLAINTEXT: &[u8] = b"ghp_supersecret";

fn holds_plaintext(hay: &[u8]) -> bool {
    hay.windows(PLAINTEXT.len()).any(|w| w == PLAINTEXT)
}

async fn secrets_are_stored_sealed_and_listed_without_values(db: TestDb) {
    let store = db.open().await;
    let key = MasterKey::from_bytes([9; 32]);
    let sealed = seal(&key, "github", PLAINTEXT).unwrap();
    store.put_secret(&sealed).await.unwrap();

    let fetched = store.get_secret("github").await.unwrap().unwrap();
    assert_eq!(fetched, sealed);
    assert_eq!(open(&ring(9), &fetched).unwrap().expose_secret(), "ghp_supersecret");
    assert_eq!(store.get_secret("nope").await.unwrap(), None);

    let listed = store.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    let listed_json = serde_json::to_value(&listed).unwrap();
    assert_eq!(
        listed_json[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["name", "created_at", "updated_at"]
    );

    // The stored columns hold no plaintext...
    let mut raw = db.raw().await;
    let stored = raw
        .blobs("SELECT ciphertext FROM secrets UNION ALL SELECT nonce FROM secrets")
        .await;
    assert_eq!(stored.len(), 2);
    assert!(!stored.iter().any(|column| holds_plaintext(column)));
    raw.close().await;
    // ...and neither does the SQLite file.
    if let Some(path) = db.sqlite_path() {
        let bytes = std::fs::read(path).unwrap();
        let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
        assert!(!holds_plaintext(&bytes) && !holds_plaintext(&wal));
    }

    // Replacing keeps created_at and moves updated_at (timestamps have sub-second
    // precision; the pause makes sure the clock moves).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let resealed = seal(&key, "github", b"ghp_rotated").unwrap();
    store.put_secret(&resealed).await.unwrap();
    let after = store.list_secrets().await.unwrap();
    assert_eq!(after[0].created_at, listed[0].created_at);
    assert!(after[0].updated_at > listed[0].updated_at);
    let fetched = store.get_secret("github").await.unwrap().unwrap();
    assert_eq!(open(&ring(9), &fetched).unwrap().expose_secret(), "ghp_rotated");

    assert!(store.remove_secret("github").await.unwrap());
    assert!(!store.remove_secret("github").await.unwrap());
    assert!(store.list_secrets().await.unwrap().is_empty());
}
on_both!(secrets_are_stored_sealed_and_listed_without_values);

async fn a_reseal_replaces_only_the_ciphertext_it_read(db: TestDb) {
    let store = db.open().await;
    let (old, new) = (MasterKey::from_bytes([1; 32]), MasterKey::from_bytes([2; 32]));
    let sealed = seal(&old, "github", b"ghp_value").unwrap();
    store.put_secret(&sealed).await.unwrap();
    let resealed = seal(&new, "github", b"ghp_value").unwrap();
    assert!(store.reseal_secret(&sealed, &resealed).await.unwrap());
    let stored = store.get_secret("github").await.unwrap().unwrap();
    assert_eq!(stored.key_version, new.id());
    assert_eq!(open(&new.into(), &stored).unwrap().expose_secret(), "ghp_value");

    // Someone stored a new value after the rotation read the secret: the stale reseal loses.
    let newer = seal(&MasterKey::from_bytes([2; 32]), "github", b"ghp_newer").unwrap();
    store.put_secret(&newer).await.unwrap();
    let stale = seal(&MasterKey::from_bytes([2; 32]), "github", b"ghp_value").unwrap();
    assert!(!store.reseal_secret(&stored, &stale).await.unwrap());
    let kept = store.get_secret("github").await.unwrap().unwrap();
    assert_eq!(open(&ring(2), &kept).unwrap().expose_secret(), "ghp_newer");
    // A reseal can't move a ciphertext to another name.
    let renamed = seal(&MasterKey::from_bytes([2; 32]), "stripe", b"x").unwrap();
    assert!(store.reseal_secret(&kept, &renamed).await.is_err());
}
on_both!(a_reseal_replaces_only_the_ciphertext_it_read);
