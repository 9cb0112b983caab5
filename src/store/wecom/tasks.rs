//! What the WeCom channel keeps in the store: welcome codes it takes (table
//! `wecom_welcome_codes`, migration 0003), the tasks whose outcome it
//! polls (table `wecom_tasks`, migration 0004) and the reminders it sent.

use sqlx::{AnyPool, Row};

use crate::store::Dialect;
use crate::store::states::{OutboxStatus, WecomTaskKind, WecomTaskStatus};

/// A welcome code is good for 20 s after WeCom's callback (reference §1.3).
pub const WELCOME_CODE_TTL_MS: i64 = 20_000;

/// Takes the contact's welcome code if it is fresh and unused, marking it
/// used (by outbox message `message_id`) in the same statement, so two
/// sends can never both use one code.
pub async fn take_welcome_code(
    pool: &AnyPool,
    contact_id: &str,
    message_id: &str,
    now_ms: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE wecom_welcome_codes SET used_at = $1, used_by = $4
          WHERE contact_id = $2 AND used_at IS NULL AND received_at >= $3
         RETURNING welcome_code",
    )
    .bind(now_ms)
    .bind(contact_id)
    .bind(now_ms - WELCOME_CODE_TTL_MS)
    .bind(message_id)
    .fetch_optional(pool)
    .await
}

/// Gives a code back after WeCom answered "busy" (the retry may still be
/// inside its 20 s).
pub async fn release_welcome_code(
    pool: &AnyPool,
    contact_id: &str,
    code: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE wecom_welcome_codes SET used_at = NULL, used_by = NULL
          WHERE contact_id = $1 AND welcome_code = $2",
    )
    .bind(contact_id)
    .bind(code)
    .execute(pool)
    .await?;
    Ok(())
}

/// WeCom refused the code outright (41050: invalid, expired or used
/// elsewhere): no welcome went out, so the message that took it is no
/// longer in doubt about one (the code stays used).
pub async fn welcome_code_refused(
    pool: &AnyPool,
    contact_id: &str,
    code: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE wecom_welcome_codes SET used_by = NULL WHERE contact_id = $1 AND welcome_code = $2",
    )
    .bind(contact_id)
    .bind(code)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether outbox message `message_id` took its contact's welcome code and
/// did not give it back: its `send_welcome_msg` may have reached WeCom.
pub async fn welcome_taken_by(
    pool: &AnyPool,
    contact_id: &str,
    message_id: &str,
) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wecom_welcome_codes
          WHERE contact_id = $1 AND used_by = $2 AND used_at IS NOT NULL",
    )
    .bind(contact_id)
    .bind(message_id)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// A task to poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub message_id: String,
    pub channel: String,
    pub kind: WecomTaskKind,
    pub contact_id: String,
    pub external_userid: String,
    /// The sender (mass) or the handover member (transfer).
    pub userid: String,
    pub takeover_userid: Option<String>,
    pub msgid: Option<String>,
    /// Mass tasks only: why the message went out from someone other than the
    /// contact's salesperson (see `channels::wecom::sender`), e.g. "sent from lilei:
    /// transfer to wangfang pending". Kept in `detail` until the outcome,
    /// whose note then carries it on.
    pub note: Option<String>,
    pub created_at: i64,
    pub checks: i64,
}

