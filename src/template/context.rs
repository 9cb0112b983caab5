//! What a template sees: the contact, its owner, the workflow and `now`, or a
//! salesperson notice's data; and the sample contact `validate` renders with.

use super::*;

/// The data a template sees: `contact`, `owner` (absent when the contact has
/// none), `workflow.name` and `now` (RFC 3339 in the contact's timezone, or
/// `tz` when the contact has none or an unknown one).
pub fn render_context(
    contact: &Contact,
    owner: Option<&Value>,
    workflow: &str,
    now: DateTime<Utc>,
    tz: Tz,
) -> Value {
    let tz = contact
        .timezone
        .as_deref()
        .and_then(|z| z.parse::<Tz>().ok())
        .unwrap_or(tz);
    let mut m = serde_json::Map::new();
    m.insert("contact".into(), contact.template_value_in(Some(tz)));
    if let Some(o) = owner {
        m.insert("owner".into(), o.clone());
    }
    m.insert("workflow".into(), serde_json::json!({ "name": workflow }));
    m.insert(
        "now".into(),
        Value::String(
            now.with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    );
    // The time zone the helpers (`date`) format in.
    m.insert("timezone".into(), Value::String(tz.name().to_string()));
    Value::Object(m)
}

/// The data an assignment notice sees: `contact`, `owner` (the salesperson
/// now assigned), `previous_owner` (when there was one), `workflow.name`,
/// `now`; times in `tz` (the settings' time zone: the salesperson's).
pub fn notice_context(
    contact: &Contact,
    owner: &Value,
    previous_owner: Option<&Value>,
    workflow: &str,
    now: DateTime<Utc>,
    tz: Tz,
) -> Value {
    let mut c = contact.clone();
    c.timezone = Some(tz.name().to_string());
    let mut v = render_context(&c, Some(owner), workflow, now, tz);
    if let Some(m) = v.as_object_mut() {
        if let Some(contact_v) = m.get_mut("contact").and_then(Value::as_object_mut) {
            // The contact's own time zone, as stored.
            match &contact.timezone {
                Some(z) => contact_v.insert("timezone".into(), Value::String(z.clone())),
                None => contact_v.remove("timezone"),
            };
        }
        if let Some(p) = previous_owner {
            m.insert("previous_owner".into(), p.clone());
        }
    }
    v
}

/// A contact with every built-in field set, for checking that templates
/// render (validate).
pub fn sample_contact() -> Contact {
    Contact {
        id: "c0000001".into(),
        name: Some("Ada".into()),
        email: Some("ada@example.com".into()),
        phone: Some("+8613800000000".into()),
        wecom_external_userid: Some("wmAda".into()),
        owner: Some("s01".into()),
        timezone: Some("Asia/Shanghai".into()),
        created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        last_active_at: DateTime::from_timestamp(1_750_000_000, 0),
        ..Contact::default()
    }
}
