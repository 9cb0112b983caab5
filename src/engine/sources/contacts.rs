//! The contacts a batch plans for, with what the planner needs beyond their
//! rows (events, recent messages, caps, WeCom transfer facts).

use super::*;

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
