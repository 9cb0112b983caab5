-- The event that started an enrollment, kept with it so every step's
-- template can read it (`{{event.name}}`, `{{event.at}}`,
-- `{{event.properties.X}}`), a week later too. A JSON object
-- `{"name": ..., "at": MILLIS, "properties": {...}}`; NULL for enrollments
-- that no event started (cron ticks, `enroll --existing`) and for those made
-- before this column existed.
ALTER TABLE enrollments ADD COLUMN trigger_event TEXT;
