-- Issue 9, point 7: contact-way codes (渠道活码) as files.
--
-- One row per code pushed to WeCom by `nurture wecom sync`
-- (`add_contact_way`): the file's name (also the code's `state`), the
-- config_id WeCom gave (needed to update or delete the code: WeCom cannot
-- list codes made through the API), the QR code's URL, and what was pushed
-- last (JSON: type, user, skip_verify, remark, state), so the daemon pushes
-- again only when the members on the code change.
CREATE TABLE wecom_contact_ways (
    name       TEXT PRIMARY KEY,
    channel    TEXT NOT NULL,
    config_id  TEXT NOT NULL,
    qr_code    TEXT,
    pushed     TEXT NOT NULL,
    created_at INTEGER NOT NULL,                   -- ms
    updated_at INTEGER NOT NULL,                   -- ms
    -- When `sync --dry-run` listed the code for deletion (its file is gone);
    -- `sync` deletes only codes listed so (a printed QR code stops working).
    delete_listed_at INTEGER
);
