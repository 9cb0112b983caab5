//! The blast guard over a batch of plans, with its counts from the store.

use super::*;

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

pub(super) fn is_held(d: &Decided<'_>) -> bool {
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
