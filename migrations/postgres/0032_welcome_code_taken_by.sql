-- The outbox message that took a welcome code (issue 9). A message reclaimed
-- after its worker died mid-call (outbox.in_doubt) that had taken its
-- contact's code may already have been sent by send_welcome_msg, which
-- WeCom cannot be asked about: it is not sent again as a mass task.
ALTER TABLE wecom_welcome_codes ADD COLUMN used_by TEXT;
