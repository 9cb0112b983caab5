-- Per-file reload: the running version and any rejected newer edit of each
-- file (see migrations/sqlite/0011_file_versions.sql).
ALTER TABLE file_states ADD COLUMN running_hash TEXT;
ALTER TABLE file_states ADD COLUMN loaded_at BIGINT;
ALTER TABLE file_states ADD COLUMN rejected_hash TEXT;
ALTER TABLE file_states ADD COLUMN rejected_at BIGINT;
