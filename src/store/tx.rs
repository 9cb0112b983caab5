//! The write transaction the engine applies plans in, as a store-owned
//! handle (issue 12 item 1: no raw pool or connection handed out above the
//! store). Only [`Store::transaction`] opens one, and its methods are the
//! writes and locked reads of applying a batch of plans: enrollments, step
//! records, the outbox, the contact's tags, attributes and owner, the team
//! counters, WeCom tag marks, the event-log cursor. Each method is the
//! function of the same table family (`enrollments`, `outbox`,
//! `plan_writes`, `caps`, `ticks`, `workflow_states`, `wecom_marks`) with
//! the transaction's connection and dialect filled in, so the SQL and its
//! dialect differences stay next to each other in those modules.

use chrono::{DateTime, Utc};
use sqlx::{Any, AnyConnection, Transaction};

use super::enrollments::{self, NewEnrollment, NewSettled, Settled, StepRecord};
use std::sync::Arc;

use super::handoff::{Handed, Handoff};
use super::outbox::{self, NewMessage};
use super::plan_reads::{self, LogEntry};
use super::states::EnrollmentStatus;
use super::{Dialect, Store, StoreError};

/// An open write transaction (see the module's documentation). Dropped
/// without [`Tx::commit`], it rolls back.
pub struct Tx {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    store: Store,
    /// Messages due now that go straight to this daemon's delivery worker
    /// ([`super::handoff`]), when [`Tx::hand_off_to`] was called.
    handed: Option<Handed>,
}

impl Store {
    /// Opens a read-then-write transaction ([`Store::begin`]: `BEGIN
    /// IMMEDIATE` on SQLite, row locks where it reads-then-writes on
    /// PostgreSQL).
    pub async fn transaction(&self) -> sqlx::Result<Tx> {
        Ok(Tx {
            tx: self.begin().await?,
            dialect: self.dialect(),
            store: self.clone(),
            handed: None,
        })
    }
}

impl Tx {
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Messages this transaction queues that are due now go to `to` when it
    /// has room for them, leased to it (see [`super::handoff`]).
    /// Only the first call counts: a second would forget what the first
    /// took.
    pub fn hand_off_to(&mut self, to: Arc<dyn Handoff>) {
        if self.handed.is_none() {
            self.handed = Some(Handed::new(to));
        }
    }

    /// Commits, then gives the worker the messages leased to it.
    pub async fn commit(self) -> sqlx::Result<()> {
        let Tx {
            tx, store, handed, ..
        } = self;
        tx.commit().await?;
        if let Some(handed) = handed {
            handed.deliver(&store).await;
        }
        Ok(())
    }

    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Takes the event log's write lock for the rest of the transaction
    /// ([`super::plan_writes::EVENT_LOG_WRITE`]; PostgreSQL only).
    pub async fn lock_event_log(&mut self) -> sqlx::Result<()> {
        let dialect = self.dialect;
        super::plan_writes::lock_event_log(self.conn(), dialect).await
    }

    // Enrollments.

    /// A new enrollment; `None` when its entry key exists.
    pub async fn start_enrollment(&mut self, e: &NewEnrollment<'_>) -> sqlx::Result<Option<i64>> {
        enrollments::start(self.conn(), e).await
    }

    /// A new enrollment held at `first_step` by the blast guard.
    pub async fn hold_enrollment(
        &mut self,
        e: &NewEnrollment<'_>,
        first_step: &str,
    ) -> sqlx::Result<Option<i64>> {
        enrollments::hold(self.conn(), e, first_step).await
    }

    /// Locks an enrollment (PostgreSQL) and reads its status and step.
    pub async fn lock_enrollment(
        &mut self,
        id: i64,
    ) -> sqlx::Result<Option<(EnrollmentStatus, Option<String>)>> {
        let dialect = self.dialect;
        enrollments::lock(self.conn(), dialect, id).await
    }

    /// Records a step that ran; `false` when it had run already.
    pub async fn record_step(
        &mut self,
        enrollment_id: i64,
        step: &str,
        ran_at: i64,
        action: &str,
        detail: Option<String>,
    ) -> sqlx::Result<bool> {
        enrollments::record_step(self.conn(), enrollment_id, step, ran_at, action, detail).await
    }

    pub async fn set_step_detail(
        &mut self,
        enrollment_id: i64,
        step: &str,
        detail: &str,
    ) -> sqlx::Result<()> {
        enrollments::set_step_detail(self.conn(), enrollment_id, step, detail).await
    }

    /// Writes where the enrollment stands after its plan.
    pub async fn settle_enrollment(&mut self, s: Settled) -> sqlx::Result<()> {
        enrollments::settle(self.conn(), s).await
    }

    /// Makes the enrollments waiting at a woken `wait_until` step due at `now`.
    pub async fn wake_waiting(
        &mut self,
        contact_id: &str,
        workflow: &str,
        step_id: &str,
        now: i64,
    ) -> sqlx::Result<()> {
        enrollments::wake_waiting(self.conn(), contact_id, workflow, step_id, now).await
    }

