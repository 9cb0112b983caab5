-- WeCom work whose outcome arrives later (reference §1.2, §1.5): a mass
-- message task (add_msg_template: the salesperson confirms it in the WeCom
-- client, then get_groupmsg_send_result says whether the customer got it) and
-- a customer transfer (transfer_customer: the takeover happens after 24 h,
-- transfer_result says how it ended). The channel records a row when WeCom
-- accepted the call; the poller fills in the outcome.
CREATE TABLE wecom_tasks (
    message_id      TEXT PRIMARY KEY NOT NULL,   -- the outbox row it came from
    channel         TEXT NOT NULL,
    kind            TEXT NOT NULL,               -- 'mass' | 'transfer'
    contact_id      TEXT NOT NULL,
    external_userid TEXT NOT NULL,
    userid          TEXT NOT NULL,               -- mass: the sender; transfer: the handover member
    takeover_userid TEXT,                        -- transfer only
    msgid           TEXT,                        -- mass only: add_msg_template's msgid
    status          TEXT NOT NULL,               -- pending | sent | not_friend | over_cap
                                                 -- | done | refused | takeover_limit | no_record
                                                 -- | expired | error
    provider_status BIGINT,                     -- WeCom's status number, when it gave one
    detail          TEXT,
    created_at      BIGINT NOT NULL,            -- ms
    checks          BIGINT NOT NULL DEFAULT 0,
    next_check_at   BIGINT NOT NULL,            -- ms
    finished_at     BIGINT                      -- ms
);
CREATE INDEX wecom_tasks_due ON wecom_tasks (status, next_check_at);
CREATE INDEX wecom_tasks_contact ON wecom_tasks (contact_id);
