//! Operator actions on the outbox.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, to_ms};

/// Which dead letters to bring back.
#[derive(Debug, Clone, Default)]
pub struct RequeueFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only messages dead-lettered at or after this time (messages dead
    /// before this version of nurture recorded it count from their creation).
    pub since: Option<DateTime<Utc>>,
}

impl Store {
    /// Puts dead-lettered messages back in the queue, due `now`, with their
    /// attempts and retry clock reset: after a provider outage or a fixed
    /// credential. The same message id (idempotency key) is sent. Consent is
    /// checked again before each send, so an opted-out contact is not
    /// messaged. Returns how many were requeued.
    pub async fn requeue_dead(
        &self,
        filter: &RequeueFilter,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut sql = String::from(
            "UPDATE outbox SET status = 'queued', attempts = 0, first_failed_at = NULL,
                    dead_at = NULL, next_attempt_at = $1,
                    last_error = 'requeued after: ' || coalesce(last_error, '')
              WHERE status = 'dead'",
        );
        let mut n = 1;
        if filter.channel.is_some() {
            n += 1;
            sql.push_str(&format!(" AND channel = ${n}"));
        }
        if filter.since.is_some() {
            n += 1;
            sql.push_str(&format!(" AND coalesce(dead_at, created_at) >= ${n}"));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(to_ms(now));
        if let Some(c) = &filter.channel {
            q = q.bind(c.as_str());
        }
        if let Some(t) = filter.since {
            q = q.bind(to_ms(t));
        }
        Ok(q.execute(self.db()).await?.rows_affected())
    }
}