    /// New enrollments in their final state, in a few statements; the id of
    /// each (`None`: its entry key exists).
    pub async fn start_settled_many(
        &mut self,
        rows: &[NewSettled<'_>],
    ) -> sqlx::Result<Vec<Option<i64>>> {
        let dialect = self.dialect;
        enrollments::start_settled_many(self.conn(), dialect, rows).await
    }

    pub async fn record_steps_many(&mut self, rows: &[StepRecord<'_>]) -> sqlx::Result<()> {
        let dialect = self.dialect;
        enrollments::record_steps_many(self.conn(), dialect, rows).await
    }

    // The outbox.

    /// Queues a message; 0 when its id was queued before.
    pub async fn queue_message(&mut self, m: NewMessage<'_>) -> sqlx::Result<u64> {
        self.queue_messages(std::slice::from_ref(&m)).await
    }

    /// Queues messages (an id queued before is skipped); gives how many
    /// were written. Those due now go to the worker this transaction hands
    /// off to, as far as it has room.
    pub async fn queue_messages(&mut self, msgs: &[NewMessage<'_>]) -> sqlx::Result<u64> {
        let dialect = self.dialect;
        let Some(handed) = self.handed.as_mut() else {
            return Ok(outbox::insert_many(&mut self.tx, dialect, msgs, None, &[])
                .await?
                .rows);
        };
        let now = super::to_ms(Utc::now());
        let (leased, lease) = handed.offer(msgs, now);
        let written = outbox::insert_many(&mut self.tx, dialect, msgs, Some(lease), &leased).await;
        match written {
            Ok(w) => {
                handed.settle(msgs, &leased, w.ids.as_ref());
                Ok(w.rows)
            }
            Err(e) => {
                handed.settle(msgs, &leased, None);
                Err(e)
            }
        }
    }

    // The contact.

    pub async fn add_tag(&mut self, contact_id: &str, tag: &str, at: i64) -> sqlx::Result<()> {
        super::plan_writes::add_tag(self.conn(), contact_id, tag, at).await
    }

    pub async fn remove_tag(&mut self, contact_id: &str, tag: &str) -> sqlx::Result<()> {
        super::plan_writes::remove_tag(self.conn(), contact_id, tag).await
    }

    /// Applies a JSON merge patch to the contact's attributes.
    pub async fn patch_attrs(
        &mut self,
        contact_id: &str,
        patch: &str,
        at: i64,
    ) -> sqlx::Result<()> {
        super::plan_writes::patch_attrs(self.conn(), contact_id, patch, at).await
    }

    /// The contact's WeCom external userid (outer `None`: no contact).
    pub async fn wecom_external_userid(
        &mut self,
        contact_id: &str,
    ) -> sqlx::Result<Option<Option<String>>> {
        super::plan_writes::wecom_external_userid(self.conn(), contact_id).await
    }

    pub async fn set_owner(&mut self, contact_id: &str, owner: &str, at: i64) -> sqlx::Result<()> {
        super::plan_writes::set_owner(self.conn(), contact_id, owner, at).await
    }

    /// Queues WeCom corp tag marks for a tag step's changes.
    pub async fn queue_wecom_marks(
        &mut self,
        channels: &[String],
        contact_id: &str,
        add: &[String],
        remove: &[String],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        super::wecom_marks::queue(self.conn(), channels, contact_id, add, remove, now_ms).await
    }

    // Assignment counters.

    /// Creates, locks and reads the team's round-robin cursor.
    pub async fn lock_team_cursor(&mut self, team: &str) -> sqlx::Result<i64> {
        super::plan_writes::lock_team_cursor(self.conn(), team).await
    }

    pub async fn set_team_cursor(&mut self, team: &str, next: i64) -> sqlx::Result<()> {
        super::plan_writes::set_team_cursor(self.conn(), team, next).await
    }

    /// Open contacts per salesperson.
    pub async fn salesperson_loads(&mut self) -> sqlx::Result<Vec<(String, i64)>> {
        super::plan_writes::salesperson_loads(self.conn()).await
    }

    /// Assignments of the step since `since` (but `except`'s), by salesperson.
    pub async fn assigned_since(
        &mut self,
        workflow: &str,
        step: &str,
        since: DateTime<Utc>,
        except: Option<i64>,
    ) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
        super::caps::assigned_since(self.conn(), workflow, step, since, except).await
    }

    /// The contact's owner's counted messages of the step since `since`.
    pub async fn owner_sends_of(
        &mut self,
        workflow: &str,
        step: &str,
        contact_id: &str,
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<DateTime<Utc>>> {
        super::caps::owner_sends_of(self.conn(), workflow, step, contact_id, since).await
    }

    // Workflow states and the event-log cursor.

    /// The blast guard paused the workflow.
    pub async fn pause_workflow(
        &mut self,
        workflow: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> sqlx::Result<()> {
        super::workflow_states::pause(self.conn(), workflow, now, reason).await
    }

    /// Takes the event-log cursor's lock (PostgreSQL; `false` when another
    /// daemon holds it). Always `true` on SQLite.
    pub async fn try_lock_cursor(&mut self) -> sqlx::Result<bool> {
        let dialect = self.dialect;
        super::ticks::try_lock_cursor(self.conn(), dialect).await
    }

    pub async fn cursor(&mut self, name: &str) -> sqlx::Result<i64> {
        plan_reads::cursor(self.conn(), name).await
    }

    pub async fn advance_cursor(&mut self, name: &str, position: i64) -> sqlx::Result<()> {
        super::ticks::advance_cursor(self.conn(), name, position).await
    }

    /// Event-log entries after `after`, at most `limit`, in order.
    pub async fn pending_log(&mut self, after: i64, limit: i64) -> sqlx::Result<Vec<LogEntry>> {
        plan_reads::pending_log(self.conn(), after, limit).await
    }
}
