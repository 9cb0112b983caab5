-- PostgreSQL's 0031 lets its bulk CSV import write the event log itself.
-- SQLite's import writes through its own connection with the triggers
-- (src/store/bulk.rs): nothing changes here. The number is kept in step
-- with migrations/postgres.
SELECT 1;
