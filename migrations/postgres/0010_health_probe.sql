-- The /healthz write probe (and the daemon's start check) writes this row, so
-- a store that answers reads but cannot take writes (read-only, full) is
-- noticed instead of reported healthy.
CREATE TABLE health_probe (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
