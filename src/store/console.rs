//! The console's reads (`crate::console::data` shapes them into JSON):
//! per-step counts of a workflow, daily series, delivery per channel and the
//! contact search.

use sqlx::AnyPool;

/// (step, action, records) of `workflow`'s step records.
pub async fn step_actions(
    pool: &AnyPool,
    workflow: &str,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT s.step_id, s.action, count(*) FROM enrollment_steps s \
           JOIN enrollments e ON e.id = s.enrollment_id WHERE e.workflow = $1 \
          GROUP BY s.step_id, s.action",
    )
    .bind(workflow)
    .fetch_all(pool)
    .await
}

/// (step, detail, records) of `workflow`'s skipped steps.
pub async fn skips(
    pool: &AnyPool,
    workflow: &str,
) -> sqlx::Result<Vec<(String, Option<String>, i64)>> {
    sqlx::query_as(
        "SELECT s.step_id, s.detail, count(*) FROM enrollment_steps s \
           JOIN enrollments e ON e.id = s.enrollment_id \
          WHERE e.workflow = $1 AND s.action = 'skip' GROUP BY s.step_id, s.detail",
    )
    .bind(workflow)
    .fetch_all(pool)
    .await
}

/// (step, outbox status, messages) of `workflow`.
pub async fn messages_by_step(
    pool: &AnyPool,
    workflow: &str,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT step_id, status, count(*) FROM outbox WHERE workflow = $1 GROUP BY step_id, status",
    )
    .bind(workflow)
    .fetch_all(pool)
    .await
}

/// (step, status, end reason, enrollments) of `workflow`.
pub async fn enrollments_by_step(
    pool: &AnyPool,
    workflow: &str,
) -> sqlx::Result<Vec<(Option<String>, String, Option<String>, i64)>> {
    sqlx::query_as(
        "SELECT step_id, status, end_reason, count(*) FROM enrollments WHERE workflow = $1 \
          GROUP BY step_id, status, end_reason",
    )
    .bind(workflow)
    .fetch_all(pool)
    .await
}

/// A daily series of the console's report.
#[derive(Debug, Clone, Copy)]
pub enum Daily {
    /// Enrollments started.
    Entered,
    /// Messages sent.
    Sent,
    /// Enrollments ended on their goal.
    Converted,
}

/// (workflow, day number, count) of `series` since `since` (ms), days counted
/// from the epoch in a zone `offset_ms` from UTC.
pub async fn daily(
    pool: &AnyPool,
    series: Daily,
    offset_ms: i64,
    since: i64,
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    let sql = match series {
        Daily::Entered => {
            "SELECT workflow, (started_at + $1) / 86400000, count(*) FROM enrollments \
              WHERE started_at >= $2 GROUP BY 1, 2"
        }
        Daily::Sent => {
            "SELECT workflow, (sent_at + $1) / 86400000, count(*) FROM outbox \
              WHERE status = 'sent' AND sent_at >= $2 GROUP BY 1, 2"
        }
        Daily::Converted => {
            "SELECT workflow, (ended_at + $1) / 86400000, count(*) FROM enrollments \
              WHERE end_reason = 'goal_reached' AND ended_at >= $2 GROUP BY 1, 2"
        }
    };
    sqlx::query_as(sql)
        .bind(offset_ms)
        .bind(since)
        .fetch_all(pool)
        .await
}

/// Delivery of one channel, from the outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelTotals {
    pub channel: String,
    pub sent: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub queued: i64,
    /// Tries after the first.
    pub retried: i64,
}

pub async fn channel_totals(pool: &AnyPool) -> sqlx::Result<Vec<ChannelTotals>> {
    sqlx::query_as(
        "SELECT channel, count(*) FILTER (WHERE status = 'sent') AS sent, \
                count(*) FILTER (WHERE status = 'dead') AS dead, \
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled, \
                count(*) FILTER (WHERE status IN ('queued', 'sending')) AS queued, \
                CAST(coalesce(sum(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), 0) AS BIGINT) AS retried \
           FROM outbox GROUP BY channel",
    )
    .fetch_all(pool)
    .await
}

/// A contact found by [`search_contacts`]: (id, name, phone, email, owner).
pub type Found = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Contacts whose id is `text` or starts with it, or whose name, phone or
/// e-mail contains it; the exact id first, at most `limit`.
pub async fn search_contacts(pool: &AnyPool, text: &str, limit: i64) -> sqlx::Result<Vec<Found>> {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let like = format!("%{escaped}%");
    let prefix = format!("{escaped}%");
    sqlx::query_as(
        "SELECT id, name, phone, email, owner FROM contacts \
          WHERE id = $1 OR id LIKE $2 ESCAPE '\\' OR name LIKE $3 ESCAPE '\\' \
             OR phone LIKE $3 ESCAPE '\\' OR lower(email) LIKE lower($3) ESCAPE '\\' \
          ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END, id LIMIT $4",
    )
    .bind(text)
    .bind(&prefix)
    .bind(&like)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The console's reads of one store: `store.console().skips(wf)` (issue 12
/// item 1: no raw pool above the store). Each method is the function of
/// the same name in this module.
#[derive(Clone, Copy)]
pub struct ConsoleReads<'a> {
    store: &'a super::Store,
}

impl super::Store {
    /// The console's counts and searches.
    pub fn console(&self) -> ConsoleReads<'_> {
        ConsoleReads { store: self }
    }
}

impl ConsoleReads<'_> {
    pub async fn step_actions(self, workflow: &str) -> sqlx::Result<Vec<(String, String, i64)>> {
        step_actions(self.store.db(), workflow).await
    }

    pub async fn skips(self, workflow: &str) -> sqlx::Result<Vec<(String, Option<String>, i64)>> {
        skips(self.store.db(), workflow).await
    }

    pub async fn messages_by_step(
        self,
        workflow: &str,
    ) -> sqlx::Result<Vec<(String, String, i64)>> {
        messages_by_step(self.store.db(), workflow).await
    }

    pub async fn enrollments_by_step(
        self,
        workflow: &str,
    ) -> sqlx::Result<Vec<(Option<String>, String, Option<String>, i64)>> {
        enrollments_by_step(self.store.db(), workflow).await
    }

    pub async fn daily(
        self,
        series: Daily,
        offset_ms: i64,
        since: i64,
    ) -> sqlx::Result<Vec<(String, i64, i64)>> {
        daily(self.store.db(), series, offset_ms, since).await
    }

    pub async fn channel_totals(self) -> sqlx::Result<Vec<ChannelTotals>> {
        channel_totals(self.store.db()).await
    }

    pub async fn search_contacts(self, text: &str, limit: i64) -> sqlx::Result<Vec<Found>> {
        search_contacts(self.store.db(), text, limit).await
    }
}
