//! Single changes to a contact as the API and the `contacts` commands make
//! them: tags added and removed, events recorded, opt-outs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AnyConnection;

use super::*;
use crate::store::{Store, StoreError, to_ms};

impl Store {
    /// Adds tags; gives the ones the contact did not have (only those are
    /// written, and logged as `tag_added`).
    pub async fn add_tags(
        &self,
        id: &str,
        tags: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let tags = tags
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.begin().await?;
        require_contact(&mut tx, id).await?;
        let mut added = Vec::new();
        for tag in tags {
            let n = sqlx::query(
                "INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&tag)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                added.push(tag);
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Removes tags; gives the ones the contact had (logged as `tag_removed`).
    pub async fn remove_tags(&self, id: &str, tags: &[String]) -> Result<Vec<String>, StoreError> {
        let tags = tags
            .iter()
            .map(|t| check_tag(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.begin().await?;
        require_contact(&mut tx, id).await?;
        let mut removed = Vec::new();
        for tag in tags {
            let n = sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1 AND tag = $2")
                .bind(id)
                .bind(&tag)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                removed.push(tag);
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Records an event for an existing contact; moves its `last_active_at`
    /// forward (never back). `properties` must be a JSON object (or null).
    /// Gives the event's id.
    pub async fn record_event(
        &self,
        id: &str,
        name: &str,
        at: DateTime<Utc>,
        properties: &Value,
    ) -> Result<i64, StoreError> {
        let name = check_name("event name", name)?;
        let props = match properties {
            Value::Null => "{}".to_string(),
            Value::Object(_) => properties.to_string(),
            other => {
                return Err(StoreError::Invalid(format!(
                    "event properties must be a JSON object, not {other}"
                )));
            }
        };
        let mut tx = self.begin().await?;
        require_contact(&mut tx, id).await?;
        let event_id: i64 =
            sqlx::query_scalar("INSERT INTO events (contact_id, name, at, properties) VALUES ($1, $2, $3, $4) RETURNING id")
                .bind(id)
                .bind(&name)
                .bind(to_ms(at))
                .bind(props)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(event_id)
    }

    /// Unsubscribes a contact from every channel (`None`) or opts it out of
    /// one channel. Gives whether anything changed and the waiting messages
    /// it cancelled (the caller counts them: the store keeps no metrics).
    pub async fn unsubscribe(
        &self,
        id: &str,
        channel: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Unsubscribed, StoreError> {
        let mut tx = self.begin().await?;
        require_contact(&mut tx, id).await?;
        let channel = channel
            .map(|ch| check_name("channel name", ch))
            .transpose()?;
        let n = match channel.as_deref() {
            None => {
                sqlx::query("UPDATE contacts SET unsubscribed = 1, unsubscribed_at = $1, updated_at = $1 WHERE id = $2 AND unsubscribed = 0")
                    .bind(to_ms(now))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
            }
            Some(ch) => {
                sqlx::query("INSERT INTO contact_opt_outs (contact_id, channel, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(ch)
                    .bind(to_ms(now))
                    .execute(&mut *tx)
                    .await?
            }
        };
        // Messages still waiting in the outbox (quiet hours, a retry, a busy
        // channel) are cancelled now, not left `queued` until the delivery
        // worker claims them (it checks consent again, for the ones already
        // claimed). Notices to salespeople and WeCom transfers are not
        // messages to the contact: they stay. The cancellation is dated now
        // (`next_attempt_at`, which history shows for a message that ended
        // unsent), not at the send time it was waiting for.
        let cancelled: Vec<Cancelled> = sqlx::query_as(
            "UPDATE outbox SET status = 'cancelled', last_error = 'unsubscribed', next_attempt_at = $4
              WHERE contact_id = $1 AND status = 'queued' AND ($2 IS NULL OR channel = $3)
                AND kind NOT IN ('notice', 'transfer')
              RETURNING workflow, step_id, channel",
        )
        .bind(id)
        .bind(channel.as_deref())
        .bind(channel.as_deref())
        .bind(to_ms(now))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Unsubscribed {
            changed: n.rows_affected() > 0,
            cancelled,
        })
    }
}

/// What [`Store::unsubscribe`] did.
#[derive(Debug, Default)]
pub struct Unsubscribed {
    /// The contact was not already unsubscribed (or opted out of the channel).
    pub changed: bool,
    /// The waiting messages cancelled: (workflow, step, channel).
    pub cancelled: Vec<Cancelled>,
}

/// A waiting message cancelled by an unsubscribe: (workflow, step, channel).
pub type Cancelled = (String, String, String);

pub(super) async fn require_contact(conn: &mut AnyConnection, id: &str) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::UnknownContact(id.to_string())),
    }
}
