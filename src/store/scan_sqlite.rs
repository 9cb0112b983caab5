//! A SQLite scan of contacts read on a thread of its own (issue 13 item 4).
//!
//! `Store::scan_contacts` goes through sqlx, whose SQLite driver steps the
//! statement on its worker thread and hands every row across to the caller
//! (a channel send, a wake-up and a copy per row); the dry-run's planner then
//! decodes it. Here a plain rusqlite connection, read-only, steps the same
//! kind of SELECT on its own thread, decodes the contacts there and hands
//! them over 256 at a time: the reading and decoding run beside the planning
//! (the machine has two CPUs; `sqlite3` running the same SELECT uses one).
//! Same rows, same order (the same WHERE clause, no ORDER BY: storage order).
//! A store with no file behind it (`sqlite::memory:`) and PostgreSQL take
//! `scan_contacts`.

use futures::stream::{self, BoxStream, StreamExt};
use rusqlite::{Connection, OpenFlags, types::Value as SqlValue};
use serde_json::{Map, Value};

use super::contacts::CONTACT_COLUMNS;
use super::dialect::Bind;
use super::plan_reads::from_ms;
use super::{BUSY_TIMEOUT, Store, StoreError};
use crate::contact::Contact;

/// Contacts handed over at a time.
const HANDOFF: usize = 256;

impl Store {
    /// As [`Store::scan_contacts`] (same contacts, same order), read and
    /// decoded on a thread of its own on a SQLite file.
    pub fn scan_contacts_threaded<'a>(
        &'a self,
        where_sql: &str,
        binds: &[Bind],
    ) -> BoxStream<'a, Result<Contact, StoreError>> {
        match &self.readers {
            Some(readers) => read_on_thread(readers.clone(), where_sql, binds),
            None => self.scan_contacts(where_sql, binds),
        }
    }
}

/// Read-only connections to the store's file, kept for the next scan.
/// Opening one reads the whole schema and starts with a cold page cache: a
/// dry-run of a week runs a scan for each 15-minute check of a date trigger
/// (672 of them), and on the 3,000 contacts of the quick start opening the
/// connection cost more than the scan.
pub(super) struct Readers {
    path: std::path::PathBuf,
    /// `None` once the store is closed: a scan that ends later does not
    /// keep its connection.
    idle: std::sync::Mutex<Option<Vec<Connection>>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.path)
            .field("idle", &self.idle().as_ref().map(Vec::len))
            .finish()
    }
}

/// Connections kept idle: scans rarely overlap.
const IDLE_READERS: usize = 2;

impl Readers {
    pub(super) fn new(path: std::path::PathBuf) -> Readers {
        Readers {
            path,
            idle: std::sync::Mutex::new(Some(Vec::new())),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Option<Vec<Connection>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle().as_mut().and_then(Vec::pop) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        Ok(conn)
    }

    /// A connection whose scan ended (its statement reset) is kept.
    fn give_back(&self, conn: Connection) {
        if let Some(idle) = self.idle().as_mut().filter(|i| i.len() < IDLE_READERS) {
            idle.push(conn);
        }
    }

    /// Closes the kept connections, and those of scans still running when
    /// they end ([`Store::close`]).
    pub(super) fn close(&self) {
        *self.idle() = None;
    }
}

impl Store {
    /// The contacts `where_sql` selects, in [`Store::scan_contacts`]' order,
    /// as a stream that may stay open while this process writes to the
    /// store between its items (`enroll --existing` plans and applies each
    /// batch as it reads): memory stays flat however many match.
    ///
    /// The scan sees the store as it was when it began, as a scan collected
    /// whole before the first write would: one statement, one snapshot (a
    /// SQLite WAL read transaction, a PostgreSQL statement snapshot). On a
    /// SQLite file it reads on a read-only connection of its own (WAL: the
    /// writes do not wait behind it, though the WAL cannot be checkpointed
    /// past the scan's start until it ends); on PostgreSQL it holds one of
    /// the pool's connections. An in-memory store has one connection, which
    /// a write would wait for behind the open scan: there the contacts are
    /// collected first.
    pub fn scan_contacts_beside_writes<'a>(
        &'a self,
        where_sql: &str,
        binds: &[Bind],
    ) -> BoxStream<'a, Result<Contact, StoreError>> {
        if self.sqlite.is_none() || self.file.is_some() {
            return self.scan_contacts_threaded(where_sql, binds);
        }
        let all = self.scan_contacts(where_sql, binds);
        stream::once(all.collect::<Vec<_>>())
            .flat_map(stream::iter)
            .boxed()
    }
}

