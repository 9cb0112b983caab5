-- The event that started an enrollment (see
-- migrations/sqlite/0012_enrollment_trigger_event.sql).
ALTER TABLE enrollments ADD COLUMN trigger_event TEXT;
