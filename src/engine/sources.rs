//! What is due at a time, planned: the pieces of a pass that the daemon
//! (`engine::scheduler`) and the dry-run (`engine::simulate`) share.
//!
//! A pass takes, in this order: enrollments whose next step is due; entries
//! of the event log not yet processed (contact created, tag added, event),
//! interleaved across workflows in the log's order; and workflows triggered
//! by a cron tick (`inactive`, `schedule`). Each piece is planned by
//! `Planner::plan`; the daemon applies the plans, the dry-run records them in
//! its copy of the plan state and prints them. Both take the same batches in
//! the same order, so the counters that plans share (round-robin positions,
//! team loads, frequency caps) advance the same way.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::audience::Condition;
use crate::contact::Contact;
use crate::engine::gates::{self, after_activation};
use crate::engine::plan::{Action, EnrollmentPlan, Outcome, PlannedStep, Planner, Reason, StartAt};
use crate::store::Store;
use crate::store::dialect::{Dialect, Sql};
use crate::store::plan_reads::{self, EnrollmentRow, ms};
use crate::workflow::{Entry, StepAction, Trigger, Workflow};

/// Plans per batch: due enrollments and event-log entries are taken this many
/// at a time, by the daemon (one transaction each) and by the dry-run alike.
pub const BATCH: usize = 256;

/// How a piece of work starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A new enrollment with this entry key (unique per workflow and contact).
    New { entry_key: String, cause: Cause },
    /// An existing enrollment continuing at its stored step.
    Existing { enrollment_id: i64 },
    /// A trigger that does not enroll (it happened before the workflow's
    /// activation): reported, nothing stored.
    Passed { cause: Cause },
}

/// What made a new enrollment.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// An event-log entry (its sequence number).
    Log(i64),
    /// A cron tick of an `inactive` or `schedule` workflow.
    Tick(DateTime<Utc>),
    /// `--all-contacts`: the trigger imagined firing now.
    Imagined,
    /// `entry_existing` or `nurture enroll --existing`: the audience as it is.
    Existing,
}

/// One planned piece of work.
pub struct Decided<'w> {
    pub workflow: &'w Workflow,
    pub contact_id: String,
    pub start: Start,
    /// For an existing enrollment, the stored step the plan started from.
    pub from_step: Option<String>,
    pub plan: EnrollmentPlan,
    /// The event that started a new enrollment (stored with it).
    pub trigger: Option<crate::contact::TriggerEvent>,
}

impl Decided<'_> {
    pub fn is_new(&self) -> bool {
        matches!(self.start, Start::New { .. })
    }
}

/// Enrollments whose next step is due, planned from their stored step.
/// Contacts, their events and message counts are read in a few queries per
/// batch and workflow, not per enrollment.
pub async fn plan_due_batch<'w>(
    store: &Store,
    due: Vec<(EnrollmentRow, &'w Workflow)>,
    planner: &mut Planner<'_>,
) -> Result<Vec<Decided<'w>>> {
    let ids: Vec<String> = due.iter().map(|(e, _)| e.contact_id.clone()).collect();
    let contacts = load_contacts(store, &ids).await?;
    let mut ready: HashMap<(String, String), (Contact, u32)> = HashMap::new();
    let mut names: Vec<&str> = due.iter().map(|(_, wf)| wf.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let Some(wf) = due.iter().find(|(_, w)| w.name == name).map(|(_, w)| *w) else {
            continue;
        };
        let mut mine: Vec<Contact> = due
            .iter()
            .filter(|(_, w)| w.name == name)
            .filter_map(|(e, _)| contacts.get(&e.contact_id).cloned())
            .collect();
        mine.sort_by(|a, b| a.id.cmp(&b.id));
        mine.dedup_by(|a, b| a.id == b.id);
        let recent = enrich(store, wf, &mut mine, planner).await?;
        for (c, r) in mine.into_iter().zip(recent) {
            ready.insert((name.to_string(), c.id.clone()), (c, r));
        }
    }
    let mut batch = Vec::new();
    for (e, wf) in due {
        let Some((contact, recent)) = ready.get(&(wf.name.clone(), e.contact_id.clone())) else {
            continue;
        };
        let plan = match &e.step_id {
            Some(step) => planner.plan(
                wf,
                contact,
                StartAt::Step {
                    id: step,
                    since: e.started_at,
                    waiting_since: e.wait_since,
                },
                *recent,
                e.trigger.as_ref(),
            ),
            // It slept after its last step: waking up ends it.
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
            trigger: None,
        });
    }
    Ok(batch)
}

