-- Custom attributes are a JSON object (see migrations/sqlite/0007): a row
-- written by another system with attrs that is not one is refused where it
-- is written, rather than breaking every scan that reads attributes.
CREATE FUNCTION nurture_is_json_object(t TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN jsonb_typeof(t::jsonb) = 'object';
EXCEPTION WHEN others THEN
    RETURN FALSE;
END $$;

ALTER TABLE contacts ADD CONSTRAINT contacts_attrs_json_object
    CHECK (nurture_is_json_object(attrs));
