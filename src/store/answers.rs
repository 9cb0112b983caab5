//! What a webhook step's answer sets on the contact (`store:`), written
//! with the delivery's outcome.

use chrono::{DateTime, Utc};

use super::plan_reads::ms;

/// The patch text of `values`.
pub(super) fn patch(values: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(values.clone()).to_string()
}

/// Merges `values` into the contact's custom attributes (a JSON merge
/// patch, as a `set:` step writes them).
pub async fn store_answer(
    tx: &mut sqlx::AnyConnection,
    contact_id: &str,
    values: &serde_json::Map<String, serde_json::Value>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    super::plan_writes::patch_attrs(tx, contact_id, &patch(values), ms(now)).await
}

/// The values at the JSON pointers of `store` (attribute → pointer) in an
/// answer. A pointer the answer lacks, or that names an object or a list
/// (attributes are scalars), sets nothing; each is given back as a problem.
pub fn pick(
    answer: &serde_json::Value,
    store: &serde_json::Map<String, serde_json::Value>,
) -> (serde_json::Map<String, serde_json::Value>, Vec<String>) {
    let mut values = serde_json::Map::new();
    let mut problems = Vec::new();
    for (attr, pointer) in store {
        let Some(pointer) = pointer.as_str() else {
            continue;
        };
        match answer.pointer(pointer) {
            None => problems.push(format!("{attr}: the answer has nothing at {pointer}")),
            Some(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => problems
                .push(format!(
                    "{attr}: {pointer} is {}, not a text, number or true/false",
                    if v.is_object() { "an object" } else { "a list" }
                )),
            Some(v) => {
                values.insert(attr.clone(), v.clone());
            }
        }
    }
    (values, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_pick_scalars_and_report_the_rest() {
        let answer = json!({ "id": 42, "deal": { "stage": "won", "tags": ["a"] }, "n": null });
        let store = json!({ "crm_id": "/id", "stage": "/deal/stage", "tags": "/deal/tags", "gone": "/x", "n": "/n" });
        let (v, p) = pick(&answer, store.as_object().unwrap());
        assert_eq!(
            v,
            *json!({ "crm_id": 42, "stage": "won", "n": null })
                .as_object()
                .unwrap()
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().any(|x| x == "gone: the answer has nothing at /x"));
        assert!(
            p.iter()
                .any(|x| x == "tags: /deal/tags is a list, not a text, number or true/false")
        );
    }
}