impl Store {
    /// The rowids of the contacts `where_sql` selects, read on a kept
    /// read-only connection (`None`: no file behind the store). A pool
    /// connection would keep up to 64 MB of the table in its page cache
    /// after reading it whole; a kept reader keeps SQLite's default 2 MB.
    pub(super) async fn rowids_on_reader(
        &self,
        where_sql: &str,
        binds: &[Bind],
    ) -> Option<Result<Vec<i64>, StoreError>> {
        let readers = self.readers.clone()?;
        let sql = format!("SELECT c.rowid FROM contacts c WHERE {where_sql}");
        let params = values(binds);
        let read = move || -> Result<Vec<i64>, StoreError> {
            let conn = readers.take()?;
            let ids = {
                let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, i64>(0))
                    .map_err(err)?;
                rows.collect::<Result<Vec<i64>, _>>().map_err(err)?
            };
            readers.give_back(conn);
            Ok(ids)
        };
        Some(
            tokio::task::spawn_blocking(read)
                .await
                .unwrap_or_else(|e| Err(StoreError::Invalid(format!("reading contacts: {e}")))),
        )
    }
}

fn values(binds: &[Bind]) -> Vec<SqlValue> {
    binds
        .iter()
        .map(|b| match b {
            Bind::Text(s) => SqlValue::Text(s.clone()),
            Bind::Int(i) => SqlValue::Integer(*i),
            Bind::Real(f) => SqlValue::Real(*f),
        })
        .collect()
}

fn read_on_thread(
    readers: std::sync::Arc<Readers>,
    where_sql: &str,
    binds: &[Bind],
) -> BoxStream<'static, Result<Contact, StoreError>> {
    let sql = format!("{CONTACT_COLUMNS} WHERE {where_sql}");
    let params = values(binds);
    // A few batches ahead at most: memory stays flat however many match.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<Contact>, StoreError>>(4);
    std::thread::spawn(move || {
        let read = |conn: &Connection| -> Result<(), StoreError> {
            let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params))
                .map_err(err)?;
            let mut chunk = Vec::with_capacity(HANDOFF);
            while let Some(row) = rows.next().map_err(err)? {
                chunk.push(decode(row)?);
                if chunk.len() == HANDOFF {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(HANDOFF));
                    if tx.blocking_send(Ok(full)).is_err() {
                        // The reader went away (the scan was dropped).
                        return Ok(());
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = tx.blocking_send(Ok(chunk));
            }
            Ok(())
        };
        // The statement is reset when `read` returns, so the connection
        // holds no read transaction when it is kept; one that failed is not.
        let done = readers.take().and_then(|conn| {
            read(&conn)?;
            readers.give_back(conn);
            Ok(())
        });
        if let Err(e) = done {
            let _ = tx.blocking_send(Err(e));
        }
    });
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
        .flat_map(|batch| match batch {
            Ok(v) => stream::iter(v.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(async move { Err(e) }).right_stream(),
        })
        .boxed()
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Invalid(format!("reading contacts: {e}"))
}

