-- Indexes for `nurture report` over a million enrollments (issue 14: under
-- 2 s). The funnel counts step records per (step, action, arm or skip
-- reason): walking this index in its order, SQLite groups without sorting
-- two million rows. The expression keeps the detail of splits and skips
-- only (a send's detail, "channel → address", differs per contact and
-- would split the groups). The same expression is in src/store/reports.rs.
CREATE INDEX enrollment_steps_funnel ON enrollment_steps (
    step_id, action, (CASE WHEN action IN ('skip', 'split') THEN detail END), enrollment_id
);
-- The sent messages of one workflow, per step. Partial: a message enters it
-- once, when it is sent, so the delivery path's status updates do not
-- maintain it.
CREATE INDEX outbox_sent_by_workflow ON outbox (workflow, step_id, enrollment_id)
    WHERE status = 'sent';
