//! The reads of `nurture report`, `status --format json`, `/metrics` and
//! the console's performance page (`crate::report` turns them into groups,
//! the funnel and series per day). Everything is counted by the store, set
//! based: a handful of rows come back, not one per enrollment (issue 14: a
//! report over a million enrollments in under 2 s).
//!
//! Placeholders appear in the text in their numbers' order: SQLite numbers
//! `$N` by first appearance, so a `$3` written before `$1` would take the
//! first value bound.

use sqlx::AnyPool;

use super::{Dialect, Store};

/// The funnel's key for a step record: the detail is kept for splits (the
/// arm) and skips (the reason), and is NULL otherwise (a send's detail,
/// "channel → address", differs per contact). The same expression is the
/// fourth column of the `enrollment_steps_funnel` index (migration 0040), so
/// SQLite groups by walking that index instead of sorting.
const KEY: &str = "CASE WHEN s.action IN ('skip', 'split') THEN s.detail END";

/// How the store decides each enrollment's conversion.
pub enum GoalSql<'a> {
    /// No goal: nobody converts.
    None,
    /// The first `event` (any properties) within `within_ms` of the start.
    Event { event: &'a str, within_ms: i64 },
    /// A condition goal: the plan's `goal_reached` exit.
    Exit,
    /// Decided in Rust (a goal on the event's properties, which the SQL
    /// evaluators leave to Rust as the audience scan does): (enrollment,
    /// converted at), of the enrollments counted.
    Decided(&'a [(i64, i64)]),
}

impl GoalSql<'_> {
    /// How many placeholders [`converted_cte`] uses.
    fn binds(&self) -> usize {
        match self {
            GoalSql::None | GoalSql::Exit => 2,
            GoalSql::Event { .. } => 4,
            GoalSql::Decided(_) => 3,
        }
    }
}

/// CTEs `b` (the enrollments of `workflow` since `since`: id, contact,
/// started at) and `conv` (those that converted: id, converted at). Binds:
/// $1 workflow, $2 since, then $3 event and $4 window for an event goal, or
/// $3 the decided pairs as a JSON array of `[id, at]`.
fn converted_cte(dialect: Dialect, goal: &GoalSql<'_>) -> String {
    let b = "b AS (SELECT e.id, e.contact_id, e.started_at FROM enrollments e \
             WHERE e.workflow = $1 AND e.started_at >= $2)";
    let per_enrollment = |conv: &str| {
        format!(
            "conv AS MATERIALIZED (SELECT id, conv_at FROM \
             (SELECT b.id, {conv} AS conv_at FROM b) x WHERE conv_at IS NOT NULL)"
        )
    };
    // An event goal: each enrollment (from `enrollments_by_workflow` alone,
    // which carries the contact) probes `events_by_contact` once, and only
    // the enrollments with a goal event in their window are grouped. (As a
    // scalar subquery per enrollment SQLite evaluated the probe twice, for
    // the value and for `IS NOT NULL`: 35% more CPU. PostgreSQL's per-row
    // subplans cost ~4 µs each: 4 s at a million enrollments, against 0.6 s
    // joined.)
    let conv = match (goal, dialect) {
        (GoalSql::None, _) => per_enrollment("CAST(NULL AS BIGINT)"),
        (GoalSql::Event { .. }, _) => format!(
            "conv AS MATERIALIZED (SELECT b.id, min(ev.at) AS conv_at FROM b {join} events ev \
             ON ev.contact_id = b.contact_id AND ev.name = $3 \
             AND ev.at >= b.started_at AND ev.at <= b.started_at + $4 GROUP BY b.id)",
            join = cross_join(dialect)
        ),
        (GoalSql::Exit, Dialect::Sqlite) => per_enrollment(
            "(SELECT max(x.ran_at) FROM enrollment_steps x WHERE x.enrollment_id = b.id \
             AND x.action = 'exit' AND x.detail = 'goal_reached')",
        ),
        (GoalSql::Exit, Dialect::Postgres) => {
            "conv AS MATERIALIZED (SELECT b.id, max(x.ran_at) AS conv_at FROM b JOIN enrollment_steps x \
             ON x.enrollment_id = b.id AND x.action = 'exit' AND x.detail = 'goal_reached' GROUP BY b.id)"
                .to_string()
        }
        (GoalSql::Decided(_), _) => match dialect {
            Dialect::Sqlite => "conv AS MATERIALIZED (SELECT CAST(json_extract(j.value, '$[0]') AS INTEGER) AS id, \
                 CAST(json_extract(j.value, '$[1]') AS INTEGER) AS conv_at FROM json_each($3) j)"
                .to_string(),
            Dialect::Postgres => "conv AS MATERIALIZED (SELECT (j->>0)::bigint AS id, (j->>1)::bigint AS conv_at \
                 FROM jsonb_array_elements(CAST($3 AS TEXT)::jsonb) j)"
                .to_string(),
        },
    };
    format!("WITH {b}, {conv}")
}

