//! The CSV import's writer on PostgreSQL: each batch is `COPY`'d into a
//! temporary staging table and written with a few set-based statements, and
//! the event log is written by the import itself (`INSERT ... SELECT`), not
//! by a trigger call per row.
//!
//! Why: the same batches through multi-row INSERTs and per-row triggers
//! imported about 7,700 rows/s with the server at 91% CPU (a PL/pgSQL call
//! and an advisory lock per contact and per tag, the attrs check's
//! subtransaction per row).
//!
//! The result is that of [`super::contacts::write_rows`] (and of SQLite's
//! `store::bulk`): the same contacts and tags, the same
//! Created/Updated/Unchanged counts, and the same event-log rows in the same
//! order:
//! 1. `contact_created` for each new contact, in file order (`at` = its
//!    `created_at`, `origin` NULL);
//! 2. `tag_added` for each tag a new contact comes with, in file order, then
//!    for each tag an existing contact did not have yet (`at` = now,
//!    `origin` = `import`, as `MARK_IMPORTED_TAGS` marks them).
//!
//! The transaction sets `nurture.bulk_import` (migration 0031): the per-row
//! log triggers stand aside for it. It takes the event-log writers' lock
//! (`EVENT_LOG_WRITE`) before its first contact, in shared mode: two
//! batches of one import are written at once, on two connections, and write
//! their log rows in turn ([`PgBulkWriter`] says why that keeps the log's
//! order).

use std::sync::Arc;

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::oneshot;

use super::StoreError;
use super::bulk::Counts;
use super::contacts::{Row, update_tail};
use super::plan_writes::EVENT_LOG_WRITE;

/// The staging table: one row per CSV row of the batch, in file order
/// (`ord`); `created` and `changed` are filled by the statements below.
const CREATE_STAGE: &str = "CREATE TEMP TABLE IF NOT EXISTS nurture_import_stage (
    ord BIGINT NOT NULL,
    id TEXT NOT NULL,
    name TEXT, email TEXT, phone TEXT, wecom_external_userid TEXT, owner TEXT, timezone TEXT,
    created_at BIGINT, last_active_at BIGINT, unsubscribed BIGINT,
    attrs TEXT NOT NULL,
    attrs_new TEXT,
    -- the attrs patch holds only scalars: see update_existing()
    flat BOOLEAN NOT NULL,
    tags TEXT NOT NULL,
    created BOOLEAN NOT NULL DEFAULT FALSE,
    changed BOOLEAN NOT NULL DEFAULT FALSE)";

const COPY_STAGE: &str = "COPY nurture_import_stage (ord, id, name, email, phone, \
    wecom_external_userid, owner, timezone, created_at, last_active_at, unsubscribed, attrs, \
    attrs_new, flat, tags) FROM STDIN";

/// New contacts. `ON CONFLICT DO NOTHING`: a contact created meanwhile by
/// another writer is left to the UPDATE, as in `write_rows`.
const INSERT_NEW: &str = "WITH ins AS (
    INSERT INTO contacts (id, name, email, phone, wecom_external_userid, owner, timezone,
        created_at, last_active_at, unsubscribed, attrs, updated_at)
    SELECT s.id, s.name, s.email, s.phone, s.wecom_external_userid, s.owner, s.timezone,
        coalesce(s.created_at, $1), s.last_active_at, coalesce(s.unsubscribed, 0),
        coalesce(s.attrs_new, s.attrs), $1
      FROM nurture_import_stage s
     WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = s.id)
     ORDER BY s.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id)
UPDATE nurture_import_stage s SET created = TRUE FROM ins WHERE s.id = ins.id";

/// What the `contacts_log_created` trigger writes, for the rows created.
const LOG_CREATED: &str = "INSERT INTO event_log (kind, contact_id, name, event_id, at)
    SELECT 'contact_created', s.id, NULL, NULL, coalesce(s.created_at, $1)
      FROM nurture_import_stage s WHERE s.created ORDER BY s.ord";

/// The new contacts' tags, in file order and the row's order of tags. A
/// contact created by this transaction is seen by no one else yet, so every
/// one of its tags is inserted: they are logged straight from the staging
/// table, with no join back to what was inserted.
const INSERT_NEW_TAGS: &str = "INSERT INTO contact_tags (contact_id, tag, added_at)
    SELECT s.id, e.tag, $1
      FROM nurture_import_stage s
      CROSS JOIN LATERAL jsonb_array_elements_text(CAST(s.tags AS jsonb)) AS e(tag)
     WHERE s.created AND s.tags <> '[]'";

