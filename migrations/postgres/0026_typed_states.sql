-- Typed states (issue 12, item 2): see migrations/sqlite/0026. The state
-- columns take only the states the code writes (src/store/states.rs), and
-- the outbox gets a `kind` column generated from the payload's `kind`
-- (absent: 'message'), instead of matching `payload LIKE '%"kind":"notice"%'`.

-- 'failed' was never written by nurture: such a row becomes a dead letter.
UPDATE outbox SET status = 'dead', dead_at = coalesce(dead_at, created_at),
       last_error = 'status "failed" is not a state of the outbox; dead-lettered by migration 0026'
 WHERE status = 'failed';

ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL GENERATED ALWAYS AS (
    coalesce(CASE WHEN nurture_is_json_object(payload) THEN payload::jsonb ->> 'kind' END, 'message')
) STORED;

ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN ('queued', 'sending', 'sent', 'dead', 'cancelled'));

ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('message', 'notice', 'transfer', 'webhook'));

ALTER TABLE enrollments ADD CONSTRAINT enrollments_status_check CHECK (status IN ('active', 'held', 'done', 'exited'));

ALTER TABLE wecom_tasks ADD CONSTRAINT wecom_tasks_status_check CHECK (status IN ('pending', 'sent', 'not_friend', 'over_cap', 'done', 'refused', 'takeover_limit', 'no_record', 'expired', 'error'));

ALTER TABLE wecom_tasks ADD CONSTRAINT wecom_tasks_kind_check CHECK (kind IN ('mass', 'transfer', 'resigned'));
