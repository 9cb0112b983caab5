//! Contacts, tags, opt-outs and events: single changes (as the API and the
//! `contacts` commands make them), the batched upsert that CSV import uses,
//! and the streaming scan the engine plans over.
//!
//! Writes never log anything themselves: the schema's triggers write the
//! event log, and only for real changes (a new contact, a tag the contact did
//! not have, an event). An upsert that changes nothing writes nothing.
//!
//! By concern: [`read`] (the contact SELECT, decoding, the scan), [`write`]
//! (the batched upsert import and the API share), [`changes`] (tags,
//! events, opt-outs); this file holds the input types and their checks.

mod changes;
pub use changes::Unsubscribed;
mod read;
mod write;

pub(crate) use read::CONTACT_COLUMNS;
pub(crate) use write::{MARK_IMPORTED_TAGS, log_position_locked, update_tail, write_rows};

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{StoreError, to_ms};
use crate::contact::BUILTIN_FIELDS;

/// A contact to create or update. On update, `None` (and an absent attribute)
/// leaves the stored value as it is; attributes are merged key by key (a JSON
/// merge patch: a `null` value removes the attribute). Tags are added, never
/// removed: use [`Store::remove_tags`] for that.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactInput {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub wecom_external_userid: Option<String>,
    pub owner: Option<String>,
    /// IANA name, checked.
    pub timezone: Option<String>,
    /// Defaults to `now` for a new contact.
    pub created_at: Option<DateTime<Utc>>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub unsubscribed: Option<bool>,
    pub tags: Vec<String>,
    pub attrs: Map<String, Value>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
    Unchanged,
}

/// A bound value of a WHERE clause given to [`Store::scan_contacts`]: the
/// audience compiler's own parameter type, so its output binds as is.
pub use super::dialect::Bind;

/// One contact row as the batched writer takes it: already checked, times in
/// milliseconds, attributes as JSON text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub wecom_external_userid: Option<String>,
    pub owner: Option<String>,
    pub timezone: Option<String>,
    pub created_at: Option<i64>,
    pub last_active_at: Option<i64>,
    pub unsubscribed: Option<bool>,
    pub tags: Vec<String>,
    /// A JSON object: the merge patch applied to the stored attributes.
    pub attrs: String,
    /// The attributes a new contact starts with, when they differ from
    /// `attrs` (a patch with `null` values, which a new contact must not keep).
    pub attrs_new: Option<String>,
}

/// Characters that may not appear in a tag or a channel name (the scan joins
/// them with U+001F).
fn check_name(kind: &str, s: &str) -> Result<String, StoreError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(StoreError::Invalid(format!("empty {kind}")));
    }
    if t.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{kind} {t:?} contains a control character"
        )));
    }
    Ok(t.to_string())
}

pub(crate) fn check_tag(s: &str) -> Result<String, StoreError> {
    check_name("tag", s)
}

/// Longest contact id accepted, in bytes (UTF-8). Ids are keys from other
/// systems (a CRM id, a WeCom external user id of 32 characters); a longer
/// one is refused where it comes in (API, CLI, import, WeCom callback).
pub const MAX_CONTACT_ID_BYTES: usize = 128;

/// The reason an id is too long, quoting only its start.
pub(crate) fn id_too_long(id: &str) -> Option<String> {
    (id.len() > MAX_CONTACT_ID_BYTES).then(|| {
        let mut cut = 32.min(id.len());
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        format!(
            "contact id {:?}... is {} bytes long; at most {MAX_CONTACT_ID_BYTES} are accepted",
            &id[..cut],
            id.len()
        )
    })
}

pub(crate) fn check_id(id: &str) -> Result<(), StoreError> {
    if id.trim().is_empty() {
        return Err(StoreError::Invalid("empty contact id".into()));
    }
    if let Some(reason) = id_too_long(id) {
        return Err(StoreError::Invalid(reason));
    }
    if id.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "contact id {id:?} contains a control character"
        )));
    }
    Ok(())
}

pub(crate) fn check_timezone(tz: &str) -> Result<(), StoreError> {
    chrono_tz::Tz::from_str(tz).map(|_| ()).map_err(|_| {
        StoreError::Invalid(format!(
            "unknown timezone {tz:?} (expected an IANA name such as Asia/Shanghai)"
        ))
    })
}

