//! The WeCom callback's writes (`src/api/wecom_callback`): each event is one
//! transaction that first claims the event's key in `wecom_callback_events`
//! (a redelivery claims nothing and changes nothing), then applies it to the
//! contact. The decisions (ids, owner, attributes, what is logged) are
//! documented in `api::wecom_callback`. An edit queues a tag sync in the
//! same transaction; the queue and the sync's writes are in [`tags`].

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::contacts::{ContactInput, Upserted, write_rows};
use super::{Dialect, Store, StoreError, to_ms};

pub mod contact_ways;
pub mod recorded;
pub mod relationships;
pub mod resigned;
mod rows;
pub use rows::WecomRows;
pub mod tags;
pub mod tasks;

use relationships::FollowUser;

/// Contact attributes the callback keeps.
pub const ATTR_STAFF: &str = "wecom_staff_userid";
pub const ATTR_STATE: &str = "wecom_state";
pub const ATTR_DELETED_BY: &str = "wecom_deleted_by";
/// The contact-way code (`contact_ways/NAME.yaml`) of the latest add.
pub const ATTR_ACQUISITION: &str = "acquisition_channel";

/// The contact-way code a customer was added through (its `State`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The code's name (its file name, and its `state`).
    pub name: String,
    /// The code's `tags:`, added to the contact.
    pub tags: Vec<String>,
    /// The wecom channels that mark those tags as corp tags in WeCom too
    /// (see `store::wecom_marks`).
    pub mark: Vec<String>,
}

/// Event names recorded for deleted relationships: `del_external_contact`
/// (the staff member deleted the customer) and `del_follow_user` (the
/// customer deleted the staff member).
pub const EVENT_CONTACT_DELETED: &str = "wecom_contact_deleted";
pub const EVENT_FOLLOW_USER_DELETED: &str = "wecom_follow_user_deleted";

/// Handled events are kept this long (redeliveries come within minutes).
const RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// The dedup key of one callback event (absent fields are `""`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackKey {
    pub event: String,
    pub change_type: String,
    pub user_id: String,
    pub external_userid: String,
    pub tag_id: String,
    pub create_time: String,
}

/// Who ended a WeCom relationship (a typed state, with the others).
pub use super::states::DeletedBy;

/// What an event does to a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChange {
    /// `add_external_contact` / `add_half_external_contact`.
    Added {
        external_userid: String,
        staff_userid: String,
        /// The salesperson whose `wecom_userid` is the staff member, if any.
        owner: Option<String>,
        state: Option<String>,
        welcome_code: Option<String>,
        /// The contact-way code whose `state` the event carries, if any.
        via: Option<Via>,
    },
    /// `edit_external_contact`: touch the contact and, when the staff member
    /// is known, queue a tag sync (see [`tags`]) on `channel`.
    Edited {
        external_userid: String,
        /// `UserID`, the staff member who edited (`""` if absent).
        staff_userid: String,
        /// The wecom channel whose callback settings opened the event.
        channel: String,
    },
    /// `del_external_contact` / `del_follow_user`.
    Deleted {
        external_userid: String,
        staff_userid: String,
        by: DeletedBy,
        /// `Source` (`DELETE_BY_TRANSFER` when a transfer moved the customer).
        source: Option<String>,
    },
    /// Nothing to do to a contact: only recorded.
    Record,
}

/// What applying an event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The key was seen before: nothing was written.
    pub duplicate: bool,
    pub contact_id: Option<String>,
    /// `created`, `updated`, `deleted_by_customer`, `deleted_by_transfer`,
    /// `unknown_contact`, `recorded`, ...
    pub outcome: String,
    /// Something the scheduler reads was written (event log, welcome code).
    pub wake: bool,
    /// A tag sync was queued in `wecom_tag_sync`: the worker should look.
    pub tag_sync: bool,
}

