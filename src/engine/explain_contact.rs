//! For one contact: every workflow's explanation ([`super::explain`]) with
//! what the planner would do now. Shared by `dry-run --explain` and the
//! console, so both say the same.

use anyhow::Context;

use super::explain::{ExplainInput, explain};
use super::plan::{Planner, StartAt};
use super::sources;
use crate::project::Project;
use crate::store::Store;
use crate::store::plan_reads;

/// What `dry-run --explain ID` prints and the console shows; `None` when
/// there is no contact `id`.
pub async fn explain_text(
    project: &Project,
    store: &Store,
    planner: &mut Planner<'_>,
    id: &str,
    only: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let Some(mut contact) = store.contact(id).await.context("reading the contact")? else {
        return Ok(None);
    };
    let at = planner.now;
    let tz = crate::policy::contact_tz(&contact, &project.settings);
    let enrollments = store
        .enrollments_of(id)
        .await
        .context("reading enrollments")?;
    let cursor = store
        .cursor(plan_reads::DAEMON_CURSOR)
        .await
        .context("reading the cursor")?;
    let pending: Vec<plan_reads::LogEntry> = store
        .pending_log(cursor, i64::MAX)
        .await
        .context("reading the event log")?
        .into_iter()
        .filter(|e| e.contact_id == id)
        .collect();
    let mut names = Vec::new();
    for wf in &project.workflows {
        for n in sources::event_names(wf) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let mut events = store
        .events_of(&[id.to_string()], &names)
        .await
        .context("reading events")?;
    contact.events = events.remove(id).unwrap_or_default();
    let recent = match &project.settings.policies.frequency_cap {
        Some(cap) => store
            .recent_messages(&[id.to_string()], at - cap.per.to_chrono())
            .await
            .context("reading messages")?
            .get(id)
            .copied()
            .unwrap_or(0),
        None => 0,
    };
    // `on_cap: defer`: the moment the window frees is the oldest counted
    // message's, read as the daemon's pass reads it (without it the plan
    // could only say "a window from now").
    crate::engine::caps::load_oldest(planner, store, &[id.to_string()])
        .await
        .context("reading the contact's messages in the cap's window")?;
    let all: Vec<&crate::workflow::Workflow> = project.workflows.iter().collect();
    crate::engine::transfer::load(planner, store, &all, [&contact]).await?;
    let mut out = String::new();
    out.push_str(&format!(
        "Contact {id}{} at {}\n\n",
        contact
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        at.with_timezone(&tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    for wf in project
        .workflows
        .iter()
        .filter(|w| only.is_none_or(|o| o == w.name))
    {
        let firing: Vec<&plan_reads::LogEntry> =
            pending.iter().filter(|e| sources::fires(wf, e)).collect();
        let before_activation = firing
            .iter()
            .filter(|e| {
                !crate::engine::gates::after_activation(
                    &planner.gates,
                    wf,
                    e,
                    Some(contact.created_at),
                )
            })
            .count();
        let pending_triggers = firing.len() - before_activation;
        let activated_at = planner.gates.states.get(&wf.name).map(|s| s.activated_at);
        let trigger = firing.last().map(|e| e.trigger_event());
        let plan = planner.plan(
            wf,
            &contact,
            StartAt::First { since: at },
            recent,
            trigger.as_ref(),
        );
        out.push_str(&explain(&ExplainInput {
            wf,
            contact: &contact,
            at,
            tz,
            enrollments: &enrollments,
            pending_triggers,
            before_activation,
            activated_at,
            would_do: Some(&plan.steps),
        }));
        out.push('\n');
    }
    // WeCom's transfer limits on the customer, as the channel checks them
    // before an assignment's transfer.
    if let Some(ext) = contact
        .wecom_external_userid
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        let now_ms = at.timestamp_millis();
        let wecom = store.wecom();
        let started = wecom
            .transfers_started(ext, now_ms - super::transfer::TRANSFER_WINDOW_MS)
            .await
            .context("reading the customer's WeCom transfers")?;
        let left = wecom
            .resigned_handover(ext)
            .await
            .context("reading the customer's WeCom transfers")?;
        if let Some(text) = super::transfer::explain_limits(ext, &started, left.as_ref(), now_ms) {
            out.push_str(&text);
        }
    }
    Ok(Some(out))
}
