//! What a decrypted callback event says: the fields nurture reads, its
//! dedup key, and what it does to a contact.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::api::wecom_crypto::xml_field;
use crate::contact_ways::ContactWay;
use crate::settings::Settings;
use crate::store::wecom::{CallbackKey, ContactChange, DeletedBy, Via};

/// The fields of a decrypted event nurture reads (absent ones are `""`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InnerEvent {
    pub event: String,
    pub change_type: String,
    pub user_id: String,
    pub external_userid: String,
    pub create_time: String,
    pub state: Option<String>,
    pub welcome_code: Option<String>,
    pub source: Option<String>,
    pub fail_reason: Option<String>,
    pub tag_id: String,
    pub tag_type: Option<String>,
}

impl InnerEvent {
    /// Never fails: missing or malformed elements are empty.
    pub fn parse(xml: &str) -> InnerEvent {
        let field = |name: &str| xml_field(xml, name).unwrap_or_default().trim().to_string();
        let opt = |name: &str| Some(field(name)).filter(|v| !v.is_empty());
        let event = field("Event");
        InnerEvent {
            change_type: field("ChangeType"),
            user_id: field("UserID"),
            external_userid: field("ExternalUserID"),
            create_time: field("CreateTime"),
            state: opt("State"),
            welcome_code: opt("WelcomeCode"),
            source: opt("Source"),
            fail_reason: opt("FailReason"),
            tag_id: if event == "change_external_tag" {
                field("Id")
            } else {
                String::new()
            },
            tag_type: opt("TagType"),
            event,
        }
    }

    pub(super) fn key(&self) -> CallbackKey {
        CallbackKey {
            event: self.event.clone(),
            change_type: self.change_type.clone(),
            user_id: self.user_id.clone(),
            external_userid: self.external_userid.clone(),
            tag_id: self.tag_id.clone(),
            create_time: self.create_time.clone(),
        }
    }

    /// The event's own time (`CreateTime`, seconds), else `now`.
    pub(super) fn at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.create_time
            .parse::<i64>()
            .ok()
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
            .unwrap_or(now)
    }

    /// The fields kept in the record (no welcome code: it is single-use and
    /// lives in `wecom_welcome_codes`).
    pub(super) fn detail(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("state", &self.state),
            ("source", &self.source),
            ("fail_reason", &self.fail_reason),
            ("tag_type", &self.tag_type),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v.as_str()));
            }
        }
        if self.welcome_code.is_some() {
            m.insert("welcome_code".into(), Value::Bool(true));
        }
        Value::Object(m)
    }

    /// What the event does to a contact; `channel` is the wecom channel
    /// whose callback settings opened it (a tag sync uses its token).
    /// `ways`: the project's contact-way codes (a `State` naming one makes
    /// the add an add through that code).
    pub fn change(&self, settings: &Settings, ways: &[ContactWay], channel: &str) -> ContactChange {
        let has_ids = !self.external_userid.is_empty() && !self.user_id.is_empty();
        match (self.event.as_str(), self.change_type.as_str()) {
            ("change_external_contact", "add_external_contact" | "add_half_external_contact")
                if has_ids =>
            {
                ContactChange::Added {
                    external_userid: self.external_userid.clone(),
                    staff_userid: self.user_id.clone(),
                    owner: salesperson_of(settings, &self.user_id),
                    state: self.state.clone(),
                    welcome_code: self.welcome_code.clone(),
                    via: self
                        .state
                        .as_deref()
                        .and_then(|st| ways.iter().find(|w| w.name == st))
                        .map(|w| Via {
                            name: w.name.clone(),
                            tags: w.tags.clone(),
                            mark: crate::channels::wecom::tag_marks::marking_channels(settings),
                        }),
                }
            }
            ("change_external_contact", "edit_external_contact")
                if !self.external_userid.is_empty() =>
            {
                ContactChange::Edited {
                    external_userid: self.external_userid.clone(),
                    staff_userid: self.user_id.clone(),
                    channel: channel.to_string(),
                }
            }
            ("change_external_contact", kind @ ("del_external_contact" | "del_follow_user"))
                if has_ids =>
            {
                ContactChange::Deleted {
                    external_userid: self.external_userid.clone(),
                    staff_userid: self.user_id.clone(),
                    // del_external_contact: the staff member deleted the
                    // customer; del_follow_user: the customer deleted the
                    // staff member (reference §1.7).
                    by: if kind == "del_external_contact" {
                        DeletedBy::Staff
                    } else {
                        DeletedBy::Customer
                    },
                    source: self.source.clone(),
                }
            }
            _ => ContactChange::Record,
        }
    }
}

/// The salesperson of `teams` whose `wecom_userid` is `user_id`.
fn salesperson_of(settings: &Settings, user_id: &str) -> Option<String> {
    settings
        .teams
        .values()
        .flatten()
        .find(|s| s.wecom_userid.as_deref() == Some(user_id))
        .map(|s| s.id.clone())
}
