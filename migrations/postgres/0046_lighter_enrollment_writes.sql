-- Two fewer things to maintain for every enrollment the daemon writes
-- (issue 13: the planner's commit is the serial path on PostgreSQL, and
-- the server's time per inserted row is most of it).
--
-- 1. Step records no longer carry a foreign key to their enrollment. The key
--    ran a referential check for every inserted step record (a lookup and a
--    row lock on the enrollment, through the trigger queue): measured on
--    this schema, 100,000 step records in batches of 256 took 1.15-1.33 s
--    with it and 0.47-0.48 s without. Only the store writes step records,
--    always in the transaction that holds their enrollment, and only
--    `nurture prune` deletes enrollments; it now deletes their step records
--    first, as ON DELETE CASCADE did.
-- 2. The unique key of an entry (workflow, contact, entry key) is kept in the
--    order (contact, workflow, entry key), so it also serves every lookup of
--    a contact's enrollments, and the separate enrollments_by_contact index
--    (contact, workflow, started_at) goes. ON CONFLICT (workflow,
--    contact_id, entry_key) still finds it: PostgreSQL matches the arbiter
--    index by its set of columns, not their order. A contact has a handful
--    of enrollments per workflow, so the checks on started_at that the old
--    index served (entry: once per D, date triggers) read those few rows.
--
-- SQLite keeps both (there the key is inline in the table and dropping it
-- means rebuilding the table; its writes are cheaper).
ALTER TABLE enrollment_steps DROP CONSTRAINT IF EXISTS enrollment_steps_enrollment_id_fkey;
ALTER TABLE enrollments ADD CONSTRAINT enrollments_entry UNIQUE (contact_id, workflow, entry_key);
ALTER TABLE enrollments DROP CONSTRAINT IF EXISTS enrollments_workflow_contact_id_entry_key_key;
DROP INDEX IF EXISTS enrollments_by_contact;
