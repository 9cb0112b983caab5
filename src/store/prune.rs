//! Retention: `nurture prune --older-than D` deletes what only grows and is
//! no longer read by the engine, and keeps its counts (`pruned_counts`,
//! migration 0030) so `status` still adds up.
//!
//! What goes, when it ended before the cutoff:
//! - enrollments that are `done` or `exited` (with their step records),
//!   **except the latest one of each contact in each workflow**: the entry
//!   policies read it (`entry: once` must still see that the contact was
//!   in; an inactivity spell's key must still be taken);
//! - outbox rows `sent` or `dead` (by `sent_at`, `dead_at`, else
//!   `created_at`), and `cancelled` ones (consent withdrawn before the send;
//!   by `next_attempt_at`, when the cancellation or the send it stopped
//!   was due): the caps and the planner read none of them;
//! - event-log rows every cursor has consumed (`seq` at or below the lowest
//!   cursor) whose `at` is before the cutoff. A store no daemon has read
//!   keeps its log.
//!
//! Besides the totals, the reasons `status` splits them by are kept too
//! (`what` = `dead:REASON`, `cancelled:REASON`, `skipped:CODE`, the last
//! for the skipped steps of the pruned enrollments), so its per-reason
//! lines add up to its totals after a prune as before it.
//!
//! Waiting messages, active enrollments, contacts, tags and events are
//! never touched. The caller keeps the cutoff behind the frequency cap's
//! and the blast guard's windows, which count recent messages and
//! enrollments.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

use super::outbox::dead_reason;
use super::status::{WorkflowCounts, cancel_reason, skip_code};
use super::{Store, StoreError, to_ms};

const ENROLLMENTS: &str = "e.status IN ('done', 'exited') AND e.ended_at < $1 \
    AND EXISTS (SELECT 1 FROM enrollments n \
                 WHERE n.workflow = e.workflow AND n.contact_id = e.contact_id AND n.id > e.id)";

const OUTBOX: &str = "((o.status IN ('sent', 'dead') AND coalesce(o.sent_at, o.dead_at, o.created_at) < $1) \
      OR (o.status = 'cancelled' AND o.next_attempt_at < $1))";

const LOG: &str = "l.seq <= coalesce((SELECT min(position) FROM cursors), 0) AND l.at < $1";

/// What a prune deletes (or, in a dry run, would delete), per workflow and
/// kind (`what` as in `pruned_counts`; event-log rows under workflow "").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub counts: BTreeMap<(String, String), i64>,
    /// Per workflow, the reasons `status` splits `counts` by (`dead:…`,
    /// `cancelled:…`, `skipped:…`); kept with them, not printed.
    pub by_reason: BTreeMap<(String, String), i64>,
}

