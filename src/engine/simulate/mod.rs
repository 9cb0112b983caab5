//! The dry-run's engine: the daemon's passes, run forward in time on a copy
//! of the plan state, changing nothing in the store.
//!
//! A pass here takes the same pieces as the daemon's (`engine::scheduler`),
//! in the same order and the same batches: due enrollments, then the event
//! log, then cron ticks, then `entry_existing` scans. What the daemon would
//! write is kept in memory instead: the enrollments the simulation made or
//! moved on, the tags its plans added (as event-log entries that may fire
//! `tag_added` workflows), the ticks it took, the workflows the blast guard
//! paused. The planner carries round-robin positions, team loads, planned
//! messages and contact changes from plan to plan, as the store carries them
//! for the daemon.
//!
//! Time moves from `at` to `until` from one due moment to the next (a
//! wait's end, a cron tick), with passes at each until nothing more is due.
//! It assumes no new events arrive; the dry-run says so.

use crate::store::states::EnrollmentStatus;
use std::collections::{HashMap, HashSet, VecDeque};

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::contact::Contact;
use crate::engine::gates::Gates;
use crate::engine::plan::{Action, Outcome, Planner};
use crate::engine::scheduler::runnable;
use crate::engine::sim_index::{EntryIndex, Starts};
use crate::engine::sources::{self, BATCH, Decided, Scan, Start, TickDue};
use crate::project::Project;
use crate::store::Store;
use crate::store::plan_reads::{self, DAEMON_CURSOR, EnrollmentRow, LogEntry, ms};
use crate::store::scans::ContactKeys;
use crate::workflow::DateTexts;
use crate::workflow::Workflow;

mod event_log;
mod scan;
mod state;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub at: DateTime<Utc>,
    /// The last moment simulated (`at` itself: one moment).
    pub until: DateTime<Utc>,
    /// Also imagine each event-triggered workflow firing at `at` for every
    /// contact in its audience.
    pub all_contacts: bool,
}

/// What the simulation reports besides the plans.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Workflows the blast guard would pause, with when and why.
    pub paused: Vec<(String, DateTime<Utc>, String)>,
    /// Cron ticks recorded without running (the first-tick rule), by workflow.
    pub first_sight: Vec<(String, DateTime<Utc>)>,
    /// Cron ticks run, by workflow.
    pub ticks_run: Vec<(String, DateTime<Utc>)>,
}

/// The copy of the plan state.
pub struct Simulation<'a> {
    store: &'a Store,
    project: &'a Project,
    opts: SimOptions,
    /// The event log's position the simulation consumed up to (store rows).
    cursor: i64,
    /// Entries the simulation's own plans logged (tags they added).
    own_log: VecDeque<LogEntry>,
    /// Store entries read ahead, not yet planned.
    log_ahead: VecDeque<LogEntry>,
    /// The store's last log entry when the simulation began: entries above
    /// it are the simulation's own.
    store_max_seq: i64,
    next_seq: i64,
    /// Enrollments the simulation made or moved on, active ones by id.
    active: HashMap<i64, EnrollmentRow>,
    /// Store enrollments the simulation has taken over.
    taken: HashSet<i64>,
    /// New enrollments by contact, for entry policies (compact: only what
    /// the policies read).
    entries: EntryIndex,
    next_id: i64,
    /// The last cron tick taken, per workflow.
    ticks: HashMap<String, i64>,
    /// Enrollment starts per workflow, for the blast guard.
    started: Starts,
    /// The last moment this run simulates, when it is known for the whole
    /// run (`run`; `nurture test` runs in legs and does not know it): a
    /// ticked workflow that cannot be entered again before it needs no
    /// entries kept.
    horizon: Option<DateTime<Utc>>,
    /// Per ticked workflow, its next tick after the moment it was asked at
    /// (asked once per moment, not once per enrollment).
    next_ticks: HashMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)>,
    existing_done: HashSet<String>,
    imagined: bool,
    /// The moment the simulation has reached (`at` until it runs).
    now: DateTime<Utc>,
    /// Per date-triggered workflow, the contacts whose date is near for
    /// the day's texts (`None`: too many to be worth naming; the checks
    /// scan). The store does not change under a dry-run: the day's 96
    /// checks look among these rather than at every contact.
    date_keys: HashMap<String, (DateTexts, Option<ContactKeys>)>,
    pub report: SimReport,
}

impl<'a> Simulation<'a> {
    pub async fn new(store: &'a Store, project: &'a Project, opts: SimOptions) -> Result<Self> {
        let cursor = store.cursor(DAEMON_CURSOR).await?;
        let marks = crate::store::ticks::marks(store).await?;
        let (max_seq, max_id) = (marks.max_seq, marks.max_enrollment_id);
        let ticks: HashMap<String, i64> = marks.ticks.into_iter().collect();
        let now = opts.at;
        Ok(Simulation {
            store,
            project,
            opts,
            cursor,
            own_log: VecDeque::new(),
            log_ahead: VecDeque::new(),
            store_max_seq: max_seq.unwrap_or(0),
            next_seq: max_seq.unwrap_or(0) + 1,
            active: HashMap::new(),
            taken: HashSet::new(),
            entries: EntryIndex::default(),
            next_id: max_id.unwrap_or(0) + 1,
            ticks,
            started: Starts::default(),
            horizon: None,
            next_ticks: HashMap::new(),
            existing_done: HashSet::new(),
            imagined: false,
            now,
            date_keys: HashMap::new(),
            report: SimReport::default(),
        })
    }

