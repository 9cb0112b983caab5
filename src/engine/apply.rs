//! Applying a plan: its outcome and its messages are written in one
//! transaction, so a crash leaves either all of it or none of it. Unique keys
//! (enrollment entry keys, step records, message ids) make a replay after a
//! crash harmless: what already happened is not done again.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{Any, AnyPool, Transaction};

use crate::assign::{AssignState, Pick};
use crate::contact::Contact;
use crate::engine::plan::{Action, Outcome, PlannedStep};
use crate::engine::sources::{Decided, Start};
use crate::settings::Settings;
use crate::store::Dialect;
use crate::store::enrollments::{self, NewEnrollment, Settled};
use crate::store::plan_reads::ms;
use crate::store::plan_writes;
use crate::store::states::{EnrollmentStatus, MessageKind};
use crate::workflow::{StepAction, Strategy};

pub use crate::store::plan_writes::EVENT_LOG_WRITE;

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
    pool: &AnyPool,
    dialect: Dialect,
    settings: &Settings,
    d: &Decided<'_>,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let mut tx = crate::store::begin(pool, dialect)
        .await
        .context("beginning a transaction")?;
    if touches_shared_counters(std::slice::from_ref(d)) {
        lock_event_log(&mut tx, dialect).await?;
    }
    let applied = apply_in(&mut tx, dialect, settings, d, now).await?;
    tx.commit().await.context("committing the plan")?;
    Ok(applied)
}

/// Apply one plan inside the caller's transaction (the daemon applies a batch
/// of plans, and moves its cursor, in one transaction). A stale plan writes
/// nothing and leaves the transaction usable.
pub async fn apply_in(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    settings: &Settings,
    d: &Decided<'_>,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let tx = &mut **tx;
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
        let id = enrollments::hold(tx, &new, first_step)
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
            let id = enrollments::start(tx, &new)
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
            let row = enrollments::lock(tx, dialect, *enrollment_id).await?;
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
        let fresh = enrollments::record_step(
            tx,
            enrollment_id,
            &s.step,
            ms(now),
            s.action.name(),
            detail(s),
        )
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
    enrollments::settle(
        tx,
        Settled {
            id: enrollment_id,
            status,
            step_id,
            last_step,
            next_run_at,
            end_reason: reason,
            now: ms(now),
            wait_since,
        },
    )
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
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
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
            out.extend(apply_new_run(tx, dialect, &batch[i..end], now).await?);
            i = end;
        } else {
            out.push(apply_in(tx, dialect, settings, &batch[i], now).await?);
            i += 1;
        }
    }
    Ok(out)
}

/// A plan [`apply_new_run`] can write: a new enrollment (or a passed
/// trigger) whose steps change nothing but the outbox.
fn batchable(d: &Decided<'_>) -> bool {
    match d.start {
        Start::Passed { .. } => true,
        Start::Existing { .. } => false,
        // A capped send is placed again when queued (`effects`), one at a time.
        Start::New { .. } if capped_send(d) => false,
        Start::New { .. } => d.plan.steps.iter().all(|s| {
            matches!(
                s.action,
                Action::Send { .. }
                    | Action::Webhook { .. }
                    | Action::Wait { .. }
                    | Action::WaitEnded { .. }
                    | Action::Split { .. }
                    | Action::Exit { .. }
                    | Action::Skip { .. }
            )
        }),
    }
}

