//! Named store functions for the layers above the store (the daemon, the
//! API, the commands), so they call the store instead of handing its pool
//! to free functions (issue 12 item 1: no raw pool handed out).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Store;
use super::status::FileState;
use super::workflow_states::Resumed;
use crate::contact::EventFact;

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
}
