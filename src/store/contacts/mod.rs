//! Contacts, tags, opt-outs and events: single changes (as the API and the
//! `contacts` commands make them), the batched upsert that CSV import uses,
//! and the streaming scan the engine plans over.
//!
//! Writes never log anything themselves: the schema's triggers write the
//! event log, and only for real changes (a new contact, a tag the contact did
//! not have, an event). An upsert that changes nothing writes nothing.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Map, Value};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::sqlite::SqliteRow;
use sqlx::{AnyConnection, Arguments, AssertSqlSafe, Row as _};

use super::{Dialect, Store, StoreError, from_ms, to_ms};
use crate::contact::{BUILTIN_FIELDS, Contact};

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
// The batched writer.

/// Rows per multi-row statement. SQLite allows 32,766 bound variables; the
/// widest statement binds 11 per row.
const CONTACT_CHUNK: usize = 500;
const TAG_CHUNK: usize = 1000;
const EXISTS_CHUNK: usize = 1000;

/// `head` followed by `n` groups `group` separated by commas, then `tail`.
pub(crate) fn repeat_sql(head: &str, group: &str, n: usize, tail: &str) -> String {
    let mut s = String::with_capacity(head.len() + tail.len() + n * (group.len() + 1));
    s.push_str(head);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(group);
    }
    s.push_str(tail);
    s
}

fn add<'q, T>(args: &mut AnyArguments, v: T)
where
    T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    args.add(v).expect("encoding a plain value cannot fail");
}

/// `n` groups of `width` numbered placeholders, `($first,...),(...)`.
fn numbered_groups(first: usize, width: usize, n: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(n * width * 5);
    let mut k = first;
    for g in 0..n {
        s.push_str(if g == 0 { "(" } else { ",(" });
        for c in 0..width {
            let _ = write!(s, "{}${k}", if c == 0 { "" } else { "," });
            k += 1;
        }
        s.push(')');
    }
    s
}