/// Writes a run of [`batchable`] plans with multi-row statements.
async fn apply_new_run(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    run: &[Decided<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<Applied>> {
    let tx = &mut **tx;
    let mut rows = Vec::new();
    let mut which = Vec::new();
    for (i, d) in run.iter().enumerate() {
        let Start::New { entry_key, .. } = &d.start else {
            continue;
        };
        let new = NewEnrollment {
            workflow: &d.workflow.name,
            contact_id: &d.contact_id,
            entry_key,
            started_at: ms(now),
            trigger_event: d.trigger.as_ref().map(|t| t.to_json()),
        };
        let (status, step_id, next_run_at, end_reason, wait_since) = match &d.plan.outcome {
            Outcome::Waiting {
                next_step,
                until,
                wait_since,
            } => (
                EnrollmentStatus::Active,
                next_step.clone(),
                Some(ms(*until)),
                None,
                wait_since.map(ms),
            ),
            Outcome::Done => (EnrollmentStatus::Done, None, None, None, None),
            Outcome::Exited(r) => (
                EnrollmentStatus::Exited,
                None,
                None,
                Some(r.to_string()),
                None,
            ),
            Outcome::Held { first_step } => (
                EnrollmentStatus::Held,
                Some(first_step.clone()),
                None,
                None,
                None,
            ),
        };
        let held = status == EnrollmentStatus::Held;
        rows.push(enrollments::NewSettled {
            new,
            status,
            step_id,
            // A held enrollment ran nothing (as `enrollments::hold`).
            last_step: if held {
                None
            } else {
                d.plan.steps.last().map(|s| s.step.clone())
            },
            next_run_at,
            end_reason,
            ended_at: matches!(status, EnrollmentStatus::Done | EnrollmentStatus::Exited)
                .then_some(ms(now)),
            wait_since,
        });
        which.push(i);
    }
    let ids = enrollments::start_settled_many(tx, dialect, &rows)
        .await
        .context("creating the enrollments")?;
    let mut out: Vec<Applied> = run
        .iter()
        .map(|d| match d.start {
            Start::Passed { .. } => Applied::Passed,
            _ => Applied::Stale,
        })
        .collect();
    let mut steps = Vec::new();
    let mut messages = Vec::new();
    for ((i, id), row) in which.iter().zip(&ids).zip(&rows) {
        let Some(enrollment_id) = *id else { continue };
        let d = &run[*i];
        let mut queued = 0;
        if row.status != EnrollmentStatus::Held {
            let mut seen = std::collections::HashSet::new();
            for s in &d.plan.steps {
                // A step id twice in one plan runs once (the step record's key).
                if !seen.insert(s.step.as_str()) {
                    continue;
                }
                steps.push(enrollments::StepRecord {
                    enrollment_id,
                    workflow: row.new.workflow,
                    started_at: row.new.started_at,
                    step: &s.step,
                    ran_at: ms(now),
                    action: s.action.name(),
                    detail: detail(s),
                });
                if let Some(m) = message_of(d, enrollment_id, s, now) {
                    messages.push((d, enrollment_id, s.step.as_str(), m));
                    queued += 1;
                }
            }
        }
        out[*i] = Applied::Stored {
            enrollment_id,
            messages: queued,
        };
    }
    enrollments::record_steps_many(tx, dialect, &steps)
        .await
        .context("recording the steps")?;
    let payloads: Vec<String> = messages
        .iter()
        .map(|(.., m)| m.payload.to_string())
        .collect();
    let rows: Vec<crate::store::outbox::NewMessage<'_>> = messages
        .iter()
        .zip(&payloads)
        .map(
            |((d, enrollment_id, step, m), payload)| crate::store::outbox::NewMessage {
                id: &m.id,
                workflow: &d.workflow.name,
                contact_id: &d.contact_id,
                enrollment_id: *enrollment_id,
                step_id: step,
                channel: &m.channel,
                recipient: &m.to,
                subject: m.subject.as_deref(),
                body: &m.body,
                payload: payload.clone(),
                not_before: ms(m.at),
                created_at: ms(now),
            },
        )
        .collect();
    crate::store::outbox::insert_many(tx, dialect, &rows)
        .await
        .context("queueing the messages")?;
    Ok(out)
}

/// What a step changes in the store; returns how many messages it queued.
async fn effects(
    tx: &mut sqlx::AnyConnection,
    settings: &Settings,
    d: &Decided<'_>,
    enrollment_id: i64,
    s: &PlannedStep,
    now: DateTime<Utc>,
) -> Result<usize> {
    match &s.action {
        Action::Send { tz, .. } => {
            let mut m = message_of(d, enrollment_id, s, now).expect("a send queues a message");
            // `per_salesperson`: placed again under the lock, against what
            // other daemons queued since the plan.
            let quiet = settings.policies.quiet_hours.as_ref();
            m.at = crate::engine::caps::recheck_owner_slot(
                tx,
                quiet,
                d.workflow,
                &s.step,
                &d.contact_id,
                m.at,
                *tz,
                now,
            )
            .await?;
            queue(tx, d, enrollment_id, &s.step, m.queued(), now).await
        }
        Action::Assign {
            salesperson,
            previous,
            notify,
            notices,
            transfer,
        } => {
            let chosen = assign(tx, settings, d, enrollment_id, &s.step, salesperson, now).await?;
            if chosen != *salesperson {
                // The store moved underneath the plan (another daemon
                // assigned to this team meanwhile): the choice made under the
                // team's lock stands, and the step says why it differs.
                let why = format!(
                    "{chosen} (planned {salesperson}; the team's counters changed since the plan, another daemon assigned meanwhile)"
                );
                tracing::warn!(workflow = %d.workflow.name, contact = %d.contact_id, step = %s.step, planned = %salesperson, chosen = %chosen, "assignment re-decided under the team's lock");
                enrollments::set_step_detail(tx, enrollment_id, &s.step, &why).await?;
            }
            let salesperson = &chosen;
            if previous.as_deref() == Some(salesperson.as_str()) {
                // Chosen again under the lock: the owner does not change.
                return Ok(0);
            }
            let mut queued = 0;
            // The plan decided the transfer (queued now, deferred until the
            // takeover, not needed, or refused: then the step's detail says
            // why); it is applied as decided. Only an owner the team's lock
            // re-chose was not planned: its transfer is queued now and
            // WeCom's limits are checked by the channel at delivery.
            let planned =
                matches!(&s.action, Action::Assign { salesperson: p, .. } if p == salesperson);
            let decided = if planned {
                transfer.as_ref().and_then(|t| {
                    let at = t.queued_at_ms(ms(now))?;
                    Some((
                        t.channel.clone(),
                        t.external_userid.clone(),
                        transfer_payload(&t.wanted, &t.takeover),
                        t.describe(),
                        crate::store::plan_reads::from_ms(at),
                    ))
                })
            } else {
                wecom_transfer(tx, settings, d, salesperson, previous.as_deref())
                    .await?
                    .map(|(channel, to, payload)| {
                        let body = format!(
                            "transfer of {to} to {salesperson} (re-chosen under the team's lock; WeCom's limits are checked at delivery)"
                        );
                        (channel, to, payload, body, now)
                    })
            };
            if let Some((channel, to, payload, body, at)) = decided {
                let id = format!(
                    "{}:transfer",
                    message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step)
                );
                let msg = Queued {
                    id: &id,
                    channel: &channel,
                    to: &to,
                    subject: None,
                    body: &body,
                    payload,
                    at,
                };
                queued += queue(tx, d, enrollment_id, &s.step, msg, now).await?;
            }
            let Some(channel) = notify else {
                return Ok(queued);
            };
            let Some(to) = salesperson_address(settings, channel, salesperson) else {
                return Ok(queued);
            };
            let body = match notices.get(salesperson.as_str()) {
                Some(Ok(b)) => b.clone(),
                Some(Err(e)) => {
                    tracing::warn!(workflow = %d.workflow.name, contact = %d.contact_id, salesperson = %salesperson, error = %e, "assignment notice not sent: its template does not render");
                    return Ok(queued);
                }
                None => return Ok(queued),
            };
            let id = format!(
                "{}:notify",
                message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step)
            );
            let msg = Queued {
                id: &id,
                channel,
                to: &to,
                subject: None,
                body: &body,
                // Channels tell a notice to a salesperson from a message to the contact.
                payload: serde_json::json!({ "kind": MessageKind::Notice.as_str() }),
                at: now,
            };
            Ok(queued + queue(tx, d, enrollment_id, &s.step, msg, now).await?)
        }
        Action::Set { values } => {
            if values.is_empty() {
                return Ok(0);
            }
            // A JSON merge patch: null removes the attribute.
            let patch = serde_json::to_string(values).expect("a JSON map serialises");
            plan_writes::patch_attrs(tx, &d.contact_id, &patch, ms(now))
                .await
                .context("setting attributes")?;
            Ok(0)
        }
        Action::Webhook { .. } => {
            let m = message_of(d, enrollment_id, s, now).expect("a webhook queues a message");
            queue(tx, d, enrollment_id, &s.step, m.queued(), now).await
        }
        Action::Notify {
            salesperson,
            channel,
            body,
        } => {
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(workflow = %d.workflow.name, contact = %d.contact_id, salesperson = %salesperson, error = %e, "notice not sent: its template does not render");
                    return Ok(0);
                }
            };
            let Some(to) = salesperson_address(settings, channel, salesperson) else {
                return Ok(0);
            };
            let id = message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step);
            let msg = Queued {
                id: &id,
                channel,
                to: &to,
                subject: None,
                body,
                payload: serde_json::json!({ "kind": MessageKind::Notice.as_str() }),
                at: now,
            };
            queue(tx, d, enrollment_id, &s.step, msg, now).await
        }
        Action::Tag { add, remove, wecom } => {
            for t in add {
                plan_writes::add_tag(tx, &d.contact_id, t, ms(now)).await?;
            }
            for t in remove {
                plan_writes::remove_tag(tx, &d.contact_id, t).await?;
            }
            // A contact mirrored from WeCom: the corp tag follows, through
            // the daemon's tag-mark worker (queued here, in the same
            // transaction, so a crash loses neither).
            if !wecom.is_empty() {
                crate::store::wecom_marks::queue(
                    &mut *tx,
                    wecom,
                    &d.contact_id,
                    add,
                    remove,
                    ms(now),
                )
                .await
                .context("queueing WeCom tag marks")?;
            }
            Ok(0)
        }
        Action::Wait { .. }
        | Action::WaitEnded { .. }
        | Action::Split { .. }
        | Action::Exit { .. }
        | Action::Skip { .. } => Ok(0),
    }
}

