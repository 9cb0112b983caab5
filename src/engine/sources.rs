//! What is due at a time: the work the daemon would do at `at`, planned.
//!
//! Four sources, in this order: enrollments whose next step is due; entries
//! of the event log not yet processed (contact created, tag added, event);
//! workflows triggered by a cron tick (`inactive`, `schedule`), evaluated as
//! if the tick fell at `at`; and, on request, event-triggered workflows as if
//! their trigger fired for every contact. Each piece of work is planned by
//! `Planner::plan` and handed to the caller, who prints it (dry-run) or
//! applies it (daemon).

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::AnyPool;

use crate::audience::Condition;
use crate::audience::sql::{Bind, Dialect, Sql, compile};
use crate::contact::Contact;
use crate::engine::plan::{EnrollmentPlan, Planner, StartAt};
use crate::store::Store;
use crate::store::plan_reads::{self, DAEMON_CURSOR, ms};
use crate::workflow::{Entry, StepAction, Trigger, Workflow};

/// How a piece of work starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A new enrollment with this entry key (unique per workflow and contact).
    New { entry_key: String, cause: Cause },
    /// An existing enrollment continuing at its stored step.
    Existing { enrollment_id: i64 },
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
}

/// One planned piece of work.
pub struct Decided<'w> {
    pub workflow: &'w Workflow,
    pub contact_id: String,
    pub start: Start,
    /// For an existing enrollment, the stored step the plan started from.
    pub from_step: Option<String>,
    pub plan: EnrollmentPlan,
}

#[derive(Debug, Clone, Default)]
pub struct DueOptions {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Also imagine each event-triggered workflow firing for every contact.
    pub all_contacts: bool,
}

/// Contacts are planned in chunks: one query per chunk loads their events and
/// recent message counts, instead of a query per contact.
const CHUNK: usize = 512;

/// Plan everything due at `planner.now`, handing each plan to `on_plan`.
pub async fn plan_due<'w, F>(
    store: &Store,
    workflows: &'w [Workflow],
    planner: &mut Planner<'_>,
    opts: &DueOptions,
    mut on_plan: F,
) -> Result<()>
where
    F: FnMut(Decided<'w>) -> Result<()>,
{
    let pool = store.db();
    let selected: Vec<&Workflow> = workflows
        .iter()
        .filter(|w| w.enabled && opts.workflow.as_ref().is_none_or(|n| *n == w.name))
        .collect();
    let at = planner.now;

    // 1. Enrollments whose next step is due.
    for e in plan_reads::due_enrollments(pool, at, i64::MAX).await? {
        let Some(wf) = selected.iter().find(|w| w.name == e.workflow) else {
            continue;
        };
        let Some(mut contact) = store.contact(&e.contact_id).await? else {
            continue;
        };
        let recent = enrich(pool, wf, std::slice::from_mut(&mut contact), planner).await?;
        let plan = match &e.step_id {
            Some(step) => planner.plan(wf, &contact, StartAt::Step(step), recent[0]),
            // It slept after its last step: waking up ends it.
            None => EnrollmentPlan {
                steps: vec![],
                outcome: crate::engine::plan::Outcome::Done,
                ran: vec![],
            },
        };
        on_plan(Decided {
            workflow: wf,
            contact_id: e.contact_id,
            start: Start::Existing {
                enrollment_id: e.id,
            },
            from_step: e.step_id.clone(),
            plan,
        })?;
    }

    // 2. Event-log entries not yet processed, for event-triggered workflows.
    let event_triggered: Vec<&Workflow> = selected
        .iter()
        .copied()
        .filter(|w| !w.trigger.is_ticked())
        .collect();
    if !event_triggered.is_empty() {
        let mut after = plan_reads::cursor(pool, DAEMON_CURSOR).await?;
        // Enrollments decided in this run, so a second event does not enter a contact twice.
        let mut entered: HashSet<(String, String)> = HashSet::new();
        loop {
            let batch = plan_reads::pending_log(pool, after, 10_000).await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for d in plan_log_batch(store, &event_triggered, &batch, planner, &mut entered).await? {
                on_plan(d)?;
            }
        }
    }

    // 3. Ticked workflows, as if their tick fell at `at`; 4. imagined triggers.
    for wf in &selected {
        let scan = match &wf.trigger {
            Trigger::Inactive { .. } | Trigger::Schedule { .. } => true,
            _ => opts.all_contacts,
        };
        if !scan {
            continue;
        }
        let (filter, key_of, cause): (Sql, KeyOf, Cause) = scan_filter(wf, at, store.dialect())?;
        tracing::debug!(workflow = %wf.name, sql = %filter.inline_sqlite(), "scan");
        let mut stream = store.scan_contacts(&filter.text, &filter.binds);
        let mut chunk: Vec<Contact> = Vec::with_capacity(CHUNK);
        loop {
            let next = stream.next().await;
            let done = next.is_none();
            if let Some(c) = next {
                chunk.push(c?);
            }
            if chunk.len() == CHUNK || (done && !chunk.is_empty()) {
                let recent = enrich(pool, wf, &mut chunk, planner).await?;
                for (contact, recent) in chunk.drain(..).zip(recent) {
                    // The SQL chose the audience; conditions on events are re-checked here
                    // with the events just loaded, as the daemon would.
                    if !in_audience(wf, &contact, at) {
                        continue;
                    }
                    let entry_key = key_of.key(wf, &contact);
                    let plan = planner.plan(wf, &contact, StartAt::First, recent);
                    let start = Start::New {
                        entry_key,
                        cause: cause.clone(),
                    };
                    on_plan(Decided {
                        workflow: wf,
                        contact_id: contact.id.clone(),
                        start,
                        from_step: None,
                        plan,
                    })?;
                }
            }
            if done {
                break;
            }
        }
    }
    Ok(())
}

/// How a scan names the enrollments it would create.
pub enum KeyOf {
    Once,
    Spell,
    Tick(i64),
    Now(i64),
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
        }
    }
}

