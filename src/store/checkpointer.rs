//! Copying a SQLite store's write-ahead log into the database file, on a
//! thread of its own.
//!
//! Why: by default SQLite checkpoints in the connection whose commit took
//! the WAL past 1,000 pages, inside that commit. A checkpoint with
//! `synchronous = NORMAL` syncs the WAL, copies it into the database and
//! syncs the database: two `fsync`s and megabytes of writes, on the
//! committing thread. In the daemon that thread is the delivery worker's
//! outcome writer or the scheduler, holding the store's write turn; while it
//! waits for the disk, every send's concurrency slot waits for its outcome
//! (`bench/delivery.sh compare`, 100,000 queued messages: 17,882 msg/s
//! with checkpoints in the commits, 22,415 with this thread, medians of
//! three alternating rounds; BENCHMARKS.md, session 10).
//!
//! So the store's writing connections leave checkpoints to this thread: a
//! `PASSIVE` checkpoint every [`EVERY`], which copies what no reader still
//! needs without taking any lock a writer waits for (writers keep appending
//! while it runs). When nothing was committed since the last one it finds
//! nothing to copy and syncs nothing. Durability is unchanged: a commit is
//! in the WAL either way, and the WAL restarts from its beginning once a
//! checkpoint has copied all of it, as before.
//!
//! A safety net stays: the writing connections still checkpoint by
//! themselves past [`SAFETY_NET_PAGES`] (64 MB of WAL), should this thread
//! fall that far behind.

use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;
use super::bulk::{db_err, open_conn};

/// How often the thread checkpoints.
pub(super) const EVERY: Duration = Duration::from_millis(100);

/// `PRAGMA wal_autocheckpoint` of the store's writing connections: the WAL
/// size (in pages) past which a commit checkpoints by itself.
pub(super) const SAFETY_NET_PAGES: u32 = 16_384;

/// `PRAGMA journal_size_limit` of every connection: the size (bytes, the
/// safety net's 64 MB of 4 KB pages) the WAL file is cut back to when it
/// starts over from its beginning.
///
/// Why: the WAL can only start over once no reader needs its oldest part,
/// so a long read beside a burst of writes (a dry-run over a million
/// contacts while an import or a day's welcomes commit) grows it to hundreds
/// of megabytes. SQLite then reuses the file from its start but keeps its
/// size, and a daemon that runs for weeks kept that disk space until it
/// stopped. With the limit the first commit after the restart truncates it.
pub(super) const WAL_SIZE_LIMIT: i64 = SAFETY_NET_PAGES as i64 * 4096;

/// The checkpointing thread of one store file; stopped by [`Checkpointer::stop`]
/// (`Store::close`) or when the last handle on it goes.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread on the store file at `path` (which exists and is in
    /// WAL mode).
    pub(super) fn start(path: &str) -> Result<Checkpointer, StoreError> {
        let conn = open_conn(path)?;
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("nurture-checkpoint".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Io {
                path: path.to_string(),
                source: e,
            })?;
        Ok(Checkpointer {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for it: its connection is closed when this
    /// returns, so the store's last connection to close is one of the pool's
    /// (which checkpoints the rest and removes the WAL file).
    pub(super) fn stop(&self) {
        drop(lock(&self.stop).take());
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    /// Tells the thread to stop without waiting for it: a store dropped
    /// rather than closed may be dropped on an async task, which must not
    /// wait for a checkpoint's `fsync`.
    fn drop(&mut self) {
        drop(lock(&self.stop).take());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checkpoints every [`EVERY`] until told to stop (or its sender is gone).
fn run(conn: Connection, stop: mpsc::Receiver<()>) {
    loop {
        match stop.recv_timeout(EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // An error (the file gone, the disk full) is tried again at the next
        // tick; the writers' own checkpoints are the net behind it.
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::debug!(error = %db_err(e), "WAL checkpoint failed; tried again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// What the store's connections commit reaches the database file
    /// while none of them checkpoints by itself: the thread copies it.
    #[tokio::test]
    async fn the_thread_copies_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let net: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(store.db())
            .await
            .unwrap();
        assert_eq!(net, i64::from(SAFETY_NET_PAGES));
        let before = std::fs::metadata(&path).unwrap().len();
        // About 2 MB in one commit: 500 pages, far below the connections'
        // own threshold.
        sqlx::query(
            "CREATE TABLE scratch (x BLOB); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO scratch SELECT randomblob(1000) FROM n",
        )
        .execute(store.db())
        .await
        .unwrap();
        let wal = dir.path().join("s.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 2_000_000);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() < before + 2_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL was not copied into the database file"
            );
            tokio::time::sleep(EVERY / 4).await;
        }
        // Closed, the store leaves no WAL behind (its last connection
        // checkpoints it and removes it).
        store.close().await;
        assert!(!wal.exists());
    }

    /// A WAL grown past the limit while a reader held its oldest part is
    /// cut back to the limit once it starts over, while the store stays open.
    #[tokio::test]
    async fn a_grown_wal_is_cut_back_when_it_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE scratch (x BLOB)")
            .execute(store.db())
            .await
            .unwrap();
        // A long read: the WAL cannot start over while it lasts.
        let reader = open_conn(&path.to_string_lossy()).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM scratch;")
            .unwrap();
        // About 80 MB in ten commits, past the limit.
        for _ in 0..10 {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
                 INSERT INTO scratch SELECT randomblob(4000) FROM n",
            )
            .execute(store.db())
            .await
            .unwrap();
        }
        let wal = dir.path().join("s.db-wal");
        let grown = std::fs::metadata(&wal).unwrap().len();
        assert!(grown > WAL_SIZE_LIMIT as u64, "{grown}");
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        // Once the thread has copied all of it, a commit starts the WAL over
        // and cuts the file back.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            sqlx::query("INSERT INTO scratch VALUES (x'00')")
                .execute(store.db())
                .await
                .unwrap();
            if std::fs::metadata(&wal).unwrap().len() <= WAL_SIZE_LIMIT as u64 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL stayed at {} bytes",
                std::fs::metadata(&wal).unwrap().len()
            );
            tokio::time::sleep(EVERY).await;
        }
        store.close().await;
    }
}
