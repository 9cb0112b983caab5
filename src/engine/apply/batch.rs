//! Runs of new enrollments that only queue messages, written with a few
//! multi-row statements per run ([`super::apply_batch`]).

use super::*;

/// A plan [`apply_new_run`] can write: a new enrollment (or a passed
/// trigger) whose steps change nothing but the outbox.
pub(super) fn batchable(d: &Decided<'_>) -> bool {
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
pub(super) async fn apply_new_run(
    tx: &mut Tx,
    run: &[Decided<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<Applied>> {
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
    let ids = tx
        .start_settled_many(&rows)
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
    tx.record_steps_many(&steps)
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
    tx.queue_messages(&rows)
        .await
        .context("queueing the messages")?;
    Ok(out)
}