/// A scan's contacts (a cron tick, `entry_existing`, `--all-contacts`),
/// planned as new enrollments.
pub async fn plan_scan_chunk<'w>(
    store: &Store,
    wf: &'w Workflow,
    chunk: &mut Vec<Contact>,
    key_of: &KeyOf,
    cause: &Cause,
    planner: &mut Planner<'_>,
) -> Result<Vec<Decided<'w>>> {
    let recent = enrich(store, wf, chunk, planner).await?;
    let mut batch = Vec::new();
    for (contact, recent) in chunk.drain(..).zip(recent) {
        // The SQL chose the audience; conditions on events are re-checked
        // here with the events just loaded.
        if !in_audience(wf, &planner.current(&contact), planner.now) {
            continue;
        }
        // A date trigger: only contacts whose date is due now.
        if matches!(cause, Cause::Tick(_))
            && matches!(wf.trigger, Trigger::Date(_))
            && date_due(wf, &contact, planner.now, planner.settings.timezone).is_none()
        {
            continue;
        }
        let plan = planner.plan(
            wf,
            &contact,
            StartAt::First { since: planner.now },
            recent,
            None,
        );
        batch.push(Decided {
            workflow: wf,
            contact_id: contact.id.clone(),
            start: Start::New {
                entry_key: key_of.key(wf, &contact),
                cause: cause.clone(),
            },
            from_step: None,
            plan,
            trigger: None,
        });
    }
    Ok(batch)
}

/// The blast guard over a batch of plans: for each workflow with new
/// enrollments in it, when the workflow is paused, or when `recent` (started
/// in its window) plus what the batch and `upcoming` would add is over the
/// limit, its new enrollments are held instead. Returns the workflows this
/// call paused, with the reason.
pub fn guard_batch(
    batch: &mut [Decided<'_>],
    planner: &mut Planner<'_>,
    recent: &HashMap<String, i64>,
    upcoming: &HashMap<String, i64>,
) -> Vec<(String, String)> {
    let mut fresh: HashMap<String, i64> = HashMap::new();
    for d in batch.iter().filter(|d| d.is_new() && !is_held(d)) {
        *fresh.entry(d.workflow.name.clone()).or_insert(0) += 1;
    }
    let guard = planner.settings.policies.blast_guard;
    let mut paused = Vec::new();
    let mut names: Vec<&String> = fresh.keys().collect();
    names.sort();
    for name in names {
        if planner.gates.is_paused(name) {
            continue;
        }
        let have = recent.get(name).copied().unwrap_or(0);
        let incoming = fresh[name] + upcoming.get(name).copied().unwrap_or(0);
        if let Some(g) = guard.as_ref()
            && gates::trips(Some(g), have, incoming)
        {
            let reason = gates::pause_reason(g, have, incoming);
            planner.gates.pause(name, planner.now, &reason);
            paused.push((name.clone(), reason));
        }
    }
    for d in batch.iter_mut() {
        if d.is_new() && !is_held(d) && planner.gates.is_paused(&d.workflow.name) {
            d.plan = EnrollmentPlan::held(d.workflow, &d.contact_id);
        }
    }
    paused
}

fn is_held(d: &Decided<'_>) -> bool {
    matches!(d.plan.outcome, Outcome::Held { .. })
}

/// New enrollments per workflow in a batch.
pub fn new_per_workflow(batch: &[Decided<'_>]) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for d in batch.iter().filter(|d| d.is_new()) {
        *out.entry(d.workflow.name.clone()).or_insert(0) += 1;
    }
    out
}

/// How a scan names the enrollments it would create.
pub enum KeyOf {
    Once,
    Spell,
    Tick(i64),
    Now(i64),
    /// `entry_existing` / `nurture enroll --existing`.
    Existing(i64),
    /// A date trigger at this moment (and the settings' time zone): the key
    /// is the occurrence's date.
    Date(DateTime<Utc>, chrono_tz::Tz),
}

impl KeyOf {
    pub fn key(&self, wf: &Workflow, c: &Contact) -> String {
        if wf.entry == Entry::Once {
            return "once".into();
        }
        match self {
            KeyOf::Once => "once".into(),
            KeyOf::Spell => format!("spell:{}", ms(c.quiet_since())),
            KeyOf::Tick(t) => format!("tick:{t}"),
            KeyOf::Now(t) => format!("now:{t}"),
            KeyOf::Existing(t) => format!("existing:{t}"),
            KeyOf::Date(at, tz) => match date_due(wf, c, *at, *tz) {
                Some(d) => format!("date:{d}"),
                None => format!("date:none:{}", ms(*at)),
            },
        }
    }
}

/// Why contacts are scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The workflow's cron tick (`inactive`, `schedule`), or, for an
    /// event-triggered workflow, `--all-contacts`' imagined trigger.
    Trigger,
    /// `entry_existing` / `nurture enroll --existing`: the audience as it is.
    Existing,
}

