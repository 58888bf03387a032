-- Portcullis store, schema version 4: rate and spend limits.

-- One row per (limit, subject, fixed window). `used` is in the limit's units: intents for
-- a count limit, ten-thousandths for a sum limit (exact, like Cedar's decimal). A charge is
-- one `INSERT … ON CONFLICT DO UPDATE … WHERE used + amount <= max`, so concurrent charges
-- can never take a window past its maximum.
CREATE TABLE limit_counters (
    limit_name   TEXT NOT NULL,
    subject      TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (limit_name, subject, window_start)
) STRICT;

CREATE INDEX limit_counters_by_end ON limit_counters (window_end);
