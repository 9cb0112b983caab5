//! The daemon's decision loop: the same sources as the dry-run, but applied.
//!
//! Each pass takes, in the dry-run's order, enrollments whose step is due, new
//! entries of the event log, and cron ticks of `inactive` and `schedule`
//! workflows; plans them with `Planner::plan`; and applies the plans in
//! batches, one transaction per batch. The event-log cursor moves in the
//! same transaction as the plans of its entries, and cron ticks are recorded
//! once their scan completes, so a crash at any point replays work whose
//! unique keys make a second application harmless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::AnyPool;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::contact::Contact;
use crate::engine::apply::{Applied, apply_in, lock_event_log, touches_shared_counters};
use crate::engine::plan::{Action, EnrollmentPlan, Outcome, Planner, StartAt};
use crate::engine::sources::{self, Decided, Start};
use crate::metrics;
use crate::project::Project;
use crate::store::plan_reads::{self, DAEMON_CURSOR, ms};
use crate::store::{Dialect, Store};
use crate::workflow::Workflow;

/// Plans applied per transaction.
const BATCH: usize = 256;

/// The transaction-scoped advisory lock of the event-log cursor on
/// PostgreSQL: one daemon at a time reads a batch after the cursor, applies
/// it and moves the cursor, in one transaction; the others skip the log for
/// that pass instead of planning the same batch.
const EVENT_LOG_CURSOR: i64 = 4_711_002;

