//! What the WeCom channel keeps in the store: welcome codes it takes (table
//! `wecom_welcome_codes`, migration 0003) and the tasks whose outcome it
//! polls (table `wecom_tasks`, migration 0004).

use sqlx::{Row, SqlitePool};

/// A welcome code is good for 20 s after WeCom's callback (reference §1.3).
pub const WELCOME_CODE_TTL_MS: i64 = 20_000;

/// Takes the contact's welcome code if it is fresh and unused, marking it
/// used in the same statement, so two sends can never both use one code.
pub async fn take_welcome_code(
    pool: &SqlitePool,
    contact_id: &str,
    now_ms: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE wecom_welcome_codes SET used_at = $1
          WHERE contact_id = $2 AND used_at IS NULL AND received_at >= $3
         RETURNING welcome_code",
    )
    .bind(now_ms)
    .bind(contact_id)
    .bind(now_ms - WELCOME_CODE_TTL_MS)
    .fetch_optional(pool)
    .await
}

/// Gives a code back after WeCom answered "busy" (the retry may still be
/// inside its 20 s).
pub async fn release_welcome_code(
    pool: &SqlitePool,
    contact_id: &str,
    code: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE wecom_welcome_codes SET used_at = NULL WHERE contact_id = $1 AND welcome_code = $2",
    )
    .bind(contact_id)
    .bind(code)
    .execute(pool)
    .await?;
    Ok(())
}

/// A task to poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub message_id: String,
    pub channel: String,
    /// `mass` or `transfer`.
    pub kind: String,
    pub contact_id: String,
    pub external_userid: String,
    /// The sender (mass) or the handover member (transfer).
    pub userid: String,
    pub takeover_userid: Option<String>,
    pub msgid: Option<String>,
    pub created_at: i64,
    pub checks: i64,
}

/// Records a task WeCom accepted; a replay of the same message keeps the
/// first record.
pub async fn record(pool: &SqlitePool, t: &Task, first_check_at: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO wecom_tasks (message_id, channel, kind, contact_id, external_userid, userid,
                                  takeover_userid, msgid, status, created_at, checks, next_check_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, 0, $10)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&t.message_id)
    .bind(&t.channel)
    .bind(&t.kind)
    .bind(&t.contact_id)
    .bind(&t.external_userid)
    .bind(&t.userid)
    .bind(&t.takeover_userid)
    .bind(&t.msgid)
    .bind(t.created_at)
    .bind(first_check_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The channel's pending tasks due at `now_ms`, oldest check first.
pub async fn due(
    pool: &SqlitePool,
    channel: &str,
    now_ms: i64,
    limit: i64,
) -> sqlx::Result<Vec<Task>> {
    let rows = sqlx::query(
        "SELECT message_id, channel, kind, contact_id, external_userid, userid, takeover_userid,
                msgid, created_at, checks
           FROM wecom_tasks
          WHERE status = 'pending' AND channel = $1 AND next_check_at <= $2
            -- Not before the delivery worker wrote the outbox row `sent`: the
            -- outcome note goes on that row, and the worker's write clears it.
            AND NOT EXISTS (SELECT 1 FROM outbox o
                             WHERE o.id = wecom_tasks.message_id AND o.status <> 'sent')
          ORDER BY next_check_at LIMIT $3",
    )
    .bind(channel)
    .bind(now_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Task {
                message_id: r.try_get(0)?,
                channel: r.try_get(1)?,
                kind: r.try_get(2)?,
                contact_id: r.try_get(3)?,
                external_userid: r.try_get(4)?,
                userid: r.try_get(5)?,
                takeover_userid: r.try_get(6)?,
                msgid: r.try_get(7)?,
                created_at: r.try_get(8)?,
                checks: r.try_get(9)?,
            })
        })
        .collect()
}

/// Still waiting: look again at `next_check_at`.
pub async fn postpone(
    pool: &SqlitePool,
    message_id: &str,
    next_check_at: i64,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE wecom_tasks SET checks = checks + 1, next_check_at = $1, detail = coalesce($2, detail)
          WHERE message_id = $3 AND status = 'pending'",
    )
    .bind(next_check_at)
    .bind(detail)
    .bind(message_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The task's outcome. `note` also goes on the outbox row (its `last_error`,
/// the status stays `sent`), where `nurture history --contact` shows it.
pub async fn finish(
    pool: &SqlitePool,
    message_id: &str,
    status: &str,
    provider_status: Option<i64>,
    note: &str,
    now_ms: i64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE wecom_tasks SET status = $1, provider_status = $2, detail = $3, finished_at = $4,
                checks = checks + 1
          WHERE message_id = $5 AND status = 'pending'",
    )
    .bind(status)
    .bind(provider_status)
    .bind(note)
    .bind(now_ms)
    .bind(message_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE outbox SET last_error = $1 WHERE id = $2 AND status = 'sent'")
        .bind(note)
        .bind(message_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