/// What `contact_tags_log_added` writes for them (marked `import`).
const LOG_NEW_TAGS: &str = "INSERT INTO event_log (kind, contact_id, name, event_id, at, origin)
    SELECT 'tag_added', s.id, e.tag, NULL, $1, 'import'
      FROM nurture_import_stage s
      CROSS JOIN LATERAL jsonb_array_elements_text(CAST(s.tags AS jsonb)) WITH ORDINALITY AS e(tag, k)
     WHERE s.created AND s.tags <> '[]'
     ORDER BY s.ord, e.k";

/// The existing contacts' tags: only those they did not have are inserted
/// and logged (after the new contacts', in file order), and make the
/// contact Updated.
const INSERT_OLD_TAGS: &str = "WITH t AS (
    SELECT s.ord, s.id, e.tag, e.k
      FROM nurture_import_stage s
      CROSS JOIN LATERAL jsonb_array_elements_text(CAST(s.tags AS jsonb)) WITH ORDINALITY AS e(tag, k)
     WHERE NOT s.created AND s.tags <> '[]'),
ins AS (
    INSERT INTO contact_tags (contact_id, tag, added_at)
    SELECT t.id, t.tag, $1 FROM t
    ON CONFLICT DO NOTHING
    RETURNING contact_id, tag),
logged AS (
    INSERT INTO event_log (kind, contact_id, name, event_id, at, origin)
    SELECT 'tag_added', t.id, t.tag, NULL, $1, 'import'
      FROM ins JOIN t ON t.id = ins.contact_id AND t.tag = ins.tag
     ORDER BY t.ord, t.k)
UPDATE nurture_import_stage s SET changed = TRUE
 WHERE NOT s.created AND s.id IN (SELECT contact_id FROM ins)";

/// Whether any contact of the batch exists already: if none does (a first
/// import), the batch takes the fast path below.
const ANY_EXISTING: &str = "SELECT EXISTS (SELECT 1 FROM nurture_import_stage s \
    JOIN contacts c ON c.id = s.id)";

/// The fast path's insert: every row is new, so no `ON CONFLICT` (whose
/// speculative insertion costs per row), no existence test and no marking
/// of the staging rows as created (an UPDATE that rewrote every wide staging
/// row). A contact created meanwhile by another writer makes it fail with a
/// unique violation: the batch then takes the general path.
const INSERT_ALL: &str = "INSERT INTO contacts (id, name, email, phone, wecom_external_userid,
        owner, timezone, created_at, last_active_at, unsubscribed, attrs, updated_at)
    SELECT s.id, s.name, s.email, s.phone, s.wecom_external_userid, s.owner, s.timezone,
        coalesce(s.created_at, $1), s.last_active_at, coalesce(s.unsubscribed, 0),
        coalesce(s.attrs_new, s.attrs), $1
      FROM nurture_import_stage s ORDER BY s.ord";

const COUNTS: &str = "SELECT count(*) FILTER (WHERE created), \
    count(*) FILTER (WHERE changed AND NOT created), count(*) FROM nurture_import_stage";

/// `write_rows`' UPDATE of existing contacts (the same SET and the same
/// "differs" test), over the staging table. One shortcut first: a patch of
/// scalars that the stored attributes already contain (`@>`) changes
/// nothing, which spares the PL/pgSQL `json_patch` on every row of a
/// re-import (a patch with arrays or nulls always takes the full test).
fn update_existing() -> String {
    let tail = update_tail(super::Dialect::Postgres, "$1");
    let tail = tail.trim_start_matches(')');
    let tail = tail.replace(
        "OR (v.attrs <> '{}' AND ",
        "OR (v.attrs <> '{}' AND NOT (v.flat AND CAST(contacts.attrs AS jsonb) @> CAST(v.attrs AS jsonb)) AND ",
    );
    assert!(
        tail.contains("v.flat"),
        "update_tail changed its attrs test"
    );
    format!(
        "WITH v AS (SELECT id, name, email, phone, wecom_external_userid, owner, timezone, \
         created_at, last_active_at, unsubscribed, attrs, flat FROM nurture_import_stage \
         WHERE NOT created), upd AS ({tail}) \
         UPDATE nurture_import_stage s SET changed = TRUE FROM upd WHERE s.id = upd.id"
    )
}