/// The WHERE clause of a scan: audience, trigger condition, entry policy.
pub fn scan_filter(
    wf: &Workflow,
    at: DateTime<Utc>,
    dialect: Dialect,
) -> Result<(Sql, KeyOf, Cause)> {
    let mut sql = Sql::new(dialect);
    // The trigger's own test first: it is the cheapest, and SQLite evaluates
    // the terms in order, so most contacts are dismissed before the audience's
    // subqueries run.
    let (key_of, cause) = match &wf.trigger {
        Trigger::Inactive { quiet_for, .. } => {
            sql.push("coalesce(c.last_active_at, c.created_at) < ");
            sql.bind(Bind::Int(ms(at - quiet_for.to_chrono())));
            sql.push(" AND ");
            (KeyOf::Spell, Cause::Tick(at))
        }
        Trigger::Schedule { .. } => (KeyOf::Tick(ms(at)), Cause::Tick(at)),
        _ => (KeyOf::Now(ms(at)), Cause::Imagined),
    };
    sql.push("(");
    match &wf.audience {
        Some(cond) => compile(cond, at, &mut sql)?,
        None => sql.push("1=1"),
    }
    sql.push(")");
    if let Trigger::Inactive { .. } = &wf.trigger {
        // Once per quiet spell: not if this spell already entered.
        sql.push(" AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.contact_id = c.id AND e.workflow = ");
        sql.bind(Bind::Text(wf.name.clone()));
        sql.push(" AND e.entry_key = 'spell:' || coalesce(c.last_active_at, c.created_at))");
    }
    match wf.entry {
        Entry::Once => {
            sql.push(" AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.contact_id = c.id AND e.workflow = ");
            sql.bind(Bind::Text(wf.name.clone()));
            sql.push(")");
        }
        Entry::OncePer(d) => {
            sql.push(" AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.contact_id = c.id AND e.workflow = ");
            sql.bind(Bind::Text(wf.name.clone()));
            sql.push(" AND e.started_at > ");
            sql.bind(Bind::Int(ms(at - d.to_chrono())));
            sql.push(")");
        }
        Entry::EveryTime => {}
    }
    let key_of = if wf.entry == Entry::Once {
        KeyOf::Once
    } else {
        key_of
    };
    Ok((sql, key_of, cause))
}

