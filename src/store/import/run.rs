//! The import's run: the parsing thread beside one of three writers (SQLite
//! file, PostgreSQL, in-memory SQLite through the pool), progress after
//! each batch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::reader::{Batch, parse_file};
use super::{BATCH_ROWS, ImportOptions, ImportProgress, ImportReport};
use crate::store::bulk::{BulkWriter, Counts};
use crate::store::contacts::{Row, write_rows};
use crate::store::pg_import::PgBulkWriter;
use crate::store::{Store, StoreError, to_ms};

/// Rows per message from the parser to the SQLite file's writer, which
/// writes several into one transaction of [`BATCH_ROWS`] rows: the rows in
/// flight (parsed, queued, being written) are a few thousand rather than
/// three batches of 50,000 (about 30 MB each), while commits stay as few.
const CHUNK_ROWS: usize = 5_000;

/// What the SQLite file's writer hands back.
enum Written {
    /// A chunk written into the open transaction: its bad rows and position
    /// for the report, its rows to be dropped (on the async side, off the
    /// writer's thread).
    Chunk(Batch),
    /// The open transaction committed.
    Committed(Counts),
}

/// Adds a parsed batch's records and bad rows to the report and the progress.
fn tally_read(report: &mut ImportReport, state: &mut ImportProgress, batch: Batch) {
    report.rows += batch.records;
    report.bad.extend(batch.bad);
    for (owner, n) in batch.owners {
        *report.owners.entry(owner).or_default() += n;
    }
    // Batches arrive in the file's order: the first one's first line stays.
    for (key, f) in batch.flagged {
        let rows = f.rows;
        report
            .flagged
            .entry(key)
            .and_modify(|seen| seen.rows += rows)
            .or_insert(f);
    }
    state.bytes_read = batch.bytes_read;
    state.rows = report.rows;
    state.bad = report.bad.len() as u64;
}

/// Adds a committed transaction's counts to the report and the progress.
fn tally_written(report: &mut ImportReport, state: &mut ImportProgress, counts: Counts) {
    report.inserted += counts.created;
    report.updated += counts.updated;
    report.unchanged += counts.unchanged;
    state.inserted = report.inserted;
    state.updated = report.updated;
    state.unchanged = report.unchanged;
}

/// Writes the parser's chunks through `writer`, committing every
/// [`BATCH_ROWS`] rows and at the end, until the parser is done or an error;
/// sends each step on. A transaction left open by an error is rolled back
/// when the writer is dropped.
fn write_batches(
    mut writer: BulkWriter,
    mut rx: mpsc::Receiver<Result<Batch, StoreError>>,
    done: mpsc::Sender<Result<Written, StoreError>>,
    now_ms: i64,
) {
    let mut in_transaction = 0;
    let commit = |writer: &mut BulkWriter| writer.commit(now_ms).map(Written::Committed);
    while let Some(msg) = rx.blocking_recv() {
        let written = msg.and_then(|mut batch| {
            if !batch.rows.is_empty() {
                writer.write_chunk(&mut batch.rows, now_ms)?;
                in_transaction += batch.rows.len();
            }
            Ok(Written::Chunk(batch))
        });
        let failed = written.is_err();
        if done.blocking_send(written).is_err() || failed {
            return;
        }
        if in_transaction >= BATCH_ROWS {
            in_transaction = 0;
            let committed = commit(&mut writer);
            let failed = committed.is_err();
            if done.blocking_send(committed).is_err() || failed {
                return;
            }
        }
    }
    let _ = done.blocking_send(commit(&mut writer));
}

impl Store {
    /// Upserts the contacts of a CSV file (see the module documentation for
    /// the rules). Bad rows are reported, not fatal; an unreadable file or a
    /// bad header is an error and imports nothing. `now` is the creation time
    /// of contacts without `created_at` and the time their tags were added.
    pub async fn import_csv(
        &self,
        path: &Path,
        now: DateTime<Utc>,
        progress: impl FnMut(ImportProgress),
    ) -> Result<ImportReport, StoreError> {
        self.import_csv_with(path, now, &ImportOptions::default(), progress)
            .await
    }

