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
use crate::engine::apply::{Applied, apply_batch, lock_event_log, touches_shared_counters};
use crate::engine::gates::Gates;
use crate::engine::plan::{Action, Outcome, Planner};
use crate::engine::sources::{self, BATCH, Decided, Scan, Start};
use crate::metrics;
use crate::project::Project;
use crate::store::plan_reads::{self, DAEMON_CURSOR, ms};
use crate::store::workflow_states;
use crate::store::{Dialect, Store};
use crate::workflow::Workflow;

use crate::store::ticks;

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

impl Scheduler {
    pub async fn run(mut self) -> Result<()> {
        let pool = self.store.db().clone();
        let mut last_waiting: Option<String> = None;
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
            let pass = match self.pass(&pool, &project, now).await {
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
                let idle = idle_state(&self.store, now).await;
                tracing::debug!(ms = checked.elapsed().as_millis() as u64, "idle check");
                match idle {
                    Ok(st) if st.done(mode) => {
                        match mode {
                            IdleMode::All => {
                                tracing::info!("nothing left to do; stopping (--until-idle)")
                            }
                            IdleMode::Now => tracing::info!(
                                waiting_enrollments = st.active,
                                deferred_messages = st.queued,
                                "nothing due now; stopping (--until-idle=now): {}",
                                st.left()
                            ),
                        }
                        self.shutdown.cancel();
                        break;
                    }
                    Ok(st) => {
                        let what = st.waiting_for(mode);
                        if last_waiting.as_deref() != Some(what.as_str()) {
                            tracing::info!("--until-idle: waiting for {what}");
                            last_waiting = Some(what);
                        }
                    }
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
    pub async fn pass(
        &self,
        pool: &AnyPool,
        project: &Project,
        now: DateTime<Utc>,
    ) -> Result<Pass> {
        let assign = plan_reads::assign_state(pool).await?;
        let mut planner = Planner::new(&project.settings, &project.templates, now, assign);
        let enabled: Vec<&Workflow> = project.workflows.iter().filter(|w| w.enabled).collect();
        planner.gates = self.gates(pool, &enabled, now).await?;
        planner.throttle_last = plan_reads::throttle_state(pool, &enabled).await?;
        crate::engine::caps::load(&mut planner, pool, &enabled).await?;
        let mut pass = Pass::default();
        self.due_steps(pool, &enabled, &mut planner, &mut pass)
            .await?;
        if self
            .event_log(pool, &enabled, &mut planner, &mut pass, true)
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
            self.tick(pool, project, &enabled, wf, &mut planner, &mut pass)
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
                self.enroll_existing(pool, &enabled, wf, &mut planner, &mut pass)
                    .await?;
            }
        }
        Ok(pass)
    }

    /// Activation and pause of every workflow: a workflow this daemon loads
    /// for the first time on this store is activated now.
    async fn gates(
        &self,
        pool: &AnyPool,
        enabled: &[&Workflow],
        now: DateTime<Utc>,
    ) -> Result<Gates> {
        let mut states = workflow_states::all(pool).await?;
        let fresh: Vec<&str> = enabled
            .iter()
            .map(|w| w.name.as_str())
            .filter(|n| !states.contains_key(*n))
            .collect();
        if !fresh.is_empty() {
            for name in workflow_states::activate(pool, &fresh, now).await? {
                tracing::info!(workflow = %name, "activated: the workflow acts on trigger events from now on");
            }
            states = workflow_states::all(pool).await?;
        }
        Ok(Gates {
            states,
            unrecorded: None,
        })
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
        // is planned by the daemon that holds its lease. The claim is a
        // write: in turn with delivery's.
        let turn = self.store.write_turn().await;
        let due = plan_reads::claim_due_enrollments(
            pool,
            self.store.dialect(),
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
        self.commit(pool, planner, batch, None, pass).await
    }

    /// New entries of the event log, for event-triggered workflows.
    ///
    /// `early`: the batch may be planned before this daemon takes its write
    /// turn (SQLite, between whole passes). Planning then runs while the
    /// delivery worker writes its claims and outcomes, instead of holding the
    /// store's one writer; the cursor is read again under the lock, and a
    /// batch another daemon took meanwhile is dropped (`LogBatch::Raced`).
    /// Mid-scan (the planner carries the scan's state) the batch is planned
    /// under the lock, as on PostgreSQL, where the cursor's lock is what
    /// elects the one daemon that plans it.
    async fn event_log(
        &self,
        pool: &AnyPool,
        enabled: &[&Workflow],
        planner: &mut Planner<'_>,
        pass: &mut Pass,
        early: bool,
    ) -> Result<LogBatch> {
        let dialect = self.store.dialect();
        // Nothing new (the usual idle pass): no transaction, no lock.
        let seen = plan_reads::cursor(pool, DAEMON_CURSOR).await?;
        if early && dialect == Dialect::Sqlite {
            let entries = plan_reads::pending_log(pool, seen, BATCH as i64).await?;
            if entries.is_empty() {
                return Ok(LogBatch::Empty);
            }
            let planned = self.plan_log(pool, enabled, planner, &entries).await?;
            let _turn = self.store.write_turn().await;
            let mut tx = crate::store::begin(pool, dialect)
                .await
                .context("beginning a transaction")?;
            if plan_reads::cursor(&mut *tx, DAEMON_CURSOR).await? != seen {
                // Another process moved the cursor while this batch was
                // planned: its plans (and the planner's counters) are stale.
                return Ok(LogBatch::Raced);
            }
            self.commit_log(tx, planner, planned, pass).await?;
            return Ok(LogBatch::Applied);
        }
        if plan_reads::pending_log(pool, seen, 1).await?.is_empty() {
            return Ok(LogBatch::Empty);
        }
        // The transaction that applies the batch is opened first: on
        // PostgreSQL it takes the cursor's lock before reading the cursor, so
        // one daemon plans each batch (the others find the lock taken and move
        // on), and the cursor moves with the batch's plans.
        let _turn = self.store.write_turn().await;
        let mut tx = crate::store::begin(pool, dialect)
            .await
            .context("beginning a transaction")?;
        if !ticks::try_lock_cursor(&mut tx, dialect).await? {
            return Ok(LogBatch::Empty);
        }
        let after = plan_reads::cursor(&mut *tx, DAEMON_CURSOR).await?;
        let entries = plan_reads::pending_log(&mut *tx, after, BATCH as i64).await?;
        if entries.is_empty() {
            return Ok(LogBatch::Empty);
        }
        let planned = self.plan_log(pool, enabled, planner, &entries).await?;
        self.commit_log(tx, planner, planned, pass).await?;
        Ok(LogBatch::Applied)
    }

    /// Plans a batch of event-log entries (not empty): the plans, the blast
    /// guard's verdict, the waits the entries wake and the cursor's new place.
    async fn plan_log<'w>(
        &self,
        pool: &AnyPool,
        enabled: &[&'w Workflow],
        planner: &mut Planner<'_>,
        entries: &[plan_reads::LogEntry],
    ) -> Result<PlannedLog<'w>> {
        let last = entries.last().map_or(0, |e| e.seq);
        for entry in entries {
            metrics::global().event(&entry.kind);
        }
        let event_triggered: Vec<&Workflow> = enabled
            .iter()
            .copied()
            .filter(|w| !w.trigger.is_ticked())
            .collect();
        let mut entered: HashSet<(String, String)> = HashSet::new();
        let mut batch = sources::plan_log_batch(
            &self.store,
            &event_triggered,
            entries,
            planner,
            &mut entered,
            None,
        )
        .await?;
        let (recent, upcoming) = sources::guard_counts(pool, &batch, planner, Some(last)).await?;
        let paused = sources::guard_batch(&mut batch, planner, &recent, &upcoming);
        // Enrollments waiting for these entries (wait_until) become due,
        // with the batch's own new enrollments.
        let wakes = sources::wakes(enabled, entries);
        Ok(PlannedLog {
            batch,
            paused,
            wakes,
            last,
        })
    }

    /// Applies a planned log batch in `tx`: the plans and the cursor move together.
    async fn commit_log(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        planner: &mut Planner<'_>,
        planned: PlannedLog<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let PlannedLog {
            batch,
            paused,
            wakes,
            last,
        } = planned;
        self.commit_in(tx, planner, batch, Some(last), &paused, &wakes, pass)
            .await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }

    /// A cron-ticked workflow: run its latest tick if not taken yet.
    async fn tick(
        &self,
        pool: &AnyPool,
        project: &Project,
        enabled: &[&Workflow],
        wf: &Workflow,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let now = planner.now;
        let Some(cron) = wf.trigger.tick_cron() else {
            return Ok(());
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
            let last = ticks::last_tick(&self.store, &wf.name).await?;
            if last.is_some_and(|t| t >= ms(tick)) {
                return Ok(());
            }
            let Some(lock) = ticks::try_lock_tick(&self.store, &wf.name).await? else {
                return Ok(());
            };
            let ran = self.run_tick(pool, enabled, wf, tick, planner, pass).await;
            lock.release().await;
            return ran;
        }
        self.run_tick(pool, enabled, wf, tick, planner, pass).await
    }

    /// Runs `tick` of `wf` unless it was taken already.
    async fn run_tick(
        &self,
        pool: &AnyPool,
        enabled: &[&Workflow],
        wf: &Workflow,
        tick: DateTime<Utc>,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let now = planner.now;
        let last = ticks::last_tick(&self.store, &wf.name).await?;
        match sources::tick_due(last, tick) {
            sources::TickDue::FirstSight => {
                ticks::take_tick(&self.store, &wf.name, ms(tick), ms(now)).await?;
                return Ok(());
            }
            sources::TickDue::Taken => return Ok(()),
            sources::TickDue::Run => {}
        }
        tracing::info!(workflow = %wf.name, tick = %tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "cron tick");
        if !self
            .scan(pool, enabled, wf, Scan::Trigger, planner, pass)
            .await?
        {
            // Shutting down mid-scan: the tick is not recorded, so the next
            // start runs it again (its entry keys make that harmless).
            return Ok(());
        }
        ticks::take_tick(&self.store, &wf.name, ms(tick), ms(now)).await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }

    /// `entry_existing`: enroll the audience as it is, once.
    async fn enroll_existing(
        &self,
        pool: &AnyPool,
        enabled: &[&Workflow],
        wf: &Workflow,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        tracing::info!(workflow = %wf.name, "entry_existing: enrolling the contacts already in the audience");
        if !self
            .scan(pool, enabled, wf, Scan::Existing, planner, pass)
            .await?
        {
            return Ok(());
        }
        workflow_states::existing_done(pool, &wf.name, planner.now).await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }

    /// Scans the workflow's audience and applies the plans in batches. The
    /// blast guard sees the whole scan before the first batch: a broadcast
    /// over the limit is held as a whole, not cut off half-way.
    ///
    /// A big scan does not hold the rest up: after each batch, one batch of
    /// the event log is planned (new contacts and events keep flowing while
    /// a million-contact broadcast is planned), and a shutdown stops the scan
    /// between batches (returns `false`: not finished).
    async fn scan(
        &self,
        pool: &AnyPool,
        enabled: &[&Workflow],
        wf: &Workflow,
        scan: Scan,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<bool> {
        let (filter, key_of, cause) = sources::scan_filter(
            wf,
            planner.now,
            planner.settings.timezone,
            self.store.dialect(),
            scan,
        )?;
        // The blast guard judges the whole scan before its first batch: with
        // a guard, the audience is counted first (as the dry-run counts it).
        // The scan itself is streamed beside the writes below (a read of its
        // own, one snapshot), so memory stays flat however many match.
        let mut remaining: i64 = 0;
        if planner.settings.policies.blast_guard.is_some() {
            let mut count = self
                .store
                .scan_contacts_beside_writes(&filter.text, &filter.binds);
            while let Some(c) = count.next().await {
                c?;
                remaining += 1;
            }
        }
        let mut contacts = self
            .store
            .scan_contacts_beside_writes(&filter.text, &filter.binds)
            .peekable();
        let mut chunk: Vec<Contact> = Vec::with_capacity(BATCH);
        while std::pin::Pin::new(&mut contacts).peek().await.is_some() {
            while chunk.len() < BATCH {
                match contacts.next().await {
                    Some(c) => chunk.push(c?),
                    None => break,
                }
            }
            remaining -= chunk.len() as i64;
            let mut batch =
                sources::plan_scan_chunk(&self.store, wf, &mut chunk, &key_of, &cause, planner)
                    .await?;
            let (recent, _) = sources::guard_counts(pool, &batch, planner, None).await?;
            let upcoming = HashMap::from([(wf.name.clone(), remaining.max(0))]);
            let paused = sources::guard_batch(&mut batch, planner, &recent, &upcoming);
            // In turn with the API's writes (SQLite has one writer): a
            // contact posted during a long scan is written between batches.
            let turn = self.store.write_turn().await;
            let tx = crate::store::begin(pool, self.store.dialect())
                .await
                .context("beginning a transaction")?;
            self.commit_in(tx, planner, batch, None, &paused, &[], pass)
                .await?;
            drop(turn);
            if std::pin::Pin::new(&mut contacts).peek().await.is_some() {
                if self.shutdown.is_cancelled() {
                    return Ok(false);
                }
                self.event_log(pool, enabled, planner, pass, false).await?;
            }
        }
        Ok(true)
    }

    /// Apply a batch of plans in one transaction.
    async fn commit(
        &self,
        pool: &AnyPool,
        planner: &mut Planner<'_>,
        batch: Vec<Decided<'_>>,
        cursor: Option<i64>,
        pass: &mut Pass,
    ) -> Result<()> {
        if batch.is_empty() && cursor.is_none() {
            return Ok(());
        }
        let _turn = self.store.write_turn().await;
        let tx = crate::store::begin(pool, self.store.dialect())
            .await
            .context("beginning a transaction")?;
        self.commit_in(tx, planner, batch, cursor, &[], &[], pass)
            .await
    }

    /// Apply a batch of plans (record the workflows the blast guard paused,
    /// and move the cursor) in `tx`, and commit it.
    // The batch, and what moves with it in its transaction (cursor, pauses, wakes).
    #[allow(clippy::too_many_arguments)]
    async fn commit_in(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        planner: &mut Planner<'_>,
        batch: Vec<Decided<'_>>,
        cursor: Option<i64>,
        paused: &[(String, String)],
        wakes: &[sources::Wake],
        pass: &mut Pass,
    ) -> Result<()> {
        let dialect = self.store.dialect();
        if touches_shared_counters(&batch) {
            lock_event_log(&mut tx, dialect).await?;
        }
        for (name, reason) in paused {
            workflow_states::pause(&mut tx, name, planner.now, reason).await?;
        }
        let mut stored = Vec::new();
        let applied = apply_batch(&mut tx, dialect, planner.settings, &batch, planner.now).await?;
        for (d, applied) in batch.iter().zip(applied) {
            match applied {
                Applied::Stored { messages, .. } => {
                    pass.plans += 1;
                    pass.messages += messages;
                    stored.push(d);
                }
                Applied::Passed => {
                    *pass.passed_over.entry(d.workflow.name.clone()).or_insert(0) += 1
                }
                Applied::Stale => {}
            }
        }
        crate::engine::apply::wake_waiting(&mut tx, wakes, planner.now).await?;
        if let Some(seq) = cursor {
            ticks::advance_cursor(&mut tx, DAEMON_CURSOR, seq).await?;
        }
        tx.commit().await.context("committing plans")?;
        planner.forget_planned();
        // Tag steps may have queued WeCom tag marks: wake their worker.
        if stored.iter().any(|d| {
            d.plan
                .steps
                .iter()
                .any(|s| matches!(s.action, crate::engine::plan::Action::Tag { .. }))
        }) {
            self.marks_queued.notify();
        }
        for (name, reason) in paused {
            tracing::warn!(workflow = %name, %reason, "workflow paused by the blast guard; its enrollments wait for `nurture resume`");
        }
        for d in stored {
            let outcome = match (&d.start, &d.plan.outcome) {
                (_, Outcome::Held { .. }) => "held",
                (_, Outcome::Exited(_)) => "exited",
                (_, Outcome::Done) => "done",
                (Start::New { .. }, _) => "started",
                _ => "continued",
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

/// What became of a pass's event-log batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogBatch {
    /// Nothing new (or another daemon holds the log).
    Empty,
    Applied,
    /// Planned, then found taken by another daemon: dropped.
    Raced,
}

/// A planned event-log batch waiting for its transaction.
struct PlannedLog<'w> {
    batch: Vec<Decided<'w>>,
    paused: Vec<(String, String)>,
    wakes: Vec<sources::Wake>,
    /// The last entry's sequence number: where the cursor moves.
    last: i64,
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

/// Nothing to plan or deliver: the log is consumed, no enrollment is active,
/// no message waits.
/// When `--until-idle` stops the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdleMode {
    /// Nothing left at all: no active enrollment, no message waiting.
    All,
    /// Nothing due now: waits and deferred messages stay in the store.
    Now,
}

/// What is left in the store, for `--until-idle`.
#[derive(Debug, Clone, Default)]
pub struct IdleState {
    pub pending_log: i64,
    pub active: i64,
    pub active_due: i64,
    pub next_active: Option<i64>,
    pub queued: i64,
    pub queued_due: i64,
    pub next_queued: Option<i64>,
}

impl IdleState {
    pub fn done(&self, mode: IdleMode) -> bool {
        match mode {
            IdleMode::All => self.pending_log == 0 && self.active == 0 && self.queued == 0,
            IdleMode::Now => self.pending_log == 0 && self.active_due == 0 && self.queued_due == 0,
        }
    }

    /// What the daemon still waits for, in words.
    pub fn waiting_for(&self, mode: IdleMode) -> String {
        let at = |t: Option<i64>| {
            t.map(|t| {
                format!(
                    ", the next due at {}",
                    crate::timefmt::rfc3339(&plan_reads::from_ms(t))
                )
            })
            .unwrap_or_default()
        };
        let mut parts = Vec::new();
        if self.pending_log > 0 {
            parts.push(format!("{} trigger(s) in the event log", self.pending_log));
        }
        let (active, queued) = match mode {
            IdleMode::All => (self.active, self.queued),
            IdleMode::Now => (self.active_due, self.queued_due),
        };
        if active > 0 {
            parts.push(format!(
                "{active} enrollment(s) in a wait{}",
                at(self.next_active)
            ));
        }
        if queued > 0 {
            parts.push(format!(
                "{queued} message(s) to deliver (quiet hours, retries){}",
                at(self.next_queued)
            ));
        }
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join("; ")
        }
    }

    /// What stays in the store when `--until-idle=now` stops.
    pub fn left(&self) -> String {
        if self.active == 0 && self.queued == 0 {
            return "nothing left in the store".to_string();
        }
        format!("left for later: {}", self.waiting_for(IdleMode::All))
    }
}

pub async fn idle_state(store: &Store, now: DateTime<Utc>) -> Result<IdleState> {
    let left = ticks::leftover(store, DAEMON_CURSOR, plan_reads::ms(now)).await?;
    Ok(IdleState {
        pending_log: left.pending_log,
        active: left.active,
        active_due: left.active_due,
        next_active: left.next_active,
        queued: left.queued,
        queued_due: left.queued_due,
        next_queued: left.next_queued,
    })
}

/// How long to sleep: until the next due enrollment or cron tick, at most 1 s
/// (new work from outside the API — rows written by other systems — is found
/// by polling).
async fn next_wake(store: &Store, project: &Project, now: DateTime<Utc>) -> Result<StdDuration> {
    let mut next = now + chrono::Duration::seconds(1);
    let due = ticks::next_enrollment_due(store).await?;
    if let Some(d) = due {
        next = next.min(plan_reads::from_ms(d));
    }
    for wf in project.workflows.iter().filter(|w| w.enabled) {
        let Some(cron) = wf.trigger.tick_cron() else {
            continue;
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