/// `CROSS JOIN` on SQLite, which keeps the left table outside (the order
/// the query is written for); a plain join on PostgreSQL, which has no such
/// `CROSS JOIN … ON` and plans its own order.
fn cross_join(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "CROSS JOIN",
        Dialect::Postgres => "JOIN",
    }
}

/// How much of a SQLite file a report read maps into memory (`PRAGMA
/// mmap_size`): the three reads run at once on three connections, and
/// through read(2) each copied the pages it touched into its own cache
/// (about 0.3 s of system time over a million enrollments); mapped, they
/// read the one copy in the OS page cache. Beyond this size the rest of
/// the file is read as before.
const MMAP_BYTES: i64 = 1 << 32;

/// Runs a report read. On SQLite with the file mapped ([`MMAP_BYTES`]), set
/// back to SQLite's default (no map) before the connection returns to the
/// pool: the rest of the store reads as it always has (a mapped file turns
/// an I/O error into a signal, which a short read can accept). On
/// PostgreSQL without JIT, as every session of the store
/// ([`super::PG_SESSION_SETTINGS`]): compiling these aggregates took about
/// 1 s of a report over a million enrollments, more than it saved.
async fn fetch<'q, O>(pool: &AnyPool, dialect: Dialect, q: Query<'q, O>) -> sqlx::Result<Vec<O>>
where
    O: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
{
    match dialect {
        Dialect::Sqlite => {
            let mut c = Mapped {
                conn: pool.acquire().await?,
                undone: false,
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA mmap_size = {MMAP_BYTES}"
            )))
            .execute(&mut *c.conn)
            .await?;
            let rows = q.fetch_all(&mut *c.conn).await?;
            sqlx::query("PRAGMA mmap_size = 0")
                .execute(&mut *c.conn)
                .await?;
            c.undone = true;
            Ok(rows)
        }
        Dialect::Postgres => q.fetch_all(pool).await,
    }
}

/// A SQLite connection whose file may be mapped: it goes back to the pool
/// only once the map is undone; otherwise (an error, or the read dropped
/// half way) it is closed.
struct Mapped {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    undone: bool,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if !self.undone {
            self.conn.close_on_drop();
        }
    }
}

type Query<'q, O> = sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments>;

fn bind_goal<'q, O>(q: Query<'q, O>, goal: &GoalSql<'q>) -> Query<'q, O> {
    match goal {
        GoalSql::Event { event, within_ms } => q.bind(*event).bind(*within_ms),
        GoalSql::Decided(pairs) => q.bind(serde_json::to_string(pairs).expect("pairs serialise")),
        GoalSql::None | GoalSql::Exit => q,
    }
}

/// A funnel row: (step, action, arm or skip reason, how many step records)
/// of the enrollments counted.
pub type StepCount = (String, String, Option<String>, i64);

