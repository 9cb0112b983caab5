//! A contact as the decision code sees it: built-in fields, tags, custom
//! attributes, and the events that the workflows at hand look at.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Names of the built-in contact fields (SPEC §2). Everything else is a custom attribute.
pub const BUILTIN_FIELDS: &[&str] = &[
    "id",
    "name",
    "email",
    "phone",
    "wecom_external_userid",
    "owner",
    "timezone",
    "created_at",
    "last_active_at",
    "unsubscribed",
    "tags",
];

/// Built-in fields that hold timestamps.
pub const TIMESTAMP_FIELDS: &[&str] = &["created_at", "last_active_at"];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contact {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub wecom_external_userid: Option<String>,
    /// The assigned salesperson's id.
    pub owner: Option<String>,
    /// IANA name; `None` means the settings' timezone.
    pub timezone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_active_at: Option<DateTime<Utc>>,
    /// Opted out of every channel.
    pub unsubscribed: bool,
    /// Channel names this contact opted out of.
    pub opted_out: BTreeSet<String>,
    pub tags: BTreeSet<String>,
    /// Custom attributes: any JSON value (CSV imports give strings).
    pub attrs: Map<String, Value>,
    /// Events loaded for the conditions at hand (not necessarily all of them).
    pub events: Vec<EventFact>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventFact {
    pub name: String,
    pub at: DateTime<Utc>,
    /// The event's properties (for `where:` on event conditions).
    pub properties: Map<String, Value>,
}

impl Contact {
    /// The contact as templates see it: built-in fields and attributes side by
    /// side. Absent fields are left out (not null) so strict rendering fails on
    /// them instead of printing an empty string.
    pub fn template_value(&self) -> Value {
        self.template_value_in(None)
    }

    /// [`template_value`](Self::template_value) with the times in `tz` (the
    /// contact's own time zone, for templates); UTC when `None`. Times are
    /// RFC 3339 to the second.
    pub fn template_value_in(&self, tz: Option<chrono_tz::Tz>) -> Value {
        let show = |t: DateTime<Utc>| match tz {
            Some(tz) => crate::timefmt::in_tz(t, tz),
            None => crate::timefmt::rfc3339(&t),
        };
        let mut m = Map::new();
        for (k, v) in &self.attrs {
            if !v.is_null() {
                m.insert(k.clone(), v.clone());
            }
        }
        m.insert("id".into(), Value::String(self.id.clone()));
        let opt = [
            ("name", &self.name),
            ("email", &self.email),
            ("phone", &self.phone),
            ("wecom_external_userid", &self.wecom_external_userid),
            ("owner", &self.owner),
            ("timezone", &self.timezone),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        }
        m.insert("created_at".into(), Value::String(show(self.created_at)));
        if let Some(t) = self.last_active_at {
            m.insert("last_active_at".into(), Value::String(show(t)));
        }
        m.insert("unsubscribed".into(), Value::Bool(self.unsubscribed));
        m.insert(
            "tags".into(),
            Value::Array(self.tags.iter().cloned().map(Value::String).collect()),
        );
        Value::Object(m)
    }

    /// When the current quiet spell began: last activity, or creation when never active.
    pub fn quiet_since(&self) -> DateTime<Utc> {
        self.last_active_at.unwrap_or(self.created_at)
    }
}

/// The event that started an enrollment, kept with it: every step's
/// template reads it as `event` (`{{event.name}}`, `{{event.at}}`,
/// `{{event.properties.item}}`). A `tag_added` trigger is the event
/// `tag_added` with the property `tag`; `contact_created` has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TriggerEvent {
    pub name: String,
    pub at: DateTime<Utc>,
    pub properties: Map<String, Value>,
}

impl TriggerEvent {
    /// The stored form: `{"name": ..., "at": MILLIS, "properties": {...}}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "name": self.name,
            "at": self.at.timestamp_millis(),
            "properties": self.properties,
        })
        .to_string()
    }

    /// Reads the stored form; `None` for anything else.
    pub fn from_json(s: &str) -> Option<TriggerEvent> {
        let v: Value = serde_json::from_str(s).ok()?;
        Some(TriggerEvent {
            name: v.get("name")?.as_str()?.to_string(),
            at: DateTime::from_timestamp_millis(v.get("at")?.as_i64()?)?,
            properties: v
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// As templates see it, `at` in `tz` to the second.
    pub fn template_value(&self, tz: chrono_tz::Tz) -> Value {
        serde_json::json!({
            "name": self.name,
            "at": self.at.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "properties": self.properties,
        })
    }
}