/// Make the enrollments waiting at the woken `wait_until` steps due at
/// `now` (in the transaction that moves the event-log cursor over the
/// entries that woke them). Their plans decide whether the wait is over.
pub async fn wake_waiting(
    tx: &mut Transaction<'static, Any>,
    wakes: &[crate::engine::sources::Wake],
    now: DateTime<Utc>,
) -> Result<()> {
    for w in wakes {
        enrollments::wake_waiting(tx, &w.contact_id, &w.workflow, &w.step_id, ms(now))
            .await
            .context("waking a wait_until step")?;
    }
    Ok(())
}

/// The WeCom transfer an assignment the team's lock re-chose calls for
/// (reference §1.5; a planned one is decided by `engine::transfer`): when the
/// contact has a WeCom id, the new salesperson has a `wecom_userid` (other
/// than the previous one's; an empty `handover_userid` lets the channel pick
/// a real follow-user), and the settings have a `wecom` channel (the first by
/// name). A takeover member who already is a follow-user needs none: the
/// channel finds that out from the relationships. Returns the channel, the contact's external userid and
/// the outbox payload.
async fn wecom_transfer(
    tx: &mut sqlx::AnyConnection,
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
    let external = plan_writes::wecom_external_userid(tx, &d.contact_id)
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
fn transfer_payload(from: &str, to: &str) -> serde_json::Value {
    serde_json::json!({ "kind": MessageKind::Transfer.as_str(), "handover_userid": from, "takeover_userid": to })
}

/// The outbox row a `send` or `webhook` step queues (the one place that
/// builds it, for the per-plan and the batched apply alike).
struct Message {
    id: String,
    channel: String,
    to: String,
    subject: Option<String>,
    body: String,
    payload: serde_json::Value,
    at: DateTime<Utc>,
}

impl Message {
    fn queued(&self) -> Queued<'_> {
        Queued {
            id: &self.id,
            channel: &self.channel,
            to: &self.to,
            subject: self.subject.as_deref(),
            body: &self.body,
            payload: self.payload.clone(),
            at: self.at,
        }
    }
}

