-- Portcullis store, schema version 7: audit events findable by intent.

-- Recovery after a crash asks which events an interrupted intent already has (was it
-- decided? was its outcome recorded?). `intent_id` repeats the event's own `intent_id`; it
-- is not part of the hash, and the event stays the record.
ALTER TABLE audit_events ADD COLUMN intent_id TEXT;

DROP TRIGGER audit_events_no_update;
UPDATE audit_events SET intent_id = json_extract(event, '$.intent_id');
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE INDEX audit_events_by_intent ON audit_events (intent_id);
