//! The WeCom channel's and workers' reads and writes through the [`Store`]
//! (issue 12 item 1: no raw pool handed out above the store):
//! `store.wecom().claim_tasks(..)` instead of `tasks::claim(store.db(), ..)`.
//! Each method is the function of the same table family in [`super::tasks`],
//! [`super::recorded`], [`super::relationships`] or [`super::resigned`],
//! with the store's pool and dialect filled in.

use super::recorded::{self, RecordedTask};
use super::relationships::{self, Relationship};
use super::resigned::{self, Resigned};
use super::tasks::{self, LatestTransfer, Task};
use crate::store::states::WecomTaskStatus;
use crate::store::{Store, StoreError};

/// The WeCom tables of one store (see the module's documentation).
#[derive(Clone, Copy)]
pub struct WecomRows<'a> {
    store: &'a Store,
}

impl Store {
    /// The WeCom tables: tasks, welcome codes, reminders, relationships.
    pub fn wecom(&self) -> WecomRows<'_> {
        WecomRows { store: self }
    }
}

impl WecomRows<'_> {
    /// Takes the contact's newest unused welcome code for `message_id`.
    pub async fn take_welcome_code(
        self,
        contact_id: &str,
        message_id: &str,
        now_ms: i64,
    ) -> sqlx::Result<Option<String>> {
        tasks::take_welcome_code(self.store.db(), contact_id, message_id, now_ms).await
    }

    /// Gives a taken welcome code back (the send did not use it).
    pub async fn release_welcome_code(self, contact_id: &str, code: &str) -> sqlx::Result<()> {
        tasks::release_welcome_code(self.store.db(), contact_id, code).await
    }

    /// WeCom refused the welcome code: it stays used, by no message.
    pub async fn welcome_code_refused(self, contact_id: &str, code: &str) -> sqlx::Result<()> {
        tasks::welcome_code_refused(self.store.db(), contact_id, code).await
    }

    /// Whether `message_id` already took a welcome code of the contact.
    pub async fn welcome_taken_by(self, contact_id: &str, message_id: &str) -> sqlx::Result<bool> {
        tasks::welcome_taken_by(self.store.db(), contact_id, message_id).await
    }

    /// Records a task WeCom accepted, first checked at `first_check_at`.
    pub async fn record_task(self, t: &Task, first_check_at: i64) -> sqlx::Result<()> {
        tasks::record(self.store.db(), t, first_check_at).await
    }

    /// Claims up to `limit` of the channel's pending tasks due at `now_ms`.
    pub async fn claim_tasks(
        self,
        channel: &str,
        now_ms: i64,
        lease_until: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<Task>> {
        tasks::claim(
            self.store.db(),
            self.store.dialect(),
            channel,
            now_ms,
            lease_until,
            limit,
        )
        .await
    }

    /// The latest transfer message of the contact on `channel`.
    pub async fn latest_transfer(
        self,
        channel: &str,
        contact_id: &str,
    ) -> sqlx::Result<Option<LatestTransfer>> {
        tasks::latest_transfer(self.store.db(), channel, contact_id).await
    }

    /// Checks the pending task again at `next_check_at`.
    pub async fn postpone_task(
        self,
        message_id: &str,
        next_check_at: i64,
        detail: Option<&str>,
    ) -> sqlx::Result<()> {
        tasks::postpone(self.store.db(), message_id, next_check_at, detail).await
    }

    /// Records the task's outcome.
    pub async fn finish_task(
        self,
        task: &Task,
        status: WecomTaskStatus,
        provider_status: Option<i64>,
        note: &str,
        now_ms: i64,
    ) -> sqlx::Result<()> {
        tasks::finish(
            self.store.db(),
            self.store.dialect(),
            task,
            status,
            provider_status,
            note,
            now_ms,
        )
        .await
    }

    /// When reminders of mass task `msgid` were sent.
    pub async fn reminders_sent(self, msgid: &str) -> sqlx::Result<Vec<i64>> {
        tasks::reminders_sent(self.store.db(), msgid).await
    }

    /// Records a reminder of mass task `msgid`.
    pub async fn record_reminder(
        self,
        message_id: &str,
        msgid: &str,
        at: i64,
        errcode: Option<i64>,
    ) -> sqlx::Result<()> {
        tasks::record_reminder(self.store.db(), message_id, msgid, at, errcode).await
    }

    /// When the channel's notices to `userid` were sent since `since`.
    pub async fn sent_notices(
        self,
        channel: &str,
        userid: &str,
        since: i64,
    ) -> sqlx::Result<Vec<i64>> {
        tasks::sent_notices(self.store.db(), channel, userid, since).await
    }

    /// The task recorded for outbox message `message_id`, if any.
    pub async fn task_of_message(self, message_id: &str) -> sqlx::Result<Option<RecordedTask>> {
        recorded::task_of_message(self.store.db(), message_id).await
    }

    /// The customer's relationships nurture knows of.
    pub async fn relationships_of(
        self,
        external_userid: &str,
    ) -> Result<Vec<Relationship>, StoreError> {
        relationships::of_customer(self.store.db(), external_userid).await
    }

    /// A transfer of the customer from `handover` to `takeover` is done:
    /// the relationships follow (one transaction).
    pub async fn transfer_done(
        self,
        external_userid: &str,
        handover: &str,
        takeover: &str,
        at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        relationships::transfer_done(
            self.store.db(),
            self.store.dialect(),
            external_userid,
            handover,
            takeover,
            at,
            now,
        )
        .await
    }

    /// The member who left whose customer `ext` is, if WeCom listed one.
    pub async fn resigned_handover(self, ext: &str) -> sqlx::Result<Option<Resigned>> {
        resigned::resigned_handover(self.store.db(), ext).await
    }

    /// The customer was taken over from `handover`: no longer unassigned.
    pub async fn assigned(self, ext: &str, handover: &str) -> sqlx::Result<()> {
        resigned::assigned(self.store.db(), ext, handover).await
    }

    /// How many transfers of the customer WeCom started since `since` (ms).
    pub async fn transfers_since(self, ext: &str, since: i64) -> sqlx::Result<i64> {
        resigned::transfers_since(self.store.db(), ext, since).await
    }

    /// The customer's transfers started since `since` (time, still counting).
    pub async fn transfers_started(self, ext: &str, since: i64) -> sqlx::Result<Vec<(i64, bool)>> {
        resigned::transfers_started(self.store.db(), ext, since).await
    }
}
