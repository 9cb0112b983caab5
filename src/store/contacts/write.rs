//! The batched writer: contacts and their tags upserted in multi-row
//! statements (CSV import and the API's single upsert share it).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::any::AnyArguments;
use sqlx::{AnyConnection, Arguments, AssertSqlSafe};

use super::*;
use crate::store::placeholders;
use crate::store::{Dialect, Store, StoreError, to_ms};

// The batched writer.

/// Rows per multi-row statement. SQLite allows 32,766 bound variables; the
/// widest statement binds 11 per row.
pub(crate) const CONTACT_CHUNK: usize = 500;
pub(crate) const TAG_CHUNK: usize = 1000;
pub(crate) const EXISTS_CHUNK: usize = 1000;

pub(crate) fn add<'q, T>(args: &mut AnyArguments, v: T)
where
    T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    args.add(v).expect("encoding a plain value cannot fail");
}

/// A stored boolean: an integer 0/1 on both databases.
pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Upserts `rows` (ids unique among them) on a connection inside a
/// transaction that holds the write lock, and says for each row what happened.
/// Marks the `tag_added` log rows an import's transaction wrote (those after
/// `?`, the log's end when it took the write lock) as the import's: a tag
/// that comes with an imported contact's history is not news, and fires
/// `tag_added` workflows only for contacts created after their activation.
pub(crate) const MARK_IMPORTED_TAGS: &str =
    "UPDATE event_log SET origin = 'import' WHERE seq > ? AND kind = 'tag_added'";

/// The event log's end, read after taking the log writers' lock (on
/// PostgreSQL; SQLite's `BEGIN IMMEDIATE` holds the write lock already), so
/// that every log row after it until the commit is this transaction's.
pub(crate) async fn log_position_locked(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
) -> Result<i64, StoreError> {
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::store::plan_writes::EVENT_LOG_WRITE)
            .execute(&mut **tx)
            .await?;
    }
    let n: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM event_log")
        .fetch_one(&mut **tx)
        .await?;
    Ok(n)
}

pub(crate) async fn write_rows(
    conn: &mut AnyConnection,
    dialect: Dialect,
    rows: &mut [Row],
    now: i64,
) -> Result<Vec<Upserted>, StoreError> {
    // Values are moved into the statements' arguments (ids and tags stay).
    // 1. Which of these contacts exist already?
    let mut existing: HashSet<String> = HashSet::new();
    for chunk in rows.chunks(EXISTS_CHUNK) {
        let mut sql = String::from("SELECT id FROM contacts WHERE id IN (");
        placeholders::push_list(&mut sql, 1, chunk.len());
        sql.push(')');
        let mut args = AnyArguments::default();
        for r in chunk {
            add(&mut args, r.id.clone());
        }
        let found: Vec<String> = sqlx::query_scalar_with(AssertSqlSafe(sql), args)
            .fetch_all(&mut *conn)
            .await?;
        existing.extend(found);
    }
    let (old, new): (Vec<usize>, Vec<usize>) =
        (0..rows.len()).partition(|&i| existing.contains(&rows[i].id));

    // 2. New contacts: plain multi-row INSERTs (the trigger logs contact_created).
    for chunk in new.chunks(CONTACT_CHUNK) {
        let sql = format!(
            "INSERT INTO contacts (id, name, email, phone, wecom_external_userid, owner, timezone, \
             created_at, last_active_at, unsubscribed, attrs, updated_at) VALUES {}",
            placeholders::groups(1, 12, chunk.len())
        );
        let mut args = AnyArguments::default();
        for &i in chunk {
            let r = &mut rows[i];
            add(&mut args, r.id.clone());
            add(&mut args, r.name.take());
            add(&mut args, r.email.take());
            add(&mut args, r.phone.take());
            add(&mut args, r.wecom_external_userid.take());
            add(&mut args, r.owner.take());
            add(&mut args, r.timezone.take());
            add(&mut args, r.created_at.unwrap_or(now));
            add(&mut args, r.last_active_at);
            add(&mut args, flag(r.unsubscribed.unwrap_or(false)));
            add(
                &mut args,
                r.attrs_new
                    .take()
                    .unwrap_or_else(|| std::mem::take(&mut r.attrs)),
            );
            add(&mut args, now);
        }
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *conn)
            .await?;
    }
    write_tags(conn, rows, &new, now, false).await?;

    // 3. Existing contacts: one UPDATE ... FROM (VALUES ...) per chunk that
    //    touches only the rows whose values differ, and says which.
    let mut changed: HashSet<String> = HashSet::new();
    for chunk in old.chunks(CONTACT_CHUNK) {
        let sql = format!(
            "WITH v(id, name, email, phone, wecom_external_userid, owner, timezone, created_at, \
             last_active_at, unsubscribed, attrs) AS (VALUES {}{}",
            placeholders::groups(1, 11, chunk.len()),
            update_tail(dialect, &format!("${}", chunk.len() * 11 + 1))
        );
        let mut args = AnyArguments::default();
        for &i in chunk {
            let r = &mut rows[i];
            add(&mut args, r.id.clone());
            add(&mut args, r.name.take());
            add(&mut args, r.email.take());
            add(&mut args, r.phone.take());
            add(&mut args, r.wecom_external_userid.take());
            add(&mut args, r.owner.take());
            add(&mut args, r.timezone.take());
            add(&mut args, r.created_at);
            add(&mut args, r.last_active_at);
            add(&mut args, r.unsubscribed.map(flag));
            add(&mut args, std::mem::take(&mut r.attrs));
        }
        add(&mut args, now);
        let ids: Vec<String> = sqlx::query_scalar_with(AssertSqlSafe(sql), args)
            .fetch_all(&mut *conn)
            .await?;
        changed.extend(ids);
    }
    changed.extend(write_tags(conn, rows, &old, now, true).await?);

    Ok(rows
        .iter()
        .map(|r| {
            if !existing.contains(&r.id) {
                Upserted::Created
            } else if changed.contains(&r.id) {
                Upserted::Updated
            } else {
                Upserted::Unchanged
            }
        })
        .collect())
}

