//! The scheduler's bookkeeping: cron ticks taken, the event-log cursor, the
//! PostgreSQL advisory locks that let several daemons share one store, and
//! what is left to do (`--until-idle`, the next wake-up).

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection};

use super::{Dialect, Store};

/// The transaction-scoped advisory lock of the event-log cursor on
/// PostgreSQL: one daemon at a time reads a batch after the cursor, applies
/// it and moves the cursor, in one transaction; the others skip the log for
/// that pass instead of planning the same batch.
const EVENT_LOG_CURSOR: i64 = 4_711_002;

/// A stable advisory-lock key per workflow for its cron ticks (FNV-1a).
fn tick_lock_key(workflow: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "nurture-tick:".bytes().chain(workflow.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Takes the event-log cursor's lock for the rest of `tx` on PostgreSQL;
/// `false` when another daemon holds it. Always `true` on SQLite, whose
/// write lock already serialises writers.
pub(in crate::store) async fn try_lock_cursor(
    tx: &mut AnyConnection,
    dialect: Dialect,
) -> sqlx::Result<bool> {
    if dialect != Dialect::Postgres {
        return Ok(true);
    }
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(EVENT_LOG_CURSOR)
        .fetch_one(&mut *tx)
        .await
}

/// Moves cursor `name` forward to `position` (never back).
pub(in crate::store) async fn advance_cursor(
    tx: &mut AnyConnection,
    name: &str,
    position: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cursors (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = CASE
             WHEN excluded.position > cursors.position THEN excluded.position
             ELSE cursors.position END",
    )
    .bind(name)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The latest tick of `workflow` taken, ms.
pub async fn last_tick(store: &Store, workflow: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT max(tick_at) FROM cron_ticks WHERE workflow = $1")
        .bind(workflow)
        .fetch_one(store.db())
        .await
}

/// Records tick `tick_at` of `workflow` as taken.
pub async fn take_tick(store: &Store, workflow: &str, tick_at: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO cron_ticks (workflow, tick_at, taken_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(workflow)
        .bind(tick_at)
        .bind(now)
        .execute(store.db())
        .await?;
    Ok(())
}

/// A workflow's tick lock, held on one connection of the pool until
/// [`TickLock::release`].
pub struct TickLock {
    conn: PoolConnection<Any>,
    key: i64,
}

/// On PostgreSQL, takes the session advisory lock of `workflow`'s cron ticks:
/// one daemon runs a tick, the others see the lock taken (and, after it is
/// released, the tick recorded). A daemon that dies mid-tick loses its
/// session and the lock with it. `None` when another daemon holds it.
pub async fn try_lock_tick(store: &Store, workflow: &str) -> sqlx::Result<Option<TickLock>> {
    let mut conn = store.db().acquire().await?;
    let key = tick_lock_key(workflow);
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(got.then_some(TickLock { conn, key }))
}

impl TickLock {
    pub async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *self.conn)
            .await;
        if unlocked.is_err() {
            // Never hand a connection that may still hold the lock back to the pool.
            let _ = self.conn.detach();
        }
    }
}

/// What is left in the store, for `--until-idle`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leftover {
    pub pending_log: i64,
    pub active: i64,
    pub active_due: i64,
    pub next_active: Option<i64>,
    pub queued: i64,
    pub queued_due: i64,
    pub next_queued: Option<i64>,
}

/// What is left at `now` (ms) after cursor `cursor`.
pub async fn leftover(store: &Store, cursor: &str, now: i64) -> sqlx::Result<Leftover> {
    let row: (i64, i64, i64, Option<i64>, i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM event_log WHERE seq > coalesce((SELECT position FROM cursors WHERE name = $1), 0)),
                (SELECT count(*) FROM enrollments WHERE status = 'active'),
                (SELECT count(*) FROM enrollments WHERE status = 'active' AND next_run_at <= $2),
                (SELECT min(next_run_at) FROM enrollments WHERE status = 'active'),
                (SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')),
                (SELECT count(*) FROM outbox WHERE status = 'sending' OR (status = 'queued' AND next_attempt_at <= $2 AND not_before <= $2)),
                (SELECT min(CASE WHEN next_attempt_at > not_before THEN next_attempt_at ELSE not_before END) FROM outbox WHERE status = 'queued')",
    )
    .bind(cursor)
    .bind(now)
    .fetch_one(store.db())
    .await?;
    Ok(Leftover {
        pending_log: row.0,
        active: row.1,
        active_due: row.2,
        next_active: row.3,
        queued: row.4,
        queued_due: row.5,
        next_queued: row.6,
    })
}

/// What [`leftover`] would find, as yes or no: anything at all, anything
/// due at `now` (ms). Each part stops at its first row, where the counts
/// read the whole outbox: `--until-idle` asks after every idle pass.
pub async fn anything_left(store: &Store, cursor: &str, now: i64) -> sqlx::Result<(bool, bool)> {
    let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM event_log WHERE seq > coalesce((SELECT position FROM cursors WHERE name = $1), 0) LIMIT 1) l),
                (SELECT count(*) FROM (SELECT 1 FROM enrollments WHERE status = 'active' LIMIT 1) a),
                (SELECT count(*) FROM (SELECT 1 FROM enrollments WHERE status = 'active' AND next_run_at <= $2 LIMIT 1) d),
                (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE status IN ('queued', 'sending') LIMIT 1) q),
                (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE status = 'sending' OR (status = 'queued' AND next_attempt_at <= $2 AND not_before <= $2) LIMIT 1) n)",
    )
    .bind(cursor)
    .bind(now)
    .fetch_one(store.db())
    .await?;
    let log = row.0 > 0;
    Ok((log || row.1 > 0 || row.3 > 0, log || row.2 > 0 || row.4 > 0))
}

/// When the next active enrollment is due, ms. A row leased to another
/// daemon is due for us only when its lease ends.
pub async fn next_enrollment_due(store: &Store) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT min(CASE WHEN lease_until > next_run_at THEN lease_until ELSE next_run_at END)
           FROM enrollments WHERE status = 'active'",
    )
    .fetch_one(store.db())
    .await
}

/// Where the store stands, for a dry-run that continues from it: the last
/// event-log sequence, the last enrollment id and each workflow's last tick.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    pub max_seq: Option<i64>,
    pub max_enrollment_id: Option<i64>,
    pub ticks: Vec<(String, i64)>,
}

pub async fn marks(store: &Store) -> sqlx::Result<Marks> {
    let pool = store.db();
    let max_seq: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM event_log")
        .fetch_one(pool)
        .await?;
    let max_enrollment_id: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM enrollments")
        .fetch_one(pool)
        .await?;
    let ticks = sqlx::query_as::<_, (String, i64)>(
        "SELECT workflow, max(tick_at) FROM cron_ticks GROUP BY workflow",
    )
    .fetch_all(pool)
    .await?;
    Ok(Marks {
        max_seq,
        max_enrollment_id,
        ticks,
    })
}

/// The first time after `after` (ms) an active enrollment is due.
pub async fn next_enrollment_due_after(store: &Store, after: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT min(next_run_at) FROM enrollments WHERE status = 'active' AND next_run_at > $1",
    )
    .bind(after)
    .fetch_one(store.db())
    .await
}
