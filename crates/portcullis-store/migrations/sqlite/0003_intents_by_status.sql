-- Interrupted intents are looked for every second (`status = 'executing'`); without an
-- index that is a scan of every intent ever recorded.
CREATE INDEX intents_by_status ON intents (status);
