use super::*;

#[test]
fn schema_is_json_with_definitions() {
    let text = workflow_schema_json();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "object");
    assert!(v["$defs"]["Condition"].is_object(), "{text}");
    assert!(v["$defs"]["Step"].is_object());
    assert_eq!(v["properties"]["trigger"]["$ref"], "#/$defs/Trigger");
}
