//! `/v1` write routes: contacts, tags, events, unsubscribe. Each is the twin
//! of a `nurture contacts` command and calls the same store operation; after
//! a write that changed something the scheduler is woken.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{
    ApiError, JsonObject, OptionalJsonObject, no_other_fields, opt_bool, opt_string, opt_time,
    req_string, string_list, type_name,
};
use crate::channels::address::AddressChecks;
use crate::store::{ContactInput, Upserted};

/// Keys of `POST /v1/contacts` that are not custom attributes: the built-in
/// fields, and `attributes` (an explicit object of custom ones).
fn is_contact_key(k: &str) -> bool {
    k == "attributes" || crate::contact::BUILTIN_FIELDS.contains(&k)
}
/// Reads a contact body: built-in fields by name; `attributes` (an object)
/// and every other top-level key are custom attributes. Built-in fields given
/// as `null` are left as stored; an attribute given as `null` is removed.
pub fn contact_input(mut m: Map<String, Value>) -> Result<ContactInput, ApiError> {
    let id = req_string(&mut m, "id")?;
    let mut input = ContactInput {
        id,
        name: opt_string(&mut m, "name")?,
        email: opt_string(&mut m, "email")?,
        phone: opt_string(&mut m, "phone")?,
        wecom_external_userid: opt_string(&mut m, "wecom_external_userid")?,
        owner: opt_string(&mut m, "owner")?,
        timezone: opt_string(&mut m, "timezone")?,
        created_at: opt_time(&mut m, "created_at")?,
        last_active_at: opt_time(&mut m, "last_active_at")?,
        unsubscribed: opt_bool(&mut m, "unsubscribed")?,
        tags: string_list(&mut m, "tags")?,
        attrs: Map::new(),
    };
    let mut attrs = match m.remove("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field \"attributes\": expected an object, got {}",
                type_name(&other)
            )));
        }
    };
    for (k, v) in &attrs {
        if is_contact_key(k) {
            return Err(ApiError::bad_request(format!(
                "attributes.{k}: {k:?} is a built-in field; give it at the top level"
            )));
        }
        check_attr(&format!("attributes.{k}"), v)?;
    }
    for (k, v) in m {
        check_attr(&k, &v)?;
        if attrs.contains_key(&k) {
            return Err(ApiError::bad_request(format!(
                "attribute {k:?} is given twice: at the top level and in \"attributes\""
            )));
        }
        attrs.insert(k, v);
    }
    input.attrs = attrs;
    Ok(input)
}

/// Attribute values are scalars: what conditions and templates can read.
fn check_attr(field: &str, v: &Value) -> Result<(), ApiError> {
    match v {
        Value::Array(_) | Value::Object(_) => Err(ApiError::bad_request(format!(
            "field \"{field}\": expected a string, number, boolean or null (custom attributes \
             are scalars), got {}",
            type_name(v)
        ))),
        _ => Ok(()),
    }
}

/// `POST /v1/contacts`: 201 created, 200 updated or unchanged.
pub async fn upsert(
    State(st): State<ApiState>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let input = contact_input(body)?;
    let done = st.store.upsert_contact(&input, Utc::now()).await?;
    let (status, result) = match done {
        Upserted::Created => (StatusCode::CREATED, "created"),
        Upserted::Updated => (StatusCode::OK, "updated"),
        Upserted::Unchanged => (StatusCode::OK, "unchanged"),
    };
    if done != Upserted::Unchanged {
        st.wake.notify_one();
    }
    let mut answer = json!({ "id": input.id, "result": result });
    // A phone or email a channel's provider would refuse: kept, and said,
    // as `contacts add` says it (the planner skips those sends).
    if let Some(project) = &st.project {
        let checks = AddressChecks::new(&project.borrow().settings);
        let warnings: Vec<String> = checks
            .refusals(input.phone.as_deref(), input.email.as_deref())
            .iter()
            .map(|(channel, why)| AddressChecks::warning(channel, why))
            .collect();
        if !warnings.is_empty() {
            answer["warnings"] = json!(warnings);
        }
    }
    Ok((status, Json(answer)).into_response())
}

