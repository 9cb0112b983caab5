-- The customer store on PostgreSQL: the same tables, columns and triggers as
-- migrations/sqlite/0001_init.sql. Timestamps are BIGINT milliseconds since
-- the Unix epoch (UTC) and JSON is TEXT, so the program reads the same Rust
-- types from both databases (i64, String) and writes one SQL text for both.

CREATE TABLE contacts (
    id                    TEXT PRIMARY KEY NOT NULL,
    name                  TEXT,
    email                 TEXT,
    phone                 TEXT,
    wecom_external_userid TEXT,
    owner                 TEXT,
    timezone              TEXT,
    created_at            BIGINT NOT NULL,
    last_active_at        BIGINT,
    unsubscribed          BIGINT NOT NULL DEFAULT 0,
    -- custom attributes, a JSON object
    attrs                 TEXT NOT NULL DEFAULT '{}',
    updated_at            BIGINT NOT NULL
);
CREATE INDEX contacts_owner ON contacts(owner);
CREATE INDEX contacts_wecom ON contacts(wecom_external_userid);

CREATE TABLE contact_tags (
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (contact_id, tag)
);
CREATE INDEX contact_tags_by_tag ON contact_tags(tag, contact_id);

CREATE TABLE contact_opt_outs (
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    channel    TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (contact_id, channel)
);

CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    contact_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    at         BIGINT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_contact ON events(contact_id, name, at);

CREATE TABLE event_log (
    seq        BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL,       -- contact_created | tag_added | tag_removed | event
    contact_id TEXT NOT NULL,
    name       TEXT,
    event_id   BIGINT,
    at         BIGINT NOT NULL
);

-- The daemons read the event log after a cursor. A sequence hands out
-- numbers at insert time, not at commit: without care, a transaction could
-- commit seq 102 after a daemon has read 103 and moved its cursor past it.
-- Every writer of the log therefore takes one transaction-scoped advisory
-- lock first, so log rows become visible in seq order. (Key 4711001 is
-- nurture's "event log writers"; the Rust side names it EVENT_LOG_WRITE.)
CREATE FUNCTION nurture_log(p_kind TEXT, p_contact TEXT, p_name TEXT, p_event BIGINT, p_at BIGINT)
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4711001);
    INSERT INTO event_log (kind, contact_id, name, event_id, at)
    VALUES (p_kind, p_contact, p_name, p_event, p_at);
END $$;

CREATE FUNCTION contacts_log_created() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nurture_log('contact_created', NEW.id, NULL, NULL, NEW.created_at);
    RETURN NULL;
END $$;
CREATE TRIGGER contacts_log_created AFTER INSERT ON contacts
    FOR EACH ROW EXECUTE FUNCTION contacts_log_created();

CREATE FUNCTION contact_tags_log_added() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nurture_log('tag_added', NEW.contact_id, NEW.tag, NULL, NEW.added_at);
    RETURN NULL;
END $$;
CREATE TRIGGER contact_tags_log_added AFTER INSERT ON contact_tags
    FOR EACH ROW EXECUTE FUNCTION contact_tags_log_added();

