-- Per-file reload: each settings, workflow and template file keeps its last
-- valid version running. `file_states` now says which version runs (a short
-- SHA-256 of the file's bytes and when the daemon loaded it) and, when the
-- file on disk holds a newer edit the daemon rejected, that edit's hash and
-- when it was first seen; `diagnostics` holds the rejected edit's problems.
-- `state` stays `loaded` (the file on disk runs) or `broken` (an edit was
-- rejected: the running version, if any, is older).
ALTER TABLE file_states ADD COLUMN running_hash TEXT;
ALTER TABLE file_states ADD COLUMN loaded_at INTEGER;
ALTER TABLE file_states ADD COLUMN rejected_hash TEXT;
ALTER TABLE file_states ADD COLUMN rejected_at INTEGER;
