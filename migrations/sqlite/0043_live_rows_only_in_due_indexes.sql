-- The due index of enrollments holds only the active ones, as on
-- PostgreSQL: every reader of enrollments by status asks for 'active' rows
-- (the claim of due steps, the idle check), so the (status, next_run_at)
-- index written for every enrollment ever started becomes the claim's
-- partial index, which a settled enrollment (a one-step welcome) never
-- enters.
--
-- The outbox keeps its full outbox_due here: SQLite uses a partial index
-- only when the query repeats the index's condition, so `status = 'queued'`
-- would not find an index on `status IN ('queued', 'sending')`.
DROP INDEX IF EXISTS enrollments_due;
CREATE INDEX enrollments_claim ON enrollments (next_run_at, id) WHERE status = 'active';
