-- `nurture report WORKFLOW` reads only that workflow's step records (issue
-- 14: a report over a million enrollments in under 2 s). Each step record
-- carries its enrollment's workflow and start (copied when the record is
-- written, src/store/enrollments.rs; an enrollment's workflow and start never
-- change), so the funnel is counted from one index range, with no lookup of
-- the enrollment per record and no walk over other workflows' records.
ALTER TABLE enrollment_steps ADD COLUMN workflow TEXT;
ALTER TABLE enrollment_steps ADD COLUMN started_at INTEGER;
-- Dropped first: the backfill below would otherwise maintain it row by row.
DROP INDEX enrollment_steps_funnel;
UPDATE enrollment_steps
   SET (workflow, started_at) = (SELECT e.workflow, e.started_at FROM enrollments e
                                  WHERE e.id = enrollment_steps.enrollment_id);
-- Walked in this order, SQLite groups (step, action, arm or skip reason)
-- without sorting. The expression keeps the detail of splits and skips only
-- (a send's detail, "channel → address", differs per contact); the same
-- expression is in src/store/reports.rs. The start is last, for `--since`.
CREATE INDEX enrollment_steps_funnel ON enrollment_steps (
    workflow, step_id, action, (CASE WHEN action IN ('skip', 'split') THEN detail END), started_at
);
-- A workflow's enrollments with their contacts from the index alone: the
-- report probes each one's goal events by contact. Same leading columns as
-- before, so the other readers of this index keep it.
DROP INDEX enrollments_by_workflow;
CREATE INDEX enrollments_by_workflow ON enrollments (workflow, started_at, contact_id);
