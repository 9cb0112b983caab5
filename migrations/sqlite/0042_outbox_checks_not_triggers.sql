-- The outbox's guards become CHECK constraints, as on PostgreSQL, instead
-- of the six BEFORE triggers of migrations 0026 and 0041.
--
-- Why: an UPDATE that fires a BEFORE trigger cannot be done in SQLite's one
-- pass (the trigger may change the row), so each claim and each outcome
-- collected its rows in a temporary table first and ran the trigger's
-- program per row. Measured on 100,000 queued messages: 35-47 µs per sent
-- outcome with the triggers, 22-27 µs without (BENCHMARKS.md, "Issue 13:
-- the outbox's guards as CHECK constraints"). A CHECK is evaluated inline,
-- and on an UPDATE only when a column it reads changes.
--
-- SQLite cannot add a constraint to a table, so the table is rebuilt: the
-- same columns in the same order, every row with its rowid (history orders
-- by it), then its indexes. No table refers to the outbox by a foreign key.
-- The constraints carry PostgreSQL's names, so either store's refusal names
-- the same guard: "CHECK constraint failed: outbox_status_check".
CREATE TABLE outbox_rebuilt (
    id              TEXT PRIMARY KEY NOT NULL,
    workflow        TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    enrollment_id   INTEGER,
    step_id         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT,
    body            TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    not_before      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    provider_id     TEXT,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,
    first_failed_at INTEGER,
    dead_at         INTEGER,
    kind            TEXT NOT NULL GENERATED ALWAYS AS (
        coalesce(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.kind') END, 'message')
    ) VIRTUAL,
    in_doubt        INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT outbox_status_check
        CHECK (status IN ('queued', 'sending', 'sent', 'dead', 'cancelled')),
    CONSTRAINT outbox_kind_check
        CHECK (kind IN ('message', 'notice', 'transfer', 'webhook')),
    CONSTRAINT outbox_lease_check
        CHECK (lease_owner IS NULL OR status = 'sending')
);

INSERT INTO outbox_rebuilt (rowid, id, workflow, contact_id, enrollment_id, step_id, channel,
                            recipient, subject, body, payload, status, attempts, not_before,
                            next_attempt_at, created_at, sent_at, provider_id, last_error,
                            lease_owner, lease_until, first_failed_at, dead_at, in_doubt)
SELECT rowid, id, workflow, contact_id, enrollment_id, step_id, channel,
       recipient, subject, body, payload, status, attempts, not_before,
       next_attempt_at, created_at, sent_at, provider_id, last_error,
       lease_owner, lease_until, first_failed_at, dead_at, in_doubt
  FROM outbox;

-- Its indexes and triggers go with it.
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;

CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_by_contact ON outbox(contact_id, created_at);
CREATE INDEX outbox_sent_by_workflow ON outbox (workflow, step_id, enrollment_id)
    WHERE status = 'sent';