/// A statement over the created rows of the batch, for a batch whose rows
/// were all created (`created` is not marked on the fast path).
fn every_row(sql: &str) -> String {
    sql.replace("WHERE s.created ", "WHERE TRUE ")
}

/// One field of a `COPY ... FROM STDIN` text-format row.
fn push_field(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => buf.extend_from_slice(b"\\N"),
        Some(s) => {
            for &b in s.as_bytes() {
                match b {
                    b'\\' => buf.extend_from_slice(b"\\\\"),
                    b'\t' => buf.extend_from_slice(b"\\t"),
                    b'\n' => buf.extend_from_slice(b"\\n"),
                    b'\r' => buf.extend_from_slice(b"\\r"),
                    _ => buf.push(b),
                }
            }
        }
    }
}

fn push_num(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => buf.extend_from_slice(b"\\N"),
        Some(n) => buf.extend_from_slice(n.to_string().as_bytes()),
    }
}

/// Whether a JSON object's text holds only scalar, non-null values (what a
/// CSV row's attributes always are).
fn flat(attrs: &str) -> bool {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(attrs) {
        Ok(m) => m.values().all(|v| {
            matches!(
                v,
                serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)
            )
        }),
        Err(_) => false,
    }
}

/// The batch as `COPY` text.
fn copy_text(rows: &[Row]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(rows.len() * 256);
    for (i, r) in rows.iter().enumerate() {
        push_num(&mut buf, Some(i as i64));
        for v in [
            Some(r.id.as_str()),
            r.name.as_deref(),
            r.email.as_deref(),
            r.phone.as_deref(),
            r.wecom_external_userid.as_deref(),
            r.owner.as_deref(),
            r.timezone.as_deref(),
        ] {
            buf.push(b'\t');
            push_field(&mut buf, v);
        }
        buf.push(b'\t');
        push_num(&mut buf, r.created_at);
        buf.push(b'\t');
        push_num(&mut buf, r.last_active_at);
        buf.push(b'\t');
        push_num(&mut buf, r.unsubscribed.map(i64::from));
        buf.push(b'\t');
        push_field(&mut buf, Some(&r.attrs));
        buf.push(b'\t');
        push_field(&mut buf, r.attrs_new.as_deref());
        buf.push(b'\t');
        // The importer's own attrs (`{"k":"v",...}` of strings) are flat
        // without a parse.
        let is_flat = r.attrs == "{}" || (r.attrs_new.is_none() && flat(&r.attrs));
        buf.extend_from_slice(if is_flat { b"t" } else { b"f" });
        buf.push(b'\t');
        let tags = serde_json::to_string(&r.tags).expect("strings serialise");
        push_field(&mut buf, Some(&tags));
        buf.push(b'\n');
    }
    buf
}

/// The session advisory lock one import holds from start to end (key
/// beside `EVENT_LOG_WRITE` and the cursor's 4_711_002): the lanes of one
/// import write the log in turn, and a second import waits for the first.
pub(crate) const IMPORT_WRITE: i64 = 4_711_003;

/// One connection that writes batches, with its staging table.
struct Lane {
    conn: PgConnection,
}

/// What a batch's task gives back: its lane, and its counts or error.
type Finished = (Lane, Result<Counts, StoreError>);

/// Writes import batches on two connections ("lanes"), one batch beside the
/// next: while one batch writes its event-log rows and commits, the next is
/// `COPY`'d, and its contacts and tags are inserted. Two server processes
/// share the work: on one, the server was the import's bottleneck.
///
/// The event log stays in batch order and readers still see it in `seq`
/// order: each batch takes `EVENT_LOG_WRITE` **shared** before it writes
/// anything (where it took it exclusive, alone), so every other log writer,
/// which takes it exclusive, waits until no batch is open, as before; and a
/// batch writes its first log row only after the batch before it has
/// committed (`after`). Between the lanes of one import, and only there, the
/// lock is shared; `IMPORT_WRITE` keeps a second import out.
///
/// A batch that names owners is written alone: its trigger updates the
/// owners' `salesperson_load` rows in file order, and two batches doing so
/// at once could lock two of them in opposite orders.
pub(crate) struct PgBulkWriter {
    /// Lanes with no batch.
    free: Vec<Lane>,
    /// Batches being written, oldest first.
    pending: std::collections::VecDeque<tokio::task::JoinHandle<Finished>>,
    /// Resolves when the last batch submitted has committed (dropped unsent
    /// if it failed).
    last_commit: Option<oneshot::Receiver<()>>,
    update_sql: Arc<str>,
    /// A dry run: one lane, every batch in one transaction, rolled back at
    /// the end.
    dry_run: bool,
}