/// The message a step queues when it only queues a message (`send`,
/// `webhook`); `None` for other steps.
fn message_of(
    d: &Decided<'_>,
    enrollment_id: i64,
    s: &PlannedStep,
    now: DateTime<Utc>,
) -> Option<Message> {
    let id = message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step);
    match &s.action {
        Action::Send {
            channel,
            to,
            subject,
            body,
            at,
            attachments,
            ..
        } => Some(Message {
            id,
            channel: channel.clone(),
            to: to.clone(),
            subject: subject.clone(),
            body: body.clone(),
            // Attachments travel with the message as the plan rendered them
            // (the WeCom channel uploads their files when it sends).
            payload: if attachments.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::json!({ "attachments": attachments })
            },
            at: *at,
        }),
        Action::Webhook {
            channel,
            body,
            store,
        } => Some(Message {
            id,
            channel: channel.clone(),
            to: d.contact_id.clone(),
            subject: None,
            body: serde_json::to_string(body).expect("JSON serialises"),
            // The webhook channel posts `body` as it is instead of its envelope.
            // `store`: the attributes the answer sets once delivered.
            payload: if store.is_empty() {
                serde_json::json!({ "kind": MessageKind::Webhook.as_str(), "body": body })
            } else {
                serde_json::json!({ "kind": MessageKind::Webhook.as_str(), "body": body, "store": store })
            },
            at: now,
        }),
        _ => None,
    }
}

