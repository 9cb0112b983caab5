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
