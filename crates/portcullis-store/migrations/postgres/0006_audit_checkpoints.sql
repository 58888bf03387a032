-- Portcullis store, schema version 6 (PostgreSQL): signed audit checkpoints.

-- Each row signs the RFC 6962 Merkle root of the first `tree_size` audit events (leaf i is
-- the chain hash of event i + 1) with the gateway's Ed25519 checkpoint key. Exported copies
-- kept outside the database make truncation of the log's tail detectable.
CREATE TABLE audit_checkpoints (
    tree_size  BIGINT PRIMARY KEY NOT NULL,
    root       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature  TEXT NOT NULL
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION portcullis_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION portcullis_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION portcullis_audit_append_only();
