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
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::contact::Contact;
use crate::engine::apply::{Applied, apply_batch, lock_event_log, touches_shared_counters};
use crate::engine::gates::Gates;
use crate::engine::plan::{Action, Outcome, Planner};
use crate::engine::sources::{self, BATCH, Decided, Scan, Start};
use crate::metrics;
use crate::project::Project;
use crate::store::handoff::Handoff;
use crate::store::plan_reads::{self, DAEMON_CURSOR, ms};
use crate::store::workflow_states::WorkflowState;
use crate::store::{Dialect, Store, Tx};
use crate::workflow::Workflow;

use crate::store::ticks;

mod commit;
mod event_log;
mod idle;
mod scans;

use event_log::*;
use idle::*;
pub use idle::{IdleMode, IdleState, idle_state, is_idle};

/// How often `--until-idle` counts and tells what it still waits for.
const TELL_EVERY: StdDuration = StdDuration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub plans: usize,
    pub messages: usize,
    /// Trigger events from before their workflow's activation, per workflow.
    pub passed_over: HashMap<String, u64>,
}

pub struct Scheduler {
    pub store: Store,
    /// This daemon's delivery worker, which takes the messages due now
    /// straight from the commits ([`crate::store::handoff`]).
    pub handoff: Option<Arc<dyn Handoff>>,
    pub project: watch::Receiver<Arc<Project>>,
    /// Woken by the API and hot reload when there may be new work.
    pub wake: Arc<Notify>,
    /// Wakes the delivery worker when messages were queued.
    pub deliver: Arc<Notify>,
    /// Wakes the WeCom tag marks worker when tag steps queued marks.
    pub marks_queued: crate::wecom::tag_marks::MarksQueued,
    pub shutdown: CancellationToken,
    /// `--until-idle`: stop once nothing is left to do (tests, batch runs).
    pub until_idle: Option<IdleMode>,
    /// Written into `enrollments.lease_owner`; unique per process.
    pub worker: String,
    /// How long a claimed due enrollment stays this daemon's (the delivery
    /// lease, `--lease-ms`): a daemon that dies holding claims leaves them to
    /// the others after this long.
    pub lease: StdDuration,
}

/// Activates, at `now`, the enabled workflows of `project` this store has
/// not seen: the daemon calls it before it says it listens, so a contact the
/// API takes after that line is never from before its workflows'
/// activation (the scheduler's first pass, a few milliseconds later, would
/// otherwise pass it over), and a reload calls it before it publishes the
/// workflows it took. The pass activates whatever is still new (if those
/// calls failed).
pub async fn activate_loaded(store: &Store, project: &Project, now: DateTime<Utc>) -> Result<()> {
    let enabled: Vec<&Workflow> = project.workflows.iter().filter(|w| w.enabled).collect();
    activate_fresh(store, &enabled, now).await?;
    Ok(())
}

/// Every workflow's state, after activating at `now` those of `enabled`
/// this store has not seen.
async fn activate_fresh(
    store: &Store,
    enabled: &[&Workflow],
    now: DateTime<Utc>,
) -> Result<HashMap<String, WorkflowState>> {
    let mut states = store.workflow_states().await?;
    let fresh: Vec<&str> = enabled
        .iter()
        .map(|w| w.name.as_str())
        .filter(|n| !states.contains_key(*n))
        .collect();
    if !fresh.is_empty() {
        for name in store.activate_workflows(&fresh, now).await? {
            tracing::info!(workflow = %name, "activated: the workflow acts on trigger events from now on");
        }
        states = store.workflow_states().await?;
    }
    Ok(states)
}

