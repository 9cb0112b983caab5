//! What the WeCom channel recorded of a message it already handed to WeCom
//! (table `wecom_tasks`, written right after WeCom accepted an
//! `add_msg_template` or a transfer). A message reclaimed after its worker
//! died mid-call (`outbox.in_doubt`) is looked up here before the call is
//! made again: a recorded task means WeCom has it, and a second call would
//! make a second task for the salesperson to confirm (issue 12, item 10).

use sqlx::AnyPool;

/// A task WeCom accepted for an outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTask {
    /// `mass`, `transfer` or `resigned`.
    pub kind: String,
    /// WeCom's `msgid` of a mass task (none for transfers).
    pub msgid: Option<String>,
}

/// The task recorded for outbox message `message_id`, if any.
pub async fn task_of_message(
    pool: &AnyPool,
    message_id: &str,
) -> sqlx::Result<Option<RecordedTask>> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT kind, msgid FROM wecom_tasks WHERE message_id = $1")
            .bind(message_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(kind, msgid)| RecordedTask { kind, msgid }))
}
