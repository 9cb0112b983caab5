//! Applying a plan: its outcome and its messages are written in one
//! transaction, so a crash leaves either all of it or none of it. Unique keys
//! (enrollment entry keys, step records, message ids) make a replay after a
//! crash harmless: what already happened is not done again.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{Any, AnyPool, AssertSqlSafe, Transaction};

use crate::assign::{AssignState, Pick};
use crate::contact::Contact;
use crate::engine::plan::{Action, Outcome, PlannedStep};
use crate::engine::sources::{Decided, Start};
use crate::settings::Settings;
use crate::store::Dialect;
use crate::store::plan_reads::ms;
use crate::workflow::{StepAction, Strategy};

/// The transaction-scoped advisory lock every writer of the event log takes
/// on PostgreSQL (see migrations/postgres/0001_init.sql): log rows become
/// visible in sequence order. The scheduler takes it first in transactions
/// that will both write the log (tags) and lock assignment rows, so all
/// daemons take locks in one order (log, then team) and cannot deadlock.
pub const EVENT_LOG_WRITE: i64 = 4_711_001;

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
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO enrollments (workflow, contact_id, entry_key, status, step_id, started_at, trigger_event)
             VALUES ($1, $2, $3, 'held', $4, $5, $6)
             ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
             RETURNING id",
        )
        .bind(&d.workflow.name)
        .bind(&d.contact_id)
        .bind(entry_key)
        .bind(first_step)
        .bind(ms(now))
        .bind(d.trigger.as_ref().map(|t| t.to_json()))
        .fetch_optional(&mut *tx)
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
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO enrollments (workflow, contact_id, entry_key, status, started_at, trigger_event)
                 VALUES ($1, $2, $3, 'active', $4, $5)
                 ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
                 RETURNING id",
            )
            .bind(&d.workflow.name)
            .bind(&d.contact_id)
            .bind(entry_key)
            .bind(ms(now))
            .bind(d.trigger.as_ref().map(|t| t.to_json()))
            .fetch_optional(&mut *tx)
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
            let sql = format!(
                "SELECT status, step_id FROM enrollments WHERE id = $1{}",
                dialect.for_update()
            );
            let row: Option<(String, Option<String>)> = sqlx::query_as(AssertSqlSafe(sql))
                .bind(enrollment_id)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some((status, step))
                    if status == "active" && step.as_deref() == d.from_step.as_deref() => {}
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
        let fresh = sqlx::query(
            "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(enrollment_id)
        .bind(&s.step)
        .bind(ms(now))
        .bind(s.action.name())
        .bind(detail(s))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        last_step = Some(s.step.clone());
        if !fresh {
            continue;
        }
        messages += effects(tx, settings, d, enrollment_id, s, now).await?;
    }

    let (status, step_id, next_run_at, reason) = match &d.plan.outcome {
        Outcome::Waiting {
            next_step, until, ..
        } => ("active", next_step.clone(), Some(ms(*until)), None),
        Outcome::Done => ("done", None, None, None),
        Outcome::Exited(r) => ("exited", None, None, Some(r.to_string())),
        // Only a new enrollment is held, and it returned above.
        Outcome::Held { first_step } => ("held", Some(first_step.clone()), None, None),
    };
    let wait_since = match &d.plan.outcome {
        Outcome::Waiting { wait_since, .. } => wait_since.map(ms),
        _ => None,
    };
    sqlx::query(
        "UPDATE enrollments SET status = $1, step_id = $2, last_step_id = coalesce($3, last_step_id),
                next_run_at = $4, end_reason = $5,
                ended_at = CASE WHEN $6 = 'active' THEN NULL ELSE $7 END,
                lease_owner = NULL, lease_until = NULL, wait_since = $9
          WHERE id = $8",
    )
    .bind(status)
    .bind(step_id)
    .bind(last_step)
    .bind(next_run_at)
    .bind(reason)
    .bind(status)
    .bind(ms(now))
    .bind(enrollment_id)
    .bind(wait_since)
    .execute(&mut *tx)
    .await
    .context("updating the enrollment")?;
    Ok(Applied::Stored {
        enrollment_id,
        messages,
    })
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
        Action::Send {
            channel,
            to,
            subject,
            body,
            at,
            attachments,
            ..
        } => {
            let id = message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step);
            // Attachments travel with the message as the plan rendered them
            // (the WeCom channel uploads their files when it sends).
            let payload = if attachments.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::json!({ "attachments": attachments })
            };
            let msg = Queued {
                id: &id,
                channel,
                to,
                subject: subject.as_deref(),
                body,
                payload,
                at: *at,
            };
            queue(tx, d, enrollment_id, &s.step, msg, now).await
        }
        Action::Assign {
            salesperson,
            previous,
            notify,
            notices,
        } => {
            let chosen = assign(tx, settings, d, &s.step, salesperson, now).await?;
            if chosen != *salesperson {
                // The store moved underneath the plan (another daemon
                // assigned to this team meanwhile): the choice made under the
                // team's lock stands, and the step says why it differs.
                let why = format!(
                    "{chosen} (planned {salesperson}; the team's counters changed since the plan, another daemon assigned meanwhile)"
                );
                tracing::warn!(workflow = %d.workflow.name, contact = %d.contact_id, step = %s.step, planned = %salesperson, chosen = %chosen, "assignment re-decided under the team's lock");
                sqlx::query(
                    "UPDATE enrollment_steps SET detail = $1 WHERE enrollment_id = $2 AND step_id = $3",
                )
                .bind(why)
                .bind(enrollment_id)
                .bind(&s.step)
                .execute(&mut *tx)
                .await?;
            }
            let salesperson = &chosen;
            if previous.as_deref() == Some(salesperson.as_str()) {
                // Chosen again under the lock: the owner does not change.
                return Ok(0);
            }
            let mut queued = 0;
            if let Some((channel, to, payload)) =
                wecom_transfer(tx, settings, d, salesperson, previous.as_deref()).await?
            {
                let id = format!(
                    "{}:transfer",
                    message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step)
                );
                let body = format!("transfer of {to} to {salesperson}");
                let msg = Queued {
                    id: &id,
                    channel: &channel,
                    to: &to,
                    subject: None,
                    body: &body,
                    payload,
                    at: now,
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
                payload: serde_json::json!({ "kind": "notice" }),
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
            sqlx::query(
                "UPDATE contacts SET attrs = json_patch(attrs, $1), updated_at = $2 WHERE id = $3",
            )
            .bind(patch)
            .bind(ms(now))
            .bind(&d.contact_id)
            .execute(&mut *tx)
            .await
            .context("setting attributes")?;
            Ok(0)
        }
        Action::Webhook { channel, body } => {
            let id = message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step);
            let text = serde_json::to_string(body).expect("JSON serialises");
            let msg = Queued {
                id: &id,
                channel,
                to: &d.contact_id,
                subject: None,
                body: &text,
                // The webhook channel posts `body` as it is instead of its envelope.
                payload: serde_json::json!({ "kind": "webhook", "body": body }),
                at: now,
            };
            queue(tx, d, enrollment_id, &s.step, msg, now).await
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
                payload: serde_json::json!({ "kind": "notice" }),
                at: now,
            };
            queue(tx, d, enrollment_id, &s.step, msg, now).await
        }
        Action::Tag { add, remove, wecom } => {
            for t in add {
                sqlx::query("INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(&d.contact_id)
                    .bind(t)
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?;
            }
            for t in remove {
                sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1 AND tag = $2")
                    .bind(&d.contact_id)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
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
        sqlx::query(
            "UPDATE enrollments SET next_run_at = $1
              WHERE contact_id = $2 AND workflow = $3 AND step_id = $4
                AND status = 'active' AND wait_since IS NOT NULL AND next_run_at > $1",
        )
        .bind(ms(now))
        .bind(&w.contact_id)
        .bind(&w.workflow)
        .bind(&w.step_id)
        .execute(&mut **tx)
        .await
        .context("waking a wait_until step")?;
    }
    Ok(())
}

/// The WeCom transfer an assignment calls for (reference §1.5): when the
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
    let external: Option<Option<String>> =
        sqlx::query_scalar("SELECT wecom_external_userid FROM contacts WHERE id = $1")
            .bind(&d.contact_id)
            .fetch_optional(&mut *tx)
            .await
            .context("reading the contact's WeCom id")?;
    let Some(external) = external.flatten().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    let payload =
        serde_json::json!({ "kind": "transfer", "handover_userid": from, "takeover_userid": to });
    Ok(Some((channel, external, payload)))
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
    let n = sqlx::query(
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, subject, body,
                             payload, status, attempts, not_before, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', 0, $11, $11, $12)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(m.id)
    .bind(&d.workflow.name)
    .bind(&d.contact_id)
    .bind(enrollment_id)
    .bind(step)
    .bind(m.channel)
    .bind(m.to)
    .bind(m.subject)
    .bind(m.body)
    .bind(m.payload.to_string())
    .bind(ms(m.at))
    .bind(ms(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(n as usize)
}

/// Whether applying these plans may both write the event log and lock the
/// assignment counters (see [`EVENT_LOG_WRITE`]).
pub fn touches_shared_counters(batch: &[Decided<'_>]) -> bool {
    batch.iter().any(|d| {
        d.plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Tag { .. } | Action::Assign { .. }))
    })
}

/// Takes [`EVENT_LOG_WRITE`] for the rest of the transaction (PostgreSQL;
/// SQLite's write lock already serialises writers).
pub async fn lock_event_log(tx: &mut Transaction<'static, Any>, dialect: Dialect) -> Result<()> {
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENT_LOG_WRITE)
            .execute(&mut **tx)
            .await
            .context("locking the event log")?;
    }
    Ok(())
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
async fn assign(
    tx: &mut sqlx::AnyConnection,
    settings: &Settings,
    d: &Decided<'_>,
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
        let cursor: i64 = sqlx::query_scalar(
            "INSERT INTO team_cursors (team, next_index) VALUES ($1, 0)
             ON CONFLICT (team) DO UPDATE SET next_index = team_cursors.next_index
             RETURNING next_index",
        )
        .bind(&a.team.value)
        .fetch_one(&mut *tx)
        .await?;
        let mut state = AssignState::default();
        state.team_cursor.insert(a.team.value.clone(), cursor);
        // Open contacts matter to least-loaded, and to round robin only when
        // someone has a capacity. They are read under the team's lock: every
        // assignment to the team (the only writer of owners here) holds it.
        if a.strategy == Strategy::LeastLoaded || team.iter().any(|p| p.capacity.is_some()) {
            let loads: Vec<(String, i64)> =
                sqlx::query_as("SELECT salesperson_id, open_contacts FROM salesperson_load")
                    .fetch_all(&mut *tx)
                    .await?;
            state.load.extend(loads);
        }
        // The choice does not depend on the current owner (the plan checked
        // `only_if_unassigned`); `pick` only moves the in-memory load.
        let contact = Contact {
            id: d.contact_id.clone(),
            ..Default::default()
        };
        // The plan already passed `only_if_unassigned`; decide among the team only.
        let step = crate::workflow::AssignStep {
            only_if_unassigned: false,
            ..a.clone()
        };
        if let Pick::Chosen(id) = state.pick(&step, team, &contact) {
            chosen = id;
        }
        if a.strategy == Strategy::RoundRobin {
            let next = state.team_cursor.get(&a.team.value).copied().unwrap_or(0);
            sqlx::query("UPDATE team_cursors SET next_index = $1 WHERE team = $2")
                .bind(next)
                .bind(&a.team.value)
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query("UPDATE contacts SET owner = $1, updated_at = $2 WHERE id = $3")
        .bind(&chosen)
        .bind(ms(now))
        .bind(&d.contact_id)
        .execute(&mut *tx)
        .await?;
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
