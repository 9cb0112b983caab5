-- Issue 9, point 11: tags go both ways.
--
-- A workflow's `tag:` step on a contact mirrored from WeCom (it has a
-- wecom_external_userid) also marks the corp tag on the customer's standing
-- relationships (externalcontact/mark_tag). The plan's transaction only
-- queues the intent here; the daemon's tag-mark worker
-- (src/channels/wecom/tag_marks.rs) calls WeCom with retries. One row per
-- (channel, contact, tag) holds nurture's latest intent, so an add then a
-- remove before the worker runs is one remove. Rows stay after they are
-- done: they are nurture's record of what it marked, which the tag sync
-- reads (WeCom raises no callback for API writes, but a later read of the
-- customer's tags sees them) so reading its own marks back never makes a
-- tag event.
CREATE TABLE wecom_tag_marks (
    channel         TEXT NOT NULL,
    contact_id      TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    tag             TEXT NOT NULL,                -- the nurture tag (= the corp tag's name)
    action          TEXT NOT NULL,                -- add | remove
    state           TEXT NOT NULL,                -- pending | done | failed
    generation      INTEGER NOT NULL DEFAULT 1,   -- bumped by every new intent
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,             -- ms (a claim pushes it to the lease's end)
    requested_at    INTEGER NOT NULL,             -- ms
    done_at         INTEGER,                      -- ms, when WeCom took the last mark
    marked          TEXT,                         -- the staff userids marked (comma-separated)
    last_error      TEXT,
    PRIMARY KEY (channel, contact_id, tag)
);
CREATE INDEX wecom_tag_marks_due ON wecom_tag_marks (state, next_attempt_at);

-- Corp tag ids by name, as get_corp_tag_list / add_corp_tag gave them (a
-- name may be in several groups: every id is kept; nurture creates its own
-- tags in the channel's tag group, `nurture` unless `tag_group` says).
CREATE TABLE wecom_corp_tags (
    channel    TEXT NOT NULL,
    tag_id     TEXT NOT NULL,
    name       TEXT NOT NULL,
    group_id   TEXT NOT NULL,
    group_name TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,                  -- ms
    PRIMARY KEY (channel, tag_id)
);
CREATE INDEX wecom_corp_tags_name ON wecom_corp_tags (channel, name);
