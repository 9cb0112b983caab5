-- A message holds a lease (`lease_owner`, `lease_until`) only while it is
-- being sent. Every transition out of 'sending' clears the lease, so an
-- outcome may be guarded by the lease alone: "this worker still holds it".
-- The grouped outcome write relies on that (src/store/outbox.rs,
-- `write_sent`): a test of `status = 'sending'` there let PostgreSQL choose
-- the outbox_due index, whose entries for 'sending' include every dead row
-- version since the last vacuum, and each statement then visited them all.
-- Rows that break the rule (none that nurture wrote) lose the stale lease.
UPDATE outbox SET lease_owner = NULL, lease_until = NULL
 WHERE status <> 'sending' AND (lease_owner IS NOT NULL OR lease_until IS NOT NULL);
ALTER TABLE outbox ADD CONSTRAINT outbox_lease_check
    CHECK (lease_owner IS NULL OR status = 'sending');
