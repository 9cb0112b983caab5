-- Nothing to do on SQLite: its outbox_due indexes every message (see
-- migration 0043). PostgreSQL's 0045 widens its partial outbox_due to every
-- message but the sent ones.
SELECT 1;
