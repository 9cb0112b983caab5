-- The outbox's `kind` (migration 0026) without a subtransaction for every
-- message (issue 13: the outbox insert is on the planner's serial path).
--
-- The column was `coalesce(CASE WHEN nurture_is_json_object(payload) THEN
-- payload::jsonb ->> 'kind' END, 'message')`, and nurture_is_json_object
-- catches the cast's error in a PL/pgSQL exception block, which starts a
-- subtransaction on every call: 100,000 messages in batches of 256 took
-- 2.86-2.88 s to insert with it and 2.01-2.04 s with the expression below.
--
-- Most payloads cannot name a kind at all: an ordinary message's payload
-- holds no `"kind"` key. A JSON text can spell the key `kind` only as the
-- six characters `"kind"` or with a `\u` escape, so a payload that contains
-- neither is 'message' whether or not it parses, which is what the full
-- expression gives it too (no `kind` key, or not a JSON object). Every other
-- payload takes the full expression, as before. SQLite's column
-- (`json_valid`/`json_extract`, no exception handling) is unchanged.
--
-- PostgreSQL 15 cannot change a generated column's expression in place, so
-- the column is dropped (with its CHECK) and added again, which rewrites
-- the outbox once.
ALTER TABLE outbox DROP COLUMN kind;
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL GENERATED ALWAYS AS (
    CASE WHEN strpos(payload, '"kind"') = 0 AND strpos(payload, '\u') = 0 THEN 'message'
         ELSE coalesce(CASE WHEN nurture_is_json_object(payload) THEN payload::jsonb ->> 'kind' END, 'message')
    END
) STORED;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('message', 'notice', 'transfer', 'webhook'));
