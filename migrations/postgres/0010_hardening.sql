-- The /healthz write probe (and the daemon's start check) writes this row, so
-- a store that answers reads but cannot take writes (read-only, full) is
-- noticed instead of reported healthy.
CREATE TABLE health_probe (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);

-- Retries end by time, not by count: when a message first failed with an
-- error worth retrying, and when it was dead-lettered (for
-- `nurture outbox requeue --dead --since T`).
ALTER TABLE outbox ADD COLUMN first_failed_at BIGINT;
ALTER TABLE outbox ADD COLUMN dead_at BIGINT;