/// `POST /v1/contacts/{id}/tags` with `{"add": [...], "remove": [...]}`.
pub async fn tags(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    JsonObject(mut body): JsonObject,
) -> Result<Response, ApiError> {
    let add = string_list(&mut body, "add")?;
    let remove = string_list(&mut body, "remove")?;
    no_other_fields(&body, &["add", "remove"])?;
    if add.is_empty() && remove.is_empty() {
        return Err(ApiError::bad_request(
            "give \"add\" or \"remove\" (a list of tags)",
        ));
    }
    if let Some(t) = add.iter().find(|t| remove.contains(t)) {
        return Err(ApiError::bad_request(format!(
            "tag {t:?} is both in \"add\" and in \"remove\""
        )));
    }
    let now = Utc::now();
    let added = if add.is_empty() {
        Vec::new()
    } else {
        st.store.add_tags(&id, &add, now).await?
    };
    let removed = if remove.is_empty() {
        Vec::new()
    } else {
        st.store.remove_tags(&id, &remove).await?
    };
    if !added.is_empty() || !removed.is_empty() {
        st.wake.notify_one();
    }
    Ok(Json(json!({ "id": id, "added": added, "removed": removed })).into_response())
}

/// `POST /v1/events` with `{"contact_id", "name", "at"?, "properties"?}`: 201.
pub async fn event(
    State(st): State<ApiState>,
    JsonObject(mut body): JsonObject,
) -> Result<Response, ApiError> {
    let contact_id = req_string(&mut body, "contact_id")?;
    let name = req_string(&mut body, "name")?;
    let at = opt_time(&mut body, "at")?.unwrap_or_else(Utc::now);
    let properties = match body.remove("properties") {
        None | Some(Value::Null) => Value::Null,
        Some(v @ Value::Object(_)) => v,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field \"properties\": expected an object, got {}",
                type_name(&other)
            )));
        }
    };
    no_other_fields(&body, &["contact_id", "name", "at", "properties"])?;
    let event_id = st
        .store
        .record_event(&contact_id, &name, at, &properties)
        .await?;
    st.wake.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "event_id": event_id,
            "contact_id": contact_id,
            "name": name.trim(),
            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })),
    )
        .into_response())
}

/// `POST /v1/contacts/{id}/unsubscribe` with `{"channel"?: "sms"}` (an empty
/// body unsubscribes from every channel).
pub async fn unsubscribe(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    OptionalJsonObject(mut body): OptionalJsonObject,
) -> Result<Response, ApiError> {
    let channel = opt_string(&mut body, "channel")?;
    no_other_fields(&body, &["channel"])?;
    if let (Some(ch), Some(names)) = (&channel, &st.channel_names) {
        let known = names();
        if !known.iter().any(|k| k == ch) {
            // An opt-out from a channel that does not exist would be
            // recorded and do nothing: the contact would keep getting
            // messages on the channel they meant.
            let hint = crate::diagnostics::did_you_mean(ch, known.iter())
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "no channel {ch:?} in the settings (channels: {}){hint}",
                known.join(", ")
            )));
        }
    }
    let done = st
        .store
        .unsubscribe(&id, channel.as_deref(), Utc::now())
        .await?;
    crate::metrics::unsubscribed(&id, &done);
    let changed = done.changed;
    if changed {
        st.wake.notify_one();
    }
    Ok(Json(json!({
        "id": id,
        "channel": channel,
        "result": if changed { "unsubscribed" } else { "unchanged" },
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn contact_body_fields_and_attributes() {
        let c = contact_input(obj(json!({
            "id": "c1", "name": "Ada", "email": null, "tags": ["vip"],
            "city": "Shanghai", "attributes": {"plan": "pro", "score": 3},
            "created_at": "2026-01-31T09:00:00+08:00", "unsubscribed": false
        })))
        .unwrap();
        assert_eq!(c.id, "c1");
        assert_eq!(c.name.as_deref(), Some("Ada"));
        assert_eq!(c.email, None);
        assert_eq!(c.tags, ["vip"]);
        assert_eq!(c.attrs.len(), 3);
        assert_eq!(c.unsubscribed, Some(false));
        assert!(
            contact_input(obj(json!({"name": "x"})))
                .unwrap_err()
                .message
                .contains("\"id\" is required")
        );
        assert!(contact_input(obj(json!({"id": "c", "x": [1]}))).is_err());
        assert!(contact_input(obj(json!({"id": "c", "x": 1, "attributes": {"x": 2}}))).is_err());
        assert!(contact_input(obj(json!({"id": "c", "attributes": {"email": "e"}}))).is_err());
        assert!(contact_input(obj(json!({"id": "c", "attributes": 3}))).is_err());
    }
}
