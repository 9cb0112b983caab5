//! What the per-salesperson caps and the frequency cap's `on_cap: defer`
//! read: when counted things happened inside their window.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{AnyPool, Row};

use super::placeholders::push_list;
use super::plan_reads::{from_ms, ms};

/// Per contact, the oldest message the frequency cap counts since `since`
/// (the same messages as `plan_reads::recent_messages`): when it leaves the
/// window, the contact may be sent to again.
pub(in crate::store) async fn oldest_recent_messages(
    pool: &AnyPool,
    contact_ids: &[String],
    since: DateTime<Utc>,
) -> sqlx::Result<HashMap<String, DateTime<Utc>>> {
    let mut out = HashMap::new();
    for chunk in contact_ids.chunks(500) {
        let mut sql =
            String::from("SELECT contact_id, min(created_at) FROM outbox WHERE contact_id IN (");
        push_list(&mut sql, 1, chunk.len());
        sql.push_str(&format!(
            ") AND created_at > ${} AND status NOT IN ('cancelled', 'dead') \
             AND payload NOT LIKE '%\"kind\":\"notice\"%' AND payload NOT LIKE '%\"kind\":\"transfer\"%' \
             AND payload NOT LIKE '%\"kind\":\"webhook\"%' \
             GROUP BY contact_id",
            chunk.len() + 1
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.bind(ms(since)).fetch_all(pool).await? {
            out.insert(r.get::<String, _>(0), from_ms(r.get::<i64, _>(1)));
        }
    }
    Ok(out)
}

/// The assignments an `assign` step made since `since`: (salesperson, when),
/// oldest first. A choice re-decided under the team's lock is recorded as
/// "ID (planned …)": its first word is the salesperson. `except`: an
/// enrollment whose row is not counted (the one being applied).
pub(in crate::store) async fn assigned_since<'e, E>(
    executor: E,
    workflow: &str,
    step: &str,
    since: DateTime<Utc>,
    except: Option<i64>,
) -> sqlx::Result<Vec<(String, DateTime<Utc>)>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT s.detail, s.ran_at FROM enrollment_steps s
           JOIN enrollments e ON e.id = s.enrollment_id
          WHERE e.workflow = $1 AND s.step_id = $2 AND s.action = 'assign' AND s.ran_at > $3
            AND s.enrollment_id <> $4
          ORDER BY s.ran_at",
    )
    .bind(workflow)
    .bind(step)
    .bind(ms(since))
    .bind(except.unwrap_or(-1))
    .fetch_all(executor)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let detail: Option<String> = r.get(0);
            let who = detail?.split_whitespace().next()?.to_string();
            Some((who, from_ms(r.get::<i64, _>(1))))
        })
        .collect())
}

/// The messages a send step queued whose time to go out is after `since`,
/// by the contact's owner: (owner, when), in time order. Cancelled and dead
/// letters do not count.
pub(in crate::store) async fn owner_sends_since(
    pool: &AnyPool,
    workflow: &str,
    step: &str,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
    let rows = sqlx::query(
        "SELECT c.owner, o.not_before FROM outbox o JOIN contacts c ON c.id = o.contact_id
          WHERE o.workflow = $1 AND o.step_id = $2 AND o.not_before > $3
            AND o.status NOT IN ('cancelled', 'dead') AND c.owner IS NOT NULL
            AND o.id NOT LIKE '%:notify' AND o.id NOT LIKE '%:transfer'
          ORDER BY o.not_before",
    )
    .bind(workflow)
    .bind(step)
    .bind(ms(since))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), from_ms(r.get::<i64, _>(1))))
        .collect())
}

/// The messages a send step queued whose time to go out is after `since`,
/// for the current owner of `contact_id` (as [`owner_sends_since`] counts
/// them), in time order; none when the contact has no owner. Read in the
/// transaction that queues the next one.
pub(in crate::store) async fn owner_sends_of<'e, E>(
    executor: E,
    workflow: &str,
    step: &str,
    contact_id: &str,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<DateTime<Utc>>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT o.not_before FROM outbox o JOIN contacts c ON c.id = o.contact_id
          WHERE o.workflow = $1 AND o.step_id = $2 AND o.not_before > $3
            AND o.status NOT IN ('cancelled', 'dead')
            AND o.id NOT LIKE '%:notify' AND o.id NOT LIKE '%:transfer'
            AND c.owner = (SELECT owner FROM contacts WHERE id = $4)
          ORDER BY o.not_before",
    )
    .bind(workflow)
    .bind(step)
    .bind(ms(since))
    .bind(contact_id)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|(t,)| from_ms(t)).collect())
}