/// The WHERE clause of a scan: audience, trigger condition, entry policy.
pub fn scan_filter(
    wf: &Workflow,
    at: DateTime<Utc>,
    tz: chrono_tz::Tz,
    dialect: Dialect,
    scan: Scan,
) -> Result<(Sql, KeyOf, Cause)> {
    let sql = crate::store::scans::workflow_scan(wf, at, dialect, scan == Scan::Existing)?;
    let (key_of, cause) = match &wf.trigger {
        _ if scan == Scan::Existing => (KeyOf::Existing(ms(at)), Cause::Existing),
        Trigger::Inactive { .. } => (KeyOf::Spell, Cause::Tick(at)),
        Trigger::Schedule { .. } => (KeyOf::Tick(ms(at)), Cause::Tick(at)),
        Trigger::Date(_) => (KeyOf::Date(at, tz), Cause::Tick(at)),
        _ => (KeyOf::Now(ms(at)), Cause::Imagined),
    };
    let key_of = if wf.entry == Entry::Once {
        KeyOf::Once
    } else {
        key_of
    };
    Ok((sql, key_of, cause))
}

/// The entry policy over the contact's existing enrollments (any workflow).
pub fn may_enter_given(
    wf: &Workflow,
    existing: &[plan_reads::EnrollmentRow],
    key: &str,
    at: DateTime<Utc>,
) -> bool {
    let mut mine = existing.iter().filter(|e| e.workflow == wf.name);
    match wf.entry {
        Entry::Once => mine.next().is_none(),
        Entry::EveryTime => mine.all(|e| e.entry_key != key),
        Entry::OncePer(d) => {
            let since = at - d.to_chrono();
            mine.all(|e| e.entry_key != key && e.started_at <= since)
        }
    }
}