impl ContactInput {
    pub(crate) fn to_row(&self) -> Result<Row, StoreError> {
        check_id(&self.id)?;
        if let Some(tz) = &self.timezone {
            check_timezone(tz)?;
        }
        for k in self.attrs.keys() {
            if BUILTIN_FIELDS.contains(&k.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "attribute {k:?} is a built-in field; set it as such"
                )));
            }
            if k.is_empty() {
                return Err(StoreError::Invalid("empty attribute name".into()));
            }
        }
        let mut tags = Vec::with_capacity(self.tags.len());
        for t in &self.tags {
            let t = check_tag(t)?;
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let attrs = serde_json::to_string(&self.attrs).expect("a JSON map serialises");
        let attrs_new = if self.attrs.values().any(Value::is_null) {
            let kept: Map<String, Value> = self
                .attrs
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some(serde_json::to_string(&kept).expect("a JSON map serialises"))
        } else {
            None
        };
        Ok(Row {
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            wecom_external_userid: self.wecom_external_userid.clone(),
            owner: self.owner.clone(),
            timezone: self.timezone.clone(),
            created_at: self.created_at.map(to_ms),
            last_active_at: self.last_active_at.map(to_ms),
            unsubscribed: self.unsubscribed,
            tags,
            attrs,
            attrs_new,
        })
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::Contact;
    use crate::store::Store;
    use chrono::TimeZone;
    use futures::TryStreamExt;
    use sqlx::AssertSqlSafe;
    use std::collections::BTreeSet;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
    }

    async fn store() -> Store {
        Store::open("sqlite::memory:").await.unwrap()
    }

    async fn count(store: &Store, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
            .fetch_one(store.sqlite_pool().unwrap())
            .await
            .unwrap()
    }

    fn input(id: &str) -> ContactInput {
        ContactInput {
            id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn upsert_creates_updates_and_leaves_unchanged() {
        let s = store().await;
        let mut c = input("c1");
        c.name = Some("Ada".into());
        c.tags = vec!["vip".into(), " vip ".into()];
        c.attrs.insert("city".into(), "Shanghai".into());
        assert_eq!(s.upsert_contact(&c, t(0)).await.unwrap(), Upserted::Created);
        assert_eq!(count(&s, "SELECT count(*) FROM event_log").await, 2); // created + tag
        // The same again: nothing written.
        assert_eq!(
            s.upsert_contact(&c, t(10)).await.unwrap(),
            Upserted::Unchanged
        );
        assert_eq!(count(&s, "SELECT count(*) FROM event_log").await, 2);
        assert_eq!(
            count(&s, "SELECT updated_at FROM contacts").await,
            t(0).timestamp_millis()
        );
        // None leaves fields as they are; attributes merge key by key.
        let mut d = input("c1");
        d.attrs.insert("plan".into(), "pro".into());
        assert_eq!(
            s.upsert_contact(&d, t(20)).await.unwrap(),
            Upserted::Updated
        );
        let got = s.contact("c1").await.unwrap().unwrap();
        assert_eq!(got.name.as_deref(), Some("Ada"));
        assert_eq!(got.attrs.get("city"), Some(&Value::from("Shanghai")));
        assert_eq!(got.attrs.get("plan"), Some(&Value::from("pro")));
        assert_eq!(got.created_at, t(0));
        assert_eq!(got.tags, BTreeSet::from(["vip".to_string()]));
        assert_eq!(
            count(&s, "SELECT updated_at FROM contacts").await,
            t(20).timestamp_millis()
        );
        // The same partial update again: unchanged.
        assert_eq!(
            s.upsert_contact(&d, t(30)).await.unwrap(),
            Upserted::Unchanged
        );
        // A new tag alone is an update, logged once.
        let mut e = input("c1");
        e.tags = vec!["vip".into(), "new".into()];
        assert_eq!(
            s.upsert_contact(&e, t(40)).await.unwrap(),
            Upserted::Updated
        );
        assert_eq!(
            s.upsert_contact(&e, t(50)).await.unwrap(),
            Upserted::Unchanged
        );
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM event_log WHERE kind = 'tag_added'"
            )
            .await,
            2
        );
        // null removes an attribute.
        let mut f = input("c1");
        f.attrs.insert("plan".into(), Value::Null);
        assert_eq!(
            s.upsert_contact(&f, t(60)).await.unwrap(),
            Upserted::Updated
        );
        assert!(
            !s.contact("c1")
                .await
                .unwrap()
                .unwrap()
                .attrs
                .contains_key("plan")
        );
        assert_eq!(
            s.upsert_contact(&f, t(70)).await.unwrap(),
            Upserted::Unchanged
        );
    }

    #[tokio::test]
    async fn invalid_inputs_are_refused() {
        let s = store().await;
        let mut c = input("c1");
        c.timezone = Some("Mars/Base".into());
        assert!(matches!(
            s.upsert_contact(&c, t(0)).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.upsert_contact(&input(" "), t(0)).await,
            Err(StoreError::Invalid(_))
        ));
        let mut c = input("c1");
        c.attrs.insert("email".into(), "x".into());
        assert!(matches!(
            s.upsert_contact(&c, t(0)).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.record_event("nobody", "purchase", t(0), &Value::Null)
                .await,
            Err(StoreError::UnknownContact(_))
        ));
        assert!(matches!(
            s.add_tags("nobody", &["x".into()], t(0)).await,
            Err(StoreError::UnknownContact(_))
        ));
    }

    #[tokio::test]
    async fn tags_events_unsubscribe_and_scan() {
        let s = store().await;
        for id in ["b", "a", "c"] {
            s.upsert_contact(&input(id), t(0)).await.unwrap();
        }
        assert_eq!(
            s.add_tags("a", &["x".into(), "y".into()], t(1))
                .await
                .unwrap(),
            vec!["x", "y"]
        );
        assert_eq!(
            s.add_tags("a", &["x".into()], t(2)).await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            s.remove_tags("a", &["y".into(), "z".into()]).await.unwrap(),
            vec!["y"]
        );
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM event_log WHERE kind = 'tag_removed'"
            )
            .await,
            1
        );
        s.record_event("b", "purchase", t(100), &serde_json::json!({"amount": 5}))
            .await
            .unwrap();
        s.record_event("b", "visit", t(50), &Value::Null)
            .await
            .unwrap();
        assert_eq!(
            s.contact("b").await.unwrap().unwrap().last_active_at,
            Some(t(100))
        );
        assert!(s.unsubscribe("c", Some("sms"), t(3)).await.unwrap().changed);
        assert!(!s.unsubscribe("c", Some("sms"), t(3)).await.unwrap().changed);
        assert!(s.unsubscribe("c", None, t(3)).await.unwrap().changed);
        let mut all: Vec<Contact> = s.scan_contacts("1 = 1", &[]).try_collect().await.unwrap();
        // Scans come in storage order; the set is what matters here.
        all.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(
            all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(all[0].tags, BTreeSet::from(["x".to_string()]));
        assert_eq!(all[2].opted_out, BTreeSet::from(["sms".to_string()]));
        assert!(all[2].unsubscribed);
        let some: Vec<Contact> = s
            .scan_contacts(
                "c.id > ? AND c.created_at >= ?",
                &[Bind::Text("a".into()), Bind::Int(0)],
            )
            .try_collect()
            .await
            .unwrap();
        assert_eq!(some.len(), 2);
    }

    /// The API serves these from tokio tasks: the futures must be Send.
    #[allow(dead_code)]
    fn futures_are_send(s: &Store, c: &ContactInput, now: DateTime<Utc>) {
        fn send<T: Send>(_: T) {}
        send(s.upsert_contact(c, now));
        send(s.add_tags("a", &[], now));
        send(s.remove_tags("a", &[]));
        send(s.record_event("a", "e", now, &Value::Null));
        send(s.unsubscribe("a", None, now));
        send(s.contact("a"));
        send(s.scan_contacts("1", &[]));
        send(s.import_csv(std::path::Path::new("x"), now, |_| {}));
    }

    #[tokio::test]
    async fn rows_inserted_by_sql_are_logged() {
        let s = store().await;
        sqlx::query("INSERT INTO contacts (id, created_at, updated_at) VALUES ('ext', 5, 5)")
            .execute(s.sqlite_pool().unwrap())
            .await
            .unwrap();
        assert_eq!(count(&s, "SELECT count(*) FROM event_log WHERE kind = 'contact_created' AND contact_id = 'ext'").await, 1);
    }
}