/// One row of [`CONTACT_COLUMNS`], as `contacts::decode_contact` reads it.
fn decode(row: &rusqlite::Row<'_>) -> Result<Contact, StoreError> {
    let id: String = row.get(0).map_err(err)?;
    let attrs_text: String = row.get(10).map_err(err)?;
    let attrs = if attrs_text == "{}" {
        Map::new()
    } else {
        serde_json::from_str::<Map<String, Value>>(&attrs_text).map_err(|e| {
            StoreError::Invalid(format!(
                "contact {id:?}: stored attributes are not a JSON object: {e}"
            ))
        })?
    };
    let set = |i: usize| -> Result<std::collections::BTreeSet<String>, StoreError> {
        let s: Option<String> = row.get(i).map_err(err)?;
        Ok(match s {
            Some(s) if !s.is_empty() => s.split('\u{1f}').map(str::to_string).collect(),
            _ => Default::default(),
        })
    };
    Ok(Contact {
        name: row.get(1).map_err(err)?,
        email: row.get(2).map_err(err)?,
        phone: row.get(3).map_err(err)?,
        wecom_external_userid: row.get(4).map_err(err)?,
        owner: row.get(5).map_err(err)?,
        timezone: row.get(6).map_err(err)?,
        created_at: from_ms(row.get(7).map_err(err)?),
        last_active_at: row.get::<_, Option<i64>>(8).map_err(err)?.map(from_ms),
        unsubscribed: row.get::<_, i64>(9).map_err(err)? != 0,
        attrs,
        tags: set(11)?,
        opted_out: set(12)?,
        events: Vec::new(),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contacts::ContactInput;
    use chrono::TimeZone;
    use futures::TryStreamExt;

    /// The threaded scan returns what `scan_contacts` returns, in its order.
    #[tokio::test]
    async fn the_threaded_scan_reads_what_the_pool_reads() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url).await.unwrap();
        let t = chrono::Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        for i in 0..600 {
            let mut c = ContactInput {
                id: format!("c{i:04}"),
                name: Some(format!("名字 {i}")),
                ..Default::default()
            };
            if i % 3 == 0 {
                c.tags = vec!["vip".into(), "new".into()];
            }
            if i % 2 == 0 {
                c.attrs.insert("city".into(), "Shanghai".into());
            }
            store.upsert_contact(&c, t).await.unwrap();
        }
        let filter = "json_extract(c.attrs, '$.city') = ? OR c.id = ?";
        let binds = [Bind::Text("Shanghai".into()), Bind::Text("c0001".into())];
        let pooled: Vec<Contact> = store
            .scan_contacts(filter, &binds)
            .try_collect()
            .await
            .unwrap();
        let threaded: Vec<Contact> = store
            .scan_contacts_threaded(filter, &binds)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(pooled.len(), 301);
        assert_eq!(format!("{pooled:?}"), format!("{threaded:?}"));
        // A bad clause is an error, not a hang.
        let bad: Result<Vec<Contact>, _> = store
            .scan_contacts_threaded("no_such_column = 1", &[])
            .try_collect()
            .await;
        assert!(bad.is_err());
        // Dropping the scan part-way stops the thread (no hang).
        let mut s = store.scan_contacts_threaded("1=1", &[]);
        assert!(s.next().await.is_some());
        drop(s);
    }

    /// A kept connection sees what was written after its last scan, also
    /// after a scan dropped part-way, and is reused rather than opened again.
    #[tokio::test]
    async fn a_kept_reader_sees_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url).await.unwrap();
        let t = chrono::Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let add = |i: usize| ContactInput {
            id: format!("c{i:04}"),
            ..Default::default()
        };
        for i in 0..600 {
            store.upsert_contact(&add(i), t).await.unwrap();
        }
        let count = || async {
            store
                .scan_contacts_threaded("1=1", &[])
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len()
        };
        let readers = store.readers.clone().unwrap();
        assert_eq!(count().await, 600);
        assert_eq!(
            readers.idle().as_ref().map(Vec::len),
            Some(1),
            "kept after the scan"
        );
        // Dropped after its first 256: the thread stops at its next hand-over.
        let mut s = store.scan_contacts_threaded("1=1", &[]);
        assert!(s.next().await.is_some());
        drop(s);
        store.upsert_contact(&add(600), t).await.unwrap();
        assert_eq!(count().await, 601);
        store.upsert_contact(&add(601), t).await.unwrap();
        assert_eq!(count().await, 602);
        assert!(readers.idle().as_ref().unwrap().len() <= IDLE_READERS);
        // Closing the store closes them, so its last connection checkpoints
        // and the WAL file goes.
        store.close().await;
        assert!(readers.idle().is_none());
        assert!(
            !dir.path().join("s.db-wal").exists(),
            "the WAL was not checkpointed at close"
        );
    }
}