/// Plan a batch of event-log entries for the event-triggered `workflows`,
/// in the log's order, interleaved across workflows: the dry-run prints these
/// plans, the daemon applies them together with the cursor. Contacts, their
/// enrollments, events and recent messages are read in a few queries for the
/// whole batch. `entered` remembers the enrollments decided so far in this
/// run, so a second entry in the same batch does not enter a contact twice
/// before the first is stored; `more_enrollments` adds enrollments that are
/// not in the store (the dry-run's own).
///
/// A trigger that happened before the workflow's activation comes back as
/// [`Start::Passed`] with a `before_activation` skip: shown, never stored.
pub async fn plan_log_batch<'w>(
    store: &Store,
    workflows: &[&'w Workflow],
    entries: &[plan_reads::LogEntry],
    planner: &mut Planner<'_>,
    entered: &mut HashSet<(String, String)>,
    more_enrollments: Option<&HashMap<String, Vec<EnrollmentRow>>>,
) -> Result<Vec<Decided<'w>>> {
    let at = planner.now;
    let firing: Vec<(&plan_reads::LogEntry, &'w Workflow)> = entries
        .iter()
        .flat_map(|e| {
            workflows
                .iter()
                .filter(move |w| fires(w, e))
                .map(move |w| (e, *w))
        })
        .collect();
    if firing.is_empty() {
        return Ok(Vec::new());
    }
    // Entries before the activation need no contact, except tags an import
    // added (they fire for contacts created after the activation).
    let needs_contact = |e: &plan_reads::LogEntry, wf: &Workflow| {
        planner
            .gates
            .activated_at(&wf.name)
            .is_some_and(|a| e.at >= a)
    };
    let mut ids: Vec<String> = firing
        .iter()
        .filter(|(e, wf)| needs_contact(e, wf))
        .map(|(e, _)| e.contact_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    let mut contacts = load_contacts(store, &ids).await?;
    let mut names: Vec<String> = Vec::new();
    for (_, wf) in &firing {
        for n in event_names(wf) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let mut events = store.events_of(&ids, &names).await?;
    for c in contacts.values_mut() {
        c.events = events.remove(&c.id).unwrap_or_default();
    }
    let recent = match &planner.settings.policies.frequency_cap {
        Some(cap) if !ids.is_empty() => {
            store
                .recent_messages(&ids, at - cap.per.to_chrono())
                .await?
        }
        _ => HashMap::new(),
    };
    crate::engine::caps::load_oldest(planner, store, &ids).await?;
    let firing_workflows: Vec<&Workflow> = firing.iter().map(|(_, wf)| *wf).collect();
    crate::engine::transfer::load(planner, store, &firing_workflows, contacts.values()).await?;
    let mut enrollments = if ids.is_empty() {
        HashMap::new()
    } else {
        store.enrollments_of_many(&ids).await?
    };
    if let Some(more) = more_enrollments {
        for id in &ids {
            if let Some(extra) = more.get(id) {
                enrollments
                    .entry(id.clone())
                    .or_default()
                    .extend(extra.iter().cloned());
            }
        }
    }

    let mut out = Vec::new();
    for (entry, wf) in firing {
        let contact = contacts.get(&entry.contact_id);
        if !after_activation(&planner.gates, wf, entry, contact.map(|c| c.created_at)) {
            let first = wf.steps.first().map(|s| s.id.clone()).unwrap_or_default();
            out.push(Decided {
                workflow: wf,
                contact_id: entry.contact_id.clone(),
                start: Start::Passed {
                    cause: Cause::Log(entry.seq),
                },
                from_step: None,
                plan: EnrollmentPlan {
                    steps: vec![PlannedStep {
                        workflow: wf.name.clone(),
                        contact_id: entry.contact_id.clone(),
                        step: first,
                        action: Action::Skip {
                            reason: Reason::BeforeActivation,
                        },
                    }],
                    outcome: Outcome::Done,
                    ran: vec![],
                },
                trigger: None,
            });
            continue;
        }
        let key = (wf.name.clone(), entry.contact_id.clone());
        if wf.entry != Entry::EveryTime && entered.contains(&key) {
            continue;
        }
        let entry_key = log_entry_key(wf, entry.seq);
        let existing = enrollments
            .get(&entry.contact_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if !may_enter_given(wf, existing, &entry_key, at) {
            continue;
        }
        let Some(contact) = contact else {
            continue;
        };
        if !in_audience(wf, &planner.current(contact), at) {
            continue;
        }
        entered.insert(key);
        // Goals count events after the trigger, not the trigger itself.
        let since = at.max(entry.at + chrono::Duration::milliseconds(1));
        let trigger = entry.trigger_event();
        let plan = planner.plan(
            wf,
            contact,
            StartAt::First { since },
            recent.get(&contact.id).copied().unwrap_or(0),
            Some(&trigger),
        );
        out.push(Decided {
            workflow: wf,
            contact_id: contact.id.clone(),
            start: Start::New {
                entry_key,
                cause: Cause::Log(entry.seq),
            },
            from_step: None,
            plan,
            trigger: Some(trigger),
        });
    }
    Ok(out)
}

/// The contacts with these ids (tags and opt-outs filled, events empty), by
/// id, read in chunks of 500.
pub async fn load_contacts(store: &Store, ids: &[String]) -> Result<HashMap<String, Contact>> {
    let mut contacts: HashMap<String, Contact> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let filter = crate::store::scans::contacts_with_ids(chunk, store.dialect());
        let mut stream = store.scan_contacts(&filter.text, &filter.binds);
        while let Some(c) = stream.next().await {
            let c = c?;
            contacts.insert(c.id.clone(), c);
        }
    }
    Ok(contacts)
}

/// For a date-triggered workflow: the occurrence of the contact's date due
/// at `at`, in the contact's time zone.
/// (`default_tz`: the settings' time zone, for contacts without their own).
pub fn date_due(
    wf: &Workflow,
    c: &Contact,
    at: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
) -> Option<chrono::NaiveDate> {
    let Trigger::Date(d) = &wf.trigger else {
        return None;
    };
    let tz = c
        .timezone
        .as_deref()
        .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(default_tz);
    match &d.calendar {
        Some(day) => d.due_on_calendar(day, tz, at),
        None => d.due(c.attrs.get(&d.field.value)?, tz, at),
    }
    .map(|(date, _)| date)
}

/// Whether the contact is in the workflow's audience and not already at its goal.
pub fn in_audience(wf: &Workflow, c: &Contact, at: DateTime<Utc>) -> bool {
    use crate::audience::eval::holds;
    wf.audience.as_ref().is_none_or(|a| holds(a, c, at))
}

/// Names of the events any condition of the workflow looks at.
pub fn event_names(wf: &Workflow) -> Vec<String> {
    let mut names = Vec::new();
    let conds: Vec<&Condition> = wf
        .audience
        .iter()
        .chain(wf.exit_when.iter())
        .chain(wf.goal.iter().map(|g| g.on.condition()))
        .chain(wf.all_steps().into_iter().filter_map(|s| match &s.action {
            StepAction::If(i) => Some(&i.condition),
            StepAction::WaitUntil(w) => Some(w.until.condition()),
            _ => None,
        }))
        .collect();
    for c in conds {
        c.event_names(&mut names);
    }
    names
}

/// Load what the planner needs beyond the contact rows: the events the
/// workflow's conditions look at, and recent message counts for the cap.
pub async fn enrich(
    store: &Store,
    wf: &Workflow,
    contacts: &mut [Contact],
    planner: &mut Planner<'_>,
) -> Result<Vec<u32>> {
    let ids: Vec<String> = contacts.iter().map(|c| c.id.clone()).collect();
    crate::engine::caps::load_oldest(planner, store, &ids).await?;
    crate::engine::transfer::load(planner, store, &[wf], contacts.iter()).await?;
    let names = event_names(wf);
    if !names.is_empty() {
        let mut events = store.events_of(&ids, &names).await?;
        for c in contacts.iter_mut() {
            c.events = events.remove(&c.id).unwrap_or_default();
        }
    }
    let counts = match &planner.settings.policies.frequency_cap {
        Some(cap) => {
            store
                .recent_messages(&ids, planner.now - cap.per.to_chrono())
                .await?
        }
        None => Default::default(),
    };
    Ok(ids
        .iter()
        .map(|id| counts.get(id).copied().unwrap_or(0))
        .collect())
}

/// An enrollment waiting at a `wait_until` step that an event-log entry
/// wakes: it becomes due at once and its plan decides (the event came, the
/// condition holds, or it waits on).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Wake {
    pub workflow: String,
    pub contact_id: String,
    pub step_id: String,
}

/// The `wait_until` steps the entries wake, in the log's order, each once:
/// a wait for an event by that event, a wait for a condition by any entry
/// of the contact (a tag added or removed, an event). The daemon makes the
/// enrollments waiting there due in the transaction that moves its cursor
/// over the entries; the dry-run does the same to its copy.
pub fn wakes(workflows: &[&Workflow], entries: &[plan_reads::LogEntry]) -> Vec<Wake> {
    let mut out: Vec<Wake> = Vec::new();
    let mut seen: HashSet<Wake> = HashSet::new();
    for e in entries {
        for wf in workflows {
            for s in wf.all_steps() {
                let StepAction::WaitUntil(w) = &s.action else {
                    continue;
                };
                let is_event = |name: &str| e.kind == "event" && e.name.as_deref() == Some(name);
                // Its own event, or the workflow's goal (exit_on_goal: it
                // leaves at once rather than at the timeout).
                let goal = wf.exit_on_goal
                    && wf.goal.as_ref().is_some_and(|g| match &g.on {
                        crate::workflow::WaitFor::Event { name, .. } => is_event(name),
                        crate::workflow::WaitFor::Condition(_) => true,
                    });
                let wakes = goal
                    || match &w.until {
                        crate::workflow::WaitFor::Event { name, .. } => is_event(name),
                        crate::workflow::WaitFor::Condition(_) => true,
                    };
                if wakes {
                    let k = Wake {
                        workflow: wf.name.clone(),
                        contact_id: e.contact_id.clone(),
                        step_id: s.id.clone(),
                    };
                    if seen.insert(k.clone()) {
                        out.push(k);
                    }
                }
            }
        }
    }
    out
}

/// Whether any workflow has a `wait_until` step (the event log then matters
/// even without event-triggered workflows).
pub fn any_wait_until(workflows: &[&Workflow]) -> bool {
    workflows.iter().any(|w| {
        w.all_steps()
            .iter()
            .any(|s| matches!(s.action, StepAction::WaitUntil(_)))
    })
}

/// Does this event-log entry fire the workflow's trigger?
pub fn fires(wf: &Workflow, entry: &plan_reads::LogEntry) -> bool {
    match wf.trigger.log_match() {
        Some((kind, None)) => entry.kind == kind,
        Some((kind, name)) => entry.kind == kind && entry.name.as_deref() == name,
        None => false,
    }
}

/// The entry key of an enrollment made by an event-log entry: `once` makes
/// the unique key refuse a second entry; otherwise the entry's sequence
/// number makes a replay of the same entry harmless.
pub fn log_entry_key(wf: &Workflow, seq: i64) -> String {
    match wf.entry {
        Entry::Once => "once".to_string(),
        _ => format!("log:{seq}"),
    }
}

/// Whether a cron tick runs, given the last tick taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickDue {
    /// No tick was ever taken: this one is recorded, not run. Past ticks are
    /// not "missed": a monthly broadcast deployed on the 20th does not fire
    /// for the 1st; its first run is its next real tick.
    FirstSight,
    /// Taken already.
    Taken,
    /// Due (or missed while the daemon was down): run it, once.
    Run,
}

