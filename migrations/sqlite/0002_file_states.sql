-- The loaded-or-broken state of each settings, workflow and template file,
-- as the daemon saw it at its last (re)load. `nurture status` shows it; the
-- daemon replaces the whole set on every load.
CREATE TABLE file_states (
    file        TEXT PRIMARY KEY NOT NULL,
    state       TEXT NOT NULL,      -- loaded | broken
    diagnostics TEXT NOT NULL DEFAULT '',  -- rendered FILE:LINE:COLUMN reports, one per line
    updated_at  INTEGER NOT NULL
);
