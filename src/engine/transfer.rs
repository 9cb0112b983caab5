//! WeCom transfers in the plan: the facts the planner decides them from,
//! read in batches. The rules themselves (limits, handover, verdict) are
//! WeCom's and shared with the channel, so they live below both in
//! [`crate::wecom::transfer`]; re-exported here for the planner's code.

pub use crate::wecom::transfer::*;

/// Loads the transfer facts of the WeCom customers among `contacts` into
/// the planner, when the settings have a wecom channel and one of
/// `workflows` has an `assign` step: one batched read (customers without
/// facts are forgotten, so a stale entry is never used).
pub async fn load<'c>(
    planner: &mut crate::engine::plan::Planner<'_>,
    store: &crate::store::Store,
    workflows: &[&crate::workflow::Workflow],
    contacts: impl IntoIterator<Item = &'c crate::contact::Contact>,
) -> anyhow::Result<()> {
    use crate::settings::ChannelKind;
    use crate::workflow::StepAction;
    let wecom = planner
        .settings
        .channels
        .values()
        .any(|c| c.kind == ChannelKind::Wecom);
    let assigns = workflows.iter().any(|wf| {
        wf.all_steps()
            .iter()
            .any(|s| matches!(s.action, StepAction::Assign(_)))
    });
    if !wecom || !assigns {
        return Ok(());
    }
    let mut exts: Vec<String> = contacts
        .into_iter()
        .filter_map(|c| c.wecom_external_userid.as_deref())
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    exts.sort();
    exts.dedup();
    if exts.is_empty() {
        return Ok(());
    }
    let since = planner.now.timestamp_millis() - TRANSFER_WINDOW_MS;
    let mut facts = store.transfer_facts(&exts, since).await?;
    for e in exts {
        match facts.remove(&e) {
            Some(f) => {
                planner.wecom_facts.insert(e, f);
            }
            None => {
                planner.wecom_facts.remove(&e);
            }
        }
    }
    Ok(())
}
