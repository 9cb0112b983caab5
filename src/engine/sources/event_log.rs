//! Event-log entries: which workflows they fire, the enrollments they
//! start, and the `wait_until` steps they wake.

use super::*;

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
///
/// `wall` (the daemon's clock, `None` in a dry-run, whose clock is its
/// own): an entry written after the planner's `now` is planned at its own
/// time, up to `wall`.
pub async fn plan_log_batch<'w>(
    store: &Store,
    workflows: &[&'w Workflow],
    entries: &[plan_reads::LogEntry],
    planner: &mut Planner<'_>,
    entered: &mut HashSet<(String, String)>,
    more_enrollments: Option<&HashMap<String, Vec<EnrollmentRow>>>,
    wall: Option<DateTime<Utc>>,
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
        let pass_now = planner.now;
        if let Some(wall) = wall {
            planner.now = pass_now.max(entry.at.min(wall));
        }
        let plan = planner.plan(
            wf,
            contact,
            StartAt::First { since },
            recent.get(&contact.id).copied().unwrap_or(0),
            Some(&trigger),
        );
        planner.now = pass_now;
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