/// May the contact enter `wf` now under its entry policy?
pub async fn may_enter(
    pool: &AnyPool,
    wf: &Workflow,
    contact_id: &str,
    key: &str,
    at: DateTime<Utc>,
) -> Result<bool> {
    let existing = plan_reads::enrollments_of(pool, contact_id).await?;
    Ok(may_enter_given(wf, &existing, key, at))
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

/// Plan a batch of event-log entries for the event-triggered `workflows`:
/// the dry-run prints these plans, the daemon applies them together with the
/// cursor. Contacts, their enrollments, events and recent messages are read
/// in a few queries for the whole batch. `entered` remembers the enrollments
/// decided so far in this run, so a second entry in the same batch does not
/// enter a contact twice before the first is stored.
pub async fn plan_log_batch<'w>(
    store: &Store,
    workflows: &[&'w Workflow],
    entries: &[plan_reads::LogEntry],
    planner: &mut Planner<'_>,
    entered: &mut HashSet<(String, String)>,
) -> Result<Vec<Decided<'w>>> {
    let pool = store.db();
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
    let mut ids: Vec<String> = firing.iter().map(|(e, _)| e.contact_id.clone()).collect();
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
    let mut events = plan_reads::events_of(pool, &ids, &names).await?;
    for c in contacts.values_mut() {
        c.events = events.remove(&c.id).unwrap_or_default();
    }
    let recent = match &planner.settings.policies.frequency_cap {
        Some(cap) => plan_reads::recent_messages(pool, &ids, at - cap.per.to_chrono()).await?,
        None => HashMap::new(),
    };
    let enrollments = plan_reads::enrollments_of_many(pool, &ids).await?;

    let mut out = Vec::new();
    for (entry, wf) in firing {
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
        let Some(contact) = contacts.get(&entry.contact_id) else {
            continue;
        };
        if !in_audience(wf, contact, at) {
            continue;
        }
        entered.insert(key);
        let plan = planner.plan(
            wf,
            contact,
            StartAt::First,
            recent.get(&contact.id).copied().unwrap_or(0),
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
        });
    }
    Ok(out)
}

/// The contacts with these ids (tags and opt-outs filled, events empty), by
/// id, read in chunks of 500.
pub async fn load_contacts(store: &Store, ids: &[String]) -> Result<HashMap<String, Contact>> {
    let mut contacts: HashMap<String, Contact> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut filter = Sql::new(store.dialect());
        filter.push("c.id IN (");
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                filter.push(",");
            }
            filter.bind(Bind::Text(id.clone()));
        }
        filter.push(")");
        let mut stream = store.scan_contacts(&filter.text, &filter.binds);
        while let Some(c) = stream.next().await {
            let c = c?;
            contacts.insert(c.id.clone(), c);
        }
    }
    Ok(contacts)
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
        .chain(wf.all_steps().into_iter().filter_map(|s| match &s.action {
            StepAction::If(i) => Some(&i.condition),
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
    pool: &AnyPool,
    wf: &Workflow,
    contacts: &mut [Contact],
    planner: &Planner<'_>,
) -> Result<Vec<u32>> {
    let ids: Vec<String> = contacts.iter().map(|c| c.id.clone()).collect();
    let names = event_names(wf);
    if !names.is_empty() {
        let mut events = plan_reads::events_of(pool, &ids, &names).await?;
        for c in contacts.iter_mut() {
            c.events = events.remove(&c.id).unwrap_or_default();
        }
    }
    let counts = match &planner.settings.policies.frequency_cap {
        Some(cap) => {
            plan_reads::recent_messages(pool, &ids, planner.now - cap.per.to_chrono()).await?
        }
        None => Default::default(),
    };
    Ok(ids
        .iter()
        .map(|id| counts.get(id).copied().unwrap_or(0))
        .collect())
}

/// Does this event-log entry fire the workflow's trigger?
pub fn fires(wf: &Workflow, entry: &plan_reads::LogEntry) -> bool {
    match &wf.trigger {
        Trigger::ContactCreated => entry.kind == "contact_created",
        Trigger::TagAdded { tag } => {
            entry.kind == "tag_added" && entry.name.as_deref() == Some(tag)
        }
        Trigger::Event { name } => entry.kind == "event" && entry.name.as_deref() == Some(name),
        _ => false,
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
