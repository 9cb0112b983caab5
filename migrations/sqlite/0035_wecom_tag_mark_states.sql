-- Typed states for the WeCom tag marks (issue 12, item 2): `action` and
-- `state` take only what src/store/states.rs lists (MarkAction, MarkState),
-- enforced with BEFORE INSERT/UPDATE triggers as migration 0026 does for the
-- other state columns (SQLite adds a CHECK only by rebuilding the table).
-- PostgreSQL has CHECK constraints with the same sets (migrations/postgres/
-- 0035); tests/it/schema_parity.rs holds the two and the enums equal.

-- nurture writes only these; a row another system wrote otherwise is read
-- as the code read it before (an unknown action was an add) or given up
-- (an unknown state: failed, saying why), rather than refused at upgrade.
UPDATE wecom_tag_marks SET action = 'add' WHERE action NOT IN ('add', 'remove');
UPDATE wecom_tag_marks SET state = 'failed',
       last_error = 'state "' || state || '" is not a state of a tag mark; set to failed by migration 0035'
 WHERE state NOT IN ('pending', 'done', 'failed');

CREATE TRIGGER wecom_tag_marks_action_check_insert BEFORE INSERT ON wecom_tag_marks
WHEN NEW.action NOT IN ('add', 'remove')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tag_marks.action must be one of: add, remove');
END;

CREATE TRIGGER wecom_tag_marks_action_check_update BEFORE UPDATE OF action ON wecom_tag_marks
WHEN NEW.action NOT IN ('add', 'remove')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tag_marks.action must be one of: add, remove');
END;

CREATE TRIGGER wecom_tag_marks_state_check_insert BEFORE INSERT ON wecom_tag_marks
WHEN NEW.state NOT IN ('pending', 'done', 'failed')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tag_marks.state must be one of: pending, done, failed');
END;

CREATE TRIGGER wecom_tag_marks_state_check_update BEFORE UPDATE OF state ON wecom_tag_marks
WHEN NEW.state NOT IN ('pending', 'done', 'failed')
BEGIN
    SELECT RAISE(ABORT, 'wecom_tag_marks.state must be one of: pending, done, failed');
END;
