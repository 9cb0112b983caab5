//! The CSV import's writer: the batched upsert of [`super::contacts::write_rows`]
//! done through `rusqlite` on a blocking thread, over a second connection to
//! the same SQLite file.
//!
//! Why: sqlx runs every statement on its worker thread and copies each bound
//! value through a channel; for a million contacts that worker was the
//! import's bottleneck. Here the multi-row statements are prepared once per
//! connection (`prepare_cached`) and bind borrowed values.
//!
//! The SQL is that of `write_rows`, in the same order, so the stored rows,
//! the event log (its rows and their order) and the Created/Updated/Unchanged
//! classification are the same:
//! 1. new contacts are inserted (`ON CONFLICT (id) DO NOTHING RETURNING id`
//!    doubles as the existence check: a contact that exists is left for
//!    step 3);
//! 2. the new contacts' tags are added;
//! 3. existing contacts are updated only where a given value differs (same
//!    `coalesce`/`json_patch` expressions as `write_rows`' UPDATE);
//! 4. their tags are added (`INSERT OR IGNORE`); a new tag makes the contact
//!    Updated.
//!
//! In-memory stores cannot be reached from a second connection: the import
//! uses `write_rows` for them.

use std::borrow::Cow;
use std::error::Error as StdError;

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, Statement, ToSql};

use super::Dialect;
use super::contacts::{Row, Upserted, update_tail};
use super::placeholders;
use super::{BUSY_TIMEOUT, StoreError};

/// A rusqlite error as the store reports database errors (`StoreError::Db`).
#[derive(Debug)]
struct BulkError {
    code: i32,
    message: String,
}

impl std::fmt::Display for BulkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl StdError for BulkError {}

impl sqlx::error::DatabaseError for BulkError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlx::error::ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

pub(super) fn db_err(e: rusqlite::Error) -> StoreError {
    let (code, message) = match &e {
        rusqlite::Error::SqliteFailure(f, msg) => (
            f.extended_code,
            msg.clone().unwrap_or_else(|| f.to_string()),
        ),
        other => (rusqlite::ffi::SQLITE_ERROR, other.to_string()),
    };
    StoreError::Db(sqlx::Error::Database(Box::new(BulkError { code, message })))
}

/// Rows per multi-row statement. SQLite allows 32,766 bound variables; the
/// widest statement binds 12 per row. Every statement that fires a trigger
/// copies each page it changes into a statement journal, once per statement:
/// one row per statement would copy the same pages over and over.
const CONTACT_CHUNK: usize = 500;
const TAG_CHUNK: usize = 1000;

/// New contacts, `n` rows; gives the ids it inserted (an id that exists is
/// left for the UPDATE).
fn insert_sql(n: usize) -> String {
    placeholders::repeat(
        "INSERT INTO contacts (id, name, email, phone, wecom_external_userid, owner, timezone, \
         created_at, last_active_at, unsubscribed, attrs, updated_at) VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?,?)",
        n,
        " ON CONFLICT (id) DO NOTHING RETURNING id",
    )
}

/// Tags, `n` (contact, tag, added_at) triples.
fn tags_sql(n: usize, returning: bool) -> String {
    placeholders::repeat(
        "INSERT OR IGNORE INTO contact_tags (contact_id, tag, added_at) VALUES ",
        "(?,?,?)",
        n,
        if returning {
            " RETURNING contact_id"
        } else {
            ""
        },
    )
}

/// `write_rows`' UPDATE, `n` rows; gives the ids it changed.
fn update_sql(n: usize) -> String {
    placeholders::repeat(
        "WITH v(id, name, email, phone, wecom_external_userid, owner, timezone, created_at, \
         last_active_at, unsubscribed, attrs) AS (VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?)",
        n,
        &update_tail(Dialect::Sqlite, "?"),
    )
}

