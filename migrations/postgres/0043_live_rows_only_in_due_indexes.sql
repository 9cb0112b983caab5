-- The due indexes hold only the rows that can still become due.
--
-- enrollments_due indexed (status, next_run_at) for every enrollment ever
-- started, and every reader of enrollments by status asks for 'active' ones,
-- which enrollments_claim (next_run_at, id) WHERE status = 'active' already
-- serves: the index was written for each new enrollment and read by no one.
--
-- outbox_due kept an entry for each version of every message, a sent one
-- included. Its readers ask for queued or sending rows (the idle check, the
-- counts of what waits, the reaper of expired leases, a release at shutdown),
-- so restricted to those it loses the entry each sent outcome wrote and stays
-- the size of the queue instead of the size of the history.
DROP INDEX IF EXISTS enrollments_due;
DROP INDEX IF EXISTS outbox_due;
CREATE INDEX outbox_due ON outbox (status, next_attempt_at)
    WHERE status IN ('queued', 'sending');
