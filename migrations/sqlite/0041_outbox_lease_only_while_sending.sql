-- A message holds a lease (`lease_owner`, `lease_until`) only while it is
-- being sent. Every transition out of 'sending' clears the lease, so an
-- outcome may be guarded by the lease alone: "this worker still holds it"
-- (src/store/outbox.rs, `write_sent`). PostgreSQL holds the rule as the
-- CHECK constraint outbox_lease_check; SQLite as these two triggers.
-- Rows that break the rule (none that nurture wrote) lose the stale lease.
UPDATE outbox SET lease_owner = NULL, lease_until = NULL
 WHERE status <> 'sending' AND (lease_owner IS NOT NULL OR lease_until IS NOT NULL);

CREATE TRIGGER outbox_lease_check_insert BEFORE INSERT ON outbox
WHEN NEW.lease_owner IS NOT NULL AND NEW.status <> 'sending'
BEGIN
    SELECT RAISE(ABORT, 'outbox.lease_owner is set only while the message is sending');
END;

CREATE TRIGGER outbox_lease_check_update BEFORE UPDATE OF status, lease_owner ON outbox
WHEN NEW.lease_owner IS NOT NULL AND NEW.status <> 'sending'
BEGIN
    SELECT RAISE(ABORT, 'outbox.lease_owner is set only while the message is sending');
END;