impl PgBulkWriter {
    pub(crate) async fn open(url: &str, dry_run: bool) -> Result<PgBulkWriter, StoreError> {
        let lanes = if dry_run { 1 } else { 2 };
        let mut free = Vec::with_capacity(lanes);
        for i in 0..lanes {
            let mut conn = super::pg_session(url).await?;
            if i == 0 {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(IMPORT_WRITE)
                    .execute(&mut conn)
                    .await?;
            }
            if dry_run {
                conn.execute("BEGIN").await?;
            }
            conn.execute(CREATE_STAGE).await?;
            free.push(Lane { conn });
        }
        Ok(PgBulkWriter {
            free,
            pending: Default::default(),
            last_commit: None,
            update_sql: update_existing().into(),
            dry_run,
        })
    }

    /// Starts writing `rows` (ids unique in the whole import) in a
    /// transaction of its own, after the batches submitted before it; gives
    /// the counts of the earlier batches that finished meanwhile, in order.
    /// On error nothing of the failed batch, nor of any later one, is
    /// written.
    pub(crate) async fn submit(
        &mut self,
        rows: Vec<Row>,
        now: i64,
    ) -> Result<Vec<Counts>, StoreError> {
        let mut done = Vec::new();
        let alone = rows.iter().any(|r| r.owner.is_some());
        while (alone && !self.pending.is_empty()) || self.free.is_empty() {
            done.push(self.join_oldest().await?);
        }
        let lane = self.free.pop().expect("a lane is free");
        let (committed, next) = oneshot::channel();
        let after = self.last_commit.replace(next);
        let update_sql = self.update_sql.clone();
        let dry_run = self.dry_run;
        self.pending.push_back(tokio::spawn(async move {
            write_batch(lane, rows, now, update_sql, after, committed, dry_run).await
        }));
        Ok(done)
    }

    /// Waits for every batch submitted; gives their counts, in order.
    pub(crate) async fn drain(&mut self) -> Result<Vec<Counts>, StoreError> {
        let mut done = Vec::new();
        while !self.pending.is_empty() {
            done.push(self.join_oldest().await?);
        }
        Ok(done)
    }

    /// The oldest batch's counts. On its error, the later batches (which
    /// then roll back) are waited for first.
    async fn join_oldest(&mut self) -> Result<Counts, StoreError> {
        let task = self.pending.pop_front().expect("a batch is pending");
        let (lane, out) = task
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.free.push(lane);
        if out.is_err() {
            while let Some(task) = self.pending.pop_front() {
                if let Ok((lane, _)) = task.await {
                    self.free.push(lane);
                }
            }
        }
        out
    }

    /// Ends the import: a dry run's transaction is rolled back.
    pub(crate) async fn finish(mut self) -> Result<(), StoreError> {
        self.drain().await?;
        for mut lane in self.free {
            if self.dry_run {
                lane.conn.execute("ROLLBACK").await?;
            }
            let _ = lane.conn.close().await;
        }
        Ok(())
    }
}

/// How far the first phase of a batch went.
enum Staged {
    /// Every row was new (the fast path): inserted, with their tags.
    AllNew(u64),
    /// The general path: new contacts inserted (this many) and existing
    /// ones updated; the new contacts' tags inserted.
    Mixed(u64),
}

/// One batch in a transaction of its own (or in the dry run's): the first
/// phase at once, the log rows and the commit after the batch before it
/// has committed. Sends on `committed` when it has; drops it on error.
async fn write_batch(
    mut lane: Lane,
    rows: Vec<Row>,
    now: i64,
    update_sql: Arc<str>,
    after: Option<oneshot::Receiver<()>>,
    committed: oneshot::Sender<()>,
    dry_run: bool,
) -> Finished {
    let data = copy_text(&rows);
    let n = rows.len() as u64;
    drop(rows);
    let c = &mut lane.conn;
    let out = async {
        if !dry_run {
            c.execute("BEGIN").await?;
        }
        let staged = stage(c, data, n, &update_sql, now).await?;
        if let Some(after) = after
            && after.await.is_err()
        {
            return Err(StoreError::Invalid(
                "an earlier batch of the import failed; this one was not written".into(),
            ));
        }
        let counts = log_rows(c, staged, n, now).await?;
        if !dry_run {
            c.execute("COMMIT").await?;
        }
        Ok(counts)
    }
    .await;
    match &out {
        Ok(_) => {
            let _ = committed.send(());
        }
        Err(_) => {
            if !dry_run {
                let _ = c.execute("ROLLBACK").await;
            }
        }
    }
    (lane, out)
}

