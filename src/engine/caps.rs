//! The counters the caps read, loaded from the store for a planner: the
//! per-salesperson caps of `assign` and `send` steps, and the oldest message
//! the frequency cap counts (for `on_cap: defer`). The daemon loads them for
//! each pass and the dry-run once; plans then carry them forward, as the
//! store would.

use std::collections::HashMap;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::engine::plan::Planner;
use crate::settings::{OnCap, QuietHours, RateLimit};
use crate::store::{Store, Tx};
use crate::workflow::{StepAction, Workflow};

/// (workflow, step) → (salesperson, when), oldest first.
pub type PerSalesperson = HashMap<(String, String), Vec<(String, DateTime<Utc>)>>;

/// Loads the per-salesperson counts of every capped step of `workflows`.
pub async fn load(planner: &mut Planner<'_>, store: &Store, workflows: &[&Workflow]) -> Result<()> {
    for wf in workflows {
        for step in wf.all_steps() {
            let key = (wf.name.clone(), step.id.clone());
            match &step.action {
                StepAction::Assign(a) => {
                    if let Some(rate) = a.per_salesperson {
                        let since = planner.now - rate.per.to_chrono();
                        let rows = store.assigned_since(&wf.name, &step.id, since).await?;
                        planner.assigned.insert(key, rows);
                    }
                }
                StepAction::Send(s) => {
                    if let Some(rate) = s.per_salesperson {
                        let since = planner.now - rate.per.to_chrono();
                        let rows = store.owner_sends_since(&wf.name, &step.id, since).await?;
                        planner.owner_sends.insert(key, rows);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// For `on_cap: defer`: the oldest counted message of each of `ids` (those
/// without one are forgotten, so a stale time is never used).
pub async fn load_oldest(planner: &mut Planner<'_>, store: &Store, ids: &[String]) -> Result<()> {
    let Some(cap) = planner.settings.policies.frequency_cap else {
        return Ok(());
    };
    if cap.on_cap != OnCap::Defer || ids.is_empty() {
        return Ok(());
    }
    let since = planner.now - cap.per.to_chrono();
    let mut oldest = store.oldest_recent_messages(ids, since).await?;
    for id in ids {
        match oldest.remove(id) {
            Some(t) => {
                planner.cap_oldest.insert(id.clone(), t);
            }
            None => {
                planner.cap_oldest.remove(id);
            }
        }
    }
    Ok(())
}

/// Salespeople at `count` within the window ending at `now`.
pub fn at_cap(
    entries: &[(String, DateTime<Utc>)],
    count: u32,
    from: DateTime<Utc>,
) -> HashMap<String, Vec<DateTime<Utc>>> {
    let mut by: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for (who, t) in entries.iter().filter(|(_, t)| *t > from) {
        by.entry(who.clone()).or_default().push(*t);
    }
    by.retain(|_, v| v.len() >= count as usize);
    for v in by.values_mut() {
        v.sort();
    }
    by
}

/// `per_salesperson: N/PERIOD` on a send: the first moment at or after `at`,
/// and after the owner's last counted message of the step (they go out in
/// order), when fewer than N of `mine` (the owner's counted messages of the
/// step) fall in the PERIOD ending then; moved out of quiet hours. The
/// planner and the apply's re-check under the lock ([`recheck_owner_slot`])
/// make this one computation.
pub fn owner_slot(
    mine: &[DateTime<Utc>],
    mut at: DateTime<Utc>,
    rate: RateLimit,
    quiet: Option<&QuietHours>,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let per = rate.per.to_chrono();
    let n = rate.count as usize;
    if let Some(last) = mine.iter().max() {
        at = at.max(*last);
    }
    loop {
        let mut window: Vec<DateTime<Utc>> = mine
            .iter()
            .copied()
            .filter(|t| *t > at - per && *t <= at)
            .collect();
        window.sort();
        // `count` is at least 1 (`parse_rate`).
        if window.len() < n.max(1) {
            return at;
        }
        let frees = window[window.len() - n.max(1)] + per;
        at = crate::policy::deliverable_at(quiet, frees, tz);
    }
}

/// The time a capped send of `step` to `contact` goes out, decided again in
/// the transaction that queues it. The plan placed it from the counters its
/// run read; another daemon may have queued messages of the same step for
/// the same owner since. Called with [`EVENT_LOG_WRITE`] held (PostgreSQL;
/// SQLite's one writer), which every transaction that queues a capped send
/// takes ([`crate::engine::apply::touches_shared_counters`]): the owner's
/// messages are read after every other such transaction committed, so two
/// daemons never exceed the cap. On one daemon the plan's time stands (it
/// was placed from the same messages, or more), so dry-run == daemon.
///
/// [`EVENT_LOG_WRITE`]: crate::engine::apply::EVENT_LOG_WRITE
#[allow(clippy::too_many_arguments)]
pub async fn recheck_owner_slot(
    tx: &mut Tx,
    quiet: Option<&QuietHours>,
    wf: &Workflow,
    step: &str,
    contact_id: &str,
    planned: DateTime<Utc>,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>> {
    let Some(StepAction::Send(s)) = wf.step(step).map(|st| &st.action) else {
        return Ok(planned);
    };
    let Some(rate) = s.per_salesperson else {
        return Ok(planned);
    };
    let since = now - rate.per.to_chrono();
    let mine = tx.owner_sends_of(&wf.name, step, contact_id, since).await?;
    let at = owner_slot(&mine, planned, rate, quiet, tz);
    if at != planned {
        tracing::info!(workflow = %wf.name, contact = %contact_id, step, planned = %planned, at = %at, "a send capped per salesperson goes out later than planned: another daemon queued the owner's messages meanwhile");
    }
    Ok(at)
}