    /// [`Store::import_csv`] with declared types, a time zone, an encoding,
    /// and `dry_run` (every batch in one transaction, rolled back).
    pub async fn import_csv_with(
        &self,
        path: &Path,
        now: DateTime<Utc>,
        opts: &ImportOptions,
        mut progress: impl FnMut(ImportProgress),
    ) -> Result<ImportReport, StoreError> {
        let started = Instant::now();
        let total_bytes = std::fs::metadata(path)
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?
            .len();
        // The file behind a SQLite store; empty for an in-memory store, which
        // a second connection cannot reach (it takes the batches through the
        // pool), and for PostgreSQL (`PgBulkWriter`, below).
        let db_file: String = if opts.dry_run {
            // A dry run goes through the pool: one transaction, rolled back.
            String::new()
        } else {
            self.sqlite_file().await?.unwrap_or_default()
        };
        let writer = if db_file.is_empty() {
            None
        } else {
            let w = tokio::task::spawn_blocking(move || BulkWriter::open(&db_file))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
            Some(w)
        };
        // One batch queued ahead of the writer: the parser is the faster of
        // the two. The SQLite file's writer takes chunks (`CHUNK_ROWS`); the
        // others write each message in a transaction of its own.
        let (tx, rx) = mpsc::channel::<Result<Batch, StoreError>>(1);
        let owned: PathBuf = path.to_path_buf();
        let popts = opts.clone();
        let rows_per_batch = if writer.is_some() {
            CHUNK_ROWS
        } else {
            BATCH_ROWS
        };
        let parser = std::thread::spawn(move || {
            if let Err(e) = parse_file(&owned, &popts, &tx, rows_per_batch) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let now_ms = to_ms(now);
        let mut report = ImportReport::default();
        let mut state = ImportProgress {
            total_bytes,
            ..Default::default()
        };
        let mut result = Ok(());
        match writer {
            Some(writer) => {
                let (done_tx, mut done) = mpsc::channel::<Result<Written, StoreError>>(4);
                let task =
                    tokio::task::spawn_blocking(move || write_batches(writer, rx, done_tx, now_ms));
                while let Some(msg) = done.recv().await {
                    match msg {
                        Ok(Written::Chunk(batch)) => tally_read(&mut report, &mut state, batch),
                        Ok(Written::Committed(counts)) => {
                            tally_written(&mut report, &mut state, counts);
                            progress(state);
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                drop(done);
                if let Err(e) = task.await {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
            None if self.dialect == crate::store::Dialect::Postgres => {
                let mut rx = rx;
                let mut pg = PgBulkWriter::open(&self.url, opts.dry_run).await?;
                while let Some(msg) = rx.recv().await {
                    let mut batch = match msg {
                        Ok(b) => b,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    };
                    let rows = std::mem::take(&mut batch.rows);
                    // Read now, counted when written (two batches are
                    // written at once: PgBulkWriter).
                    tally_read(&mut report, &mut state, batch);
                    let done = if rows.is_empty() {
                        Ok(Vec::new())
                    } else {
                        pg.submit(rows, now_ms).await
                    };
                    match done {
                        Ok(done) => {
                            for counts in done {
                                tally_written(&mut report, &mut state, counts);
                            }
                            progress(state);
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                // Dropping the receiver stops the parser if it is still reading.
                drop(rx);
                match pg.drain().await {
                    Ok(done) => {
                        for counts in done {
                            tally_written(&mut report, &mut state, counts);
                        }
                        progress(state);
                    }
                    Err(e) => {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
                let finished = pg.finish().await;
                if result.is_ok() {
                    result = finished;
                }
            }
            None => {
                let mut rx = rx;
                let mut dry = if opts.dry_run {
                    Some(self.begin().await?)
                } else {
                    None
                };
                while let Some(msg) = rx.recv().await {
                    let mut batch = match msg {
                        Ok(b) => b,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    };
                    let mut counts = Counts::default();
                    if !batch.rows.is_empty() {
                        let written = match dry.as_mut() {
                            Some(t) => {
                                write_batch_in(t, self.dialect, &mut batch.rows, now_ms).await
                            }
                            None => {
                                async {
                                    let mut t = self.begin().await?;
                                    let out = write_batch_in(
                                        &mut t,
                                        self.dialect,
                                        &mut batch.rows,
                                        now_ms,
                                    )
                                    .await?;
                                    t.commit().await?;
                                    Ok(out)
                                }
                                .await
                            }
                        };
                        match written {
                            Ok(out) => counts = Counts::of(&out),
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    tally_read(&mut report, &mut state, batch);
                    tally_written(&mut report, &mut state, counts);
                    progress(state);
                }
                if let Some(t) = dry {
                    t.rollback().await?;
                }
            }
        }
        let _ = parser.join();
        result?;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// One batch in `t`: the rows, and their tags marked as imported.
async fn write_batch_in(
    t: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: crate::store::Dialect,
    rows: &mut [Row],
    now_ms: i64,
) -> Result<Vec<crate::store::Upserted>, StoreError> {
    let before = crate::store::contacts::log_position_locked(t, dialect).await?;
    let out = write_rows(&mut *t, dialect, rows, now_ms).await?;
    sqlx::query(sqlx::AssertSqlSafe(
        crate::store::contacts::MARK_IMPORTED_TAGS.replace('?', "$1"),
    ))
    .bind(before)
    .execute(&mut **t)
    .await?;
    Ok(out)
}