impl Scheduler {
    pub async fn run(mut self) -> Result<()> {
        let mut last_waiting: Option<String> = None;
        let mut told_at: Option<std::time::Instant> = None;
        // Passed-over triggers are told once per backlog (a pass reads one
        // log batch: an import of a million rows would be thousands of lines).
        let mut passed_over: HashMap<String, u64> = HashMap::new();
        let mut passed_since = std::time::Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let project = self.project.borrow_and_update().clone();
            let now = Utc::now();
            let started = std::time::Instant::now();
            let pass = match self.pass(&project, now).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "scheduler pass failed; retrying in 1 s");
                    Pass::default()
                }
            };
            if pass.messages > 0 {
                self.deliver.notify_one();
            }
            let caught_up = pass.passed_over.is_empty();
            for (name, n) in pass.passed_over {
                *passed_over.entry(name).or_insert(0) += n;
            }
            if !passed_over.is_empty()
                && (caught_up || passed_since.elapsed() >= StdDuration::from_secs(30))
            {
                let mut told: Vec<_> = passed_over.drain().collect();
                told.sort();
                for (name, n) in told {
                    tracing::info!(workflow = %name, triggers = n, "trigger events from before the workflow's activation passed over");
                }
                passed_since = std::time::Instant::now();
            }
            if pass.plans > 0 {
                tracing::debug!(
                    plans = pass.plans,
                    messages = pass.messages,
                    ms = started.elapsed().as_millis() as u64,
                    "scheduler pass"
                );
                continue;
            }
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "idle pass");
            if let Some(mode) = self.until_idle {
                let checked = std::time::Instant::now();
                let idle = is_idle(&self.store, now, mode).await;
                tracing::debug!(ms = checked.elapsed().as_millis() as u64, "idle check");
                match idle {
                    Ok(true) => {
                        match mode {
                            IdleMode::All => {
                                tracing::info!("nothing left to do; stopping (--until-idle)")
                            }
                            IdleMode::Now => match idle_state(&self.store, now).await {
                                Ok(st) => tracing::info!(
                                    waiting_enrollments = st.active,
                                    deferred_messages = st.queued,
                                    "nothing due now; stopping (--until-idle=now): {}",
                                    st.left(project.settings.timezone)
                                ),
                                Err(_) => {
                                    tracing::info!("nothing due now; stopping (--until-idle=now)")
                                }
                            },
                        }
                        self.shutdown.cancel();
                        break;
                    }
                    // What it waits for, counted at most every few seconds
                    // (the counts read the whole outbox).
                    Ok(false) if told_at.is_none_or(|t| t.elapsed() >= TELL_EVERY) => {
                        told_at = Some(std::time::Instant::now());
                        match idle_state(&self.store, now).await {
                            Ok(st) => {
                                let what = st.waiting_for(mode, project.settings.timezone);
                                if last_waiting.as_deref() != Some(what.as_str()) {
                                    tracing::info!("--until-idle: waiting for {what}");
                                    last_waiting = Some(what);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "--until-idle: cannot read the store")
                            }
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "--until-idle: cannot read the store"),
                }
            }
            let sleep = next_wake(&self.store, &project, now)
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
    pub async fn pass(&self, project: &Project, now: DateTime<Utc>) -> Result<Pass> {
        let store = &self.store;
        let assign = store.assign_state().await?;
        let mut planner = Planner::new(&project.settings, &project.templates, now, assign);
        let enabled: Vec<&Workflow> = project.workflows.iter().filter(|w| w.enabled).collect();
        planner.gates = self.gates(&enabled, now).await?;
        planner.throttle_last = store.throttle_state(&enabled).await?;
        crate::engine::caps::load(&mut planner, store, &enabled).await?;
        let mut pass = Pass::default();
        self.due_steps(&enabled, &mut planner, &mut pass).await?;
        if self
            .event_log(&enabled, &mut planner, &mut pass, true)
            .await?
            == LogBatch::Raced
        {
            // The planner's counters include plans that were dropped: this
            // pass ends here, the next starts from the store.
            pass.plans = pass.plans.max(1);
            return Ok(pass);
        }
        for wf in enabled.iter().filter(|w| w.trigger.is_ticked()) {
            if self.shutdown.is_cancelled() {
                break;
            }
            self.tick(project, &enabled, wf, &mut planner, &mut pass)
                .await?;
        }
        for wf in enabled.iter().filter(|w| w.entry_existing) {
            if self.shutdown.is_cancelled() {
                break;
            }
            let done = planner
                .gates
                .states
                .get(&wf.name)
                .is_some_and(|s| s.existing_done_at.is_some());
            if !done {
                self.enroll_existing(&enabled, wf, &mut planner, &mut pass)
                    .await?;
            }
        }
        Ok(pass)
    }

    /// Activation and pause of every workflow: a workflow this daemon loads
    /// for the first time on this store is activated now.
    async fn gates(&self, enabled: &[&Workflow], now: DateTime<Utc>) -> Result<Gates> {
        Ok(Gates {
            states: activate_fresh(&self.store, enabled, now).await?,
            unrecorded: None,
        })
    }

    /// Enrollments whose next step is due.
    async fn due_steps(
        &self,
        enabled: &[&Workflow],
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        // Claimed, not just read: with several daemons each due enrollment
        // is planned by the daemon that holds its lease. The claim is a
        // write: in turn with delivery's.
        let turn = self.store.write_turn().await;
        let due = self
            .store
            .claim_due_enrollments(
                &self.worker,
                planner.now,
                ms(planner.now) + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX),
                BATCH as i64,
            )
            .await?;
        drop(turn);
        // The workflow was removed, disabled or paused: its enrollments wait
        // for it to return.
        let due = runnable(due, enabled, &planner.gates);
        let batch = sources::plan_due_batch(&self.store, due, planner).await?;
        self.commit(planner, batch, None, pass).await
    }
}

/// Due enrollments whose workflow runs: removed, disabled and paused
/// workflows' enrollments wait for it.
pub fn runnable<'w>(
    due: Vec<plan_reads::EnrollmentRow>,
    enabled: &[&'w Workflow],
    gates: &Gates,
) -> Vec<(plan_reads::EnrollmentRow, &'w Workflow)> {
    due.into_iter()
        .filter_map(|e| {
            let wf = enabled.iter().copied().find(|w| w.name == e.workflow)?;
            (!gates.is_paused(&wf.name)).then_some((e, wf))
        })
        .collect()
}

#[cfg(test)]
mod tests;
