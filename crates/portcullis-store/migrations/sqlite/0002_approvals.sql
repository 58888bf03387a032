-- Portcullis store, schema version 2: human approvals.

-- People who approve or administer. Their roles and groups live in the configuration;
-- only the SHA-256 of each login token is kept here.
CREATE TABLE people (
    id           TEXT PRIMARY KEY NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL
) STRICT;

-- Held intents. `input` is the canonical JSON of the validated input: what runs on
-- approval, bound to `payload_sha256`.
CREATE TABLE holds (
    intent_id      TEXT PRIMARY KEY NOT NULL REFERENCES intents (id),
    agent          TEXT NOT NULL,
    action         TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    input          TEXT NOT NULL,
    decision       TEXT NOT NULL,
    approver_group TEXT,
    required       INTEGER NOT NULL,
    state          TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    expires_unix   INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    decided_at     TEXT
) STRICT;

CREATE INDEX holds_by_state ON holds (state, expires_unix);

-- One vote per approver per hold: quorum needs distinct people.
CREATE TABLE approval_votes (
    intent_id      TEXT NOT NULL REFERENCES holds (intent_id),
    approver       TEXT NOT NULL,
    verdict        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    at             TEXT NOT NULL,
    PRIMARY KEY (intent_id, approver)
) STRICT;
