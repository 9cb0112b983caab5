-- Custom attributes are a JSON object. nurture always writes one, but other
-- systems may write rows straight into the table; a row whose attrs is not
-- JSON would make every scan that reads attributes fail (SQLite's JSON
-- functions raise an error), stopping the whole store's workflows for one
-- bad row. So such a write is refused where it happens, with a message that
-- names the column. (One JSON parse per write: an object is valid JSON
-- whose first character is `{`.)
CREATE TRIGGER contacts_attrs_json_insert BEFORE INSERT ON contacts
WHEN json_valid(NEW.attrs) IS NOT 1 OR substr(ltrim(NEW.attrs, ' ' || char(9, 10, 13)), 1, 1) <> '{'
BEGIN
    SELECT RAISE(ABORT, 'contacts.attrs must be a JSON object, e.g. {} or {"city":"Shanghai"}');
END;

CREATE TRIGGER contacts_attrs_json_update BEFORE UPDATE OF attrs ON contacts
WHEN json_valid(NEW.attrs) IS NOT 1 OR substr(ltrim(NEW.attrs, ' ' || char(9, 10, 13)), 1, 1) <> '{'
BEGIN
    SELECT RAISE(ABORT, 'contacts.attrs must be a JSON object, e.g. {} or {"city":"Shanghai"}');
END;