    /// The planner the simulation runs with: counters from the store, and
    /// workflows no daemon has loaded yet activated at `at`.
    pub async fn planner(&self) -> Result<Planner<'a>> {
        let store = self.store;
        let assign = store.assign_state().await?;
        let mut planner = Planner::new(
            &self.project.settings,
            &self.project.templates,
            self.opts.at,
            assign,
        );
        planner.gates = Gates {
            states: store.workflow_states().await?,
            unrecorded: Some(self.opts.at),
        };
        let enabled: Vec<&Workflow> = self
            .project
            .workflows
            .iter()
            .filter(|w| w.enabled)
            .collect();
        planner.throttle_last = store.throttle_state(&enabled).await?;
        crate::engine::caps::load(&mut planner, store, &enabled).await?;
        Ok(planner)
    }

    /// Runs from `at` to `until`, handing every plan to `on_plan` with the
    /// moment it was made.
    pub async fn run<F>(&mut self, planner: &mut Planner<'a>, on_plan: F) -> Result<()>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        let until = self.opts.until;
        self.horizon = Some(until);
        self.run_to(planner, until, on_plan).await
    }

    /// Runs from where the simulation stands to `until` (passes at the
    /// current moment first, then at each due moment up to `until`), and
    /// stands at `until` afterwards. `nurture test` runs it in legs, writing
    /// the case's events to its throwaway store between them.
    pub async fn run_to<F>(
        &mut self,
        planner: &mut Planner<'a>,
        until: DateTime<Utc>,
        mut on_plan: F,
    ) -> Result<()>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        let mut t = self.now;
        loop {
            planner.now = t;
            // Passes at `t` until one makes no plan, as the daemon loops.
            while self.pass(planner, &mut on_plan).await? > 0 {}
            match self.next_moment(t).await? {
                Some(next) if next <= until => t = next,
                _ => break,
            }
        }
        self.now = t.max(until);
        planner.now = self.now;
        Ok(())
    }

    /// Takes in what was written to the store since the simulation began
    /// (a `nurture test` case's events and tags, on its throwaway store):
    /// the new event-log entries are read as the daemon would read them.
    /// The simulation's own entries not yet planned are numbered after them.
    pub async fn absorb_store_writes(&mut self) -> Result<()> {
        // The contacts may have changed: their dates are read again.
        self.date_keys.clear();
        let max = self.store.max_log_seq().await?.unwrap_or(0);
        if max <= self.store_max_seq {
            return Ok(());
        }
        self.store_max_seq = max;
        self.next_seq = self.next_seq.max(max + 1);
        for e in self.own_log.iter_mut() {
            e.seq = self.next_seq;
            self.next_seq += 1;
        }
        Ok(())
    }

    /// One pass at `planner.now`; returns how many plans it made.
    async fn pass<F>(&mut self, planner: &mut Planner<'a>, on_plan: &mut F) -> Result<usize>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        let project: &'a Project = self.project;
        let enabled: Vec<&'a Workflow> = project.workflows.iter().filter(|w| w.enabled).collect();
        let mut plans = 0;

        // 1. Due enrollments.
        let due = self.due(planner.now).await?;
        let due = runnable(due, &enabled, &planner.gates);
        let batch = sources::plan_due_batch(self.store, due, planner).await?;
        plans += self.take(batch, planner, on_plan)?;

        // 2. The event log.
        plans += self.log_step(&enabled, planner, on_plan).await?;

        // 3. Cron ticks.
        for wf in enabled.iter().copied().filter(|w| w.trigger.is_ticked()) {
            let Some(cron) = wf.trigger.tick_cron() else {
                continue;
            };
            let Some(tick) = cron.latest_at_or_before(planner.now, project.settings.timezone)
            else {
                continue;
            };
            match sources::tick_due(self.ticks.get(&wf.name).copied(), tick) {
                TickDue::Taken => {}
                TickDue::FirstSight => {
                    self.ticks.insert(wf.name.clone(), ms(tick));
                    self.report.first_sight.push((wf.name.clone(), tick));
                }
                TickDue::Run => {
                    plans += self
                        .scan(&enabled, wf, Scan::Trigger, planner, on_plan)
                        .await?
                        .max(1);
                    self.ticks.insert(wf.name.clone(), ms(tick));
                    self.report.ticks_run.push((wf.name.clone(), tick));
                }
            }
        }

        // 4. `entry_existing` scans, once.
        for wf in enabled.iter().copied().filter(|w| w.entry_existing) {
            let done_in_store = planner
                .gates
                .states
                .get(&wf.name)
                .is_some_and(|s| s.existing_done_at.is_some());
            if done_in_store || !self.existing_done.insert(wf.name.clone()) {
                continue;
            }
            plans += self
                .scan(&enabled, wf, Scan::Existing, planner, on_plan)
                .await?
                .max(1);
        }

        // `--all-contacts`: event-triggered workflows imagined firing now, once.
        if self.opts.all_contacts && !self.imagined {
            self.imagined = true;
            for wf in enabled.iter().copied().filter(|w| !w.trigger.is_ticked()) {
                plans += self
                    .scan(&enabled, wf, Scan::Trigger, planner, on_plan)
                    .await?;
            }
        }
        Ok(plans)
    }
}

/// The next tick of a cron-triggered workflow after `t`.
pub fn next_tick(project: &Project, wf: &Workflow, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = wf.trigger.tick_cron()?;
    cron.next_after(t, project.settings.timezone)
}
