-- Portcullis store, schema version 8 (PostgreSQL): values untrusted actions returned, per
-- agent session.

-- When an action marked `provenance: untrusted` returns data to an agent in a session, the
-- gateway keeps the SHA-256 of each value it could later see again in an input (the
-- normalized string or identifier, never the value itself), which action it came from and
-- when. Rows belong to one agent's session; they expire, and the oldest make room when a
-- session or the whole table is full. `id` orders rows by age.
CREATE TABLE provenance_values (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent        TEXT NOT NULL,
    session      TEXT NOT NULL,
    -- The agent and session as one key (`LEN:AGENTSESSION`), for trimming a session to its
    -- cap. Lookups name `agent` and `session` and can only use the unique index below:
    -- given an index on (agent, session, id), PostgreSQL without statistics would scan a
    -- whole session to look up a few values.
    scope        TEXT NOT NULL,
    value_sha256 TEXT NOT NULL,
    source       TEXT NOT NULL,
    intent_id    TEXT NOT NULL,
    read_unix    BIGINT NOT NULL,
    expires_unix BIGINT NOT NULL,
    UNIQUE (agent, session, value_sha256, source)
);

CREATE INDEX provenance_values_by_scope ON provenance_values (scope, id);
CREATE INDEX provenance_values_by_expiry ON provenance_values (expires_unix);
