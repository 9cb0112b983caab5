//! The counters the caps read, loaded from the store for a planner: the
//! per-salesperson caps of `assign` and `send` steps, and the oldest message
//! the frequency cap counts (for `on_cap: defer`). The daemon loads them for
//! each pass and the dry-run once; plans then carry them forward, as the
//! store would.

use std::collections::HashMap;

use anyhow::Result;
use chrono::{DateTime, Utc};
use sqlx::AnyPool;

use crate::engine::plan::Planner;
use crate::settings::OnCap;
use crate::store::caps;
use crate::workflow::{StepAction, Workflow};

/// (workflow, step) → (salesperson, when), oldest first.
pub type PerSalesperson = HashMap<(String, String), Vec<(String, DateTime<Utc>)>>;

/// Loads the per-salesperson counts of every capped step of `workflows`.
pub async fn load(
    planner: &mut Planner<'_>,
    pool: &AnyPool,
    workflows: &[&Workflow],
) -> Result<()> {
    for wf in workflows {
        for step in wf.all_steps() {
            let key = (wf.name.clone(), step.id.clone());
            match &step.action {
                StepAction::Assign(a) => {
                    if let Some(rate) = a.per_salesperson {
                        let since = planner.now - rate.per.to_chrono();
                        let rows =
                            caps::assigned_since(pool, &wf.name, &step.id, since, None).await?;
                        planner.assigned.insert(key, rows);
                    }
                }
                StepAction::Send(s) => {
                    if let Some(rate) = s.per_salesperson {
                        let since = planner.now - rate.per.to_chrono();
                        let rows = caps::owner_sends_since(pool, &wf.name, &step.id, since).await?;
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
pub async fn load_oldest(planner: &mut Planner<'_>, pool: &AnyPool, ids: &[String]) -> Result<()> {
    let Some(cap) = planner.settings.policies.frequency_cap else {
        return Ok(());
    };
    if cap.on_cap != OnCap::Defer || ids.is_empty() {
        return Ok(());
    }
    let since = planner.now - cap.per.to_chrono();
    let mut oldest = caps::oldest_recent_messages(pool, ids, since).await?;
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
