-- Portcullis store, schema version 9: only executing intents are indexed by their status.

-- Interrupted intents are looked for every second (`status = 'executing'`), and nothing
-- else looks intents up by status. An index of every intent's status (migration 3) was
-- written twice for each intent (its first status, then its last) and grew with the table;
-- this one holds only the intents executing now, a few pages whatever the number of
-- intents recorded.
DROP INDEX intents_by_status;
CREATE INDEX intents_executing ON intents (created_at, id) WHERE status = 'executing';