/// A connection to the store's file (created and migrated by Store::open).
pub(super) fn open_conn(path: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_size_limit = {}",
        super::checkpointer::WAL_SIZE_LIMIT
    ))
    .map_err(db_err)?;
    Ok(conn)
}

/// A connection that writes import batches.
pub(crate) struct BulkWriter {
    conn: Connection,
    /// The transaction being written, if one is open.
    open: Option<Open>,
    /// Wakes the checkpointing thread after each commit.
    checkpoint: Option<mpsc::Sender<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

/// An open transaction: the chunks written so far leave here only what its
/// commit still needs (the tags, logged after every contact of the
/// transaction, as one `write_rows` call over the whole batch would).
struct Open {
    /// The log's last `seq` before the transaction: tags logged after it
    /// are the import's (`MARK_IMPORTED_TAGS`).
    before: i64,
    /// The attrs checks lifted for the transaction (see `lift_attrs_checks`).
    lifted: Vec<String>,
    /// New contacts' tags, in file order.
    new_tags: Vec<Tagged>,
    /// Existing contacts, in file order: their tags, and whether the UPDATE
    /// changed them.
    old: Vec<(Tagged, bool)>,
    created: u64,
}

/// A contact's id and the tags its row gives.
struct Tagged {
    id: String,
    tags: Vec<String>,
}

/// How many rows of a batch were created, updated and left unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl BulkWriter {
    /// Opens the store's file (which `Store::open` created and migrated) with
    /// the settings of the store's own connections.
    pub(crate) fn open(path: &str) -> Result<BulkWriter, StoreError> {
        let conn = open_conn(path)?;
        conn.execute_batch(
            // journal_mode = WAL is kept in the file by Store::open.
            "PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; \
             PRAGMA cache_size = -65536;",
        )
        .map_err(db_err)?;
        // The WAL is copied into the database by a thread of its own (a
        // PASSIVE checkpoint after each commit) rather than by the commit
        // on this thread: the writer is the import's bottleneck. Durability
        // is unchanged (WAL, synchronous = NORMAL, as Store::open sets).
        let checker = open_conn(path)?;
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(db_err)?;
        let (checkpoint, rx) = mpsc::channel::<()>();
        let checkpointer = std::thread::spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                // A failed or partial checkpoint is retried after the next
                // commit; the store's own connections checkpoint too.
                let _ = checker.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
            }
            let _ = checker.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
        });
        // Full chunks and remainders of the four statements.
        conn.set_prepared_statement_cache_capacity(32);
        Ok(BulkWriter {
            conn,
            open: None,
            checkpoint: Some(checkpoint),
            checkpointer: Some(checkpointer),
        })
    }

    /// Writes `rows` (ids unique in the whole transaction) into the open
    /// transaction, opening one (`BEGIN IMMEDIATE`) if none is. Takes their
    /// ids and tags (kept for the commit): the rest of each row may go.
    /// On error the transaction is rolled back.
    pub(crate) fn write_chunk(&mut self, rows: &mut [Row], now: i64) -> Result<(), StoreError> {
        let out = self.try_write_chunk(rows, now);
        if out.is_err() {
            self.rollback();
        }
        out.map_err(db_err)
    }

    fn try_write_chunk(&mut self, rows: &mut [Row], now: i64) -> rusqlite::Result<()> {
        if self.open.is_none() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let lifted = lift_attrs_checks(&self.conn)?;
            // The write lock is held (IMMEDIATE): log rows after this one are ours.
            let before: i64 =
                self.conn
                    .query_row("SELECT coalesce(max(seq), 0) FROM event_log", [], |r| {
                        r.get(0)
                    })?;
            self.open = Some(Open {
                before,
                lifted,
                new_tags: Vec::new(),
                old: Vec::new(),
                created: 0,
            });
        }
        let (existing, changed) = write_contacts(&self.conn, rows, now)?;
        let open = self.open.as_mut().expect("opened above");
        for (i, r) in rows.iter_mut().enumerate() {
            let t = Tagged {
                id: std::mem::take(&mut r.id),
                tags: std::mem::take(&mut r.tags),
            };
            if existing[i] {
                open.old.push((t, changed[i]));
            } else {
                open.created += 1;
                if !t.tags.is_empty() {
                    open.new_tags.push(t);
                }
            }
        }
        Ok(())
    }

    /// Writes the tags of the open transaction's contacts and commits it;
    /// gives its counts (all zero if no transaction is open). On error the
    /// transaction is rolled back: nothing of it is written.
    pub(crate) fn commit(&mut self, now: i64) -> Result<Counts, StoreError> {
        let Some(open) = self.open.take() else {
            return Ok(Counts::default());
        };
        let out = finish(&self.conn, open, now);
        if out.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            return out.map_err(db_err);
        }
        if let Some(c) = &self.checkpoint {
            let _ = c.send(());
        }
        out.map_err(db_err)
    }

    fn rollback(&mut self) {
        if self.open.take().is_some() || !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Steps 2 and 4 of the module documentation over a whole transaction, the
/// counts, the attrs checks put back, the commit.
fn finish(conn: &Connection, open: Open, now: i64) -> rusqlite::Result<Counts> {
    // 2. The new contacts' tags.
    write_tags(conn, open.new_tags.iter(), now, None)?;
    // 4. Existing contacts' tags: a new one makes the contact Updated.
    let mut got: HashSet<String> = HashSet::new();
    write_tags(conn, open.old.iter().map(|(t, _)| t), now, Some(&mut got))?;
    let mut counts = Counts {
        created: open.created,
        ..Counts::default()
    };
    for (t, changed) in &open.old {
        if *changed || got.contains(t.id.as_str()) {
            counts.updated += 1;
        } else {
            counts.unchanged += 1;
        }
    }
    conn.execute(super::contacts::MARK_IMPORTED_TAGS, [open.before])?;
    for sql in &open.lifted {
        conn.execute_batch(sql)?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(counts)
}

/// Drops the triggers that check `contacts.attrs` (migration 0007) inside
/// the import's own transaction and returns their SQL, to be run again before
/// the commit. The importer writes attributes it serialised itself, always a
/// JSON object, and the check costs a JSON parse per row (about 15% of a
/// million-row import). Schema changes are transactional, so no other
/// connection ever sees the store without the checks.
fn lift_attrs_checks(tx: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = tx.prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'contacts_attrs_json_%'",
    )?;
    let triggers = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (name, _) in &triggers {
        tx.execute_batch(&format!("DROP TRIGGER \"{name}\""))?;
    }
    Ok(triggers.into_iter().map(|(_, sql)| sql).collect())
}

/// Binds `values` from parameter `*next` on.
fn bind(st: &mut Statement<'_>, next: &mut usize, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for v in values {
        st.raw_bind_parameter(*next, v)?;
        *next += 1;
    }
    Ok(())
}

