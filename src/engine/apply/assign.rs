//! An `assign` step applied under the team's lock: the choice checked
//! against the counters other daemons moved, the owner written, and the WeCom
//! transfer and notice it calls for.

use super::*;

/// Writes an `assign` step's choice, and returns the salesperson chosen.
///
/// The plan chose from the counters as the run carried them. With several
/// daemons those may be stale by the time the plan is applied, so
/// round-robin and least-loaded choices are checked here against the
/// counters read under the team's `team_cursors` row lock, which every
/// assignment to the team takes: the counters move one assignment at a time
/// across all daemons, and the counts stay balanced. On one daemon the
/// choice is the plan's own (tests/it/plan_equals_daemon.rs holds that); when
/// another daemon moved the counters, the caller records why the choice
/// differs. (Text rendered by later steps of the same plan was rendered with
/// the planned salesperson.)
#[allow(clippy::too_many_arguments)]
pub(super) async fn assign(
    tx: &mut Tx,
    settings: &Settings,
    d: &Decided<'_>,
    enrollment_id: i64,
    step: &str,
    planned: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let Some(StepAction::Assign(a)) = d.workflow.step(step).map(|st| &st.action) else {
        return Ok(planned.to_string());
    };
    let team = settings
        .teams
        .get(&a.team.value)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut chosen = planned.to_string();
    if matches!(a.strategy, Strategy::RoundRobin | Strategy::LeastLoaded) && !team.is_empty() {
        // One statement creates the team's row if needed, locks it (an
        // upsert that updates takes the row lock on PostgreSQL) and reads
        // the cursor.
        let cursor = tx.lock_team_cursor(&a.team.value).await?;
        let mut state = AssignState::default();
        state.team_cursor.insert(a.team.value.clone(), cursor);
        // Open contacts matter to least-loaded, and to round robin only when
        // someone has a capacity. They are read under the team's lock: every
        // assignment to the team (the only writer of owners here) holds it.
        if a.strategy == Strategy::LeastLoaded || team.iter().any(|p| p.capacity.is_some()) {
            let loads = tx.salesperson_loads().await?;
            state.load.extend(loads);
        }
        // The choice does not depend on the current owner (the plan checked
        // `only_if_unassigned`); `pick` only moves the in-memory load.
        let contact = Contact {
            id: d.contact_id.clone(),
            ..Default::default()
        };
        // `per_salesperson`: the salespeople at the cap, counted under the
        // same lock (every assignment of the step holds it), as the plan did.
        let capped: std::collections::HashSet<String> = match a.per_salesperson {
            Some(rate) => {
                let since = now - rate.per.to_chrono();
                let rows = tx
                    .assigned_since(&d.workflow.name, step, since, Some(enrollment_id))
                    .await?;
                crate::engine::caps::at_cap(&rows, rate.count, since)
                    .into_keys()
                    .collect()
            }
            None => Default::default(),
        };
        // The plan already passed `only_if_unassigned`; decide among the team only.
        let step = crate::workflow::AssignStep {
            only_if_unassigned: false,
            ..a.clone()
        };
        if let Pick::Chosen(id) = state.pick_capped(&step, team, &contact, &capped) {
            chosen = id;
        }
        if a.strategy == Strategy::RoundRobin {
            let next = state.team_cursor.get(&a.team.value).copied().unwrap_or(0);
            tx.set_team_cursor(&a.team.value, next).await?;
        }
    }
    tx.set_owner(&d.contact_id, &chosen, ms(now)).await?;
    Ok(chosen)
}

/// The WeCom transfer an assignment the team's lock re-chose calls for
/// (reference §1.5; a planned one is decided by `engine::transfer`): when the
/// contact has a WeCom id, the new salesperson has a `wecom_userid` (other
/// than the previous one's; an empty `handover_userid` lets the channel pick
/// a real follow-user), and the settings have a `wecom` channel (the first by
/// name). A takeover member who already is a follow-user needs none: the
/// channel finds that out from the relationships. Returns the channel, the contact's external userid and
/// the outbox payload.
pub(super) async fn wecom_transfer(
    tx: &mut Tx,
    settings: &Settings,
    d: &Decided<'_>,
    salesperson: &str,
    previous: Option<&str>,
) -> Result<Option<(String, String, serde_json::Value)>> {
    use crate::settings::ChannelKind;
    let userid = |id: &str| {
        settings
            .salesperson(id)
            .and_then(|p| p.wecom_userid.clone())
    };
    // The new owner must be a WeCom member; the previous one need not be:
    // without one, the channel hands the customer over from a real
    // follow-user (the one who added the customer most recently).
    let Some(to) = userid(salesperson) else {
        return Ok(None);
    };
    let from = previous.and_then(userid).unwrap_or_default();
    if from == to {
        return Ok(None);
    }
    let Some(channel) = settings
        .channels
        .values()
        .find(|c| c.kind == ChannelKind::Wecom)
        .map(|c| c.name.clone())
    else {
        return Ok(None);
    };
    let external = tx
        .wecom_external_userid(&d.contact_id)
        .await
        .context("reading the contact's WeCom id")?;
    let Some(external) = external.flatten().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    let payload = transfer_payload(&from, &to);
    Ok(Some((channel, external, payload)))
}

/// A transfer's outbox payload: the previous owner's `wecom_userid` (""
/// lets the channel pick a real follow-user) and the takeover member's.
pub(super) fn transfer_payload(from: &str, to: &str) -> serde_json::Value {
    serde_json::json!({ "kind": MessageKind::Transfer.as_str(), "handover_userid": from, "takeover_userid": to })
}

/// Where a salesperson is told on `channel`: their e-mail, their WeCom
/// user id, or (log and webhook channels) their id.
pub(super) fn salesperson_address(
    settings: &Settings,
    channel: &str,
    salesperson: &str,
) -> Option<String> {
    let person = settings.salesperson(salesperson)?;
    let kind = settings.channels.get(channel).map(|c| c.kind);
    match kind.and_then(|k| k.address_field()) {
        Some("email") => person.email.clone(),
        Some("wecom_external_userid") => person.wecom_userid.clone(),
        Some(_) => None,
        None => Some(person.id.clone()),
    }
}
