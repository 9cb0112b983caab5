//! Applying a plan: its outcome and its messages are written in one
//! transaction, so a crash leaves either all of it or none of it. Unique keys
//! (enrollment entry keys, step records, message ids) make a replay after a
//! crash harmless: what already happened is not done again.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::engine::plan::{Action, Outcome, PlannedStep};
use crate::engine::sources::{Decided, Start};
use crate::settings::Settings;
use crate::store::plan_reads::ms;

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The plan was stored; `messages` were queued in the outbox.
    Stored { enrollment_id: i64, messages: usize },
    /// Another run (or daemon) got there first: the entry key exists, or the
    /// enrollment moved on since it was read. Nothing was written.
    Stale,
}

/// The idempotency key of a message: stable across retries, restarts and
/// replays, unique per (workflow, contact, enrollment, step).
pub fn message_id(workflow: &str, contact_id: &str, enrollment_id: i64, step: &str) -> String {
    format!("{workflow}:{contact_id}:{enrollment_id}:{step}")
}

pub async fn apply(
    pool: &SqlitePool,
    settings: &Settings,
    d: &Decided<'_>,
    now: DateTime<Utc>,
) -> Result<Applied> {
    // IMMEDIATE: take SQLite's write lock up front, so the read-then-write
    // below cannot be interleaved with another writer.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .context("beginning a transaction")?;
    let applied = apply_in(&mut tx, settings, d, now).await?;
    tx.commit().await.context("committing the plan")?;
    Ok(applied)
}

/// Apply one plan inside the caller's transaction (the daemon applies a batch
/// of plans, and moves its cursor, in one transaction). A stale plan writes
/// nothing and leaves the transaction usable.
pub async fn apply_in(
    tx: &mut Transaction<'static, Sqlite>,
    settings: &Settings,
    d: &Decided<'_>,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let tx = &mut **tx;
    let enrollment_id = match &d.start {
        Start::New { entry_key, .. } => {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO enrollments (workflow, contact_id, entry_key, status, started_at)
                 VALUES (?, ?, ?, 'active', ?)
                 ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
                 RETURNING id",
            )
            .bind(&d.workflow.name)
            .bind(&d.contact_id)
            .bind(entry_key)
            .bind(ms(now))
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
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT status, step_id FROM enrollments WHERE id = ?")
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
    };

    let mut messages = 0;
    let mut last_step = None;
    for s in &d.plan.steps {
        // A step that already ran (a replay, or an edit that moved ids) is not done again.
        let fresh = sqlx::query(
            "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
        Outcome::Waiting { next_step, until } => {
            ("active", next_step.clone(), Some(ms(*until)), None)
        }
        Outcome::Done => ("done", None, None, None),
        Outcome::Exited(r) => ("exited", None, None, Some(r.to_string())),
    };
    sqlx::query(
        "UPDATE enrollments SET status = ?, step_id = ?, last_step_id = coalesce(?, last_step_id),
                next_run_at = ?, end_reason = ?,
                ended_at = CASE WHEN ? = 'active' THEN NULL ELSE ? END,
                lease_owner = NULL, lease_until = NULL
          WHERE id = ?",
    )
    .bind(status)
    .bind(step_id)
    .bind(last_step)
    .bind(next_run_at)
    .bind(reason)
    .bind(status)
    .bind(ms(now))
    .bind(enrollment_id)
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
    tx: &mut sqlx::SqliteConnection,
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
            ..
        } => {
            let id = message_id(&d.workflow.name, &d.contact_id, enrollment_id, &s.step);
            let msg = Queued {
                id: &id,
                channel,
                to,
                subject: subject.as_deref(),
                body,
                payload: serde_json::json!({}),
                at: *at,
            };
            queue(tx, d, enrollment_id, &s.step, msg, now).await
        }
        Action::Assign {
            salesperson,
            previous,
            notify,
        } => {
            // Read before the owner changes below.
            let transfer =
                wecom_transfer(tx, settings, d, salesperson, previous.as_deref()).await?;
            sqlx::query("UPDATE contacts SET owner = ?, updated_at = ? WHERE id = ?")
                .bind(salesperson)
                .bind(ms(now))
                .bind(&d.contact_id)
                .execute(&mut *tx)
                .await?;
            // Round robin continues after the chosen salesperson.
            if let Some(crate::workflow::StepAction::Assign(a)) =
                d.workflow.step(&s.step).map(|st| &st.action)
            {
                let team = settings
                    .teams
                    .get(&a.team.value)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                if let Some(i) = team.iter().position(|p| &p.id == salesperson)
                    && a.strategy == crate::workflow::Strategy::RoundRobin
                {
                    sqlx::query(
                        "INSERT INTO team_cursors (team, next_index) VALUES (?, ?)
                             ON CONFLICT (team) DO UPDATE SET next_index = excluded.next_index",
                    )
                    .bind(&a.team.value)
                    .bind(((i + 1) % team.len()) as i64)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            let mut queued = 0;
            if let Some((channel, to, payload)) = transfer {
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
            let Some(person) = settings.salesperson(salesperson) else {
                return Ok(queued);
            };
            let kind = settings.channels.get(channel).map(|c| c.kind);
            let to = match kind.and_then(|k| k.address_field()) {
                Some("email") => person.email.clone(),
                Some("wecom_external_userid") => person.wecom_userid.clone(),
                Some(_) => None,
                None => Some(person.id.clone()),
            };
            let Some(to) = to else { return Ok(queued) };
            let body = format!(
                "New contact assigned to you: {} (workflow {})",
                d.contact_id, d.workflow.name
            );
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
        Action::Tag { add, remove } => {
            for t in add {
                sqlx::query("INSERT INTO contact_tags (contact_id, tag, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                    .bind(&d.contact_id)
                    .bind(t)
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?;
            }
            for t in remove {
                sqlx::query("DELETE FROM contact_tags WHERE contact_id = ? AND tag = ?")
                    .bind(&d.contact_id)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(0)
        }
        Action::Wait { .. } | Action::Exit { .. } | Action::Skip { .. } => Ok(0),
    }
}

/// The WeCom transfer an assignment calls for (reference §1.5): when the
/// contact has a WeCom id, the previous and the new salesperson both have a
/// `wecom_userid` (and differ), and the settings have a `wecom` channel (the
/// first by name). Returns the channel, the contact's external userid and
/// the outbox payload.
async fn wecom_transfer(
    tx: &mut sqlx::SqliteConnection,
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
    let (Some(from), Some(to)) = (previous.and_then(userid), userid(salesperson)) else {
        return Ok(None);
    };
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

#[allow(clippy::too_many_arguments)]
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
    tx: &mut sqlx::SqliteConnection,
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

fn detail(s: &PlannedStep) -> Option<String> {
    match &s.action {
        Action::Send { channel, to, .. } => Some(format!("{channel} → {to}")),
        Action::Assign { salesperson, .. } => Some(salesperson.clone()),
        Action::Tag { add, remove } => Some(format!("+{} -{}", add.join(","), remove.join(","))),
        Action::Wait { until } => Some(until.to_rfc3339()),
        Action::Exit { reason } | Action::Skip { reason } => Some(reason.to_string()),
    }
}
