//! The reads of `nurture report` (`crate::report` computes the conversion
//! and the funnel from them).

use sqlx::AnyPool;

/// (id, contact, started at) of `workflow`'s enrollments started at or after `since`.
pub async fn enrollments(
    pool: &AnyPool,
    workflow: &str,
    since: i64,
) -> sqlx::Result<Vec<(i64, String, i64)>> {
    sqlx::query_as(
        "SELECT id, contact_id, started_at FROM enrollments WHERE workflow = $1 AND started_at >= $2",
    )
    .bind(workflow)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// A step record: (enrollment, step, action, detail, ran at).
pub type StepRow = (i64, String, String, Option<String>, i64);

/// The step records of those enrollments.
pub async fn steps(pool: &AnyPool, workflow: &str, since: i64) -> sqlx::Result<Vec<StepRow>> {
    sqlx::query_as(
        "SELECT s.enrollment_id, s.step_id, s.action, s.detail, s.ran_at
           FROM enrollment_steps s JOIN enrollments e ON e.id = s.enrollment_id
          WHERE e.workflow = $1 AND e.started_at >= $2",
    )
    .bind(workflow)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// (contact, at, properties) of the events `event` of those enrollments' contacts.
pub async fn goal_events(
    pool: &AnyPool,
    event: &str,
    workflow: &str,
    since: i64,
) -> sqlx::Result<Vec<(String, i64, Option<String>)>> {
    sqlx::query_as(
        "SELECT ev.contact_id, ev.at, ev.properties FROM events ev
          WHERE ev.name = $1 AND ev.contact_id IN
                (SELECT contact_id FROM enrollments WHERE workflow = $2 AND started_at >= $3)",
    )
    .bind(event)
    .bind(workflow)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// (enrollment, step) of every message of `workflow` sent.
pub async fn sent(pool: &AnyPool, workflow: &str) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as(
        "SELECT enrollment_id, step_id FROM outbox WHERE workflow = $1 AND status = 'sent' AND enrollment_id IS NOT NULL",
    )
    .bind(workflow)
    .fetch_all(pool)
    .await
}

/// How a set-based report decides each enrollment's conversion in SQL.
pub enum GoalSql<'a> {
    /// No goal: nobody converts.
    None,
    /// The first `event` (any properties) within `within_ms` of the start.
    Event { event: &'a str, within_ms: i64 },
    /// A condition goal: the plan's `goal_reached` exit.
    Exit,
}

/// The enrollments of `workflow` since `since` with `conv_at`, the moment
/// each converted (NULL if it did not), as a CTE named `en`. Binds: $1
/// workflow, $2 since, then $3 event and $4 window for an event goal.
fn enrolled_cte(goal: &GoalSql<'_>) -> String {
    let conv = match goal {
        GoalSql::None => "CAST(NULL AS BIGINT)".to_string(),
        GoalSql::Event { .. } => {
            "(SELECT min(ev.at) FROM events ev WHERE ev.contact_id = b.contact_id \
             AND ev.name = $3 AND ev.at >= b.started_at AND ev.at <= b.started_at + $4)"
                .to_string()
        }
        GoalSql::Exit => {
            "(SELECT max(x.ran_at) FROM enrollment_steps x WHERE x.enrollment_id = b.id \
             AND x.action = 'exit' AND x.detail = 'goal_reached')"
                .to_string()
        }
    };
    // The parameters appear in their numbers' order (SQLite numbers `$N`
    // by first appearance).
    format!(
        "WITH b AS (SELECT e.id, e.contact_id, e.started_at FROM enrollments e \
          WHERE e.workflow = $1 AND e.started_at >= $2), \
         en AS MATERIALIZED (SELECT b.id, {conv} AS conv_at FROM b)"
    )
}

fn bind_goal<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments>,
    goal: &GoalSql<'q>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments> {
    match goal {
        GoalSql::Event { event, within_ms } => q.bind(*event).bind(*within_ms),
        _ => q,
    }
}

/// One row of [`counts`]: (step, action, detail, how many, how many of
/// their enrollments converted, how many converted at or after the step
/// ran). The first row is every enrollment (step and action `""`); then one
/// per step record kind, the detail kept for splits (the arm) and skips
/// (the reason).
pub type StepCount = (String, String, Option<String>, i64, i64, i64);

/// The report's numbers counted in SQL in one statement, over the store's
/// rows rather than in memory (issue 14: a report over a million
/// enrollments in under 2 s). Each enrollment's conversion is decided once
/// (`MATERIALIZED`), then joined to its step records.
pub async fn counts(
    pool: &AnyPool,
    workflow: &str,
    since: i64,
    goal: &GoalSql<'_>,
) -> sqlx::Result<Vec<StepCount>> {
    let sql = format!(
        "{} SELECT '', '', CAST(NULL AS TEXT), count(*), count(conv_at), CAST(0 AS BIGINT) FROM en \
         UNION ALL \
         SELECT s.step_id, s.action, CASE WHEN s.action IN ('skip', 'split') THEN s.detail END, \
                count(*), count(en.conv_at), \
                CAST(coalesce(sum(CASE WHEN en.conv_at >= s.ran_at THEN 1 ELSE 0 END), 0) AS BIGINT) \
           FROM en JOIN enrollment_steps s ON s.enrollment_id = en.id \
          GROUP BY s.step_id, s.action, CASE WHEN s.action IN ('skip', 'split') THEN s.detail END",
        enrolled_cte(goal)
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(workflow)
        .bind(since);
    bind_goal(q, goal).fetch_all(pool).await
}

/// Per step: the sent messages of those enrollments' step records (exits
/// left out), as the funnel counts them.
pub async fn sent_counts(
    pool: &AnyPool,
    workflow: &str,
    since: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT o.step_id, count(*) FROM outbox o
           JOIN enrollments e ON e.id = o.enrollment_id
           JOIN enrollment_steps s ON s.enrollment_id = o.enrollment_id AND s.step_id = o.step_id
          WHERE o.workflow = $1 AND o.status = 'sent' AND o.enrollment_id IS NOT NULL
            AND e.workflow = $1 AND e.started_at >= $2 AND s.action <> 'exit'
          GROUP BY o.step_id",
    )
    .bind(workflow)
    .bind(since)
    .fetch_all(pool)
    .await
}
