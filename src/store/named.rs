//! Named store functions for the layers above the store (the daemon, the
//! API, the commands), so they call the store instead of handing its pool
//! to free functions (issue 12 item 1: no raw pool handed out).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::plan_reads::{EnrollmentRow, LogEntry, TransferFacts};
use super::status::{FileState, HistoryEntry, WorkflowCounts};
use super::workflow_states::{Resumed, WorkflowState};
use super::{Store, StoreError};
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

    // What a pass of the daemon or the dry-run reads (`engine::sources`).

    /// The position of the event-log cursor `name` (0 before the first move).
    pub async fn cursor(&self, name: &str) -> sqlx::Result<i64> {
        super::plan_reads::cursor(self.db(), name).await
    }

    /// Event-log entries after `after`, at most `limit`, in order.
    pub async fn pending_log(&self, after: i64, limit: i64) -> sqlx::Result<Vec<LogEntry>> {
        super::plan_reads::pending_log(self.db(), after, limit).await
    }

    /// The last event-log sequence number, if any entry was logged.
    pub async fn max_log_seq(&self) -> sqlx::Result<Option<i64>> {
        super::log_position::max_seq(self.db()).await
    }

    /// Active enrollments due at `at` (read, not claimed: the dry-run).
    pub async fn due_enrollments(
        &self,
        at: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<EnrollmentRow>> {
        super::plan_reads::due_enrollments(self.db(), at, limit).await
    }

    /// Claims up to `limit` enrollments due at `at` for `worker` until
    /// `lease_until` (ms): the daemon's due steps.
    pub async fn claim_due_enrollments(
        &self,
        worker: &str,
        at: DateTime<Utc>,
        lease_until: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<EnrollmentRow>> {
        super::plan_reads::claim_due_enrollments(
            self.db(),
            self.dialect(),
            worker,
            at,
            lease_until,
            limit,
        )
        .await
    }

    /// The enrollments of these contacts, by contact.
    pub async fn enrollments_of_many(
        &self,
        contact_ids: &[String],
    ) -> sqlx::Result<HashMap<String, Vec<EnrollmentRow>>> {
        super::plan_reads::enrollments_of_many(self.db(), contact_ids).await
    }

    /// Messages the frequency cap counts since `since`, per contact.
    pub async fn recent_messages(
        &self,
        contact_ids: &[String],
        since: DateTime<Utc>,
    ) -> sqlx::Result<HashMap<String, u32>> {
        super::plan_reads::recent_messages(self.db(), contact_ids, since).await
    }

    /// The oldest message the frequency cap counts since `since`, per contact.
    pub async fn oldest_recent_messages(
        &self,
        contact_ids: &[String],
        since: DateTime<Utc>,
    ) -> sqlx::Result<HashMap<String, DateTime<Utc>>> {
        super::caps::oldest_recent_messages(self.db(), contact_ids, since).await
    }

    /// Assignments of `workflow`'s `step` since `since`: (salesperson, when).
    pub async fn assigned_since(
        &self,
        workflow: &str,
        step: &str,
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
        super::caps::assigned_since(self.db(), workflow, step, since, None).await
    }

    /// Counted messages of `workflow`'s `step` since `since`, by the
    /// contact's owner: (salesperson, when).
    pub async fn owner_sends_since(
        &self,
        workflow: &str,
        step: &str,
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
        super::caps::owner_sends_since(self.db(), workflow, step, since).await
    }

    /// WeCom transfer facts of these customers since `since_ms`.
    pub async fn transfer_facts(
        &self,
        external_userids: &[String],
        since_ms: i64,
    ) -> Result<HashMap<String, TransferFacts>, StoreError> {
        super::plan_reads::transfer_facts(self.db(), external_userids, since_ms).await
    }

    /// How many enrollments of `workflow` started at or after `since` (the
    /// blast guard's window).
    pub async fn started_since(&self, workflow: &str, since: DateTime<Utc>) -> sqlx::Result<i64> {
        let mut conn = self.db().acquire().await?;
        super::workflow_states::started_since(&mut conn, workflow, since).await
    }

    /// Log entries after `after` that would fire a trigger of `kind` (and
    /// `name`) at or after `since`.
    pub async fn pending_firing(
        &self,
        after: i64,
        kind: &str,
        name: Option<&str>,
        since: DateTime<Utc>,
    ) -> sqlx::Result<i64> {
        super::workflow_states::pending_firing(self.db(), after, kind, name, since).await
    }
}
