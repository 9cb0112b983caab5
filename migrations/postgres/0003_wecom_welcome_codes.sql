-- Welcome codes from WeCom's add_external_contact callback (reference §1.3).
-- A code is good for 20 seconds and for one send_welcome_msg call: the WeCom
-- channel takes it (sets used_at) in the same statement that checks its age,
-- so two sends can never use one code.
CREATE TABLE wecom_welcome_codes (
    contact_id      TEXT PRIMARY KEY NOT NULL,   -- the latest code per contact
    external_userid TEXT NOT NULL,
    staff_userid    TEXT NOT NULL,               -- the salesperson the customer added
    welcome_code    TEXT NOT NULL,
    received_at     BIGINT NOT NULL,            -- ms; the callback's arrival time
    used_at         BIGINT
);
