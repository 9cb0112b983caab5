-- Typed states (issue 12, item 2). The state columns take only the states
-- the code writes (src/store/states.rs lists them as Rust enums), and the
-- outbox gets a `kind` column: whom a message is for, instead of matching
-- `payload LIKE '%"kind":"notice"%'`.
--
-- `kind` is generated from the payload's `kind` (absent: 'message'), so the
-- payload the channels read stays the one place it is written and the two
-- cannot disagree, also for rows written by other systems. SQLite can add
-- only a VIRTUAL generated column to an existing table.
--
-- The allowed states are enforced with BEFORE INSERT/UPDATE triggers, as
-- migration 0007 does for contacts.attrs, rather than CHECK constraints:
-- SQLite adds a CHECK only by rebuilding the table, and rebuilding
-- `enrollments` inside the migration's transaction (foreign keys cannot be
-- switched off there) would cascade-delete every `enrollment_steps` row when
-- the old table is dropped. PostgreSQL has real CHECK constraints with the
-- same sets (migrations/postgres/0026); tests/it/schema_parity.rs holds the
-- two equal.

-- 'failed' was counted as waiting but never written by nurture, and never
-- claimed either: a row another system wrote with it becomes a dead letter
-- (visible, and `nurture outbox requeue --dead` sends it) rather than a
-- message that would suddenly go out.
UPDATE outbox SET status = 'dead', dead_at = coalesce(dead_at, created_at),
       last_error = 'status "failed" is not a state of the outbox; dead-lettered by migration 0026'
 WHERE status = 'failed';

ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL GENERATED ALWAYS AS (
    coalesce(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.kind') END, 'message')
) VIRTUAL;

CREATE TRIGGER outbox_status_check_insert BEFORE INSERT ON outbox
WHEN NEW.status NOT IN ('queued', 'sending', 'sent', 'dead', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'outbox.status must be one of: queued, sending, sent, dead, cancelled');
END;

CREATE TRIGGER outbox_status_check_update BEFORE UPDATE OF status ON outbox
WHEN NEW.status NOT IN ('queued', 'sending', 'sent', 'dead', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'outbox.status must be one of: queued, sending, sent, dead, cancelled');
END;

CREATE TRIGGER outbox_kind_check_insert BEFORE INSERT ON outbox
WHEN NEW.kind NOT IN ('message', 'notice', 'transfer', 'webhook')
BEGIN
    SELECT RAISE(ABORT, 'outbox.kind must be one of: message, notice, transfer, webhook');
END;

CREATE TRIGGER outbox_kind_check_update BEFORE UPDATE OF payload ON outbox
WHEN NEW.kind NOT IN ('message', 'notice', 'transfer', 'webhook')
BEGIN
    SELECT RAISE(ABORT, 'outbox.kind must be one of: message, notice, transfer, webhook');
END;

CREATE TRIGGER enrollments_status_check_insert BEFORE INSERT ON enrollments
WHEN NEW.status NOT IN ('active', 'held', 'done', 'exited')
BEGIN
    SELECT RAISE(ABORT, 'enrollments.status must be one of: active, held, done, exited');
END;

CREATE TRIGGER enrollments_status_check_update BEFORE UPDATE OF status ON enrollments
WHEN NEW.status NOT IN ('active', 'held', 'done', 'exited')
BEGIN
    SELECT RAISE(ABORT, 'enrollments.status must be one of: active, held, done, exited');
END;

CREATE TRIGGER wecom_tasks_status_check_insert BEFORE INSERT ON wecom_tasks
WHEN NEW.status NOT IN ('pending', 'sent', 'not_friend', 'over_cap', 'done', 'refused', 'takeover_limit', 'no_record', 'expired', 'error')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tasks.status must be one of: pending, sent, not_friend, over_cap, done, refused, takeover_limit, no_record, expired, error');
END;

CREATE TRIGGER wecom_tasks_status_check_update BEFORE UPDATE OF status ON wecom_tasks
WHEN NEW.status NOT IN ('pending', 'sent', 'not_friend', 'over_cap', 'done', 'refused', 'takeover_limit', 'no_record', 'expired', 'error')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tasks.status must be one of: pending, sent, not_friend, over_cap, done, refused, takeover_limit, no_record, expired, error');
END;

CREATE TRIGGER wecom_tasks_kind_check_insert BEFORE INSERT ON wecom_tasks
WHEN NEW.kind NOT IN ('mass', 'transfer', 'resigned')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tasks.kind must be one of: mass, transfer, resigned');
END;

CREATE TRIGGER wecom_tasks_kind_check_update BEFORE UPDATE OF kind ON wecom_tasks
WHEN NEW.kind NOT IN ('mass', 'transfer', 'resigned')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tasks.kind must be one of: mass, transfer, resigned');
END;