/// A stable advisory-lock key per workflow for its cron ticks (FNV-1a).
fn tick_lock_key(workflow: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "nurture-tick:".bytes().chain(workflow.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub plans: usize,
    pub messages: usize,
}

pub struct Scheduler {
    pub store: Store,
    pub project: watch::Receiver<Arc<Project>>,
    /// Woken by the API and hot reload when there may be new work.
    pub wake: Arc<Notify>,
    /// Wakes the delivery worker when messages were queued.
    pub deliver: Arc<Notify>,
    pub shutdown: CancellationToken,
    /// `--until-idle`: stop once nothing is left to do (tests, batch runs).
    pub until_idle: bool,
    /// Written into `enrollments.lease_owner`; unique per process.
    pub worker: String,
    /// How long a claimed due enrollment stays this daemon's (the delivery
    /// lease, `--lease-ms`): a daemon that dies holding claims leaves them to
    /// the others after this long.
    pub lease: StdDuration,
}

impl Scheduler {
    pub async fn run(mut self) -> Result<()> {
        let pool = self.store.db().clone();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let project = self.project.borrow_and_update().clone();
            let now = Utc::now();
            let pass = match self.pass(&pool, &project, now).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "scheduler pass failed; retrying in 1 s");
                    Pass {
                        plans: 0,
                        messages: 0,
                    }
                }
            };
            if pass.messages > 0 {
                self.deliver.notify_one();
            }
            if pass.plans > 0 {
                tracing::debug!(
                    plans = pass.plans,
                    messages = pass.messages,
                    "scheduler pass"
                );
                continue;
            }
            if self.until_idle && idle(&pool).await.unwrap_or(false) {
                tracing::info!("nothing left to do; stopping (--until-idle)");
                self.shutdown.cancel();
                break;
            }
            let sleep = next_wake(&pool, &project, now)
                .await
                .unwrap_or(StdDuration::from_secs(1));
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = self.project.changed() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        Ok(())
    }

    /// One pass over everything due at `now`.
    pub async fn pass(
        &self,
        pool: &AnyPool,
        project: &Project,
        now: DateTime<Utc>,
    ) -> Result<Pass> {
        let assign = plan_reads::assign_state(pool).await?;
        let mut planner = Planner::new(&project.settings, &project.templates, now, assign);
        let mut pass = Pass::default();
        let enabled: Vec<&Workflow> = project.workflows.iter().filter(|w| w.enabled).collect();
        self.due_steps(pool, &enabled, &mut planner, &mut pass)
            .await?;
        self.event_log(pool, &enabled, &mut planner, &mut pass)
            .await?;
        for wf in enabled.iter().filter(|w| w.trigger.is_ticked()) {
            if self.shutdown.is_cancelled() {
                break;
            }
            self.tick(pool, project, wf, &mut planner, &mut pass)
                .await?;
        }
        Ok(pass)
    }

    /// Enrollments whose next step is due.
    async fn due_steps(
        &self,
        pool: &AnyPool,
        enabled: &[&Workflow],
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        // Claimed, not just read: with several daemons each due enrollment
        // is planned by the daemon that holds its lease.
        let due = plan_reads::claim_due_enrollments(
            pool,
            self.store.dialect(),
            &self.worker,
            planner.now,
            ms(planner.now) + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX),
            BATCH as i64,
        )
        .await?;
        // The workflow was removed or disabled: its enrollments wait for it to return.
        let due: Vec<(plan_reads::EnrollmentRow, &Workflow)> = due
            .into_iter()
            .filter_map(|e| {
                let wf = enabled.iter().copied().find(|w| w.name == e.workflow)?;
                Some((e, wf))
            })
            .collect();
        // Contacts, their events and message counts: a few queries per batch
        // and workflow, not per enrollment.
        let ids: Vec<String> = due.iter().map(|(e, _)| e.contact_id.clone()).collect();
        let contacts = sources::load_contacts(&self.store, &ids).await?;
        let mut ready: HashMap<(String, String), (Contact, u32)> = HashMap::new();
        let mut names: Vec<&str> = due.iter().map(|(_, wf)| wf.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let wf = due
                .iter()
                .find(|(_, w)| w.name == name)
                .map(|(_, w)| *w)
                .expect("a workflow of the batch");
            let mut mine: Vec<Contact> = due
                .iter()
                .filter(|(_, w)| w.name == name)
                .filter_map(|(e, _)| contacts.get(&e.contact_id).cloned())
                .collect();
            mine.sort_by(|a, b| a.id.cmp(&b.id));
            mine.dedup_by(|a, b| a.id == b.id);
            let recent = sources::enrich(pool, wf, &mut mine, planner).await?;
            for (c, r) in mine.into_iter().zip(recent) {
                ready.insert((name.to_string(), c.id.clone()), (c, r));
            }
        }
        let mut batch = Vec::new();
        for (e, wf) in due {
            let Some((contact, recent)) = ready.get(&(wf.name.clone(), e.contact_id.clone()))
            else {
                continue;
            };
            let plan = match &e.step_id {
                Some(step) => planner.plan(wf, contact, StartAt::Step(step), *recent),
                None => EnrollmentPlan {
                    steps: vec![],
                    outcome: Outcome::Done,
                    ran: vec![],
                },
            };
            batch.push(Decided {
                workflow: wf,
                contact_id: e.contact_id.clone(),
                start: Start::Existing {
                    enrollment_id: e.id,
                },
                from_step: e.step_id.clone(),
                plan,
            });
        }
        self.commit(pool, planner, &batch, None, pass).await
    }

    /// New entries of the event log, for event-triggered workflows.
    async fn event_log(
        &self,
        pool: &AnyPool,
        enabled: &[&Workflow],
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        // The transaction that applies the batch is opened first: on
        // PostgreSQL it takes the cursor's lock before reading the cursor, so
        // one daemon plans each batch (the others find the lock taken and move
        // on), and the cursor moves with the batch's plans.
        let dialect = self.store.dialect();
        // Nothing new (the usual idle pass): no transaction, no lock.
        let seen = plan_reads::cursor(pool, DAEMON_CURSOR).await?;
        if plan_reads::pending_log(pool, seen, 1).await?.is_empty() {
            return Ok(());
        }
        let mut tx = crate::store::begin(pool, dialect)
            .await
            .context("beginning a transaction")?;
        if dialect == Dialect::Postgres {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(EVENT_LOG_CURSOR)
                .fetch_one(&mut *tx)
                .await?;
            if !got {
                return Ok(());
            }
        }
        let after = plan_reads::cursor(&mut *tx, DAEMON_CURSOR).await?;
        let entries = plan_reads::pending_log(&mut *tx, after, BATCH as i64).await?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(());
        };
        for entry in &entries {
            metrics::global().event(&entry.kind);
        }
        let event_triggered: Vec<&Workflow> = enabled
            .iter()
            .copied()
            .filter(|w| !w.trigger.is_ticked())
            .collect();
        let mut entered: HashSet<(String, String)> = HashSet::new();
        let batch = sources::plan_log_batch(
            &self.store,
            &event_triggered,
            &entries,
            planner,
            &mut entered,
        )
        .await?;
        // The plans and the cursor move together.
        self.commit_in(tx, planner, &batch, Some(last), pass)
            .await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }

    /// A cron-ticked workflow: run its latest tick if not taken yet.
    async fn tick(
        &self,
        pool: &AnyPool,
        project: &Project,
        wf: &Workflow,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let now = planner.now;
        let cron = match &wf.trigger {
            crate::workflow::Trigger::Inactive { check, .. } => check,
            crate::workflow::Trigger::Schedule { cron } => cron,
            _ => return Ok(()),
        };
        let Some(tick) = cron.latest_at_or_before(now, project.settings.timezone) else {
            return Ok(());
        };
        // On PostgreSQL a tick runs under a session advisory lock per
        // workflow: one daemon runs it, the others see the lock taken (and,
        // after it is released, the tick recorded). A daemon that dies
        // mid-tick loses its session and the lock with it; the next daemon
        // runs the tick again, and the entry keys make that harmless.
        if self.store.dialect() == Dialect::Postgres {
            // Taken already (the usual pass): no lock needed to know it.
            let last: Option<i64> =
                sqlx::query_scalar("SELECT max(tick_at) FROM cron_ticks WHERE workflow = $1")
                    .bind(&wf.name)
                    .fetch_one(pool)
                    .await?;
            if last.is_some_and(|t| t >= ms(tick)) {
                return Ok(());
            }
            let mut conn = pool.acquire().await?;
            let key = tick_lock_key(&wf.name);
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
            if !got {
                return Ok(());
            }
            let ran = self.run_tick(pool, wf, tick, planner, pass).await;
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Never hand a connection that may still hold the lock back to the pool.
                let _ = conn.detach();
            }
            return ran;
        }
        self.run_tick(pool, wf, tick, planner, pass).await
    }

    /// Runs `tick` of `wf` unless it was taken already.
    async fn run_tick(
        &self,
        pool: &AnyPool,
        wf: &Workflow,
        tick: DateTime<Utc>,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let now = planner.now;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(tick_at) FROM cron_ticks WHERE workflow = $1")
                .bind(&wf.name)
                .fetch_one(pool)
                .await?;
        match last {
            // First sight of this workflow: its past ticks are not "missed";
            // only ticks from now on run. (A newly deployed monthly broadcast
            // does not fire for the 1st of the month on the 20th.)
            None => {
                take_tick(pool, wf, tick, now).await?;
                return Ok(());
            }
            Some(t) if t >= ms(tick) => return Ok(()),
            // Missed while down, or simply due: run the latest tick, once.
            Some(_) => {}
        }
        tracing::info!(workflow = %wf.name, tick = %tick.to_rfc3339(), "cron tick");
        let (filter, key_of, cause) = sources::scan_filter(wf, now, self.store.dialect())?;
        let mut chunk: Vec<Contact> = Vec::with_capacity(BATCH);
        let mut stream = self.store.scan_contacts(&filter.text, &filter.binds);
        let mut contacts = Vec::new();
        // Collect first: the scan holds a read on the store that the applies
        // below would otherwise wait behind.
        while let Some(c) = stream.next().await {
            contacts.push(c?);
        }
        drop(stream);
        for c in contacts {
            chunk.push(c);
            if chunk.len() == BATCH {
                self.plan_chunk(pool, wf, &mut chunk, &key_of, &cause, planner, pass)
                    .await?;
            }
        }
        if !chunk.is_empty() {
            self.plan_chunk(pool, wf, &mut chunk, &key_of, &cause, planner, pass)
                .await?;
        }
        take_tick(pool, wf, tick, now).await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_chunk(
        &self,
        pool: &AnyPool,
        wf: &Workflow,
        chunk: &mut Vec<Contact>,
        key_of: &sources::KeyOf,
        cause: &sources::Cause,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let recent = sources::enrich(pool, wf, chunk, planner).await?;
        let mut batch = Vec::new();
        for (contact, recent) in chunk.drain(..).zip(recent) {
            if !sources::in_audience(wf, &contact, planner.now) {
                continue;
            }
            let plan = planner.plan(wf, &contact, StartAt::First, recent);
            batch.push(Decided {
                workflow: wf,
                contact_id: contact.id.clone(),
                start: Start::New {
                    entry_key: key_of.key(wf, &contact),
                    cause: cause.clone(),
                },
                from_step: None,
                plan,
            });
        }
        self.commit(pool, planner, &batch, None, pass).await
    }

    /// Apply a batch of plans in one transaction.
    async fn commit(
        &self,
        pool: &AnyPool,
        planner: &mut Planner<'_>,
        batch: &[Decided<'_>],
        cursor: Option<i64>,
        pass: &mut Pass,
    ) -> Result<()> {
        if batch.is_empty() && cursor.is_none() {
            return Ok(());
        }
        let tx = crate::store::begin(pool, self.store.dialect())
            .await
            .context("beginning a transaction")?;
        self.commit_in(tx, planner, batch, cursor, pass).await
    }

    /// Apply a batch of plans (and move the cursor) in `tx`, and commit it.
    async fn commit_in(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        planner: &mut Planner<'_>,
        batch: &[Decided<'_>],
        cursor: Option<i64>,
        pass: &mut Pass,
    ) -> Result<()> {
        let dialect = self.store.dialect();
        if touches_shared_counters(batch) {
            lock_event_log(&mut tx, dialect).await?;
        }
        let mut stored = Vec::new();
        for d in batch {
            match apply_in(&mut tx, dialect, planner.settings, d, planner.now).await? {
                Applied::Stored { messages, .. } => {
                    pass.plans += 1;
                    pass.messages += messages;
                    stored.push(d);
                }
                Applied::Stale => {}
            }
        }
        if let Some(seq) = cursor {
            sqlx::query(
                "INSERT INTO cursors (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = CASE
                     WHEN excluded.position > cursors.position THEN excluded.position
                     ELSE cursors.position END",
            )
            .bind(DAEMON_CURSOR)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await.context("committing plans")?;
        planner.forget_planned();
        for d in stored {
            let outcome = match (&d.start, &d.plan.outcome) {
                (_, Outcome::Exited(_)) => "exited",
                (_, Outcome::Done) => "done",
                (Start::New { .. }, _) => "started",
                (Start::Existing { .. }, _) => "continued",
            };
            metrics::global().enrollment(&d.workflow.name, outcome);
            for s in &d.plan.steps {
                tracing::debug!(workflow = %s.workflow, contact = %s.contact_id, step = %s.step, action = s.action.name(), "applied");
                if let Action::Skip { reason } = &s.action {
                    metrics::skipped(
                        &s.workflow,
                        &s.contact_id,
                        &s.step,
                        reason.code(),
                        &reason.to_string(),
                    );
                }
            }
        }
        Ok(())
    }
}

async fn take_tick(
    pool: &AnyPool,
    wf: &Workflow,
    tick: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO cron_ticks (workflow, tick_at, taken_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(&wf.name)
        .bind(ms(tick))
        .bind(ms(now))
        .execute(pool)
        .await?;
    Ok(())
}

/// Nothing to plan or deliver: the log is consumed, no enrollment is active,
/// no message waits.
async fn idle(pool: &AnyPool) -> Result<bool> {
    let (pending, active, queued): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM event_log WHERE seq > coalesce((SELECT position FROM cursors WHERE name = $1), 0)),
                (SELECT count(*) FROM enrollments WHERE status = 'active'),
                (SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending'))",
    )
    .bind(DAEMON_CURSOR)
    .fetch_one(pool)
    .await?;
    Ok(pending == 0 && active == 0 && queued == 0)
}

/// How long to sleep: until the next due enrollment or cron tick, at most 1 s
/// (new work from outside the API — rows written by other systems — is found
/// by polling).
async fn next_wake(pool: &AnyPool, project: &Project, now: DateTime<Utc>) -> Result<StdDuration> {
    let mut next = now + chrono::Duration::seconds(1);
    let due: Option<i64> =
        // A row leased to another daemon is due for us only when its lease ends.
        sqlx::query_scalar(
            "SELECT min(CASE WHEN lease_until > next_run_at THEN lease_until ELSE next_run_at END)
               FROM enrollments WHERE status = 'active'",
        )
        .fetch_one(pool)
        .await?;
    if let Some(d) = due {
        next = next.min(plan_reads::from_ms(d));
    }
    for wf in project.workflows.iter().filter(|w| w.enabled) {
        let cron = match &wf.trigger {
            crate::workflow::Trigger::Inactive { check, .. } => check,
            crate::workflow::Trigger::Schedule { cron } => cron,
            _ => continue,
        };
        if let Some(t) = cron.next_after(now, project.settings.timezone) {
            next = next.min(t);
        }
    }
    Ok((next - now)
        .to_std()
        .unwrap_or_default()
        .max(StdDuration::from_millis(5)))
}
