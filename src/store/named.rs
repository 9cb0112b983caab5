//! Named store functions for the layers above the store (the daemon, the
//! API, the commands), so they call the store instead of handing its pool
//! to free functions (issue 12 item 1: no raw pool handed out).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::Store;
use super::plan_reads::EnrollmentRow;
use super::status::{FileState, HistoryEntry, WorkflowCounts};
use super::workflow_states::{Resumed, WorkflowState};
use crate::assign::AssignState;
use crate::contact::EventFact;
use crate::workflow::Workflow;

impl Store {
    /// Each project file's recorded state (`nurture status`).
    pub async fn file_states(&self) -> sqlx::Result<Vec<FileState>> {
        super::status::file_states(self.db()).await
    }

    /// Records each project file's state after a load or a reload.
    pub async fn record_file_states(&self, files: &[FileState]) -> sqlx::Result<()> {
        super::status::record_file_states(self.db(), self.dialect(), files).await
    }

    /// Messages still to be delivered (queued or being sent).
    pub async fn outbox_queue_depth(&self) -> sqlx::Result<i64> {
        super::status::outbox_queue_depth(self.db()).await
    }

    /// The events named `names` of these contacts, by contact.
    pub async fn events_of(
        &self,
        contact_ids: &[String],
        names: &[String],
    ) -> sqlx::Result<HashMap<String, Vec<EventFact>>> {
        super::plan_reads::events_of(self.db(), contact_ids, names).await
    }

    /// Lifts the blast guard's pause of `workflow` (`nurture resume`).
    pub async fn resume_workflow(
        &self,
        workflow: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Resumed> {
        super::workflow_states::resume(self.db(), self.dialect(), workflow, now).await
    }

    /// Enrollment and message counts of every workflow that has any, by name.
    pub async fn workflow_counts(
        &self,
        now: DateTime<Utc>,
    ) -> sqlx::Result<BTreeMap<String, WorkflowCounts>> {
        super::status::workflow_counts(self.db(), now).await
    }

    /// Whether a contact with this id is stored.
    pub async fn contact_exists(&self, id: &str) -> sqlx::Result<bool> {
        super::status::contact_exists(self.db(), id).await
    }

    /// What happened to the contact, oldest first (`nurture history`).
    pub async fn contact_history(&self, id: &str) -> sqlx::Result<Vec<HistoryEntry>> {
        super::status::contact_history(self.db(), id).await
    }

    /// Every workflow's state (activation, pause), by name.
    pub async fn workflow_states(&self) -> sqlx::Result<HashMap<String, WorkflowState>> {
        super::workflow_states::all(self.db()).await
    }

    /// Records `now` as the activation of the workflows in `names` that
    /// have none yet; returns those activated by this call.
    pub async fn activate_workflows(
        &self,
        names: &[&str],
        now: DateTime<Utc>,
    ) -> sqlx::Result<Vec<String>> {
        super::workflow_states::activate(self.db(), names, now).await
    }

    /// Records that `entry_existing` enrolled `workflow`'s audience.
    pub async fn record_existing_done(
        &self,
        workflow: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        super::workflow_states::existing_done(self.db(), workflow, now).await
    }

    /// The contact's enrollments, oldest first.
    pub async fn enrollments_of(&self, contact_id: &str) -> sqlx::Result<Vec<EnrollmentRow>> {
        super::plan_reads::enrollments_of(self.db(), contact_id).await
    }

    /// The teams' round-robin counters.
    pub async fn assign_state(&self) -> sqlx::Result<AssignState> {
        super::plan_reads::assign_state(self.db()).await
    }

    /// When each of `workflows` last queued a message (`throttle:`).
    pub async fn throttle_state(
        &self,
        workflows: &[&Workflow],
    ) -> sqlx::Result<HashMap<String, DateTime<Utc>>> {
        super::plan_reads::throttle_state(self.db(), workflows).await
    }
}
