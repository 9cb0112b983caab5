//! What applying a plan writes to the enrollments and their step records
//! (`engine::apply` decides; these run in its transaction). The reads the
//! planner makes are in [`super::plan_reads`].

use sqlx::{AnyConnection, AssertSqlSafe};

use super::Dialect;
use super::states::EnrollmentStatus;

/// An enrollment a plan starts.
#[derive(Debug)]
pub struct NewEnrollment<'a> {
    pub workflow: &'a str,
    pub contact_id: &'a str,
    pub entry_key: &'a str,
    pub started_at: i64,
    /// The trigger event, JSON.
    pub trigger_event: Option<String>,
}

/// Starts `e` as `active`; `None` when its entry key exists (another run got
/// there first).
pub(in crate::store) async fn start(
    tx: &mut AnyConnection,
    e: &NewEnrollment<'_>,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO enrollments (workflow, contact_id, entry_key, status, started_at, trigger_event)
         VALUES ($1, $2, $3, 'active', $4, $5)
         ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
         RETURNING id",
    )
    .bind(e.workflow)
    .bind(e.contact_id)
    .bind(e.entry_key)
    .bind(e.started_at)
    .bind(e.trigger_event.as_deref())
    .fetch_optional(&mut *tx)
    .await
}

/// Stores `e` `held` at `first_step` (the blast guard): nothing runs until
/// `nurture resume`. `None` when its entry key exists.
pub(in crate::store) async fn hold(
    tx: &mut AnyConnection,
    e: &NewEnrollment<'_>,
    first_step: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO enrollments (workflow, contact_id, entry_key, status, step_id, started_at, trigger_event)
         VALUES ($1, $2, $3, 'held', $4, $5, $6)
         ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
         RETURNING id",
    )
    .bind(e.workflow)
    .bind(e.contact_id)
    .bind(e.entry_key)
    .bind(first_step)
    .bind(e.started_at)
    .bind(e.trigger_event.as_deref())
    .fetch_optional(&mut *tx)
    .await
}

/// The status and step of enrollment `id`, locked for the rest of the
/// transaction on PostgreSQL (a second daemon holding the same plan waits
/// here, then finds the enrollment moved on).
pub(in crate::store) async fn lock(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: i64,
) -> sqlx::Result<Option<(EnrollmentStatus, Option<String>)>> {
    let sql = format!(
        "SELECT status, step_id FROM enrollments WHERE id = $1{}",
        dialect.for_update()
    );
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
}

/// Records that `step` ran; `false` when it had run already (a replay, or an
/// edit that moved ids): it is not done again. The record carries its
/// enrollment's workflow and start (migration 0040: the report counts one
/// workflow's records from one index range), copied from the enrollment,
/// which the caller holds locked (a missing one records nothing).
pub(in crate::store) async fn record_step(
    tx: &mut AnyConnection,
    enrollment_id: i64,
    step: &str,
    ran_at: i64,
    action: &str,
    detail: Option<String>,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail, workflow, started_at)
         SELECT $1, $2, $3, $4, $5, e.workflow, e.started_at FROM enrollments e WHERE e.id = $1
         ON CONFLICT DO NOTHING",
    )
    .bind(enrollment_id)
    .bind(step)
    .bind(ran_at)
    .bind(action)
    .bind(detail)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1)
}

/// Replaces the detail of a step record (an assignment re-decided under the
/// team's lock says why).
pub(in crate::store) async fn set_step_detail(
    tx: &mut AnyConnection,
    enrollment_id: i64,
    step: &str,
    detail: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE enrollment_steps SET detail = $1 WHERE enrollment_id = $2 AND step_id = $3",
    )
    .bind(detail)
    .bind(enrollment_id)
    .bind(step)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Where a plan leaves an enrollment.
#[derive(Debug)]
pub struct Settled {
    pub id: i64,
    pub status: EnrollmentStatus,
    pub step_id: Option<String>,
    /// The last step that ran, if any ran.
    pub last_step: Option<String>,
    pub next_run_at: Option<i64>,
    pub end_reason: Option<String>,
    pub now: i64,
    pub wait_since: Option<i64>,
}

