//! The delivery worker's own connection to a SQLite store file: its claims
//! and outcome writes go through `rusqlite` on a blocking thread.
//!
//! Why: a send's concurrency slot comes back only once its outcome is
//! committed (the crash window, `channels/delivery.rs`), so how long a
//! commit takes paces delivery. Through the pool a commit is four hand-offs
//! to sqlx's worker thread (acquire, `BEGIN`, the update, `COMMIT`), each a
//! thread wake-up, with every returned row copied across; here a claim is
//! one hand-off, an outcome commit none (the writer is a thread of its own,
//! `channels/delivery/writer.rs`), and prepared statements bind borrowed
//! values.
//!
//! The statements are the pool path's (`outbox.rs`), so what is written is
//! the same, in the store's write turn as on the pool.
//! PostgreSQL and in-memory stores (a second connection cannot reach those)
//! keep the pool's path.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use super::bulk::{db_err, open_conn};
use super::outbox::{
    CANCELLED_SQL, ClaimTimes, Claimed, DEAD_SQL, Fate, OPT_OUT_SQL, REAP_SQL, RELEASE_SQL,
    RETRY_SQL, Recorded, SENT_ONE_SQL, channel_names, claim_sql, in_due_order, lease_lost,
    park_unknown_sql, parked_unknown, reaped_expired,
};
use super::plan_writes::PATCH_ATTRS_SQL;
use super::{Dialect, Store, StoreError};

/// The delivery's connection (see the module docs).
#[derive(Clone)]
pub struct OutboxConn {
    conn: Arc<Mutex<Connection>>,
}

impl OutboxConn {
    /// Opens a connection to `store`'s file; `None` on PostgreSQL and for an
    /// in-memory SQLite store.
    pub async fn open(store: &Store) -> Result<Option<OutboxConn>, StoreError> {
        let Some(path) = store.sqlite_file().await? else {
            return Ok(None);
        };
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let conn = open_conn(&path)?;
            // The pool's per-connection settings (journal_mode = WAL is kept
            // in the file by Store::open; checkpoints are the store's
            // checkpointer's, `checkpointer.rs`).
            conn.execute_batch(&format!(
                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                 PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536; \
                 PRAGMA wal_autocheckpoint = {};",
                super::checkpointer::SAFETY_NET_PAGES
            ))
            .map_err(db_err)?;
            Ok(conn)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(Some(OutboxConn {
            conn: Arc::new(Mutex::new(conn)),
        }))
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> R {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut c)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// [`super::outbox::record_outcomes_in_turn`] through this connection,
    /// on the calling thread (the delivery's writer thread): `outcomes` in
    /// one transaction. The caller holds the store's write turn.
    pub fn record_outcomes_here(
        &self,
        owner: &str,
        now: i64,
        outcomes: &[Recorded<'_>],
    ) -> Result<(), sqlx::Error> {
        let mut c = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        record(&mut c, owner, now, outcomes).map_err(sqlx_err)
    }

    /// [`super::outbox::claim_with`] through this connection, in the
    /// store's write turn.
    pub async fn claim(
        &self,
        store: &Store,
        owner: String,
        times: ClaimTimes,
        wants: Vec<(String, usize)>,
        known: Option<Vec<String>>,
        reap: bool,
    ) -> Result<Vec<Vec<Claimed>>, sqlx::Error> {
        let _turn = store.write_turn().await;
        self.with(move |c| claim(c, &owner, times, &wants, known, reap))
            .await
            .map_err(sqlx_err)
    }
}

/// A rusqlite error as the pool's callers see database errors.
fn sqlx_err(e: rusqlite::Error) -> sqlx::Error {
    match db_err(e) {
        StoreError::Db(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// The claim in one transaction, rolled back on error.
fn claim(
    c: &mut Connection,
    owner: &str,
    times: ClaimTimes,
    wants: &[(String, usize)],
    known: Option<Vec<String>>,
    reap: bool,
) -> rusqlite::Result<Vec<Vec<Claimed>>> {
    let now = times.now;
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if reap {
        reaped_expired(tx.prepare_cached(REAP_SQL)?.execute(params![now])? as u64);
    }
    if let Some(known) = known {
        let parked = tx
            .prepare_cached(&park_unknown_sql(Dialect::Sqlite))?
            .execute(params![times.unknown_until, now, channel_names(&known)])?;
        parked_unknown(parked as u64);
    }
    let mut out = Vec::with_capacity(wants.len());
    {
        let mut q = tx.prepare_cached(&claim_sql(Dialect::Sqlite))?;
        for (channel, n) in wants {
            let rows = q.query_map(
                params![owner, times.lease_until, now, channel, *n as i64],
                |r| {
                    Ok(Claimed {
                        id: r.get(0)?,
                        workflow: r.get(1)?,
                        contact_id: r.get(2)?,
                        step_id: r.get(3)?,
                        channel: r.get(4)?,
                        recipient: r.get(5)?,
                        subject: r.get(6)?,
                        body: r.get(7)?,
                        attempts: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                        created_at: r.get(9)?,
                        due_at: r.get(10)?,
                        payload: r.get(11)?,
                        first_failed_at: r.get(12)?,
                        in_doubt: r.get::<_, i64>(13)? != 0,
                    })
                },
            )?;
            out.push(in_due_order(rows.collect::<rusqlite::Result<_>>()?));
        }
    }
    tx.commit()?;
    Ok(out)
}

/// The outcomes in one transaction, rolled back on error.
fn record(
    c: &mut Connection,
    owner: &str,
    now: i64,
    outcomes: &[Recorded<'_>],
) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut recorded: HashSet<&str> = HashSet::new();
    {
        let mut sent = tx.prepare_cached(SENT_ONE_SQL)?;
        for o in outcomes {
            if let Fate::Sent { provider_id, .. } = o.fate {
                if sent.execute(params![now, provider_id, o.id, owner])? == 1 {
                    recorded.insert(o.id);
                } else {
                    lease_lost(o.id);
                }
            }
        }
    }
    // What webhook steps' answers set, in the transaction that records them sent.
    for o in outcomes {
        if let Fate::Sent { store, .. } = o.fate
            && !store.is_empty()
            && recorded.contains(o.id)
        {
            tx.prepare_cached(PATCH_ATTRS_SQL)?.execute(params![
                super::answers::patch(store),
                now,
                o.contact_id
            ])?;
        }
    }
    for o in outcomes {
        let done = match o.fate {
            Fate::Sent { .. } => continue,
            Fate::Retry { next_at, error } => tx
                .prepare_cached(RETRY_SQL)?
                .execute(params![next_at, error, now, o.id, owner])?,
            Fate::Dead { error } => tx
                .prepare_cached(DEAD_SQL)?
                .execute(params![error, now, o.id, owner])?,
            Fate::Cancelled { reason } => tx
                .prepare_cached(CANCELLED_SQL)?
                .execute(params![reason, o.id, owner])?,
            Fate::Release { next_at, error } => tx
                .prepare_cached(RELEASE_SQL)?
                .execute(params![next_at, error, o.id, owner])?,
        };
        if done == 0 {
            lease_lost(o.id);
        }
        if o.records_opt_out() {
            tx.prepare_cached(OPT_OUT_SQL)?
                .execute(params![o.contact_id, o.channel, now])?;
        }
    }
    tx.commit()
}