pub fn tick_due(last_taken_ms: Option<i64>, tick: DateTime<Utc>) -> TickDue {
    match last_taken_ms {
        None => TickDue::FirstSight,
        Some(t) if t >= ms(tick) => TickDue::Taken,
        Some(_) => TickDue::Run,
    }
}

/// For the blast guard, from the store: per workflow with new enrollments in
/// `batch` (and not paused), how many enrollments started in its window, and,
/// with `log_after`, how many of its trigger events wait in the event log
/// after that position. The daemon uses these as they are; the dry-run adds
/// its own enrollments and log entries.
pub async fn guard_counts(
    store: &Store,
    batch: &[Decided<'_>],
    planner: &Planner<'_>,
    log_after: Option<i64>,
) -> Result<(HashMap<String, i64>, HashMap<String, i64>)> {
    let mut recent = HashMap::new();
    let mut upcoming = HashMap::new();
    let Some(guard) = planner.settings.policies.blast_guard else {
        return Ok((recent, upcoming));
    };
    let new = new_per_workflow(batch);
    for name in new.keys() {
        if planner.gates.is_paused(name) {
            continue;
        }
        let since = planner.gates.window_start(name, &guard, planner.now);
        recent.insert(name.clone(), store.started_since(name, since).await?);
        let wf = batch
            .iter()
            .find(|d| &d.workflow.name == name)
            .map(|d| d.workflow);
        if let (Some(after), Some(wf), Some(activated)) =
            (log_after, wf, planner.gates.activated_at(name))
        {
            let Some((kind, tag_or_event)) = wf.trigger.log_match() else {
                continue;
            };
            upcoming.insert(
                name.clone(),
                store
                    .pending_firing(after, kind, tag_or_event, activated)
                    .await?,
            );
        }
    }
    Ok((recent, upcoming))
}
