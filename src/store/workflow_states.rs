//! Per-workflow state the daemon keeps in the store: when each workflow was
//! activated (first loaded by a daemon on this store), and whether the blast
//! guard paused it. See migrations/*/0008_activation.sql.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::plan_reads::{from_ms, ms};

/// One workflow's row.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowState {
    pub activated_at: DateTime<Utc>,
    /// Set while the blast guard holds the workflow: when, and why.
    pub paused: Option<(DateTime<Utc>, String)>,
    /// The guard counts enrollments started at or after this moment.
    pub guard_since: Option<DateTime<Utc>>,
    /// When `entry_existing` enrolled the audience (`None`: not yet).
    pub existing_done_at: Option<DateTime<Utc>>,
}

/// Every workflow's state, by name.
pub(in crate::store) async fn all<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
) -> sqlx::Result<HashMap<String, WorkflowState>> {
    let rows = sqlx::query(
        "SELECT workflow, activated_at, paused_at, paused_reason, guard_since, existing_done_at
           FROM workflow_states",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let paused_at: Option<i64> = r.get(2);
            let reason: Option<String> = r.get(3);
            (
                r.get::<String, _>(0),
                WorkflowState {
                    activated_at: from_ms(r.get(1)),
                    paused: paused_at.map(|t| (from_ms(t), reason.unwrap_or_default())),
                    guard_since: r.get::<Option<i64>, _>(4).map(from_ms),
                    existing_done_at: r.get::<Option<i64>, _>(5).map(from_ms),
                },
            )
        })
        .collect())
}

/// Records `now` as the activation of every workflow in `names` that has
/// none yet; returns the names activated by this call.
pub(in crate::store) async fn activate(
    db: &sqlx::AnyPool,
    names: &[&str],
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    let mut fresh = Vec::new();
    for name in names {
        let n = sqlx::query(
            "INSERT INTO workflow_states (workflow, activated_at) VALUES ($1, $2)
             ON CONFLICT (workflow) DO NOTHING",
        )
        .bind(*name)
        .bind(ms(now))
        .execute(db)
        .await?
        .rows_affected();
        if n == 1 {
            fresh.push(name.to_string());
        }
    }
    Ok(fresh)
}

/// Marks `workflow` paused by the blast guard (inside the transaction that
/// holds its enrollments).
pub(in crate::store) async fn pause(
    tx: &mut sqlx::AnyConnection,
    workflow: &str,
    now: DateTime<Utc>,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO workflow_states (workflow, activated_at, paused_at, paused_reason)
         VALUES ($1, $2, $2, $3)
         ON CONFLICT (workflow) DO UPDATE SET paused_at = excluded.paused_at,
                                              paused_reason = excluded.paused_reason",
    )
    .bind(workflow)
    .bind(ms(now))
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How many enrollments of `workflow` started at or after `since` (held
/// ones included: they will run once resumed).
pub(in crate::store) async fn started_since(
    tx: &mut sqlx::AnyConnection,
    workflow: &str,
    since: DateTime<Utc>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM enrollments WHERE workflow = $1 AND started_at >= $2")
        .bind(workflow)
        .bind(ms(since))
        .fetch_one(&mut *tx)
        .await
}

/// Records that `entry_existing` enrolled `workflow`'s audience.
pub(in crate::store) async fn existing_done(
    db: &sqlx::AnyPool,
    workflow: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE workflow_states SET existing_done_at = $1 WHERE workflow = $2")
        .bind(ms(now))
        .bind(workflow)
        .execute(db)
        .await?;
    Ok(())
}

/// Log entries after `after` that would fire a trigger of `kind` (and
/// `name`, for tags and events) at or after `since`: what the blast guard
/// expects still to come.
pub(in crate::store) async fn pending_firing(
    db: &sqlx::AnyPool,
    after: i64,
    kind: &str,
    name: Option<&str>,
    since: DateTime<Utc>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM event_log WHERE seq > $1 AND kind = $2
            AND (CAST($3 AS TEXT) IS NULL OR name = CAST($3 AS TEXT)) AND at >= $4",
    )
    .bind(after)
    .bind(kind)
    .bind(name)
    .bind(ms(since))
    .fetch_one(db)
    .await
}

/// What `nurture resume` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Whether the workflow was paused.
    pub was_paused: bool,
    /// Held enrollments released to run now.
    pub released: u64,
}

/// Lifts the blast guard's pause: held enrollments become active and due at
/// `now`, and the guard counts afresh from `now`.
pub(in crate::store) async fn resume(
    db: &sqlx::AnyPool,
    dialect: super::Dialect,
    workflow: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Resumed> {
    let mut tx = super::begin(db, dialect).await?;
    let was_paused = sqlx::query(
        "UPDATE workflow_states SET paused_at = NULL, paused_reason = NULL, guard_since = $1
          WHERE workflow = $2 AND paused_at IS NOT NULL",
    )
    .bind(ms(now))
    .bind(workflow)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    let released = sqlx::query(
        "UPDATE enrollments SET status = 'active', next_run_at = $1
          WHERE workflow = $2 AND status = 'held'",
    )
    .bind(ms(now))
    .bind(workflow)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Resumed {
        was_paused,
        released,
    })
}
