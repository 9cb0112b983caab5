//! Where the event log stands: its last sequence number.

use sqlx::AnyPool;

/// The highest sequence number in the event log (`None`: it is empty).
pub(in crate::store) async fn max_seq(pool: &AnyPool) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT max(seq) FROM event_log")
        .fetch_one(pool)
        .await
}
