-- no-transaction
-- The enrollments' status guard becomes a CHECK constraint, as on
-- PostgreSQL, instead of migration 0026's two BEFORE triggers: the outbox's
-- reasons (migration 0042) hold here too. A BEFORE trigger runs a program
-- per row and keeps an UPDATE off SQLite's one-pass path; measured on a copy
-- of a 100,000-enrollment store (256-row statements, Python's sqlite3):
-- inserts about 37-49 µs per row with the triggers against 23-31 without
-- (BENCHMARKS.md, "Issue 13: the enrollments' guard as a CHECK constraint").
--
-- SQLite cannot add a constraint to a table, so the table is rebuilt. Step
-- records refer to enrollments by a foreign key with ON DELETE CASCADE:
-- with foreign keys enforced, dropping the old table would delete every
-- step record. Foreign keys can only be switched off outside a transaction,
-- so this migration runs outside sqlx's and opens its own; run again after
-- a crash between its COMMIT and sqlx's bookkeeping, it rebuilds the table
-- once more, to the same result.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

DROP TABLE IF EXISTS enrollments_rebuilt;
CREATE TABLE enrollments_rebuilt (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow     TEXT NOT NULL,
    contact_id   TEXT NOT NULL,
    entry_key    TEXT NOT NULL,
    status       TEXT NOT NULL,
    step_id      TEXT,
    last_step_id TEXT,
    next_run_at  INTEGER,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT,
    lease_owner  TEXT,
    lease_until  INTEGER,
    trigger_event TEXT,
    wait_since   BIGINT,
    UNIQUE (workflow, contact_id, entry_key),
    CONSTRAINT enrollments_status_check
        CHECK (status IN ('active', 'held', 'done', 'exited'))
);

INSERT INTO enrollments_rebuilt (id, workflow, contact_id, entry_key, status, step_id,
                                 last_step_id, next_run_at, started_at, ended_at, end_reason,
                                 lease_owner, lease_until, trigger_event, wait_since)
SELECT id, workflow, contact_id, entry_key, status, step_id,
       last_step_id, next_run_at, started_at, ended_at, end_reason,
       lease_owner, lease_until, trigger_event, wait_since
  FROM enrollments;

-- AUTOINCREMENT never hands out an id twice, not even a pruned one (sent
-- messages keep their enrollment's id): the new table continues from the
-- old one's high-water mark, not from its highest remaining id.
DELETE FROM sqlite_sequence WHERE name = 'enrollments_rebuilt';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'enrollments_rebuilt', seq FROM sqlite_sequence WHERE name = 'enrollments';

-- Its indexes and triggers go with it (foreign keys are off: the step
-- records stay).
DROP TABLE enrollments;
ALTER TABLE enrollments_rebuilt RENAME TO enrollments;

CREATE INDEX enrollments_by_contact ON enrollments (contact_id, workflow, started_at);
CREATE INDEX enrollments_by_workflow ON enrollments (workflow, started_at, contact_id);
CREATE INDEX enrollments_claim ON enrollments (next_run_at, id) WHERE status = 'active';

COMMIT;
PRAGMA foreign_keys = ON;