impl Pruned {
    pub fn enrollments(&self) -> i64 {
        self.sum(|w| w.starts_with("enrollments_"))
    }
    pub fn messages(&self) -> i64 {
        self.sum(|w| matches!(w, "sent" | "notices" | "dead" | "cancelled"))
    }
    pub fn log_rows(&self) -> i64 {
        self.sum(|w| w.starts_with("log_"))
    }
    fn sum(&self, f: impl Fn(&str) -> bool) -> i64 {
        self.counts
            .iter()
            .filter(|((_, w), _)| f(w))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Store {
    /// Deletes what ended before `cutoff` (see the module documentation) in
    /// one transaction and adds its counts to `pruned_counts`; with
    /// `dry_run`, only counts. Gives the counts either way.
    pub async fn prune(&self, cutoff: DateTime<Utc>, dry_run: bool) -> Result<Pruned, StoreError> {
        let mut tx = self.begin().await?;
        if self.dialect() == super::Dialect::Postgres {
            // One snapshot for the counts and the deletes: under READ
            // COMMITTED an enrollment a daemon starts meanwhile can make an
            // older one prunable between the count and the DELETE (it is
            // no longer the contact's latest), deleting it uncounted.
            // (SQLite's BEGIN IMMEDIATE already keeps other writers out.)
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let at = to_ms(cutoff);
        let mut pruned = Pruned::default();
        let queries = [
            format!(
                "SELECT e.workflow, 'enrollments_' || e.status, count(*) FROM enrollments e \
                 WHERE {ENROLLMENTS} GROUP BY 1, 2"
            ),
            format!(
                "SELECT o.workflow, CASE WHEN o.status = 'dead' THEN 'dead' \
                   WHEN o.status = 'cancelled' THEN 'cancelled' \
                   WHEN o.payload LIKE '%\"kind\":\"notice\"%' THEN 'notices' ELSE 'sent' END, \
                   count(*) FROM outbox o WHERE {OUTBOX} GROUP BY 1, 2"
            ),
            format!(
                "SELECT '', 'log_' || l.kind, count(*) FROM event_log l WHERE {LOG} GROUP BY 1, 2"
            ),
        ];
        for q in queries {
            for r in sqlx::query(AssertSqlSafe(q))
                .bind(at)
                .fetch_all(&mut *tx)
                .await?
            {
                pruned
                    .counts
                    .insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
            }
        }
        if dry_run {
            tx.rollback().await?;
            return Ok(pruned);
        }
        pruned.by_reason = by_reason(&mut tx, at).await?;
        for ((workflow, what), n) in pruned.counts.iter().chain(&pruned.by_reason) {
            sqlx::query(
                "INSERT INTO pruned_counts (workflow, what, n) VALUES ($1, $2, $3) \
                 ON CONFLICT (workflow, what) DO UPDATE SET n = pruned_counts.n + excluded.n",
            )
            .bind(workflow)
            .bind(what)
            .bind(n)
            .execute(&mut *tx)
            .await?;
        }
        for q in [
            // Step records first: on PostgreSQL they carry no foreign key
            // to cascade along (migration 0046).
            format!(
                "DELETE FROM enrollment_steps WHERE enrollment_id IN \
                 (SELECT e.id FROM enrollments AS e WHERE {ENROLLMENTS})"
            ),
            format!("DELETE FROM enrollments AS e WHERE {ENROLLMENTS}"),
            format!("DELETE FROM outbox AS o WHERE {OUTBOX}"),
            format!("DELETE FROM event_log AS l WHERE {LOG}"),
        ] {
            sqlx::query(AssertSqlSafe(q))
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(pruned)
    }
}

/// The reasons `status` splits the pruned messages and enrollments by, in
/// its words (see `status::workflow_counts`).
async fn by_reason(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    at: i64,
) -> sqlx::Result<BTreeMap<(String, String), i64>> {
    let mut out = BTreeMap::new();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT o.workflow, o.status, o.last_error, count(*) FROM outbox o \
          WHERE o.status IN ('dead', 'cancelled') AND {OUTBOX} GROUP BY 1, 2, 3"
    )))
    .bind(at)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let status: String = r.try_get(1)?;
        let error: Option<String> = r.try_get(2)?;
        let what = if status == "dead" {
            format!("dead:{}", dead_reason(error.as_deref().unwrap_or("")))
        } else {
            format!("cancelled:{}", cancel_reason(error.as_deref()))
        };
        *out.entry((r.try_get(0)?, what)).or_insert(0) += r.try_get::<i64, _>(3)?;
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT e.workflow, s.detail, count(*) FROM enrollments e \
           JOIN enrollment_steps s ON s.enrollment_id = e.id \
          WHERE s.action = 'skip' AND {ENROLLMENTS} GROUP BY 1, 2"
    )))
    .bind(at)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let detail: Option<String> = r.try_get(1)?;
        let what = format!("skipped:{}", skip_code(detail.as_deref()));
        *out.entry((r.try_get(0)?, what)).or_insert(0) += r.try_get::<i64, _>(2)?;
    }
    Ok(out)
}

/// Adds what earlier prunes deleted to the live counts of `status`.
pub(crate) async fn add_pruned(
    pool: &sqlx::AnyPool,
    out: &mut BTreeMap<String, WorkflowCounts>,
) -> sqlx::Result<()> {
    let rows = sqlx::query("SELECT workflow, what, n FROM pruned_counts WHERE workflow <> ''")
        .fetch_all(pool)
        .await?;
    for r in rows {
        let name: String = r.try_get(0)?;
        let what: String = r.try_get(1)?;
        let n: i64 = r.try_get(2)?;
        let c = out.entry(name.clone()).or_insert_with(|| WorkflowCounts {
            workflow: name,
            ..Default::default()
        });
        match what.as_str() {
            "enrollments_done" => {
                c.done += n;
                c.enrolled += n;
            }
            "enrollments_exited" => {
                c.exited += n;
                c.enrolled += n;
            }
            "sent" => c.sent += n,
            "notices" => c.notices += n,
            "dead" => c.failed += n,
            "cancelled" => c.cancelled += n,
            other => {
                let (kind, reason) = other.split_once(':').unwrap_or((other, ""));
                let split = match kind {
                    "dead" => &mut c.failed_by_reason,
                    "cancelled" => &mut c.cancelled_by_reason,
                    "skipped" => &mut c.skipped,
                    _ => continue,
                };
                *split.entry(reason.to_string()).or_insert(0) += n;
            }
        }
    }
    Ok(())
}
