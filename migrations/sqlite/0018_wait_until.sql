-- wait_until steps (issue 14): when the enrollment began waiting at its
-- current wait_until step. NULL for every other kind of wait. The plan
-- resumes from it: an event counts when it was logged at or after it, and
-- the timeout runs from it.
ALTER TABLE enrollments ADD COLUMN wait_since BIGINT;