impl Store {
    /// Applies one authenticated callback event in one transaction. `at` is
    /// the event's own time (its `CreateTime`), `now` the arrival.
    pub async fn apply_wecom_callback(
        &self,
        key: &CallbackKey,
        detail: &Value,
        change: &ContactChange,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Applied, StoreError> {
        let dialect = self.dialect();
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO wecom_callback_events (event, change_type, user_id, external_userid, \
             tag_id, create_time, outcome, detail, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&key.event)
        .bind(&key.change_type)
        .bind(&key.user_id)
        .bind(&key.external_userid)
        .bind(&key.tag_id)
        .bind(&key.create_time)
        .bind(detail.to_string())
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(Applied {
                duplicate: true,
                outcome: "duplicate".into(),
                ..Applied::default()
            });
        }

        let applied = match change {
            ContactChange::Added {
                external_userid,
                staff_userid,
                owner,
                state,
                welcome_code,
                via,
            } => {
                added(
                    &mut tx,
                    dialect,
                    external_userid,
                    staff_userid,
                    owner.as_deref(),
                    state.as_deref(),
                    welcome_code.as_deref(),
                    via.as_ref(),
                    to_ms(at),
                    to_ms(now),
                )
                .await?
            }
            ContactChange::Edited {
                external_userid,
                staff_userid,
                channel,
            } => match find_contact(&mut tx, external_userid).await? {
                Some(id) => {
                    sqlx::query("UPDATE contacts SET updated_at = $1 WHERE id = $2")
                        .bind(to_ms(now))
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    // Without the staff member there is no relationship to
                    // read the tags of: only touched.
                    if staff_userid.is_empty() || channel.is_empty() {
                        applied(Some(id), "touched", false)
                    } else {
                        tags::queue(
                            &mut tx,
                            channel,
                            &id,
                            staff_userid,
                            external_userid,
                            to_ms(now),
                        )
                        .await?;
                        Applied {
                            tag_sync: true,
                            ..applied(Some(id), "tag_sync_queued", false)
                        }
                    }
                }
                None => applied(None, "unknown_contact", false),
            },
            ContactChange::Deleted {
                external_userid,
                staff_userid,
                by,
                source,
            } => {
                deleted(
                    &mut tx,
                    dialect,
                    external_userid,
                    staff_userid,
                    *by,
                    source.as_deref(),
                    to_ms(at),
                    to_ms(now),
                )
                .await?
            }
            ContactChange::Record => applied(None, "recorded", false),
        };

        sqlx::query(
            "UPDATE wecom_callback_events SET outcome = $1, contact_id = $2 \
             WHERE event = $3 AND change_type = $4 AND user_id = $5 AND external_userid = $6 \
             AND tag_id = $7 AND create_time = $8",
        )
        .bind(&applied.outcome)
        .bind(&applied.contact_id)
        .bind(&key.event)
        .bind(&key.change_type)
        .bind(&key.user_id)
        .bind(&key.external_userid)
        .bind(&key.tag_id)
        .bind(&key.create_time)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM wecom_callback_events WHERE received_at < $1")
            .bind(to_ms(now) - RETENTION_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(applied)
    }
}

fn applied(contact_id: Option<String>, outcome: &str, wake: bool) -> Applied {
    Applied {
        duplicate: false,
        contact_id,
        outcome: outcome.into(),
        wake,
        tag_sync: false,
    }
}

/// The contact whose `wecom_external_userid` is `external_userid` (the
/// oldest, should several share it), else the contact whose id it is.
async fn find_contact(
    conn: &mut AnyConnection,
    external_userid: &str,
) -> Result<Option<String>, StoreError> {
    let by_wecom: Option<String> = sqlx::query_scalar(
        "SELECT id FROM contacts WHERE wecom_external_userid = $1 ORDER BY created_at, id LIMIT 1",
    )
    .bind(external_userid)
    .fetch_optional(&mut *conn)
    .await?;
    if by_wecom.is_some() {
        return Ok(by_wecom);
    }
    Ok(sqlx::query_scalar("SELECT id FROM contacts WHERE id = $1")
        .bind(external_userid)
        .fetch_optional(&mut *conn)
        .await?)
}

// The event's fields, one argument each, as in `ContactChange::Added`.
#[allow(clippy::too_many_arguments)]
async fn added(
    conn: &mut AnyConnection,
    dialect: Dialect,
    external_userid: &str,
    staff_userid: &str,
    owner: Option<&str>,
    state: Option<&str>,
    welcome_code: Option<&str>,
    via: Option<&Via>,
    at: i64,
    now: i64,
) -> Result<Applied, StoreError> {
    // The relationship stands (again), whether or not nurture knows the
    // customer as a contact yet.
    let follow = FollowUser {
        userid: staff_userid.to_string(),
        added_at: Some(at),
        state: state.map(str::to_string),
        remark: None,
    };
    relationships::stands(conn, external_userid, &follow, "callback", now).await?;
    let existing = find_contact(conn, external_userid).await?;
    let id = existing
        .clone()
        .unwrap_or_else(|| external_userid.to_string());
    let mut attrs = Map::new();
    attrs.insert(ATTR_STAFF.into(), Value::from(staff_userid));
    // Added again: the relationship exists again.
    attrs.insert(ATTR_DELETED_BY.into(), Value::Null);
    if let Some(s) = state {
        attrs.insert(ATTR_STATE.into(), Value::from(s));
    }
    if let Some(v) = via {
        attrs.insert(ATTR_ACQUISITION.into(), Value::from(v.name.as_str()));
    }
    let input = ContactInput {
        id: id.clone(),
        wecom_external_userid: Some(external_userid.to_string()),
        owner: owner.map(str::to_string),
        attrs,
        ..ContactInput::default()
    };
    let mut row = input.to_row()?;
    let done = write_rows(conn, dialect, std::slice::from_mut(&mut row), now).await?[0];
    if existing.is_some() {
        // A new contact's INSERT trigger logged contact_created; an existing
        // one added (again) logs it here, so contact_created workflows see
        // every add (their entry policy decides whether it enters again).
        // On PostgreSQL every log writer goes through nurture_log(), which
        // takes the log's advisory lock so rows become visible in seq order.
        let sql = match dialect {
            Dialect::Sqlite => {
                "INSERT INTO event_log (kind, contact_id, name, at) VALUES ('contact_created', $1, $2, $3)"
            }
            Dialect::Postgres => "SELECT nurture_log('contact_created', $1, $2, NULL, $3)",
        };
        sqlx::query(sql)
            .bind(&id)
            .bind(via.map(|v| v.name.as_str()))
            .bind(now)
            .execute(&mut *conn)
            .await?;
    } else if let Some(v) = via {
        // The INSERT trigger logged the creation without a name: the
        // code's name is what `contact_created: { via: NAME }` matches.
        sqlx::query(
            "UPDATE event_log SET name = $1 WHERE seq = (SELECT max(seq) FROM event_log \
             WHERE kind = 'contact_created' AND contact_id = $2)",
        )
        .bind(&v.name)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(v) = via {
        // The code's tags (the contact_tags trigger logs tag_added).
        for tag in &v.tags {
            sqlx::query(
                "INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(tag)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        // ... and on the relationship in WeCom (LinkWeChat's 新客户自动打标签).
        super::wecom_marks::queue(&mut *conn, &v.mark, &id, &v.tags, &[], now).await?;
    }
    if let Some(code) = welcome_code {
        sqlx::query(
            "INSERT INTO wecom_welcome_codes (contact_id, external_userid, staff_userid, \
             welcome_code, received_at, used_at) VALUES ($1, $2, $3, $4, $5, NULL) \
             ON CONFLICT (contact_id) DO UPDATE SET external_userid = excluded.external_userid, \
             staff_userid = excluded.staff_userid, welcome_code = excluded.welcome_code, \
             received_at = excluded.received_at, used_at = NULL",
        )
        .bind(&id)
        .bind(external_userid)
        .bind(staff_userid)
        .bind(code)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let outcome = match done {
        Upserted::Created => "created",
        Upserted::Updated | Upserted::Unchanged => "updated",
    };
    Ok(applied(Some(id), outcome, true))
}

// The event's fields, one argument each, as in `ContactChange::Deleted`.
#[allow(clippy::too_many_arguments)]
async fn deleted(
    conn: &mut AnyConnection,
    dialect: Dialect,
    external_userid: &str,
    staff_userid: &str,
    by: DeletedBy,
    source: Option<&str>,
    at: i64,
    now: i64,
) -> Result<Applied, StoreError> {
    // `Source` only comes with del_external_contact: DELETE_BY_TRANSFER
    // means a transfer moved the customer to another member.
    let transfer = by == DeletedBy::Staff && source == Some("DELETE_BY_TRANSFER");
    let ended_by = if transfer {
        relationships::ENDED_BY_TRANSFER
    } else {
        by.as_str()
    };
    relationships::ended(
        conn,
        external_userid,
        staff_userid,
        ended_by,
        at,
        "callback",
        now,
    )
    .await?;
    let Some(id) = find_contact(conn, external_userid).await? else {
        return Ok(applied(None, "unknown_contact", false));
    };
    let last_active: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT last_active_at FROM contacts WHERE id = $1{}",
        dialect.for_update()
    )))
    .bind(&id)
    .fetch_one(&mut *conn)
    .await?;
    let name = match by {
        DeletedBy::Staff => EVENT_CONTACT_DELETED,
        DeletedBy::Customer => EVENT_FOLLOW_USER_DELETED,
    };
    let mut props = Map::new();
    props.insert("user_id".into(), Value::from(staff_userid));
    if by == DeletedBy::Staff {
        props.insert(
            "source".into(),
            source.map(Value::from).unwrap_or(Value::Null),
        );
    }
    sqlx::query("INSERT INTO events (contact_id, name, at, properties) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(name)
        .bind(at)
        .bind(Value::Object(props).to_string())
        .execute(&mut *conn)
        .await?;
    // The events trigger moved last_active_at; the end of a relationship is
    // not the customer's engagement (an `inactive` workflow must not see a
    // deletion as activity), so it is put back.
    sqlx::query("UPDATE contacts SET last_active_at = $1 WHERE id = $2")
        .bind(last_active)
        .bind(&id)
        .execute(&mut *conn)
        .await?;

    // The contact is unreachable on WeCom once no relationship stands (a
    // customer may still be a friend of another member; a transfer moves
    // the relationship rather than ending it).
    relationships::refresh_reachability(conn, dialect, external_userid, now).await?;
    let marked: String = sqlx::query_scalar("SELECT attrs FROM contacts WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut *conn)
        .await?;
    let marked = serde_json::from_str::<Map<String, Value>>(&marked)
        .is_ok_and(|m| m.contains_key(ATTR_DELETED_BY));
    let outcome = if transfer {
        "deleted_by_transfer".to_string()
    } else if marked {
        format!("deleted_by_{}", by.as_str())
    } else {
        format!("deleted_by_{}_other_staff", by.as_str())
    };
    Ok(applied(Some(id), &outcome, true))
}

/// Logs a WeCom event on a contact (a task's outcome, a member who left):
/// it fires `event` workflows like any event, but is not the customer's own
/// activity, so `last_active_at` stays as it was (an `inactive` workflow
/// must not see a salesperson's send as engagement). Returns whether the
/// contact exists (nothing is logged otherwise).
pub async fn log_quiet_event(
    conn: &mut AnyConnection,
    dialect: Dialect,
    contact_id: &str,
    name: &str,
    at: i64,
    props: &Value,
) -> Result<bool, StoreError> {
    let last_active: Option<Option<i64>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT last_active_at FROM contacts WHERE id = $1{}",
        dialect.for_update()
    )))
    .bind(contact_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(last_active) = last_active else {
        return Ok(false);
    };
    sqlx::query("INSERT INTO events (contact_id, name, at, properties) VALUES ($1, $2, $3, $4)")
        .bind(contact_id)
        .bind(name)
        .bind(at)
        .bind(props.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE contacts SET last_active_at = $1 WHERE id = $2")
        .bind(last_active)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests;
