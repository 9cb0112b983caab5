-- outbox_due holds every message but the sent ones.
--
-- Migration 0043 restricted it to queued and sending rows, reading only the
-- daemon's queries; `nurture outbox requeue --dead` (status = 'dead') and the
-- per-workflow counts of `nurture status` and the console (status IN
-- ('dead', 'cancelled')) read it too, and without it each read the whole
-- outbox. Sent messages are nearly all of a store's history and no reader
-- looks them up by status through this index (reports and pruning read
-- them by workflow and time), so leaving out only them keeps the index the
-- size of the live queue and the failures. PostgreSQL proves `status =
-- 'dead'`, `status IN ('queued', 'sending')` and the idle check's OR imply
-- `status <> 'sent'` (EXPLAIN: an index scan on outbox_due for each).
--
-- (Migration 0043's note that every reader of enrollments by status asks
-- for active ones holds for the daemon; `nurture resume` asks for a
-- workflow's held ones through enrollments_by_workflow, and pruning reads
-- done and exited ones by age over the whole table, as before.)
DROP INDEX IF EXISTS outbox_due;
CREATE INDEX outbox_due ON outbox (status, next_attempt_at) WHERE status <> 'sent';
