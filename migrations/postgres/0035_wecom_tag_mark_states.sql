-- Typed states for the WeCom tag marks (issue 12, item 2): see
-- migrations/sqlite/0035. `action` and `state` take only what
-- src/store/states.rs lists (MarkAction, MarkState).

UPDATE wecom_tag_marks SET action = 'add' WHERE action NOT IN ('add', 'remove');
UPDATE wecom_tag_marks SET state = 'failed',
       last_error = 'state "' || state || '" is not a state of a tag mark; set to failed by migration 0035'
 WHERE state NOT IN ('pending', 'done', 'failed');

ALTER TABLE wecom_tag_marks ADD CONSTRAINT wecom_tag_marks_action_check CHECK (action IN ('add', 'remove'));

ALTER TABLE wecom_tag_marks ADD CONSTRAINT wecom_tag_marks_state_check CHECK (state IN ('pending', 'done', 'failed'));
