-- Portcullis store, schema version 6: signed audit checkpoints.

-- Each row signs the RFC 6962 Merkle root of the first `tree_size` audit events (leaf i is
-- the chain hash of event i + 1) with the gateway's Ed25519 checkpoint key. Exported copies
-- kept outside the database make truncation of the log's tail detectable.
CREATE TABLE audit_checkpoints (
    tree_size  INTEGER PRIMARY KEY NOT NULL,
    root       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature  TEXT NOT NULL
) STRICT;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