/// Writes where the plan left the enrollment, and clears its lease.
pub(in crate::store) async fn settle(tx: &mut AnyConnection, s: Settled) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE enrollments SET status = $1, step_id = $2, last_step_id = coalesce($3, last_step_id),
                next_run_at = $4, end_reason = $5,
                ended_at = CASE WHEN $6 = 'active' THEN NULL ELSE $7 END,
                lease_owner = NULL, lease_until = NULL, wait_since = $9
          WHERE id = $8",
    )
    .bind(s.status)
    .bind(s.step_id)
    .bind(s.last_step)
    .bind(s.next_run_at)
    .bind(s.end_reason)
    .bind(s.status)
    .bind(s.now)
    .bind(s.id)
    .bind(s.wait_since)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Makes the enrollments of `contact_id` waiting at `step_id` of `workflow`
/// (a `wait_until` step) due at `now`.
pub(in crate::store) async fn wake_waiting(
    tx: &mut AnyConnection,
    contact_id: &str,
    workflow: &str,
    step_id: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE enrollments SET next_run_at = $1
          WHERE contact_id = $2 AND workflow = $3 AND step_id = $4
            AND status = 'active' AND wait_since IS NOT NULL AND next_run_at > $1",
    )
    .bind(now)
    .bind(contact_id)
    .bind(workflow)
    .bind(step_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A new enrollment written in its final state at once (a plan whose steps
/// only queue messages: the daemon's common case, written many per
/// statement by [`start_settled_many`]).
#[derive(Debug)]
pub struct NewSettled<'a> {
    pub new: NewEnrollment<'a>,
    pub status: EnrollmentStatus,
    pub step_id: Option<String>,
    pub last_step: Option<String>,
    pub next_run_at: Option<i64>,
    pub end_reason: Option<String>,
    pub ended_at: Option<i64>,
    pub wait_since: Option<i64>,
}

/// Rows per multi-row statement: far under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters. (On SQLite the placeholders are
/// anonymous `?`: binding a named `$N` looks its name up in a list, which
/// made a 3,000-parameter statement cost more to bind than to run.)
pub const ROWS_PER_STATEMENT: usize = 256;

/// Inserts `rows` with multi-row statements, skipping those whose entry key
/// exists (another run got there first). Returns the ids of the rows
/// written, by position in `rows` (`None`: skipped). The ids are assigned in
/// the order of `rows`, as one INSERT per row would.
pub(in crate::store) async fn start_settled_many(
    tx: &mut AnyConnection,
    dialect: Dialect,
    rows: &[NewSettled<'_>],
) -> sqlx::Result<Vec<Option<i64>>> {
    use sqlx::Arguments as _;
    let mut out = vec![None; rows.len()];
    for (c, chunk) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
        let mut sql = String::from(
            "INSERT INTO enrollments (workflow, contact_id, entry_key, status, step_id, last_step_id,
                                      next_run_at, started_at, ended_at, end_reason, trigger_event, wait_since)
             VALUES ",
        );
        let mut args = sqlx::any::AnyArguments::default();
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let b = i * 12;
            sql.push('(');
            for k in 1..=12 {
                if k > 1 {
                    sql.push(',');
                }
                sql.push_str(&dialect.placeholder(b + k));
            }
            sql.push(')');
            args.add(r.new.workflow).map_err(sqlx::Error::Encode)?;
            args.add(r.new.contact_id).map_err(sqlx::Error::Encode)?;
            args.add(r.new.entry_key).map_err(sqlx::Error::Encode)?;
            args.add(r.status).map_err(sqlx::Error::Encode)?;
            args.add(r.step_id.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.last_step.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.next_run_at).map_err(sqlx::Error::Encode)?;
            args.add(r.new.started_at).map_err(sqlx::Error::Encode)?;
            args.add(r.ended_at).map_err(sqlx::Error::Encode)?;
            args.add(r.end_reason.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.new.trigger_event.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.wait_since).map_err(sqlx::Error::Encode)?;
        }
        sql.push_str(
            " ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
              RETURNING id, workflow, contact_id, entry_key",
        );
        let written: Vec<(i64, String, String, String)> =
            sqlx::query_as_with(AssertSqlSafe(sql), args)
                .fetch_all(&mut *tx)
                .await?;
        // By unique key; the first row with a key is the one written (a
        // later duplicate in the same statement conflicts with it).
        let mut by_key: std::collections::HashMap<(String, String, String), i64> = written
            .into_iter()
            .map(|(id, w, c, k)| ((w, c, k), id))
            .collect();
        let base = c * ROWS_PER_STATEMENT;
        for (i, r) in chunk.iter().enumerate() {
            let key = (
                r.new.workflow.to_string(),
                r.new.contact_id.to_string(),
                r.new.entry_key.to_string(),
            );
            out[base + i] = by_key.remove(&key);
        }
    }
    Ok(out)
}

