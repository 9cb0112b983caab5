//! Applying a plan: its outcome and its messages are written in one
//! transaction, so a crash leaves either all of it or none of it. Unique keys
//! (enrollment entry keys, step records, message ids) make a replay after a
//! crash harmless: what already happened is not done again.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::assign::{AssignState, Pick};
use crate::contact::Contact;
use crate::engine::plan::{Action, Outcome, PlannedStep};
use crate::engine::sources::{Decided, Start};
use crate::settings::Settings;
use crate::store::enrollments::{self, NewEnrollment, Settled};
use crate::store::plan_reads::ms;
use crate::store::states::{EnrollmentStatus, MessageKind};
use crate::store::{Store, Tx};
use crate::workflow::{StepAction, Strategy};

pub use crate::store::plan_writes::EVENT_LOG_WRITE;

mod assign;
mod batch;
mod steps;

use assign::*;
use batch::*;
use steps::*;

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The plan was stored; `messages` were queued in the outbox.
    Stored { enrollment_id: i64, messages: usize },
    /// Another run (or daemon) got there first: the entry key exists, or the
    /// enrollment moved on since it was read. Nothing was written.
    Stale,
    /// The plan enrolls nobody (a trigger from before the workflow's
    /// activation): nothing to write.
    Passed,
}

/// The idempotency key of a message: stable across retries, restarts and
/// replays, unique per (workflow, contact, enrollment, step).
pub fn message_id(workflow: &str, contact_id: &str, enrollment_id: i64, step: &str) -> String {
    format!("{workflow}:{contact_id}:{enrollment_id}:{step}")
}

pub async fn apply(
    store: &Store,
    settings: &Settings,
    d: &Decided<'_>,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let mut tx = store
        .transaction()
        .await
        .context("beginning a transaction")?;
    if touches_shared_counters(std::slice::from_ref(d)) {
        lock_event_log(&mut tx).await?;
    }
    let applied = apply_in(&mut tx, settings, d, now).await?;
    tx.commit().await.context("committing the plan")?;
    Ok(applied)
}

/// Apply one plan inside the caller's transaction (the daemon applies a batch
/// of plans, and moves its cursor, in one transaction). A stale plan writes
/// nothing and leaves the transaction usable.
pub async fn apply_in(
    tx: &mut Tx,
    settings: &Settings,
    d: &Decided<'_>,
    now: DateTime<Utc>,
) -> Result<Applied> {
    if let Start::Passed { .. } = d.start {
        return Ok(Applied::Passed);
    }
    // Held by the blast guard: stored at its first step, nothing run, until
    // `nurture resume` makes it due.
    if let (Start::New { entry_key, .. }, Outcome::Held { first_step }) =
        (&d.start, &d.plan.outcome)
    {
        let new = NewEnrollment {
            workflow: &d.workflow.name,
            contact_id: &d.contact_id,
            entry_key,
            started_at: ms(now),
            trigger_event: d.trigger.as_ref().map(|t| t.to_json()),
        };
        let id = tx
            .hold_enrollment(&new, first_step)
            .await
            .context("holding the enrollment")?;
        return Ok(match id {
            Some(enrollment_id) => Applied::Stored {
                enrollment_id,
                messages: 0,
            },
            None => Applied::Stale,
        });
    }
    let enrollment_id = match &d.start {
        Start::New { entry_key, .. } => {
            let new = NewEnrollment {
                workflow: &d.workflow.name,
                contact_id: &d.contact_id,
                entry_key,
                started_at: ms(now),
                trigger_event: d.trigger.as_ref().map(|t| t.to_json()),
            };
            let id = tx
                .start_enrollment(&new)
                .await
                .context("creating the enrollment")?;
            match id {
                Some(id) => id,
                None => return Ok(Applied::Stale),
            }
        }
        Start::Existing { enrollment_id } => {
            // The plan started from the stored step; if the enrollment moved on
            // since it was read (another daemon, a replay), the plan is stale.
            // On PostgreSQL the row lock makes the check and the writes below
            // one step: a second daemon holding the same plan waits here, then
            // finds the enrollment moved on.
            let row = tx.lock_enrollment(*enrollment_id).await?;
            match row {
                Some((status, step))
                    if status == EnrollmentStatus::Active
                        && step.as_deref() == d.from_step.as_deref() => {}
                _ => return Ok(Applied::Stale),
            }
            *enrollment_id
        }
        Start::Passed { .. } => return Ok(Applied::Passed),
    };

    let mut messages = 0;
    let mut last_step = None;
    for s in &d.plan.steps {
        // A step that already ran (a replay, or an edit that moved ids) is not done again.
        let fresh = tx
            .record_step(enrollment_id, &s.step, ms(now), s.action.name(), detail(s))
            .await?;
        last_step = Some(s.step.clone());
        if !fresh {
            continue;
        }
        messages += effects(tx, settings, d, enrollment_id, s, now).await?;
    }

    let (status, step_id, next_run_at, reason) = match &d.plan.outcome {
        Outcome::Waiting {
            next_step, until, ..
        } => (
            EnrollmentStatus::Active,
            next_step.clone(),
            Some(ms(*until)),
            None,
        ),
        Outcome::Done => (EnrollmentStatus::Done, None, None, None),
        Outcome::Exited(r) => (EnrollmentStatus::Exited, None, None, Some(r.to_string())),
        // Only a new enrollment is held, and it returned above.
        Outcome::Held { first_step } => {
            (EnrollmentStatus::Held, Some(first_step.clone()), None, None)
        }
    };
    let wait_since = match &d.plan.outcome {
        Outcome::Waiting { wait_since, .. } => wait_since.map(ms),
        _ => None,
    };
    tx.settle_enrollment(Settled {
        id: enrollment_id,
        status,
        step_id,
        last_step,
        next_run_at,
        end_reason: reason,
        now: ms(now),
        wait_since,
    })
    .await
    .context("updating the enrollment")?;
    Ok(Applied::Stored {
        enrollment_id,
        messages,
    })
}

