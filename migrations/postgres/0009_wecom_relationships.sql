-- WeCom relationships (reference §1.2, §1.5): one row per customer × staff
-- member who added them (a "follow-user"). WeCom has no single owner: a
-- customer can be a friend of several members, and only a member the
-- customer is a friend of can send them a mass message or hand them over in
-- a transfer. Filled by the callback (add_external_contact,
-- add_half_external_contact, del_external_contact, del_follow_user) and by
-- reading externalcontact/get and batch/get_by_user.
-- Keyed by WeCom's ids, not by contact: a sync may see customers nurture
-- has no contact for yet; `contacts.wecom_external_userid` joins them.
CREATE TABLE wecom_relationships (
    external_userid TEXT NOT NULL,
    userid          TEXT NOT NULL,               -- the staff member (follow_user.userid / UserID)
    added_at        BIGINT,                      -- ms: follow_user.createtime, or the add event's CreateTime
    state           TEXT,                        -- the contact-way `state` the customer came through
    remark          TEXT,                        -- the member's remark on the customer
    standing        BIGINT NOT NULL DEFAULT 1,   -- 1 while the relationship stands, 0 once it ended
    -- Why it ended: staff (del_external_contact: the member deleted the
    -- customer), customer (del_follow_user: the customer deleted the member),
    -- transfer (del_external_contact with Source=DELETE_BY_TRANSFER), sync
    -- (no longer listed by externalcontact/get).
    ended_by        TEXT,
    ended_at        BIGINT,                      -- ms
    source          TEXT NOT NULL,               -- callback | get | batch: what wrote the row last
    updated_at      BIGINT NOT NULL,            -- ms
    PRIMARY KEY (external_userid, userid)
);
CREATE INDEX wecom_relationships_userid ON wecom_relationships (userid);

-- The relationship each contact's latest add event recorded before this
-- table existed (the callback kept its UserID in attrs.wecom_staff_userid).
INSERT INTO wecom_relationships (external_userid, userid, standing, ended_by, source, updated_at)
SELECT wecom_external_userid, attrs::jsonb ->> 'wecom_staff_userid',
       CASE WHEN attrs::jsonb ->> 'wecom_deleted_by' IS NULL THEN 1 ELSE 0 END,
       attrs::jsonb ->> 'wecom_deleted_by', 'callback', updated_at
  FROM contacts
 WHERE wecom_external_userid IS NOT NULL AND wecom_external_userid <> ''
   AND attrs::jsonb ->> 'wecom_staff_userid' IS NOT NULL
ON CONFLICT DO NOTHING;
