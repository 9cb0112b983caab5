//! Reads for reports over time (the console's performance per split arm).

use chrono::{DateTime, Utc};
use sqlx::{AnyPool, Row};

use super::plan_reads::{from_ms, ms};

/// The messages of `workflow`'s enrollments delivered since `since`:
/// (enrollment, when sent).
pub async fn sent_by_enrollment(
    pool: &AnyPool,
    workflow: &str,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<(i64, DateTime<Utc>)>> {
    let rows = sqlx::query(
        "SELECT enrollment_id, sent_at FROM outbox
          WHERE workflow = $1 AND status = 'sent' AND enrollment_id IS NOT NULL AND sent_at >= $2",
    )
    .bind(workflow)
    .bind(ms(since))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<i64, _>(0), from_ms(r.get::<i64, _>(1))))
        .collect())
}