/// A stored boolean: an integer 0/1 on both databases.
fn flag(b: bool) -> i64 {
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
            .bind(super::plan_writes::EVENT_LOG_WRITE)
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
        super::plan_reads::push_placeholders(&mut sql, 1, chunk.len());
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
            numbered_groups(1, 12, chunk.len())
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
            numbered_groups(1, 11, chunk.len()),
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
async fn write_tags(
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
            numbered_groups(1, 3, chunk.len()),
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

pub(super) const CONTACT_COLUMNS: &str = "SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, \
    c.owner, c.timezone, c.created_at, c.last_active_at, c.unsubscribed, c.attrs, \
    (SELECT group_concat(t.tag, char(31)) FROM contact_tags t WHERE t.contact_id = c.id) AS tags, \
    (SELECT group_concat(o.channel, char(31)) FROM contact_opt_outs o WHERE o.contact_id = c.id) AS opt_outs \
    FROM contacts c";

/// [`CONTACT_COLUMNS`] in PostgreSQL's words (`string_agg`, `chr`).
const CONTACT_COLUMNS_PG: &str = "SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, \
    c.owner, c.timezone, c.created_at, c.last_active_at, c.unsubscribed, c.attrs, \
    (SELECT string_agg(t.tag, chr(31)) FROM contact_tags t WHERE t.contact_id = c.id) AS tags, \
    (SELECT string_agg(o.channel, chr(31)) FROM contact_opt_outs o WHERE o.contact_id = c.id) AS opt_outs \
    FROM contacts c";

fn contact_columns(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => CONTACT_COLUMNS,
        Dialect::Postgres => CONTACT_COLUMNS_PG,
    }
}

/// The same columns packed by SQLite into one JSON array per row, for scans.
/// sqlx copies every column of every row across its worker thread; one
/// column instead of thirteen halves the cost of a scan over a million
/// contacts, and serde reads the array faster than thirteen decodes.
const CONTACT_JSON: &str = "SELECT json_array(c.id, c.name, c.email, c.phone, \
    c.wecom_external_userid, c.owner, c.timezone, c.created_at, c.last_active_at, \
    c.unsubscribed, json(c.attrs), \
    (SELECT json_group_array(t.tag) FROM contact_tags t WHERE t.contact_id = c.id), \
    (SELECT json_group_array(o.channel) FROM contact_opt_outs o WHERE o.contact_id = c.id)) \
    FROM contacts c";

/// One row of [`CONTACT_JSON`], in column order.
#[derive(serde::Deserialize)]
struct JsonRow(
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    Map<String, Value>,
    BTreeSet<String>,
    BTreeSet<String>,
);

fn decode_json_contact(row: &SqliteRow) -> Result<Contact, StoreError> {
    let text: &str = row.try_get(0)?;
    let r: JsonRow = serde_json::from_str(text)
        .map_err(|e| StoreError::Invalid(format!("a stored contact cannot be read: {e}")))?;
    Ok(Contact {
        id: r.0,
        name: r.1,
        email: r.2,
        phone: r.3,
        wecom_external_userid: r.4,
        owner: r.5,
        timezone: r.6,
        created_at: from_ms(r.7),
        last_active_at: r.8.map(from_ms),
        unsubscribed: r.9 != 0,
        attrs: r.10,
        tags: r.11,
        opted_out: r.12,
        events: Vec::new(),
    })
}

fn split_set(s: Option<&str>) -> BTreeSet<String> {
    match s {
        Some(s) if !s.is_empty() => s.split('\u{1f}').map(str::to_string).collect(),
        _ => BTreeSet::new(),
    }
}

/// Decodes one row of [`CONTACT_COLUMNS`] (by position: no name lookups).
fn decode_contact(row: &AnyRow) -> Result<Contact, StoreError> {
    let id: String = row.try_get(0)?;
    let attrs_text: &str = row.try_get(10)?;
    let attrs = if attrs_text == "{}" {
        Map::new()
    } else {
        serde_json::from_str::<Map<String, Value>>(attrs_text).map_err(|e| {
            StoreError::Invalid(format!(
                "contact {id:?}: stored attributes are not a JSON object: {e}"
            ))
        })?
    };
    Ok(Contact {
        name: row.try_get(1)?,
        email: row.try_get(2)?,
        phone: row.try_get(3)?,
        wecom_external_userid: row.try_get(4)?,
        owner: row.try_get(5)?,
        timezone: row.try_get(6)?,
        created_at: from_ms(row.try_get(7)?),
        last_active_at: row.try_get::<Option<i64>, _>(8)?.map(from_ms),
        unsubscribed: row.try_get::<i64, _>(9)? != 0,
        attrs,
        tags: split_set(row.try_get(11)?),
        opted_out: split_set(row.try_get(12)?),
        events: Vec::new(),
        id,
    })
}

fn bind_all(args: &mut AnyArguments, binds: &[Bind]) {
    for b in binds {
        match b {
            Bind::Text(s) => add(args, s.clone()),
            Bind::Int(i) => add(args, *i),
            Bind::Real(f) => add(args, *f),
        }
    }
}

fn bind_all_sqlite(args: &mut sqlx::sqlite::SqliteArguments, binds: &[Bind]) {
    for b in binds {
        let r = match b {
            Bind::Text(s) => args.add(s.clone()),
            Bind::Int(i) => args.add(*i),
            Bind::Real(f) => args.add(*f),
        };
        r.expect("encoding a plain value cannot fail");
    }
}

// ---------------------------------------------------------------------------
// The store's contact operations.

impl Store {
    /// How many contacts pass `filter` (a WHERE clause on `contacts c`).
    pub async fn count_matching(&self, filter: &str, binds: &[Bind]) -> sqlx::Result<i64> {
        let mut args = AnyArguments::default();
        bind_all(&mut args, binds);
        let text = format!("SELECT count(*) FROM contacts c WHERE {filter}");
        sqlx::query_scalar_with(sqlx::AssertSqlSafe(text), args)
            .fetch_one(self.db())
            .await
    }

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
    /// one channel. Gives whether anything changed.
    pub async fn unsubscribe(
        &self,
        id: &str,
        channel: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
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
        // messages to the contact: they stay.
        let cancelled: Vec<(String, String, String)> = sqlx::query_as(
            "UPDATE outbox SET status = 'cancelled', last_error = 'unsubscribed'
              WHERE contact_id = $1 AND status = 'queued' AND ($2 IS NULL OR channel = $3)
                AND kind NOT IN ('notice', 'transfer')
              RETURNING workflow, step_id, channel",
        )
        .bind(id)
        .bind(channel.as_deref())
        .bind(channel.as_deref())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for (workflow, step, channel) in &cancelled {
            crate::metrics::cancelled(workflow, id, step, channel, "unsubscribed");
        }
        Ok(n.rows_affected() > 0)
    }

    /// One contact with its tags and opt-outs (events are not loaded).
    pub async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        let sql = format!("{} WHERE c.id = $1", contact_columns(self.dialect));
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.db)
            .await?;
        row.as_ref().map(decode_contact).transpose()
    }

    /// Streams the contacts matching `where_sql` (a WHERE clause over the
    /// table alias `c`, with `?` placeholders for `binds`), in storage order, with
    /// tags and opt-outs filled and events empty. Rows are decoded as they
    /// arrive: memory stays flat however many contacts match.
    pub fn scan_contacts<'a>(
        &'a self,
        where_sql: &str,
        binds: &[Bind],
    ) -> BoxStream<'a, Result<Contact, StoreError>> {
        // No ORDER BY: a full scan in rowid order (the order contacts were
        // added) is deterministic, and sorting by id would walk the id index
        // and visit the table at random, a third slower on a million rows.
        if let Some(pool) = &self.sqlite {
            let sql = format!("{CONTACT_JSON} WHERE {where_sql}");
            let mut args = sqlx::sqlite::SqliteArguments::default();
            bind_all_sqlite(&mut args, binds);
            return sqlx::query_with(AssertSqlSafe(sql), args)
                .fetch(pool)
                .map(|r| {
                    r.map_err(StoreError::from)
                        .and_then(|row| decode_json_contact(&row))
                })
                .boxed();
        }
        // PostgreSQL: plain columns (sqlx's PostgreSQL driver decodes them in
        // the task; there is no worker-thread handoff to save).
        let sql = format!("{CONTACT_COLUMNS_PG} WHERE {where_sql}");
        let mut args = AnyArguments::default();
        bind_all(&mut args, binds);
        sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch(&self.db)
            .map(|r| {
                r.map_err(StoreError::from)
                    .and_then(|row| decode_contact(&row))
            })
            .boxed()
    }

    /// How many contacts the store holds.
    pub async fn count_contacts(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM contacts")
            .fetch_one(&self.db)
            .await?)
    }
}

async fn require_contact(conn: &mut AnyConnection, id: &str) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::UnknownContact(id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use futures::TryStreamExt;

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
        assert!(s.unsubscribe("c", Some("sms"), t(3)).await.unwrap());
        assert!(!s.unsubscribe("c", Some("sms"), t(3)).await.unwrap());
        assert!(s.unsubscribe("c", None, t(3)).await.unwrap());
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
