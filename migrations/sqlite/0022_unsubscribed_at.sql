-- Issue 11, item 8: `history` shows when a contact unsubscribed from every
-- channel (an opt-out of one channel has its time in contact_opt_outs).
-- NULL for an unsubscribe made before this column, or by an import or an
-- upsert that set `unsubscribed` (history then says the time is unknown).
ALTER TABLE contacts ADD COLUMN unsubscribed_at INTEGER;
