-- The CSV import on PostgreSQL writes contacts and tags with set-based
-- statements from a COPY'd staging table, and writes their event-log rows
-- itself, in bulk (INSERT ... SELECT, in the order the per-row triggers
-- would have written them). A transaction that does so says it with
-- `SET LOCAL nurture.bulk_import = 'on'`; the per-row log triggers stand
-- aside for it. Every other writer (API, CLI, other systems writing SQL)
-- is logged by the triggers as before.
DROP TRIGGER contacts_log_created ON contacts;
CREATE TRIGGER contacts_log_created AFTER INSERT ON contacts
    FOR EACH ROW WHEN (current_setting('nurture.bulk_import', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION contacts_log_created();

DROP TRIGGER contact_tags_log_added ON contact_tags;
CREATE TRIGGER contact_tags_log_added AFTER INSERT ON contact_tags
    FOR EACH ROW WHEN (current_setting('nurture.bulk_import', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION contact_tags_log_added();

-- The attrs check (0007) parses the text inside an EXCEPTION block: a
-- subtransaction per row, most of the cost of a million-row import. The
-- import serialised every attrs object itself, so its rows skip the parse.
CREATE OR REPLACE FUNCTION nurture_is_json_object(t TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    -- Outside the block below: the subtransaction starts only when entered.
    IF current_setting('nurture.bulk_import', true) = 'on' THEN
        RETURN TRUE;
    END IF;
    BEGIN
        RETURN jsonb_typeof(t::jsonb) = 'object';
    EXCEPTION WHEN others THEN
        RETURN FALSE;
    END;
END $$;
