-- Per-workflow state kept by the daemon (issue "no surprise sends").
--
-- `activated_at`: the first time a daemon loaded the workflow (by name) on
-- this store. The workflow enrolls only on trigger events at or after it:
-- importing old contacts, or a backdated event, sets nothing off. A renamed
-- workflow is a new name, so it is activated anew.
--
-- `paused_at`/`paused_reason`: the blast guard stopped the workflow because it
-- would have enrolled more contacts than `policies.blast_guard` allows; its
-- enrollments wait (status 'held') until `nurture resume`. `guard_since`: the
-- guard counts enrollments started after this moment (the last resume), so a
-- resumed workflow is not paused again by the batch it was resumed for.
CREATE TABLE workflow_states (
    workflow      TEXT PRIMARY KEY NOT NULL,
    activated_at  INTEGER NOT NULL,
    paused_at     INTEGER,
    paused_reason TEXT,
    guard_since   INTEGER,
    -- when `entry_existing: true` enrolled the audience as it was (NULL: not yet)
    existing_done_at INTEGER
);

-- 'import' for the log rows a CSV import wrote: a tag an import adds fires
-- `tag_added` only for contacts created after the workflow's activation.
ALTER TABLE event_log ADD COLUMN origin TEXT;

-- The blast guard counts a workflow's recent enrollments.
CREATE INDEX enrollments_by_workflow ON enrollments(workflow, started_at);
