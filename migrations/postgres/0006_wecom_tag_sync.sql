-- Per-contact WeCom tags (reference §1.5, §1.7). A salesperson's tag edit in
-- the WeCom client arrives as change_external_contact/edit_external_contact
-- with only UserID and ExternalUserID; the tags themselves must be read with
-- GET externalcontact/get, which needs an access token and may be slow or
-- fail, so the callback (which must answer WeCom within 5 s) only queues the
-- request here, in the same transaction that claims the event. The daemon's
-- tag-sync worker (src/channels/wecom/contact_tags.rs) works the queue: a
-- crash between the callback's 200 and the fetch loses nothing.
CREATE TABLE wecom_tag_sync (
    channel         TEXT NOT NULL,               -- the wecom channel whose callback got the event (its token is used)
    contact_id      TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    staff_userid    TEXT NOT NULL,               -- UserID: the salesperson who edited
    external_userid TEXT NOT NULL,               -- ExternalUserID
    requested_at    BIGINT NOT NULL,            -- ms, the latest edit's arrival
    -- Bumped by every edit that arrives while the row is queued: the worker
    -- deletes the row only if no edit arrived during its fetch.
    generation      BIGINT NOT NULL DEFAULT 1,
    attempts        BIGINT NOT NULL DEFAULT 0,  -- failed fetches so far
    next_attempt_at BIGINT NOT NULL,            -- ms
    last_error      TEXT,
    PRIMARY KEY (channel, contact_id, staff_userid)
);
CREATE INDEX wecom_tag_sync_due ON wecom_tag_sync (next_attempt_at);

-- Tags that a sync added to contact_tags (and WeCom still had at the last
-- sync). Only these are removed when they disappear from WeCom: a tag set by
-- a workflow, the CLI or the API is never removed by a sync, even when WeCom
-- has (or had) a tag of the same name.
CREATE TABLE wecom_contact_tags (
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    added_at   BIGINT NOT NULL,                 -- ms
    PRIMARY KEY (contact_id, tag)
);
