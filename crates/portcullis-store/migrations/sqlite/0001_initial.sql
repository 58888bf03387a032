-- Portcullis store, schema version 1.

-- Agents: only the SHA-256 of each bearer token is kept.
CREATE TABLE agents (
    id           TEXT PRIMARY KEY NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL
) STRICT;

-- Secrets: XChaCha20-Poly1305 ciphertext only; the master key lives outside the store.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    key_version INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

-- The hash-chained audit log. `event` is the RFC 8785 canonical JSON of the event;
-- `hash` = SHA-256(prev_hash || "\n" || canonical {"event","seq","ts"}).
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY NOT NULL,
    ts        TEXT NOT NULL,
    event     TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

-- Intents and idempotency. SQLite treats NULL keys as distinct, so intents without an
-- idempotency key never conflict; two with the same (agent, key) always do.
CREATE TABLE intents (
    id              TEXT PRIMARY KEY NOT NULL,
    agent           TEXT NOT NULL,
    action          TEXT NOT NULL,
    payload_sha256  TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL,
    response        TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (agent, idempotency_key)
) STRICT;
