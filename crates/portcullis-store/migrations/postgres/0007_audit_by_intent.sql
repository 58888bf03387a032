-- Portcullis store, schema version 7 (PostgreSQL): audit events findable by intent.

-- Recovery after a crash asks which events an interrupted intent already has (was it
-- decided? was its outcome recorded?). `intent_id` repeats the event's own `intent_id`; it
-- is not part of the hash, and the event stays the record.
ALTER TABLE audit_events ADD COLUMN intent_id TEXT;

ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update;
UPDATE audit_events SET intent_id = event::jsonb ->> 'intent_id';
ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update;

CREATE INDEX audit_events_by_intent ON audit_events (intent_id);
