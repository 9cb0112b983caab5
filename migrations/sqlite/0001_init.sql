-- The customer store. Timestamps are INTEGER milliseconds since the Unix
-- epoch (UTC): they compare the same in SQL and in Rust, and the same schema
-- runs on PostgreSQL with BIGINT.

CREATE TABLE contacts (
    id                    TEXT PRIMARY KEY NOT NULL,
    name                  TEXT,
    email                 TEXT,
    phone                 TEXT,
    wecom_external_userid TEXT,
    owner                 TEXT,
    timezone              TEXT,
    created_at            INTEGER NOT NULL,
    last_active_at        INTEGER,
    unsubscribed          INTEGER NOT NULL DEFAULT 0,
    -- custom attributes, a JSON object
    attrs                 TEXT NOT NULL DEFAULT '{}',
    updated_at            INTEGER NOT NULL
);
CREATE INDEX contacts_owner ON contacts(owner);
CREATE INDEX contacts_wecom ON contacts(wecom_external_userid);

CREATE TABLE contact_tags (
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (contact_id, tag)
) WITHOUT ROWID;
CREATE INDEX contact_tags_by_tag ON contact_tags(tag, contact_id);

-- Per-channel opt-outs; `contacts.unsubscribed` covers all channels at once.
CREATE TABLE contact_opt_outs (
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    channel    TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (contact_id, channel)
) WITHOUT ROWID;

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_contact ON events(contact_id, name, at);

-- The event log: everything that may trigger a workflow, in order. Database
-- triggers write it, so rows that other systems insert straight into
-- contacts, contact_tags or events trigger workflows too.
CREATE TABLE event_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,       -- contact_created | tag_added | tag_removed | event
    contact_id TEXT NOT NULL,
    name       TEXT,                -- the tag, or the event's name
    event_id   INTEGER,             -- events.id for kind = event
    at         INTEGER NOT NULL
);

CREATE TRIGGER contacts_log_created AFTER INSERT ON contacts
BEGIN
    INSERT INTO event_log (kind, contact_id, at) VALUES ('contact_created', NEW.id, NEW.created_at);
END;

CREATE TRIGGER contact_tags_log_added AFTER INSERT ON contact_tags
BEGIN
    INSERT INTO event_log (kind, contact_id, name, at) VALUES ('tag_added', NEW.contact_id, NEW.tag, NEW.added_at);
END;

CREATE TRIGGER contact_tags_log_removed AFTER DELETE ON contact_tags
BEGIN
    INSERT INTO event_log (kind, contact_id, name, at)
    VALUES ('tag_removed', OLD.contact_id, OLD.tag, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

-- Recording an event logs it and moves last_active_at (never backwards).
CREATE TRIGGER events_log AFTER INSERT ON events
BEGIN
    INSERT INTO event_log (kind, contact_id, name, event_id, at) VALUES ('event', NEW.contact_id, NEW.name, NEW.id, NEW.at);
    UPDATE contacts SET last_active_at = NEW.at
     WHERE id = NEW.contact_id AND (last_active_at IS NULL OR last_active_at < NEW.at);
END;

-- Durable positions: the daemon's event-log cursor, by consumer name.
CREATE TABLE cursors (
    name     TEXT PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL
);

-- One row per cron tick taken, so a tick runs once (and once across daemons).
CREATE TABLE cron_ticks (
    workflow TEXT NOT NULL,
    tick_at  INTEGER NOT NULL,
    taken_at INTEGER NOT NULL,
    PRIMARY KEY (workflow, tick_at)
);

-- A contact's passage through a workflow. `entry_key` makes the entry policy
-- a unique key: 'once', the trigger's event-log seq for every_time, the start
-- of the quiet spell for inactive triggers, the tick for schedules.
CREATE TABLE enrollments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow     TEXT NOT NULL,
    contact_id   TEXT NOT NULL,
    entry_key    TEXT NOT NULL,
    status       TEXT NOT NULL,      -- active | done | exited
    step_id      TEXT,               -- the next step to run
    last_step_id TEXT,               -- the last step that ran
    next_run_at  INTEGER,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT,
    lease_owner  TEXT,
    lease_until  INTEGER,
    UNIQUE (workflow, contact_id, entry_key)
);
CREATE INDEX enrollments_due ON enrollments(status, next_run_at);
CREATE INDEX enrollments_by_contact ON enrollments(contact_id, workflow, started_at);

-- Steps that ran, so none runs twice even after an edit moves ids around.
CREATE TABLE enrollment_steps (
    enrollment_id INTEGER NOT NULL REFERENCES enrollments(id) ON DELETE CASCADE,
    step_id       TEXT NOT NULL,
    ran_at        INTEGER NOT NULL,
    action        TEXT NOT NULL,
    detail        TEXT,
    PRIMARY KEY (enrollment_id, step_id)
);

-- Messages to deliver. The id is the idempotency key
-- (workflow, contact, enrollment, step) handed to the provider.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    workflow        TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    enrollment_id   INTEGER,
    step_id         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT,
    body            TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL,   -- queued | sending | sent | failed | dead | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    not_before      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    provider_id     TEXT,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_by_contact ON outbox(contact_id, created_at);

-- Open contacts per salesperson, kept by triggers for least_loaded.
CREATE TABLE salesperson_load (
    salesperson_id TEXT PRIMARY KEY NOT NULL,
    open_contacts  INTEGER NOT NULL DEFAULT 0
);

CREATE TRIGGER contacts_load_insert AFTER INSERT ON contacts WHEN NEW.owner IS NOT NULL
BEGIN
    INSERT INTO salesperson_load (salesperson_id, open_contacts) VALUES (NEW.owner, 1)
    ON CONFLICT (salesperson_id) DO UPDATE SET open_contacts = open_contacts + 1;
END;

CREATE TRIGGER contacts_load_update AFTER UPDATE OF owner ON contacts
WHEN OLD.owner IS NOT NEW.owner
BEGIN
    UPDATE salesperson_load SET open_contacts = open_contacts - 1 WHERE salesperson_id = OLD.owner;
    INSERT INTO salesperson_load (salesperson_id, open_contacts)
    SELECT NEW.owner, 1 WHERE NEW.owner IS NOT NULL
    ON CONFLICT (salesperson_id) DO UPDATE SET open_contacts = open_contacts + 1;
END;

CREATE TRIGGER contacts_load_delete AFTER DELETE ON contacts WHEN OLD.owner IS NOT NULL
BEGIN
    UPDATE salesperson_load SET open_contacts = open_contacts - 1 WHERE salesperson_id = OLD.owner;
END;

-- Where round-robin assignment continues, per team.
CREATE TABLE team_cursors (
    team       TEXT PRIMARY KEY NOT NULL,
    next_index INTEGER NOT NULL
);