/// A step record of a new enrollment (always fresh: the enrollment was
/// just created).
#[derive(Debug)]
pub struct StepRecord<'a> {
    pub enrollment_id: i64,
    /// The enrollment's workflow and start, copied into the record (see
    /// [`record_step`]).
    pub workflow: &'a str,
    pub started_at: i64,
    pub step: &'a str,
    pub ran_at: i64,
    pub action: &'a str,
    pub detail: Option<String>,
}

/// Records steps of new enrollments with multi-row statements.
pub(in crate::store) async fn record_steps_many(
    tx: &mut AnyConnection,
    dialect: Dialect,
    rows: &[StepRecord<'_>],
) -> sqlx::Result<()> {
    use sqlx::Arguments as _;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail, workflow, started_at) VALUES ",
        );
        let mut args = sqlx::any::AnyArguments::default();
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let b = i * 7;
            let p: Vec<String> = (1..=7).map(|k| dialect.placeholder(b + k)).collect();
            sql.push_str(&format!("({})", p.join(",")));
            args.add(r.enrollment_id).map_err(sqlx::Error::Encode)?;
            args.add(r.step).map_err(sqlx::Error::Encode)?;
            args.add(r.ran_at).map_err(sqlx::Error::Encode)?;
            args.add(r.action).map_err(sqlx::Error::Encode)?;
            args.add(r.detail.as_deref()).map_err(sqlx::Error::Encode)?;
            args.add(r.workflow).map_err(sqlx::Error::Encode)?;
            args.add(r.started_at).map_err(sqlx::Error::Encode)?;
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Both writers copy the enrollment's workflow and start into its step
    /// records (the report counts one workflow's records by them); a record
    /// of a missing enrollment is not written.
    #[tokio::test]
    async fn step_records_carry_their_enrollments_workflow_and_start() {
        let s = Store::open("sqlite::memory:").await.unwrap();
        let mut conn = s.db().acquire().await.unwrap();
        let e = NewEnrollment {
            workflow: "promo",
            contact_id: "c1",
            entry_key: "k",
            started_at: 1_000,
            trigger_event: None,
        };
        let id = start(&mut conn, &e).await.unwrap().unwrap();
        assert!(
            record_step(&mut conn, id, "a", 2_000, "send", None)
                .await
                .unwrap()
        );
        assert!(
            !record_step(&mut conn, id, "a", 3_000, "send", None)
                .await
                .unwrap()
        );
        assert!(
            !record_step(&mut conn, id + 1, "a", 2_000, "send", None)
                .await
                .unwrap()
        );
        let many = [StepRecord {
            enrollment_id: id,
            workflow: "promo",
            started_at: 1_000,
            step: "b",
            ran_at: 2_000,
            action: "split",
            detail: Some("x".into()),
        }];
        record_steps_many(&mut conn, s.dialect(), &many)
            .await
            .unwrap();
        let rows: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT step_id, workflow, started_at FROM enrollment_steps ORDER BY step_id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                ("a".to_string(), Some("promo".to_string()), Some(1_000)),
                ("b".to_string(), Some("promo".to_string()), Some(1_000)),
            ]
        );
    }
}
