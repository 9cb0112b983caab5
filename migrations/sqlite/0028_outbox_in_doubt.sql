-- Issue 12, item 10: a message whose lease expired (its worker died during
-- the call) may already have reached the provider. The reclaim marks it, so
-- an adapter that can ask (Aliyun QuerySendDetails by OutId, WeCom's
-- recorded task) asks before sending it again. 1 = in doubt; never cleared.
ALTER TABLE outbox ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0;
