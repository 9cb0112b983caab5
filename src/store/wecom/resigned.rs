//! Succession: customers of WeCom members who left (table
//! `wecom_unassigned`, migration 0014). `channels::wecom::resigned` reads the
//! list from WeCom and decides; these are its reads and writes.

use serde_json::json;
use sqlx::{AnyPool, Row};

use crate::store::{Store, StoreError};

/// Records one entry of the unassigned list; a new one logs `event` (the
/// channel's `wecom_staff_left`) on its contact in the same transaction.
/// Returns (new, event logged).
pub async fn record(
    store: &Store,
    ext: &str,
    handover: &str,
    dimission_ms: Option<i64>,
    now_ms: i64,
    event: &str,
) -> Result<(bool, bool), StoreError> {
    let dialect = store.dialect();
    let mut tx = store.begin().await?;
    let new = sqlx::query(
        "INSERT INTO wecom_unassigned (external_userid, handover_userid, dimission_time, first_seen_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (external_userid, handover_userid) DO NOTHING",
    )
    .bind(ext)
    .bind(handover)
    .bind(dimission_ms)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let mut logged = false;
    if new {
        let contact: Option<String> = sqlx::query_scalar(
            "SELECT id FROM contacts WHERE wecom_external_userid = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(ext)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = contact {
            let props = json!({
                "handover_userid": handover,
                "external_userid": ext,
                "dimission_time": dimission_ms,
            });
            logged =
                crate::store::wecom::log_quiet_event(&mut tx, dialect, &id, event, now_ms, &props)
                    .await?;
        }
    } else {
        sqlx::query(
            "UPDATE wecom_unassigned SET last_seen_at = $1, dimission_time = coalesce($2, dimission_time)
              WHERE external_userid = $3 AND handover_userid = $4",
        )
        .bind(now_ms)
        .bind(dimission_ms)
        .bind(ext)
        .bind(handover)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((new, logged))
}

/// A member who left and still has the customer (from the unassigned list):
/// the handover of a resigned transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resigned {
    pub handover_userid: String,
    pub dimission_ms: Option<i64>,
}

/// The member who left the customer, if any (the most recent leaver).
pub async fn resigned_handover(pool: &AnyPool, ext: &str) -> sqlx::Result<Option<Resigned>> {
    let row = sqlx::query(
        "SELECT handover_userid, dimission_time FROM wecom_unassigned WHERE external_userid = $1
          ORDER BY coalesce(dimission_time, 0) DESC, handover_userid LIMIT 1",
    )
    .bind(ext)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(r) => Some(Resigned {
            handover_userid: r.try_get(0)?,
            dimission_ms: r.try_get(1)?,
        }),
        None => None,
    })
}

/// The customer was handed over: it is no longer unassigned.
pub async fn assigned(pool: &AnyPool, ext: &str, handover: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM wecom_unassigned WHERE external_userid = $1 AND handover_userid = $2")
        .bind(ext)
        .bind(handover)
        .execute(pool)
        .await?;
    Ok(())
}

/// Transfers of the customer WeCom started (either kind) after `since`; a
/// transfer WeCom has no record of does not count.
pub async fn transfers_since(pool: &AnyPool, ext: &str, since: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM wecom_tasks
          WHERE external_userid = $1 AND kind IN ('transfer', 'resigned')
            AND status <> 'no_record' AND created_at > $2",
    )
    .bind(ext)
    .bind(since)
    .fetch_one(pool)
    .await
}

/// When each transfer of the customer WeCom started (either kind) after
/// `since` (ms), and whether it is still waiting for the takeover; a
/// transfer WeCom has no record of does not count. Oldest first.
pub async fn transfers_started(
    pool: &AnyPool,
    ext: &str,
    since: i64,
) -> sqlx::Result<Vec<(i64, bool)>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT created_at, status FROM wecom_tasks
          WHERE external_userid = $1 AND kind IN ('transfer', 'resigned')
            AND status <> 'no_record' AND created_at > $2
          ORDER BY created_at",
    )
    .bind(ext)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, status)| (at, status == "pending"))
        .collect())
}
