//! What each planned step writes besides its step record: messages queued
//! in the outbox, tags, attributes, WeCom tag marks.

use super::*;

/// What a step changes in the store; returns how many messages it queued.
pub(super) async fn effects(
    tx: &mut Tx,
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
                tx.set_step_detail(enrollment_id, &s.step, &why).await?;
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
            tx.patch_attrs(&d.contact_id, &patch, ms(now))
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
                tx.add_tag(&d.contact_id, t, ms(now)).await?;
            }
            for t in remove {
                tx.remove_tag(&d.contact_id, t).await?;
            }
            // A contact mirrored from WeCom: the corp tag follows, through
            // the daemon's tag-mark worker (queued here, in the same
            // transaction, so a crash loses neither).
            if !wecom.is_empty() {
                tx.queue_wecom_marks(wecom, &d.contact_id, add, remove, ms(now))
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

/// The outbox row a `send` or `webhook` step queues (the one place that
/// builds it, for the per-plan and the batched apply alike).
pub(super) struct Message {
    pub(super) id: String,
    pub(super) channel: String,
    pub(super) to: String,
    pub(super) subject: Option<String>,
    pub(super) body: String,
    pub(super) payload: serde_json::Value,
    pub(super) at: DateTime<Utc>,
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
pub(super) fn message_of(
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
pub(super) struct Queued<'a> {
    /// The idempotency key.
    pub(super) id: &'a str,
    pub(super) channel: &'a str,
    pub(super) to: &'a str,
    pub(super) subject: Option<&'a str>,
    pub(super) body: &'a str,
    /// What the channel needs beyond the text (the outbox `payload` column).
    pub(super) payload: serde_json::Value,
    /// Not before (quiet hours).
    pub(super) at: DateTime<Utc>,
}

pub(super) async fn queue(
    tx: &mut Tx,
    d: &Decided<'_>,
    enrollment_id: i64,
    step: &str,
    m: Queued<'_>,
    now: DateTime<Utc>,
) -> Result<usize> {
    let n = tx
        .queue_message(crate::store::outbox::NewMessage {
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
        })
        .await?;
    Ok(n as usize)
}

pub(super) fn detail(s: &PlannedStep) -> Option<String> {
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