/// The first phase: `COPY`, the shared log lock, then every statement that
/// writes no log row.
async fn stage(
    c: &mut PgConnection,
    data: Vec<u8>,
    n: u64,
    update_sql: &str,
    now: i64,
) -> Result<Staged, StoreError> {
    // SET LOCAL: for this transaction only (see migration 0031).
    // work_mem: the batch's sorts (file order for the log) stay in
    // memory instead of spilling to disk at the default 4 MB.
    c.execute(
        "SET LOCAL nurture.bulk_import = 'on'; SET LOCAL work_mem = '64MB'; \
         TRUNCATE nurture_import_stage",
    )
    .await?;
    let mut copy = c.copy_in_raw(COPY_STAGE).await?;
    if let Err(e) = copy.send(data).await {
        let _ = copy.abort("import batch failed").await;
        return Err(e.into());
    }
    copy.finish().await?;
    // Before the first contact is written, as every log writer takes the
    // lock (see PgBulkWriter).
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(EVENT_LOG_WRITE)
        .execute(&mut *c)
        .await?;
    let any_existing: bool = sqlx::query_scalar(ANY_EXISTING).fetch_one(&mut *c).await?;
    if !any_existing {
        // A savepoint, not the batch's transaction: a dry run holds
        // every batch in one transaction.
        c.execute("SAVEPOINT nurture_import_fast").await?;
        match sqlx::query(INSERT_ALL).bind(now).execute(&mut *c).await {
            Ok(done) => {
                c.execute("RELEASE SAVEPOINT nurture_import_fast").await?;
                sqlx::query(sqlx::AssertSqlSafe(every_row(INSERT_NEW_TAGS)))
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                return Ok(Staged::AllNew(done.rows_affected()));
            }
            Err(sqlx::Error::Database(e))
                if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                // Created meanwhile by a writer outside nurture: the
                // general path.
                c.execute("ROLLBACK TO SAVEPOINT nurture_import_fast")
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Statistics on the id only: the joins to `contacts` are by id,
    // and a full ANALYZE of the wide rows (attrs, tags) cost about a
    // tenth of the batch.
    c.execute("ANALYZE nurture_import_stage (id)").await?;
    let created = sqlx::query(INSERT_NEW)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected();
    if created < n {
        sqlx::query(sqlx::AssertSqlSafe(update_sql))
            .bind(now)
            .execute(&mut *c)
            .await?;
    }
    sqlx::query(INSERT_NEW_TAGS)
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(Staged::Mixed(created))
}

/// The second phase: the batch's log rows (the created contacts, their
/// tags, then the tags existing contacts did not have), and the counts.
async fn log_rows(
    c: &mut PgConnection,
    staged: Staged,
    n: u64,
    now: i64,
) -> Result<Counts, StoreError> {
    let created = match staged {
        Staged::AllNew(created) => {
            for sql in [LOG_CREATED, LOG_NEW_TAGS] {
                sqlx::query(sqlx::AssertSqlSafe(every_row(sql)))
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
            }
            return Ok(Counts {
                created,
                ..Counts::default()
            });
        }
        Staged::Mixed(created) => created,
    };
    sqlx::query(LOG_CREATED).bind(now).execute(&mut *c).await?;
    sqlx::query(LOG_NEW_TAGS).bind(now).execute(&mut *c).await?;
    if created == n {
        return Ok(Counts {
            created,
            ..Counts::default()
        });
    }
    sqlx::query(INSERT_OLD_TAGS)
        .bind(now)
        .execute(&mut *c)
        .await?;
    let (created, updated, all): (i64, i64, i64) =
        sqlx::query_as(COUNTS).fetch_one(&mut *c).await?;
    Ok(Counts {
        created: created as u64,
        updated: updated as u64,
        unchanged: (all - created - updated) as u64,
    })
}

#[cfg(test)]
mod tests;