/// Records a task WeCom accepted; a replay of the same message keeps the
/// first record.
pub async fn record(pool: &AnyPool, t: &Task, first_check_at: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO wecom_tasks (message_id, channel, kind, contact_id, external_userid, userid,
                                  takeover_userid, msgid, detail, status, created_at, checks,
                                  next_check_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, 0, $11)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&t.message_id)
    .bind(&t.channel)
    .bind(t.kind)
    .bind(&t.contact_id)
    .bind(&t.external_userid)
    .bind(&t.userid)
    .bind(&t.takeover_userid)
    .bind(&t.msgid)
    .bind(&t.note)
    .bind(t.created_at)
    .bind(first_check_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Claims up to `limit` of the channel's pending tasks due at `now_ms`,
/// oldest check first, by pushing their `next_check_at` to `lease_until`.
/// Several daemons may share one store: a claimed task is no longer due for
/// the others, so only one of them asks WeCom about it (on PostgreSQL, `SKIP
/// LOCKED` also passes over rows another daemon is claiming right now; SQLite
/// has one writer). The poller's outcome write ([`postpone`] or [`finish`])
/// then sets the real next check; a daemon that dies mid-batch leaves its
/// claims to come due again when the lease ends. One statement, so the claim
/// is one short transaction.
pub async fn claim(
    pool: &AnyPool,
    dialect: Dialect,
    channel: &str,
    now_ms: i64,
    lease_until: i64,
    limit: i64,
) -> sqlx::Result<Vec<Task>> {
    let sql = crate::store::claim::Claim {
        table: "wecom_tasks",
        key: "message_id",
        lease: "next_check_at = $1",
        due: "status = 'pending' AND channel = $2 AND next_check_at <= $3
                   -- Not before the delivery worker wrote the outbox row `sent`: the
                   -- outcome note goes on that row, and the worker's write clears it.
                   AND NOT EXISTS (SELECT 1 FROM outbox o
                                    WHERE o.id = wecom_tasks.message_id AND o.status <> 'sent')",
        order: "next_check_at, message_id",
        limit: "$4",
        returning: "message_id, channel, kind, contact_id, external_userid, userid,
                   takeover_userid, msgid, created_at, checks,
                   -- A transfer's `detail` is only what the last look saw.
                   CASE WHEN kind = 'mass' THEN detail END",
    }
    .sql(dialect);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(lease_until)
        .bind(channel)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut tasks = rows
        .into_iter()
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
                note: r.try_get(10)?,
            })
        })
        .collect::<sqlx::Result<Vec<Task>>>()?;
    // RETURNING gives no order (and the old `next_check_at` is gone): the
    // oldest task first is close enough.
    tasks.sort_by_key(|t| t.created_at);
    Ok(tasks)
}

/// The contact's latest WeCom transfer on `channel` (an outbox row with a
/// `transfer` payload, queued by an `assign`), with how far it got: the outbox
/// status says whether `transfer_customer` was called, the task row what
/// `transfer_result` said since. The channel picks a mass message's sender
/// from it (`channels::wecom::sender`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatestTransfer {
    pub handover_userid: Option<String>,
    pub takeover_userid: Option<String>,
    pub outbox_status: OutboxStatus,
    /// The task's status; `None` when no task was recorded (the call was
    /// not made or its record failed).
    pub task_status: Option<WecomTaskStatus>,
    pub provider_status: Option<i64>,
}

pub async fn latest_transfer(
    pool: &AnyPool,
    channel: &str,
    contact_id: &str,
) -> sqlx::Result<Option<LatestTransfer>> {
    let row = sqlx::query(
        "SELECT o.payload, o.status, t.status, t.provider_status
           FROM outbox o LEFT JOIN wecom_tasks t ON t.message_id = o.id
          WHERE o.contact_id = $1 AND o.channel = $2 AND o.kind = 'transfer'
          ORDER BY o.created_at DESC, o.id DESC LIMIT 1",
    )
    .bind(contact_id)
    .bind(channel)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let payload: String = r.try_get(0)?;
    // A payload that does not parse leaves both members unknown, and the
    // sender falls back to the salesperson.
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
    let member = |k: &str| payload.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(Some(LatestTransfer {
        handover_userid: member("handover_userid"),
        takeover_userid: member("takeover_userid"),
        outbox_status: r.try_get(1)?,
        task_status: r.try_get(2)?,
        provider_status: r.try_get(3)?,
    }))
}