CREATE FUNCTION contact_tags_log_removed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nurture_log('tag_removed', OLD.contact_id, OLD.tag, NULL,
                        (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);
    RETURN NULL;
END $$;
CREATE TRIGGER contact_tags_log_removed AFTER DELETE ON contact_tags
    FOR EACH ROW EXECUTE FUNCTION contact_tags_log_removed();

-- Recording an event logs it and moves last_active_at (never backwards).
CREATE FUNCTION events_log() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nurture_log('event', NEW.contact_id, NEW.name, NEW.id, NEW.at);
    UPDATE contacts SET last_active_at = NEW.at
     WHERE id = NEW.contact_id AND (last_active_at IS NULL OR last_active_at < NEW.at);
    RETURN NULL;
END $$;
CREATE TRIGGER events_log AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_log();

CREATE TABLE cursors (
    name     TEXT PRIMARY KEY NOT NULL,
    position BIGINT NOT NULL
);

CREATE TABLE cron_ticks (
    workflow TEXT NOT NULL,
    tick_at  BIGINT NOT NULL,
    taken_at BIGINT NOT NULL,
    PRIMARY KEY (workflow, tick_at)
);

CREATE TABLE enrollments (
    id           BIGSERIAL PRIMARY KEY,
    workflow     TEXT NOT NULL,
    contact_id   TEXT NOT NULL,
    entry_key    TEXT NOT NULL,
    status       TEXT NOT NULL,      -- active | done | exited
    step_id      TEXT,
    last_step_id TEXT,
    next_run_at  BIGINT,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    end_reason   TEXT,
    lease_owner  TEXT,
    lease_until  BIGINT,
    UNIQUE (workflow, contact_id, entry_key)
);
CREATE INDEX enrollments_due ON enrollments(status, next_run_at);
CREATE INDEX enrollments_by_contact ON enrollments(contact_id, workflow, started_at);
-- The claim's scan: only active rows, in due order.
CREATE INDEX enrollments_claim ON enrollments(next_run_at, id) WHERE status = 'active';

-- `rowid` here and in outbox: SQLite's implicit insertion order, which
-- `history` uses to order rows with equal times, made explicit.
CREATE TABLE enrollment_steps (
    enrollment_id BIGINT NOT NULL REFERENCES enrollments(id) ON DELETE CASCADE,
    step_id       TEXT NOT NULL,
    ran_at        BIGINT NOT NULL,
    action        TEXT NOT NULL,
    detail        TEXT,
    rowid         BIGSERIAL NOT NULL,
    PRIMARY KEY (enrollment_id, step_id)
);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    workflow        TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    enrollment_id   BIGINT,
    step_id         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT,
    body            TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL,   -- queued | sending | sent | failed | dead | cancelled
    attempts        BIGINT NOT NULL DEFAULT 0,
    not_before      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    provider_id     TEXT,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    rowid           BIGSERIAL NOT NULL
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_by_contact ON outbox(contact_id, created_at);
-- The delivery claim's scan: queued rows of one channel, in due order.
CREATE INDEX outbox_claim ON outbox(channel, next_attempt_at) WHERE status = 'queued';

CREATE TABLE salesperson_load (
    salesperson_id TEXT PRIMARY KEY NOT NULL,
    open_contacts  BIGINT NOT NULL DEFAULT 0
);

CREATE FUNCTION contacts_load() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.owner IS NOT NULL THEN
        UPDATE salesperson_load SET open_contacts = open_contacts - 1 WHERE salesperson_id = OLD.owner;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.owner IS NOT NULL THEN
        INSERT INTO salesperson_load (salesperson_id, open_contacts) VALUES (NEW.owner, 1)
        ON CONFLICT (salesperson_id) DO UPDATE SET open_contacts = salesperson_load.open_contacts + 1;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER contacts_load_insert AFTER INSERT ON contacts
    FOR EACH ROW WHEN (NEW.owner IS NOT NULL) EXECUTE FUNCTION contacts_load();
CREATE TRIGGER contacts_load_update AFTER UPDATE OF owner ON contacts
    FOR EACH ROW WHEN (OLD.owner IS DISTINCT FROM NEW.owner) EXECUTE FUNCTION contacts_load();
CREATE TRIGGER contacts_load_delete AFTER DELETE ON contacts
    FOR EACH ROW WHEN (OLD.owner IS NOT NULL) EXECUTE FUNCTION contacts_load();

CREATE TABLE team_cursors (
    team       TEXT PRIMARY KEY NOT NULL,
    next_index BIGINT NOT NULL
);

-- SQLite's json_patch (RFC 7396 merge patch) on TEXT, for contact upserts:
-- objects merge key by key, recursively; a null removes the key.
CREATE FUNCTION json_patch(target TEXT, patch TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN nurture_merge_patch(target::jsonb, patch::jsonb)::TEXT;
END $$;

CREATE FUNCTION nurture_merge_patch(target JSONB, patch JSONB) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k TEXT;
    v JSONB;
    out JSONB;
BEGIN
    IF jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    out := CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            out := out - k;
        ELSE
            out := jsonb_set(out, ARRAY[k], nurture_merge_patch(out -> k, v));
        END IF;
    END LOOP;
    RETURN out;
END $$;
