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
use super::contacts::{Row, Upserted, repeat_sql, update_tail};
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

fn db_err(e: rusqlite::Error) -> StoreError {
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
    repeat_sql(
        "INSERT INTO contacts (id, name, email, phone, wecom_external_userid, owner, timezone, \
         created_at, last_active_at, unsubscribed, attrs, updated_at) VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?,?)",
        n,
        " ON CONFLICT (id) DO NOTHING RETURNING id",
    )
}

/// Tags, `n` (contact, tag, added_at) triples.
fn tags_sql(n: usize, returning: bool) -> String {
    repeat_sql(
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
    repeat_sql(
        "WITH v(id, name, email, phone, wecom_external_userid, owner, timezone, created_at, \
         last_active_at, unsubscribed, attrs) AS (VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?)",
        n,
        &update_tail(Dialect::Sqlite, "?"),
    )
}

/// A connection to the store's file (created and migrated by Store::open).
fn open_conn(path: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    Ok(conn)
}

/// A connection that writes import batches.
pub(crate) struct BulkWriter {
    conn: Connection,
    /// Wakes the checkpointing thread after each commit.
    checkpoint: Option<mpsc::Sender<()>>,
    checkpointer: Option<JoinHandle<()>>,
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
            checkpoint: Some(checkpoint),
            checkpointer: Some(checkpointer),
        })
    }

    /// Upserts `rows` (ids unique among them) in one `BEGIN IMMEDIATE`
    /// transaction; on error nothing of the batch is written.
    pub(crate) fn write_batch(&mut self, rows: &[Row], now: i64) -> Result<Counts, StoreError> {
        let tx =
            rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(db_err)?;
        let lifted = lift_attrs_checks(&tx).map_err(db_err)?;
        // The write lock is held (IMMEDIATE): log rows after this one are ours.
        let before: i64 = tx
            .query_row("SELECT coalesce(max(seq), 0) FROM event_log", [], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        let counts = write(&tx, rows, now).map_err(db_err)?;
        tx.execute(super::contacts::MARK_IMPORTED_TAGS, [before])
            .map_err(db_err)?;
        for sql in &lifted {
            tx.execute_batch(sql).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        if let Some(c) = &self.checkpoint {
            let _ = c.send(());
        }
        Ok(counts)
    }
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

/// Adds the tags of `rows[which]`; with `changed`, marks the rows that got a
/// tag they did not have.
fn write_tags(
    conn: &Connection,
    rows: &[Row],
    which: &[usize],
    now: i64,
    changed: Option<&mut [bool]>,
) -> rusqlite::Result<()> {
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for &i in which {
        pairs.extend((0..rows[i].tags.len()).map(|k| (i, k)));
    }
    let mut got: HashSet<String> = HashSet::new();
    for chunk in pairs.chunks(TAG_CHUNK) {
        let mut st = conn.prepare_cached(&tags_sql(chunk.len(), changed.is_some()))?;
        let mut next = 1;
        for &(i, k) in chunk {
            bind(&mut st, &mut next, &[&rows[i].id, &rows[i].tags[k], &now])?;
        }
        if changed.is_some() {
            returned(&mut st, |id| {
                got.insert(id.to_string());
            })?;
        } else {
            st.raw_execute()?;
        }
    }
    if let Some(changed) = changed
        && !got.is_empty()
    {
        for &i in which {
            if got.contains(rows[i].id.as_str()) {
                changed[i] = true;
            }
        }
    }
    Ok(())
}

fn write(conn: &Connection, rows: &[Row], now: i64) -> rusqlite::Result<Counts> {
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
    let (old, new): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|&i| existing[i]);
    // 2. The new contacts' tags.
    write_tags(conn, rows, &new, now, None)?;

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
    // 4. Their tags: a new one makes the contact Updated.
    write_tags(conn, rows, &old, now, Some(&mut changed))?;

    let mut counts = Counts::default();
    for (old, ch) in existing.iter().zip(&changed) {
        match (old, ch) {
            (false, _) => counts.created += 1,
            (true, true) => counts.updated += 1,
            (true, false) => counts.unchanged += 1,
        }
    }
    Ok(counts)
}

impl Drop for BulkWriter {
    fn drop(&mut self) {
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
