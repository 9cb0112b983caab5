-- The loaded-or-broken state of each settings, workflow and template file
-- (see migrations/sqlite/0002_file_states.sql).
CREATE TABLE file_states (
    file        TEXT PRIMARY KEY NOT NULL,
    state       TEXT NOT NULL,      -- loaded | broken
    diagnostics TEXT NOT NULL DEFAULT '',
    updated_at  BIGINT NOT NULL
);