/// Still waiting: look again at `next_check_at`.
pub async fn postpone(
    pool: &AnyPool,
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

/// The event a task's outcome logs on its contact, so workflows can
/// trigger on it (`event: { name: wecom_task_sent }`) or branch on it
/// (`if: { event: wecom_task_not_friend, within: 3d }`).
pub fn outcome_event(kind: WecomTaskKind, status: WecomTaskStatus) -> Option<&'static str> {
    use WecomTaskStatus as S;
    let transfer = kind.is_transfer();
    Some(match (transfer, status) {
        (false, S::Sent) => "wecom_task_sent",
        (false, S::NotFriend) => "wecom_task_not_friend",
        (false, S::OverCap) => "wecom_task_over_cap",
        (false, S::Expired) => "wecom_task_expired",
        (true, S::Done) => "wecom_transfer_done",
        (true, S::Refused) => "wecom_transfer_refused",
        (true, S::TakeoverLimit) => "wecom_transfer_takeover_limit",
        (true, S::NoRecord) => "wecom_transfer_no_record",
        (true, S::Expired) => "wecom_transfer_expired",
        _ => return None,
    })
}

/// The task's outcome. `note` also goes on the outbox row (its `last_error`,
/// the status stays `sent`), where `nurture history --contact` shows it. The
/// first write of an outcome also logs its event ([`outcome_event`]) on the
/// contact, in the same transaction, with the workflow and step that sent
/// the message, the members, WeCom's status and the note as properties.
pub async fn finish(
    pool: &AnyPool,
    dialect: Dialect,
    task: &Task,
    status: WecomTaskStatus,
    provider_status: Option<i64>,
    note: &str,
    now_ms: i64,
) -> sqlx::Result<()> {
    let message_id = task.message_id.as_str();
    let mut tx = pool.begin().await?;
    let written = sqlx::query(
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
    .await?
    .rows_affected();
    sqlx::query("UPDATE outbox SET last_error = $1 WHERE id = $2 AND status = 'sent'")
        .bind(note)
        .bind(message_id)
        .execute(&mut *tx)
        .await?;
    if let (1, Some(name)) = (written, outcome_event(task.kind, status)) {
        let origin = sqlx::query("SELECT workflow, step_id FROM outbox WHERE id = $1")
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?;
        let (workflow, step): (Option<String>, Option<String>) = match origin {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => (None, None),
        };
        let mut props = serde_json::json!({
            "message_id": message_id,
            "workflow": workflow,
            "step": step,
            "channel": task.channel,
            "status": status,
            "provider_status": provider_status,
            "note": note,
        });
        if task.kind == WecomTaskKind::Mass {
            props["sender"] = task.userid.clone().into();
            props["msgid"] = task.msgid.clone().into();
        } else {
            props["handover_userid"] = task.userid.clone().into();
            props["takeover_userid"] = task.takeover_userid.clone().into();
            props["resigned"] = (task.kind == WecomTaskKind::Resigned).into();
        }
        crate::store::wecom::log_quiet_event(
            &mut tx,
            dialect,
            &task.contact_id,
            name,
            now_ms,
            &props,
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Db(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    }
    tx.commit().await
}

/// When reminders of mass task `msgid` were sent (ms).
pub async fn reminders_sent(pool: &AnyPool, msgid: &str) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("SELECT at FROM wecom_reminders WHERE msgid = $1")
        .bind(msgid)
        .fetch_all(pool)
        .await
}

/// Records a reminder of mass task `msgid` (`errcode` 0 when WeCom took it).
pub async fn record_reminder(
    pool: &AnyPool,
    message_id: &str,
    msgid: &str,
    at: i64,
    errcode: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO wecom_reminders (message_id, msgid, at, errcode) VALUES ($1, $2, $3, $4)",
    )
    .bind(message_id)
    .bind(msgid)
    .bind(at)
    .bind(errcode)
    .execute(pool)
    .await?;
    Ok(())
}

/// When the outbox says notices to `userid` went out on `channel` since
/// `since` (ms).
pub async fn sent_notices(
    pool: &AnyPool,
    channel: &str,
    userid: &str,
    since: i64,
) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT sent_at FROM outbox WHERE channel = $1 AND lower(recipient) = $2
            AND status = 'sent' AND sent_at >= $3 AND kind = 'notice'",
    )
    .bind(channel)
    .bind(userid)
    .bind(since)
    .fetch_all(pool)
    .await
}
