-- Nothing to do on PostgreSQL: the enrollments' status guard is the CHECK
-- constraint enrollments_status_check here already (migration 0026).
-- SQLite's migration 0044 turns its triggers into the same constraint.
SELECT 1;