/// The end of the batched UPDATE: `) UPDATE contacts ... RETURNING id`,
/// touching only rows whose values differ. `updated_at` is the placeholder
/// of the update time. SQLite's `IS NOT` is PostgreSQL's `IS DISTINCT FROM`;
/// PostgreSQL compares attributes as JSON (its `json_patch`, defined by the
/// migration, writes them in jsonb's canonical text).
pub(crate) fn update_tail(dialect: Dialect, updated_at: &str) -> String {
    let (ne, attrs_differ) = match dialect {
        Dialect::Sqlite => (
            "IS NOT",
            "json_patch(contacts.attrs, v.attrs) IS NOT contacts.attrs",
        ),
        Dialect::Postgres => (
            "IS DISTINCT FROM",
            "CAST(json_patch(contacts.attrs, v.attrs) AS jsonb) IS DISTINCT FROM CAST(contacts.attrs AS jsonb)",
        ),
    };
    let mut s = format!(
        ") UPDATE contacts SET \
    name = coalesce(v.name, contacts.name), \
    email = coalesce(v.email, contacts.email), \
    phone = coalesce(v.phone, contacts.phone), \
    wecom_external_userid = coalesce(v.wecom_external_userid, contacts.wecom_external_userid), \
    owner = coalesce(v.owner, contacts.owner), \
    timezone = coalesce(v.timezone, contacts.timezone), \
    created_at = coalesce(v.created_at, contacts.created_at), \
    last_active_at = coalesce(v.last_active_at, contacts.last_active_at), \
    unsubscribed = coalesce(v.unsubscribed, contacts.unsubscribed), \
    attrs = CASE WHEN v.attrs = '{{}}' THEN contacts.attrs ELSE json_patch(contacts.attrs, v.attrs) END, \
    updated_at = {updated_at} \
    FROM v WHERE contacts.id = v.id AND ( \
       (v.name IS NOT NULL AND v.name {ne} contacts.name) \
    OR (v.email IS NOT NULL AND v.email {ne} contacts.email) \
    OR (v.phone IS NOT NULL AND v.phone {ne} contacts.phone) \
    OR (v.wecom_external_userid IS NOT NULL AND v.wecom_external_userid {ne} contacts.wecom_external_userid) \
    OR (v.owner IS NOT NULL AND v.owner {ne} contacts.owner) \
    OR (v.timezone IS NOT NULL AND v.timezone {ne} contacts.timezone) \
    OR (v.created_at IS NOT NULL AND v.created_at {ne} contacts.created_at) \
    OR (v.last_active_at IS NOT NULL AND v.last_active_at {ne} contacts.last_active_at) \
    OR (v.unsubscribed IS NOT NULL AND v.unsubscribed {ne} contacts.unsubscribed) \
    OR (v.attrs <> '{{}}' AND {attrs_differ})) "
    );
    s.push_str(match dialect {
        Dialect::Sqlite => "RETURNING id",
        Dialect::Postgres => "RETURNING contacts.id",
    });
    s
}

/// Adds the tags of `rows[which]` (ON CONFLICT DO NOTHING: a tag the
/// contact has already writes nothing). With `returning`, gives the ids of the contacts
/// that got a new tag.
pub(crate) async fn write_tags(
    conn: &mut AnyConnection,
    rows: &[Row],
    which: &[usize],
    now: i64,
    returning: bool,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    // Plain (index, index) pairs: no iterator adapters held across an await,
    // which would make the future !Send.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for &i in which {
        pairs.extend((0..rows[i].tags.len()).map(|k| (i, k)));
    }
    for chunk in pairs.chunks(TAG_CHUNK) {
        let sql = format!(
            "INSERT INTO contact_tags (contact_id, tag, added_at) VALUES {} \
             ON CONFLICT DO NOTHING{}",
            placeholders::groups(1, 3, chunk.len()),
            if returning {
                " RETURNING contact_id"
            } else {
                ""
            },
        );
        let mut args = AnyArguments::default();
        for &(i, k) in chunk {
            add(&mut args, rows[i].id.clone());
            add(&mut args, rows[i].tags[k].clone());
            add(&mut args, now);
        }
        if returning {
            let ids: Vec<String> = sqlx::query_scalar_with(AssertSqlSafe(sql), args)
                .fetch_all(&mut *conn)
                .await?;
            out.extend(ids);
        } else {
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reading contacts.

impl Store {
    /// Creates or updates one contact. An update that changes nothing writes
    /// nothing (no `updated_at` move, no event-log row).
    pub async fn upsert_contact(
        &self,
        input: &ContactInput,
        now: DateTime<Utc>,
    ) -> Result<Upserted, StoreError> {
        let row = input.to_row()?;
        let mut tx = self.begin().await?;
        let mut row = row;
        let out = write_rows(
            &mut tx,
            self.dialect,
            std::slice::from_mut(&mut row),
            to_ms(now),
        )
        .await?;
        tx.commit().await?;
        Ok(out[0])
    }
}
