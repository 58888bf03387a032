-- Portcullis store, schema version 4 (PostgreSQL): rate and spend limits.

-- One row per (limit, subject, fixed window). `used` is in the limit's units: intents for
-- a count limit, ten-thousandths for a sum limit (exact, like Cedar's decimal). A charge is
-- one `INSERT … ON CONFLICT DO UPDATE … WHERE used + amount <= max`, so concurrent charges
-- can never take a window past its maximum.
CREATE TABLE limit_counters (
    limit_name   TEXT NOT NULL,
    subject      TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end   BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (limit_name, subject, window_start)
);

CREATE INDEX limit_counters_by_end ON limit_counters (window_end);
