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
use crate::workflow::Workflow;

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

    /// One batch of the event log, as the daemon's `event_log` takes it.
    /// With no event-triggered workflow it fires nothing (the daemon only
    /// moves its cursor over it): not read.
    async fn log_step<F>(
        &mut self,
        enabled: &[&'a Workflow],
        planner: &mut Planner<'a>,
        on_plan: &mut F,
    ) -> Result<usize>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        if !enabled.iter().any(|w| !w.trigger.is_ticked()) && !sources::any_wait_until(enabled) {
            return Ok(0);
        }
        let entries = self.pending_log().await?;
        let Some(last) = entries.last() else {
            return Ok(0);
        };
        let last_store_seq = entries
            .iter()
            .filter(|e| e.seq <= self.cursor_limit())
            .map(|e| e.seq)
            .max();
        let event_triggered: Vec<&'a Workflow> = enabled
            .iter()
            .copied()
            .filter(|w| !w.trigger.is_ticked())
            .collect();
        let mut entered = HashSet::new();
        // The simulation's enrollments of the batch's contacts, as rows.
        let mut mine: HashMap<String, Vec<EnrollmentRow>> = HashMap::new();
        for e in &entries {
            if !mine.contains_key(&e.contact_id)
                && let Some(rows) = self.entries.rows(&e.contact_id, i64::MAX)
            {
                mine.insert(e.contact_id.clone(), rows);
            }
        }
        let mut batch = sources::plan_log_batch(
            self.store,
            &event_triggered,
            &entries,
            planner,
            &mut entered,
            Some(&mine),
        )
        .await?;
        let (recent, upcoming) = self.guard_counts(&batch, planner, Some(last.seq)).await?;
        self.pause(
            sources::guard_batch(&mut batch, planner, &recent, &upcoming),
            planner,
        );
        if let Some(seq) = last_store_seq {
            self.cursor = self.cursor.max(seq);
        }
        let plans = self.take(batch, planner, on_plan)?.max(1);
        // As the daemon: after the batch's plans, in its transaction.
        let wakes = sources::wakes(enabled, &entries);
        self.wake(&wakes, planner.now).await?;
        Ok(plans)
    }

    /// The daemon's `wake_waiting` on the copy: enrollments waiting at the
    /// woken `wait_until` steps become due at `now` (store rows are taken over).
    async fn wake(&mut self, wakes: &[sources::Wake], now: DateTime<Utc>) -> Result<()> {
        if wakes.is_empty() {
            return Ok(());
        }
        let is_woken = |e: &EnrollmentRow| {
            e.status == EnrollmentStatus::Active
                && e.wait_since.is_some()
                && e.next_run_at.is_some_and(|n| n > now)
                && wakes.iter().any(|w| {
                    w.contact_id == e.contact_id
                        && w.workflow == e.workflow
                        && e.step_id.as_deref() == Some(w.step_id.as_str())
                })
        };
        for e in self.active.values_mut() {
            if is_woken(e) {
                e.next_run_at = Some(now);
            }
        }
        let mut ids: Vec<String> = wakes.iter().map(|w| w.contact_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let stored = self.store.enrollments_of_many(&ids).await?;
        for rows in stored.into_values() {
            for mut e in rows {
                if self.taken.contains(&e.id) || !is_woken(&e) {
                    continue;
                }
                self.taken.insert(e.id);
                e.next_run_at = Some(now);
                self.active.insert(e.id, e);
            }
        }
        Ok(())
    }

    /// The highest store sequence number (entries above it are the
    /// simulation's own).
    fn cursor_limit(&self) -> i64 {
        self.store_max_seq
    }

    /// Due enrollments: the store's not yet taken over, and the simulation's.
    async fn due(&self, at: DateTime<Utc>) -> Result<Vec<EnrollmentRow>> {
        let limit = (BATCH + self.taken.len()) as i64;
        let mut rows: Vec<EnrollmentRow> = self
            .store
            .due_enrollments(at, limit)
            .await?
            .into_iter()
            .filter(|e| !self.taken.contains(&e.id))
            .collect();
        rows.extend(
            self.active
                .values()
                .filter(|e| e.next_run_at.is_some_and(|n| n <= at))
                .cloned(),
        );
        rows.sort_by_key(|e| (e.next_run_at, e.id));
        rows.truncate(BATCH);
        Ok(rows)
    }

    /// The next batch of the event log: the store's entries after the cursor,
    /// then the simulation's own.
    async fn pending_log(&mut self) -> Result<Vec<LogEntry>> {
        // Read ahead in large pages (one query per 8,192 entries, not per
        // batch); handed out in the daemon's batches.
        if self.log_ahead.len() < BATCH {
            let after = self.log_ahead.back().map(|e| e.seq).unwrap_or(self.cursor);
            if after < self.cursor_limit() {
                let page = self.store.pending_log(after, 8192).await?;
                self.log_ahead
                    .extend(page.into_iter().filter(|e| e.seq <= self.store_max_seq));
            }
        }
        let take = self.log_ahead.len().min(BATCH);
        let mut entries: Vec<LogEntry> = self.log_ahead.drain(..take).collect();
        while entries.len() < BATCH {
            match self.own_log.pop_front() {
                Some(e) => entries.push(e),
                None => break,
            }
        }
        Ok(entries)
    }

    /// The blast guard's counts, as the daemon takes them from the store,
    /// plus the simulation's own enrollments and log entries.
    async fn guard_counts(
        &self,
        batch: &[Decided<'_>],
        planner: &Planner<'_>,
        log_after: Option<i64>,
    ) -> Result<(HashMap<String, i64>, HashMap<String, i64>)> {
        // The store's counts; a log position past the store's own entries
        // counts only the simulation's.
        let limit = self.cursor_limit();
        let store_after = log_after.map(|a| a.min(limit)).filter(|a| *a < limit);
        let (mut recent, mut upcoming) =
            sources::guard_counts(self.store, batch, planner, store_after).await?;
        let Some(guard) = planner.settings.policies.blast_guard else {
            return Ok((recent, upcoming));
        };
        for (name, n) in recent.iter_mut() {
            let since = planner.gates.window_start(name, &guard, planner.now);
            *n += self.started.since(name, since);
            if log_after.is_none() {
                continue;
            }
            let Some((kind, which)) = batch
                .iter()
                .find(|d| d.workflow.name == *name)
                .and_then(|d| d.workflow.trigger.log_match())
            else {
                continue;
            };
            let mine = self
                .own_log
                .iter()
                .filter(|e| e.kind == kind && (which.is_none() || e.name.as_deref() == which))
                .count() as i64;
            *upcoming.entry(name.clone()).or_insert(0) += mine;
        }
        Ok((recent, upcoming))
    }

    fn pause(&mut self, paused: Vec<(String, String)>, planner: &Planner<'_>) {
        for (name, reason) in paused {
            self.report.paused.push((name, planner.now, reason));
        }
    }

    /// A scan of `wf`'s audience, planned and taken in the daemon's batches,
    /// as it streams: nothing the size of the audience is held. With the
    /// blast guard on, the daemon judges a scan by its size before the first
    /// batch (it collects the scan first); here the scan is counted first
    /// and then read again (the store does not change under a dry-run).
    async fn scan<F>(
        &mut self,
        enabled: &[&'a Workflow],
        wf: &'a Workflow,
        scan: Scan,
        planner: &mut Planner<'a>,
        on_plan: &mut F,
    ) -> Result<usize>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        let (filter, key_of, cause) = sources::scan_filter(
            wf,
            planner.now,
            planner.settings.timezone,
            self.store.dialect(),
            scan,
        )?;
        let store: &'a Store = self.store;
        // The simulation's enrollments as the scan began (see `may_enter`);
        // none of this workflow: no look-up per contact.
        let below = self.next_id;
        let check = self.entries.has_workflow(&wf.name);
        let guarded = planner.settings.policies.blast_guard.is_some();
        let mut remaining: i64 = 0;
        if guarded {
            let mut stream = store.scan_contacts_threaded(&filter.text, &filter.binds);
            while let Some(c) = stream.next().await {
                let c = c?;
                if !check || self.may_enter(wf, &key_of, &c, planner.now, below) {
                    remaining += 1;
                }
            }
        }
        let mut stream = store.scan_contacts_threaded(&filter.text, &filter.binds);
        let mut plans = 0;
        let mut chunk: Vec<Contact> = Vec::with_capacity(BATCH);
        // One contact read ahead: a full batch is planned only once it is
        // known whether another follows (the daemon moves the event log
        // between batches, not after the last).
        let mut ahead: Option<Contact> = None;
        loop {
            let next = match ahead.take() {
                Some(c) => Some(c),
                None => loop {
                    match stream.next().await {
                        None => break None,
                        Some(c) => {
                            let c = c?;
                            if !check || self.may_enter(wf, &key_of, &c, planner.now, below) {
                                break Some(c);
                            }
                        }
                    }
                },
            };
            let last = next.is_none();
            if chunk.len() < BATCH && !last {
                chunk.extend(next);
                continue;
            }
            if chunk.is_empty() {
                return Ok(plans);
            }
            ahead = next;
            remaining -= chunk.len() as i64;
            let mut batch =
                sources::plan_scan_chunk(self.store, wf, &mut chunk, &key_of, &cause, planner)
                    .await?;
            if guarded {
                let (recent, _) = self.guard_counts(&batch, planner, None).await?;
                let upcoming = HashMap::from([(wf.name.clone(), remaining)]);
                self.pause(
                    sources::guard_batch(&mut batch, planner, &recent, &upcoming),
                    planner,
                );
            }
            plans += self.take(batch, planner, on_plan)?;
            if last {
                return Ok(plans);
            }
            // As the daemon: the event log moves between batches.
            plans += self.log_step(enabled, planner, on_plan).await?;
        }
    }

    /// The entry policy over the simulation's own enrollments (the scan's
    /// SQL checked the store's).
    /// `below`: only the simulation's enrollments with a smaller id count
    /// (those made before the scan began: the daemon collects a scan first,
    /// so enrollments made between its batches do not change what it plans).
    fn may_enter(
        &self,
        wf: &Workflow,
        key_of: &sources::KeyOf,
        c: &Contact,
        at: DateTime<Utc>,
        below: i64,
    ) -> bool {
        match self.entries.rows(&c.id, below) {
            None => true,
            Some(mine) => sources::may_enter_given(wf, &mine, &key_of.key(wf, c), at),
        }
    }

    /// Whether `wf` could be entered again later in this run, so its new
    /// enrollments must be kept for the entry policy: an event-triggered
    /// workflow always (the log, `--all-contacts`); a ticked one if its
    /// `entry_existing` scan is still to come or it ticks again before the
    /// run ends (always when the end is not known).
    fn may_reenter(&mut self, wf: &Workflow, planner: &Planner<'_>) -> bool {
        if !wf.trigger.is_ticked() {
            return true;
        }
        let existing_pending = wf.entry_existing
            && !self.existing_done.contains(&wf.name)
            && planner
                .gates
                .states
                .get(&wf.name)
                .is_none_or(|s| s.existing_done_at.is_none());
        let Some(horizon) = self.horizon else {
            return true;
        };
        if existing_pending {
            return true;
        }
        let now = planner.now;
        let next = match self.next_ticks.get(&wf.name) {
            Some((at, next)) if *at == now => *next,
            _ => {
                let next = next_tick(self.project, wf, now);
                self.next_ticks.insert(wf.name.clone(), (now, next));
                next
            }
        };
        next.is_some_and(|t| t <= horizon)
    }

    /// What the daemon would write for these plans, kept in memory.
    fn take<F>(
        &mut self,
        batch: Vec<Decided<'a>>,
        planner: &Planner<'_>,
        on_plan: &mut F,
    ) -> Result<usize>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        let now = planner.now;
        let mut plans = 0;
        for d in batch {
            on_plan(&d, now)?;
            let id = match &d.start {
                Start::Passed { .. } => continue,
                Start::New { entry_key, .. } => {
                    let id = self.next_id;
                    self.next_id += 1;
                    if self.may_reenter(d.workflow, planner) {
                        self.entries
                            .insert(id, &d.workflow.name, &d.contact_id, entry_key, now);
                    }
                    self.started.add(&d.workflow.name, now);
                    id
                }
                Start::Existing { enrollment_id } => {
                    self.taken.insert(*enrollment_id);
                    *enrollment_id
                }
            };
            plans += 1;
            let (started_at, trigger) = match self.active.remove(&id) {
                Some(e) => (e.started_at, e.trigger),
                // A new enrollment starts now, with its trigger.
                None if d.is_new() => (now, d.trigger.clone()),
                None => (now, None),
            };
            if let Outcome::Waiting {
                next_step,
                until,
                wait_since,
            } = &d.plan.outcome
            {
                self.active.insert(
                    id,
                    EnrollmentRow {
                        id,
                        workflow: d.workflow.name.clone(),
                        contact_id: d.contact_id.clone(),
                        entry_key: String::new(),
                        status: EnrollmentStatus::Active,
                        step_id: next_step.clone(),
                        next_run_at: Some(*until),
                        started_at,
                        trigger,
                        wait_since: *wait_since,
                    },
                );
            }
            for s in &d.plan.steps {
                if let Action::Tag { add, .. } = &s.action {
                    for tag in add {
                        self.own_log.push_back(LogEntry {
                            seq: self.next_seq,
                            kind: "tag_added".into(),
                            contact_id: d.contact_id.clone(),
                            name: Some(tag.clone()),
                            at: now,
                            origin: None,
                            properties: Default::default(),
                        });
                        self.next_seq += 1;
                    }
                }
            }
        }
        Ok(plans)
    }

    /// The next moment after `t` when something is due: a wait ending (in
    /// the store or the simulation) or a cron tick.
    async fn next_moment(&self, t: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let mut next: Option<DateTime<Utc>> = None;
        let mut consider = |c: DateTime<Utc>| {
            if c > t && next.is_none_or(|n| c < n) {
                next = Some(c);
            }
        };
        let stored = crate::store::ticks::next_enrollment_due_after(self.store, ms(t)).await?;
        if let Some(s) = stored {
            consider(plan_reads::from_ms(s));
        }
        for e in self.active.values() {
            if let Some(n) = e.next_run_at {
                consider(n);
            }
        }
        for wf in self.project.workflows.iter().filter(|w| w.enabled) {
            let Some(cron) = wf.trigger.tick_cron() else {
                continue;
            };
            if let Some(n) = cron.next_after(t, self.project.settings.timezone) {
                consider(n);
            }
        }
        Ok(next)
    }
}

/// The next tick of a cron-triggered workflow after `t`.
pub fn next_tick(project: &Project, wf: &Workflow, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = wf.trigger.tick_cron()?;
    cron.next_after(t, project.settings.timezone)
}