/// Steps a RETURNING statement; calls `each` with every returned text.
fn returned(st: &mut Statement<'_>, mut each: impl FnMut(&str)) -> rusqlite::Result<()> {
    let mut rows = st.raw_query();
    while let Some(row) = rows.next()? {
        each(row.get_ref(0)?.as_str()?);
    }
    Ok(())
}

/// Adds the tags of `contacts`, in order; with `got`, collects the ids of
/// the contacts that got a tag they did not have.
fn write_tags<'a>(
    conn: &Connection,
    contacts: impl Iterator<Item = &'a Tagged>,
    now: i64,
    mut got: Option<&mut HashSet<String>>,
) -> rusqlite::Result<()> {
    let pairs: Vec<(&str, &str)> = contacts
        .flat_map(|t| t.tags.iter().map(move |tag| (t.id.as_str(), tag.as_str())))
        .collect();
    for chunk in pairs.chunks(TAG_CHUNK) {
        let mut st = conn.prepare_cached(&tags_sql(chunk.len(), got.is_some()))?;
        let mut next = 1;
        for (id, tag) in chunk {
            bind(&mut st, &mut next, &[id, tag, &now])?;
        }
        match got.as_deref_mut() {
            Some(got) => returned(&mut st, |id| {
                got.insert(id.to_string());
            })?,
            None => {
                st.raw_execute()?;
            }
        }
    }
    Ok(())
}

