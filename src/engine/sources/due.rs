//! Enrollments whose next step is due, planned from their stored step.

use super::*;

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
