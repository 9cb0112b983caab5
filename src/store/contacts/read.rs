//! Reading contacts: the one contact SELECT (columns and decoding, for
//! SQLite's JSON rows and the `Any` driver's rows), counts and the
//! streaming scan the engine plans over.

use std::collections::BTreeSet;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Map, Value};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, AssertSqlSafe, Row as _};

use super::write::add;
use super::*;
use crate::contact::Contact;
use crate::store::{Dialect, Store, StoreError, from_ms};

pub(crate) const CONTACT_COLUMNS: &str = "SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, \
    c.owner, c.timezone, c.created_at, c.last_active_at, c.unsubscribed, c.attrs, \
    (SELECT group_concat(t.tag, char(31)) FROM contact_tags t WHERE t.contact_id = c.id) AS tags, \
    (SELECT group_concat(o.channel, char(31)) FROM contact_opt_outs o WHERE o.contact_id = c.id) AS opt_outs \
    FROM contacts c";

/// [`CONTACT_COLUMNS`] in PostgreSQL's words (`string_agg`, `chr`).
pub(crate) const CONTACT_COLUMNS_PG: &str = "SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, \
    c.owner, c.timezone, c.created_at, c.last_active_at, c.unsubscribed, c.attrs, \
    (SELECT string_agg(t.tag, chr(31)) FROM contact_tags t WHERE t.contact_id = c.id) AS tags, \
    (SELECT string_agg(o.channel, chr(31)) FROM contact_opt_outs o WHERE o.contact_id = c.id) AS opt_outs \
    FROM contacts c";

pub(crate) fn contact_columns(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => CONTACT_COLUMNS,
        Dialect::Postgres => CONTACT_COLUMNS_PG,
    }
}

/// The same columns packed by SQLite into one JSON array per row, for scans.
/// sqlx copies every column of every row across its worker thread; one
/// column instead of thirteen halves the cost of a scan over a million
/// contacts, and serde reads the array faster than thirteen decodes.
pub(crate) const CONTACT_JSON: &str = "SELECT json_array(c.id, c.name, c.email, c.phone, \
    c.wecom_external_userid, c.owner, c.timezone, c.created_at, c.last_active_at, \
    c.unsubscribed, json(c.attrs), \
    (SELECT json_group_array(t.tag) FROM contact_tags t WHERE t.contact_id = c.id), \
    (SELECT json_group_array(o.channel) FROM contact_opt_outs o WHERE o.contact_id = c.id)) \
    FROM contacts c";

/// One row of [`CONTACT_JSON`], in column order.
#[derive(serde::Deserialize)]
pub(crate) struct JsonRow(
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

pub(crate) fn decode_json_contact(row: &SqliteRow) -> Result<Contact, StoreError> {
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

pub(crate) fn split_set(s: Option<&str>) -> BTreeSet<String> {
    match s {
        Some(s) if !s.is_empty() => s.split('\u{1f}').map(str::to_string).collect(),
        _ => BTreeSet::new(),
    }
}

/// Decodes one row of [`CONTACT_COLUMNS`] (by position: no name lookups).
pub(crate) fn decode_contact(row: &AnyRow) -> Result<Contact, StoreError> {
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

pub(crate) fn bind_all(args: &mut AnyArguments, binds: &[Bind]) {
    for b in binds {
        match b {
            Bind::Text(s) => add(args, s.clone()),
            Bind::Int(i) => add(args, *i),
            Bind::Real(f) => add(args, *f),
        }
    }
}

pub(crate) fn bind_all_sqlite(args: &mut sqlx::sqlite::SqliteArguments, binds: &[Bind]) {
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

impl Store {
    /// The contacts `filter` selects, as keys a later query can restrict
    /// itself to ([`crate::store::scans::among`]): a dry-run reads the
    /// contacts whose date is near once a day, not at each check.
    pub async fn contact_keys(
        &self,
        filter: &crate::store::dialect::Sql,
    ) -> Result<crate::store::scans::ContactKeys, StoreError> {
        let mut args = AnyArguments::default();
        bind_all(&mut args, &filter.binds);
        Ok(match self.dialect {
            Dialect::Sqlite => {
                if let Some(read) = self.rowids_on_reader(&filter.text, &filter.binds).await {
                    return Ok(crate::store::scans::ContactKeys::new(&read?));
                }
                let text = format!("SELECT c.rowid FROM contacts c WHERE {}", filter.text);
                let keys: Vec<i64> = sqlx::query_scalar_with(AssertSqlSafe(text), args)
                    .fetch_all(self.db())
                    .await?;
                crate::store::scans::ContactKeys::new(&keys)
            }
            Dialect::Postgres => {
                let text = format!("SELECT c.id FROM contacts c WHERE {}", filter.text);
                let keys: Vec<String> = sqlx::query_scalar_with(AssertSqlSafe(text), args)
                    .fetch_all(self.db())
                    .await?;
                crate::store::scans::ContactKeys::new(&keys)
            }
        })
    }
}
