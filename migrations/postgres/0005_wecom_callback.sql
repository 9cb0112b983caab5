-- Events of WeCom's callback (reference §1.7) that nurture has handled.
--
-- WeCom redelivers an event it did not get a 200 for within 5 s (up to 3
-- times in all), so each event is keyed on (ChangeType, UserID,
-- ExternalUserID, CreateTime) -- plus the Event and, for the corp-level
-- tag-library events, the tag Id -- and the callback inserts its key with
-- ON CONFLICT DO NOTHING in the same transaction as its effect: a
-- redelivered event changes nothing.
--
-- It is also the record of events that concern no contact (change_external_tag,
-- transfer_fail, unknown kinds). Rows older than 30 days are pruned by the
-- callback itself.
CREATE TABLE wecom_callback_events (
    event           TEXT NOT NULL,             -- Event, e.g. change_external_contact ('' if absent)
    change_type     TEXT NOT NULL,             -- ChangeType ('' if absent)
    user_id         TEXT NOT NULL,             -- UserID, the staff member ('' if absent)
    external_userid TEXT NOT NULL,             -- ExternalUserID ('' if absent)
    tag_id          TEXT NOT NULL,             -- Id of change_external_tag ('' otherwise)
    create_time     TEXT NOT NULL,             -- CreateTime as sent (seconds)
    contact_id      TEXT,                      -- the contact it changed, if any
    outcome         TEXT NOT NULL,             -- what nurture did: created | updated | deleted_by_customer | ... | recorded
    detail          TEXT NOT NULL DEFAULT '{}',-- JSON: the other fields (State, Source, TagType, FailReason, ...)
    received_at     BIGINT NOT NULL,          -- ms
    PRIMARY KEY (event, change_type, user_id, external_userid, tag_id, create_time)
);
CREATE INDEX wecom_callback_events_received ON wecom_callback_events(received_at);
