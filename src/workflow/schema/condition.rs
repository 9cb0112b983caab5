//! The schema of an audience condition: `all`, `any`, `not` (recursive),
//! `tag`, `owner`, `segment`, `event`, and a `field` with exactly one operator.

use super::*;

/// An audience condition (recursive).
pub(super) struct Condition;
impl JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        "Condition".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let cond = g.subschema_for::<Condition>();
        let duration = g.subschema_for::<DurationStr>();
        let literal = json_schema!({ "type": ["string", "number", "boolean"] });
        let list = json_schema!({ "type": "array", "items": literal.clone() });
        let string = json_schema!({ "type": "string" });
        let mut variants = vec![
            json_schema!({
                "type": "object", "description": "Every condition holds.",
                "properties": { "all": { "type": "array", "items": cond.clone() } },
                "required": ["all"], "additionalProperties": false
            }),
            json_schema!({
                "type": "object", "description": "At least one condition holds.",
                "properties": { "any": { "type": "array", "items": cond.clone() } },
                "required": ["any"], "additionalProperties": false
            }),
            json_schema!({
                "type": "object", "description": "The condition does not hold.",
                "properties": { "not": cond },
                "required": ["not"], "additionalProperties": false
            }),
            json_schema!({
                "type": "object", "description": "The contact is in the segment segments/NAME.yaml.",
                "properties": { "segment": string.clone() },
                "required": ["segment"], "additionalProperties": false
            }),
            json_schema!({
                "type": "object", "description": "The contact has the tag.",
                "properties": { "tag": string.clone() },
                "required": ["tag"], "additionalProperties": false
            }),
            json_schema!({
                "type": "object", "description": "The contact has (at_least, default 1) events of this name (within the last `within`).",
                "properties": {
                    "event": string.clone(),
                    "within": duration.clone(),
                    "at_least": { "type": "integer", "minimum": 1 },
                    "where": { "type": "object", "description": "A test of one property of the event, as a field condition: { field: amount, gte: 500 }.", "required": ["field"] }
                },
                "required": ["event"], "additionalProperties": false
            }),
            json_schema!({
                "type": "object", "description": "By assigned salesperson: none, any, or a salesperson id.",
                "properties": { "owner": { "type": "string", "examples": ["none", "any"] } },
                "required": ["owner"], "additionalProperties": false
            }),
        ];
        let ops: [(&str, Schema, &str); 13] = [
            ("equals", literal.clone(), "The field equals the value."),
            (
                "not_equals",
                literal.clone(),
                "The field differs from the value.",
            ),
            ("in", list.clone(), "The field is one of the values."),
            ("not_in", list, "The field is none of the values."),
            (
                "contains",
                string.clone(),
                "The text field contains the text.",
            ),
            (
                "starts_with",
                string.clone(),
                "The text field starts with the text.",
            ),
            (
                "gt",
                literal.clone(),
                "Greater than (numbers as numbers, timestamps as time).",
            ),
            ("gte", literal.clone(), "Greater than or equal."),
            ("lt", literal.clone(), "Less than."),
            ("lte", literal, "Less than or equal."),
            (
                "exists",
                json_schema!({ "type": "boolean" }),
                "The field is set (true) or not (false).",
            ),
            (
                "older_than",
                duration.clone(),
                "The timestamp field is older than now minus the duration.",
            ),
            (
                "newer_than",
                duration,
                "The timestamp field is newer than now minus the duration.",
            ),
        ];
        for (op, schema, desc) in ops {
            variants.push(json_schema!({
                "type": "object",
                "description": format!("field {op}: {desc}"),
                "properties": {
                    "field": { "type": "string", "description": "A built-in contact field or a custom attribute." },
                    op: schema
                },
                "required": ["field", op],
                "additionalProperties": false
            }));
        }
        json_schema!({ "anyOf": variants })
    }
}