/// Steps 1 and 3 of the module documentation for `rows`: gives, per row,
/// whether the contact existed and whether the UPDATE changed it.
fn write_contacts(
    conn: &Connection,
    rows: &[Row],
    now: i64,
) -> rusqlite::Result<(Vec<bool>, Vec<bool>)> {
    // 1. New contacts (the trigger logs contact_created); an id that exists
    //    is not inserted, nor returned.
    let mut existing = vec![false; rows.len()];
    let mut inserted: HashSet<String> = HashSet::new();
    for (c, chunk) in rows.chunks(CONTACT_CHUNK).enumerate() {
        let mut st = conn.prepare_cached(&insert_sql(chunk.len()))?;
        let mut next = 1;
        for r in chunk {
            let attrs = r.attrs_new.as_deref().unwrap_or(&r.attrs);
            bind(
                &mut st,
                &mut next,
                &[
                    &r.id,
                    &r.name,
                    &r.email,
                    &r.phone,
                    &r.wecom_external_userid,
                    &r.owner,
                    &r.timezone,
                    &r.created_at.unwrap_or(now),
                    &r.last_active_at,
                    &r.unsubscribed.unwrap_or(false),
                    &attrs,
                    &now,
                ],
            )?;
        }
        inserted.clear();
        returned(&mut st, |id| {
            inserted.insert(id.to_string());
        })?;
        if inserted.len() < chunk.len() {
            let base = c * CONTACT_CHUNK;
            for (k, r) in chunk.iter().enumerate() {
                existing[base + k] = !inserted.contains(r.id.as_str());
            }
        }
    }
    let old: Vec<usize> = (0..rows.len()).filter(|&i| existing[i]).collect();

    // 3. Existing contacts: only the rows whose values differ are written.
    let mut changed = vec![false; rows.len()];
    let mut got: HashSet<String> = HashSet::new();
    for chunk in old.chunks(CONTACT_CHUNK) {
        let mut st = conn.prepare_cached(&update_sql(chunk.len()))?;
        let mut next = 1;
        for &i in chunk {
            let r = &rows[i];
            bind(
                &mut st,
                &mut next,
                &[
                    &r.id,
                    &r.name,
                    &r.email,
                    &r.phone,
                    &r.wecom_external_userid,
                    &r.owner,
                    &r.timezone,
                    &r.created_at,
                    &r.last_active_at,
                    &r.unsubscribed,
                    &r.attrs,
                ],
            )?;
        }
        bind(&mut st, &mut next, &[&now])?;
        returned(&mut st, |id| {
            got.insert(id.to_string());
        })?;
    }
    if !got.is_empty() {
        for &i in &old {
            changed[i] = got.contains(rows[i].id.as_str());
        }
    }
    Ok((existing, changed))
}

impl Drop for BulkWriter {
    fn drop(&mut self) {
        // A transaction left open (the import stopped) writes nothing.
        self.rollback();
        // The last checkpoint runs before the import reports.
        self.checkpoint = None;
        if let Some(h) = self.checkpointer.take() {
            let _ = h.join();
        }
    }
}

impl Counts {
    /// The same counts from `write_rows`' per-row answer.
    pub(crate) fn of(out: &[Upserted]) -> Counts {
        let mut c = Counts::default();
        for u in out {
            match u {
                Upserted::Created => c.created += 1,
                Upserted::Updated => c.updated += 1,
                Upserted::Unchanged => c.unchanged += 1,
            }
        }
        c
    }
}
