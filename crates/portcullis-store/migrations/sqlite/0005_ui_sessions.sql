-- Portcullis store, schema version 5: web UI sessions, shared by every instance.

-- The browser holds a random 256-bit id; only its SHA-256 is kept. A session names the
-- person, the SHA-256 of the login token they signed in with (a new token ends it), the
-- CSRF token of its forms and an absolute expiry.
CREATE TABLE ui_sessions (
    id_sha256    TEXT PRIMARY KEY NOT NULL,
    person       TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    expires_unix INTEGER NOT NULL,
    -- When it was started, in microseconds: which session is oldest when room must be made.
    created_micros INTEGER NOT NULL
) STRICT;

CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_unix);
