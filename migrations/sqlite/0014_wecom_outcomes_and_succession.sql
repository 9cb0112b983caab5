-- Issue 9, points 9 and 10.
--
-- Reminders sent for a mass task the salesperson has not confirmed
-- (`remind_groupmsg_send`): WeCom allows at most 3 per task in 24 hours, so
-- the poller counts them here before asking.
CREATE TABLE wecom_reminders (
    message_id TEXT NOT NULL,                    -- the outbox row / wecom_tasks row
    msgid      TEXT NOT NULL,                    -- add_msg_template's msgid
    at         INTEGER NOT NULL,                 -- ms
    errcode    INTEGER                           -- WeCom's answer (0 ok), NULL when no answer came
);
CREATE INDEX wecom_reminders_msgid ON wecom_reminders (msgid, at);

-- Customers of staff members who left (`get_unassigned_list`), as
-- `nurture wecom resigned` and the daemon's daily look found them. A row
-- seen for the first time logs the event `wecom_staff_left` on the contact
-- (the `staff_left` trigger).
CREATE TABLE wecom_unassigned (
    external_userid TEXT NOT NULL,
    handover_userid TEXT NOT NULL,               -- the member who left
    dimission_time  INTEGER,                     -- ms: when they left (resigned transfers only within a year)
    first_seen_at   INTEGER NOT NULL,            -- ms
    last_seen_at    INTEGER NOT NULL,            -- ms
    PRIMARY KEY (external_userid, handover_userid)
);