/// Apply a batch of plans inside the caller's transaction; one [`Applied`]
/// per plan, in order. Runs of plans that start an enrollment and only queue
/// messages (the daemon's common case: a welcome to each new contact) are
/// written with a few multi-row statements per run (enrollments in their
/// final state, step records, outbox rows) instead of four statements per
/// plan; every other plan goes through [`apply_in`]. The rows written are
/// the same, with the same ids in the same order.
pub async fn apply_batch(
    tx: &mut Tx,
    settings: &Settings,
    batch: &[Decided<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<Applied>> {
    let mut out = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        if batchable(&batch[i]) {
            let end = (i..batch.len())
                .find(|&k| !batchable(&batch[k]))
                .unwrap_or(batch.len());
            out.extend(apply_new_run(tx, &batch[i..end], now).await?);
            i = end;
        } else {
            out.push(apply_in(tx, settings, &batch[i], now).await?);
            i += 1;
        }
    }
    Ok(out)
}

/// Make the enrollments waiting at the woken `wait_until` steps due at
/// `now` (in the transaction that moves the event-log cursor over the
/// entries that woke them). Their plans decide whether the wait is over.
pub async fn wake_waiting(
    tx: &mut Tx,
    wakes: &[crate::engine::sources::Wake],
    now: DateTime<Utc>,
) -> Result<()> {
    for w in wakes {
        tx.wake_waiting(&w.contact_id, &w.workflow, &w.step_id, ms(now))
            .await
            .context("waking a wait_until step")?;
    }
    Ok(())
}

/// Whether applying these plans may both write the event log and lock the
/// assignment counters (see [`EVENT_LOG_WRITE`]), or queue a send capped
/// per salesperson (the lock serialises those transactions across daemons,
/// so each reads the owner's messages the others queued).
pub fn touches_shared_counters(batch: &[Decided<'_>]) -> bool {
    batch.iter().any(|d| {
        capped_send(d)
            || d.plan
                .steps
                .iter()
                .any(|s| matches!(s.action, Action::Tag { .. } | Action::Assign { .. }))
    })
}

/// Whether the plan sends from a step with `per_salesperson`: its time is
/// decided again under [`EVENT_LOG_WRITE`] (`caps::recheck_owner_slot`).
fn capped_send(d: &Decided<'_>) -> bool {
    d.plan.steps.iter().any(|s| {
        matches!(s.action, Action::Send { .. })
            && matches!(
                d.workflow.step(&s.step).map(|st| &st.action),
                Some(StepAction::Send(send)) if send.per_salesperson.is_some()
            )
    })
}

/// Takes [`EVENT_LOG_WRITE`] for the rest of the transaction (PostgreSQL;
/// SQLite's write lock already serialises writers).
pub async fn lock_event_log(tx: &mut Tx) -> Result<()> {
    tx.lock_event_log().await.context("locking the event log")
}
