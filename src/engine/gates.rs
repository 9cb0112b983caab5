//! The two gates in front of every new enrollment, decided the same way by
//! the daemon and the dry-run:
//!
//! - **Activation.** A workflow acts only on trigger events at or after the
//!   moment a daemon first loaded it on this store. Importing a year of
//!   contacts, or recording a backdated purchase, sets nothing off. A tag an
//!   import adds fires `tag_added` only for contacts created after the
//!   activation (the tag came with the contact's history, not as news).
//! - **The blast guard.** A workflow that would enroll more than
//!   `policies.blast_guard.max` contacts within `per` is paused instead: its
//!   enrollments are stored as `held` and wait for `nurture resume`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::settings::BlastGuard;
use crate::store::plan_reads::LogEntry;
use crate::store::workflow_states::WorkflowState;
use crate::workflow::Workflow;

/// What the store says of each workflow's activation and pause.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    pub states: HashMap<String, WorkflowState>,
    /// The activation assumed for a workflow that has none recorded: the
    /// dry-run previews a workflow no daemon has loaded yet as if the daemon
    /// loaded it at the dry-run's time.
    pub unrecorded: Option<DateTime<Utc>>,
}

impl Gates {
    pub fn activated_at(&self, workflow: &str) -> Option<DateTime<Utc>> {
        self.states
            .get(workflow)
            .map(|s| s.activated_at)
            .or(self.unrecorded)
    }

    pub fn is_paused(&self, workflow: &str) -> bool {
        self.states
            .get(workflow)
            .is_some_and(|s| s.paused.is_some())
    }

    /// Where the blast guard's window starts for `workflow` at `now`.
    pub fn window_start(
        &self,
        workflow: &str,
        guard: &BlastGuard,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let from = now - guard.per.to_chrono();
        match self.states.get(workflow).and_then(|s| s.guard_since) {
            Some(since) if since > from => since,
            _ => from,
        }
    }

    /// Marks `workflow` paused (in memory; the caller stores it).
    pub fn pause(&mut self, workflow: &str, now: DateTime<Utc>, reason: &str) {
        let activated = self.activated_at(workflow).unwrap_or(now);
        let st = self
            .states
            .entry(workflow.to_string())
            .or_insert(WorkflowState {
                activated_at: activated,
                paused: None,
                guard_since: None,
                existing_done_at: None,
            });
        st.paused = Some((now, reason.to_string()));
    }
}

/// Whether a log entry that fires `wf` happened after the workflow's
/// activation. `contact_created_at` is needed only for tags an import added.
pub fn after_activation(
    gates: &Gates,
    wf: &Workflow,
    entry: &LogEntry,
    contact_created_at: Option<DateTime<Utc>>,
) -> bool {
    let Some(activated) = gates.activated_at(&wf.name) else {
        // Never loaded by a daemon and no assumption given: nothing fires.
        return false;
    };
    if entry.at < activated {
        return false;
    }
    if entry.kind == "tag_added" && entry.origin.as_deref() == Some("import") {
        return contact_created_at.is_some_and(|c| c >= activated);
    }
    true
}

/// Would enrolling `incoming` more contacts trip the guard, with `recent`
/// already started in the window?
pub fn trips(guard: Option<&BlastGuard>, recent: i64, incoming: i64) -> bool {
    guard.is_some_and(|g| incoming > 0 && recent + incoming > i64::from(g.max))
}

/// The reason stored and shown when the guard pauses a workflow.
pub fn pause_reason(guard: &BlastGuard, recent: i64, incoming: i64) -> String {
    format!(
        "blast guard: {} new enrollments within {} (limit {}); check the dry-run, then resume it",
        recent + incoming,
        guard.per,
        guard.max
    )
}