/// The step records of `workflow`'s enrollments started at or after
/// `since`, counted per (step, action, [`KEY`]): one range of
/// `enrollment_steps_funnel` (migration 0040: each record carries its
/// enrollment's workflow and start), walked in order, so SQLite groups
/// without sorting and looks no enrollment up.
async fn funnel(
    pool: &AnyPool,
    dialect: Dialect,
    workflow: &str,
    since: i64,
) -> sqlx::Result<Vec<StepCount>> {
    let sql = format!(
        "SELECT s.step_id, s.action, {KEY}, count(*) FROM enrollment_steps s \
          WHERE s.workflow = $1 AND s.started_at >= $2 \
          GROUP BY s.step_id, s.action, {KEY}"
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(workflow)
        .bind(since);
    fetch(pool, dialect, q).await
}

/// A conversion row: (step, action, [`KEY`], how many of the enrollments
/// with such a record converted, how many converted at or after it ran).
/// The first row is every enrollment (step and action `""`): (entered,
/// converted) in the last two columns.
pub type ConvCount = (String, String, Option<String>, i64, i64);

/// Entered and converted, and the converted per step record kind. Only the
/// converted enrollments' step records are read.
async fn conversions(
    pool: &AnyPool,
    dialect: Dialect,
    workflow: &str,
    since: i64,
    goal: &GoalSql<'_>,
) -> sqlx::Result<Vec<ConvCount>> {
    // SQLite: the converted enrollments outside, each one's records by the
    // primary key (left to itself, SQLite walks the funnel index instead).
    let join = cross_join(dialect);
    let sql = format!(
        "{} SELECT '', '', CAST(NULL AS TEXT), \
         (SELECT count(*) FROM enrollments e WHERE e.workflow = $1 AND e.started_at >= $2), \
         (SELECT count(*) FROM conv) \
         UNION ALL \
         SELECT s.step_id, s.action, {KEY}, count(*), \
                CAST(coalesce(sum(CASE WHEN conv.conv_at >= s.ran_at THEN 1 ELSE 0 END), 0) AS BIGINT) \
           FROM conv {join} enrollment_steps s ON s.enrollment_id = conv.id \
          GROUP BY s.step_id, s.action, {KEY}",
        converted_cte(dialect, goal)
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(workflow)
        .bind(since);
    fetch(pool, dialect, bind_goal(q, goal)).await
}

/// Per step: the sent messages of those enrollments. (A message's step
/// record is the one that queued it: the record's key is (enrollment,
/// step), so it is never an exit.)
async fn sent(
    pool: &AnyPool,
    dialect: Dialect,
    workflow: &str,
    since: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    // The partial index `outbox_sent_by_workflow` in (step) order, each
    // enrollment looked up by its id.
    let join = cross_join(dialect);
    let sql = format!(
        "SELECT o.step_id, count(*) FROM outbox o {join} enrollments e ON e.id = o.enrollment_id \
          WHERE o.workflow = $1 AND o.status = 'sent' \
            AND e.workflow = $1 AND e.started_at >= $2 \
          GROUP BY o.step_id"
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(workflow)
        .bind(since);
    fetch(pool, dialect, q).await
}

/// For a goal on an event's properties: the goal events within each
/// enrollment's window, (enrollment, at, properties), by enrollment and
/// time. Rust keeps the first whose properties pass.
async fn goal_candidates(
    pool: &AnyPool,
    workflow: &str,
    since: i64,
    event: &str,
    within_ms: i64,
) -> sqlx::Result<Vec<(i64, i64, Option<String>)>> {
    sqlx::query_as(
        "WITH b AS (SELECT e.id, e.contact_id, e.started_at FROM enrollments e
                     WHERE e.workflow = $1 AND e.started_at >= $2)
         SELECT b.id, ev.at, ev.properties FROM b JOIN events ev
             ON ev.contact_id = b.contact_id AND ev.name = $3
            AND ev.at >= b.started_at AND ev.at <= b.started_at + $4
          ORDER BY b.id, ev.at",
    )
    .bind(workflow)
    .bind(since)
    .bind(event)
    .bind(within_ms)
    .fetch_all(pool)
    .await
}

/// What a [`daily`] row counts.
pub const ENTERED: &str = "entered";
pub const CONVERTED: &str = "converted";
pub const SENT: &str = "sent";

/// A row of [`daily`]: (what, day number, split step or `""` for every
/// enrollment, arm, how many). Day numbers are days since the epoch in
/// local time, `offset_ms` from UTC.
pub type DayCount = (String, i64, String, Option<String>, i64);

/// Per day: the enrollments started, converted, and their messages sent
/// (at or after `sent_since`), for every enrollment and per split arm.
async fn daily(
    pool: &AnyPool,
    dialect: Dialect,
    workflow: &str,
    since: i64,
    goal: &GoalSql<'_>,
    offset_ms: i64,
    sent_since: i64,
) -> sqlx::Result<Vec<DayCount>> {
    let (off, from) = (goal.binds() + 1, goal.binds() + 2);
    let day = |col: &str| format!("CAST(({col} + k.off) / 86400000 AS BIGINT)");
    let sql = format!(
        "{cte}, \
         k AS (SELECT CAST(${off} AS BIGINT) AS off, CAST(${from} AS BIGINT) AS sent_since), \
         arm AS (SELECT s.enrollment_id AS id, s.step_id, s.detail FROM b \
                   JOIN enrollment_steps s ON s.enrollment_id = b.id AND s.action = 'split'), \
         sent AS (SELECT o.enrollment_id AS id, o.sent_at FROM outbox o JOIN b ON b.id = o.enrollment_id \
                   CROSS JOIN k WHERE o.workflow = $1 AND o.status = 'sent' AND o.sent_at >= k.sent_since) \
         SELECT '{ENTERED}', {d_b}, '', CAST(NULL AS TEXT), count(*) FROM b CROSS JOIN k GROUP BY 2 \
         UNION ALL SELECT '{ENTERED}', {d_b}, arm.step_id, arm.detail, count(*) \
           FROM b JOIN arm ON arm.id = b.id CROSS JOIN k GROUP BY 2, 3, 4 \
         UNION ALL SELECT '{CONVERTED}', {d_c}, '', NULL, count(*) FROM conv CROSS JOIN k GROUP BY 2 \
         UNION ALL SELECT '{CONVERTED}', {d_c}, arm.step_id, arm.detail, count(*) \
           FROM conv JOIN arm ON arm.id = conv.id CROSS JOIN k GROUP BY 2, 3, 4 \
         UNION ALL SELECT '{SENT}', {d_s}, '', NULL, count(*) FROM sent CROSS JOIN k GROUP BY 2 \
         UNION ALL SELECT '{SENT}', {d_s}, arm.step_id, arm.detail, count(*) \
           FROM sent JOIN arm ON arm.id = sent.id CROSS JOIN k GROUP BY 2, 3, 4",
        cte = converted_cte(dialect, goal),
        d_b = day("b.started_at"),
        d_c = day("conv.conv_at"),
        d_s = day("sent.sent_at"),
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(workflow)
        .bind(since);
    let q = bind_goal(q, goal).bind(offset_ms).bind(sent_since);
    fetch(pool, dialect, q).await
}

/// What [`Store::report_counts`] returns: the funnel, the conversions and
/// the sent messages of one workflow's enrollments.
#[derive(Debug, Default)]
pub struct ReportCounts {
    pub steps: Vec<StepCount>,
    pub conversions: Vec<ConvCount>,
    pub sent: Vec<(String, i64)>,
}

impl Store {
    /// The counts behind `nurture report WORKFLOW`, of the enrollments
    /// started at or after `since` (ms): three independent reads, run at
    /// once on three connections of the pool.
    pub async fn report_counts(
        &self,
        workflow: &str,
        since: i64,
        goal: &GoalSql<'_>,
    ) -> sqlx::Result<ReportCounts> {
        let (pool, dialect) = (self.db(), self.dialect());
        let (steps, conversions, sent) = tokio::try_join!(
            funnel(pool, dialect, workflow, since),
            conversions(pool, dialect, workflow, since, goal),
            sent(pool, dialect, workflow, since),
        )?;
        Ok(ReportCounts {
            steps,
            conversions,
            sent,
        })
    }

    /// For a goal on an event's properties: the goal events within each
    /// enrollment's window, (enrollment, at, properties), by enrollment and
    /// time.
    pub async fn report_goal_candidates(
        &self,
        workflow: &str,
        since: i64,
        event: &str,
        within_ms: i64,
    ) -> sqlx::Result<Vec<(i64, i64, Option<String>)>> {
        goal_candidates(self.db(), workflow, since, event, within_ms).await
    }

    /// Per day (local days, `offset_ms` from UTC): the enrollments started,
    /// converted, and their messages sent at or after `sent_since`, for
    /// every enrollment and per split arm.
    pub async fn report_daily(
        &self,
        workflow: &str,
        since: i64,
        goal: &GoalSql<'_>,
        offset_ms: i64,
        sent_since: i64,
    ) -> sqlx::Result<Vec<DayCount>> {
        daily(
            self.db(),
            self.dialect(),
            workflow,
            since,
            goal,
            offset_ms,
            sent_since,
        )
        .await
    }
}