/// A message on its way into the outbox.
struct Queued<'a> {
    /// The idempotency key.
    id: &'a str,
    channel: &'a str,
    to: &'a str,
    subject: Option<&'a str>,
    body: &'a str,
    /// What the channel needs beyond the text (the outbox `payload` column).
    payload: serde_json::Value,
    /// Not before (quiet hours).
    at: DateTime<Utc>,
}

async fn queue(
    tx: &mut sqlx::AnyConnection,
    d: &Decided<'_>,
    enrollment_id: i64,
    step: &str,
    m: Queued<'_>,
    now: DateTime<Utc>,
) -> Result<usize> {
    let n = crate::store::outbox::insert(
        tx,
        &crate::store::outbox::NewMessage {
            id: m.id,
            workflow: &d.workflow.name,
            contact_id: &d.contact_id,
            enrollment_id,
            step_id: step,
            channel: m.channel,
            recipient: m.to,
            subject: m.subject,
            body: m.body,
            payload: m.payload.to_string(),
            not_before: ms(m.at),
            created_at: ms(now),
        },
    )
    .await?;
    Ok(n as usize)
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
pub async fn lock_event_log(tx: &mut Transaction<'static, Any>, dialect: Dialect) -> Result<()> {
    plan_writes::lock_event_log(tx, dialect)
        .await
        .context("locking the event log")
}

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
async fn assign(
    tx: &mut sqlx::AnyConnection,
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
        let cursor = plan_writes::lock_team_cursor(tx, &a.team.value).await?;
        let mut state = AssignState::default();
        state.team_cursor.insert(a.team.value.clone(), cursor);
        // Open contacts matter to least-loaded, and to round robin only when
        // someone has a capacity. They are read under the team's lock: every
        // assignment to the team (the only writer of owners here) holds it.
        if a.strategy == Strategy::LeastLoaded || team.iter().any(|p| p.capacity.is_some()) {
            let loads = plan_writes::salesperson_loads(tx).await?;
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
                let rows = crate::store::caps::assigned_since(
                    &mut *tx,
                    &d.workflow.name,
                    step,
                    since,
                    Some(enrollment_id),
                )
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
            plan_writes::set_team_cursor(tx, &a.team.value, next).await?;
        }
    }
    plan_writes::set_owner(tx, &d.contact_id, &chosen, ms(now)).await?;
    Ok(chosen)
}

/// Where a salesperson is told on `channel`: their e-mail, their WeCom
/// user id, or (log and webhook channels) their id.
fn salesperson_address(settings: &Settings, channel: &str, salesperson: &str) -> Option<String> {
    let person = settings.salesperson(salesperson)?;
    let kind = settings.channels.get(channel).map(|c| c.kind);
    match kind.and_then(|k| k.address_field()) {
        Some("email") => person.email.clone(),
        Some("wecom_external_userid") => person.wecom_userid.clone(),
        Some(_) => None,
        None => Some(person.id.clone()),
    }
}

fn detail(s: &PlannedStep) -> Option<String> {
    match &s.action {
        Action::Send { channel, to, .. } => Some(format!("{channel} → {to}")),
        // A refused WeCom transfer is recorded with the assignment (the
        // salesperson stays the detail's first word, which the caps read).
        Action::Assign {
            salesperson,
            transfer: Some(t),
            ..
        } if matches!(t.verdict, crate::engine::transfer::Verdict::Refused { .. }) => {
            Some(format!("{salesperson} — {}", t.describe()))
        }
        Action::Assign { salesperson, .. } => Some(salesperson.clone()),
        Action::Tag { add, remove, wecom } => Some(format!(
            "+{} -{}{}",
            add.join(","),
            remove.join(","),
            if wecom.is_empty() {
                String::new()
            } else {
                format!(" (corp tags marked in WeCom via {})", wecom.join(","))
            }
        )),
        Action::Wait { until } => Some(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        Action::WaitEnded { why, .. } => Some(why.clone()),
        Action::Split { arm } => Some(arm.clone()),
        Action::Webhook { channel, .. } => Some(format!("{channel} ← POST")),
        Action::Set { values } => Some(serde_json::to_string(values).expect("a JSON map")),
        Action::Notify {
            salesperson,
            channel,
            ..
        } => Some(format!("{channel} → {salesperson}")),
        Action::Exit { reason } | Action::Skip { reason } => Some(reason.to_string()),
    }
}
