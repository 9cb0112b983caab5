-- Nothing to do on PostgreSQL: the outbox's guards are CHECK constraints
-- here already (outbox_status_check, outbox_kind_check, outbox_lease_check).
-- SQLite's migration 0042 turns its triggers into the same constraints.
SELECT 1;
