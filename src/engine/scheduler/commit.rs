//! Applying a batch of plans in one transaction, with what moves with it
//! (the cursor, the blast guard's pauses, woken waits), then telling the
//! workers and the metrics.

use super::*;

impl Scheduler {
    /// Apply a batch of plans in one transaction.
    pub(super) async fn commit(
        &self,
        planner: &mut Planner<'_>,
        batch: Vec<Decided<'_>>,
        cursor: Option<i64>,
        pass: &mut Pass,
    ) -> Result<()> {
        if batch.is_empty() && cursor.is_none() {
            return Ok(());
        }
        let _turn = self.store.write_turn().await;
        let tx = self
            .store
            .transaction()
            .await
            .context("beginning a transaction")?;
        self.commit_in(tx, planner, batch, cursor, &[], &[], pass)
            .await
    }

    /// Apply a batch of plans (record the workflows the blast guard paused,
    /// and move the cursor) in `tx`, and commit it.
    // The batch, and what moves with it in its transaction (cursor, pauses, wakes).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit_in(
        &self,
        mut tx: Tx,
        planner: &mut Planner<'_>,
        batch: Vec<Decided<'_>>,
        cursor: Option<i64>,
        paused: &[(String, String)],
        wakes: &[sources::Wake],
        pass: &mut Pass,
    ) -> Result<()> {
        if let Some(h) = &self.handoff {
            tx.hand_off_to(h.clone());
        }
        if touches_shared_counters(&batch) {
            lock_event_log(&mut tx).await?;
        }
        for (name, reason) in paused {
            tx.pause_workflow(name, planner.now, reason).await?;
        }
        let mut stored = Vec::new();
        let applied = apply_batch(&mut tx, planner.settings, &batch, planner.now).await?;
        for (d, applied) in batch.iter().zip(applied) {
            match applied {
                Applied::Stored { messages, .. } => {
                    pass.plans += 1;
                    pass.messages += messages;
                    stored.push(d);
                }
                Applied::Passed => {
                    *pass.passed_over.entry(d.workflow.name.clone()).or_insert(0) += 1
                }
                Applied::Stale => {}
            }
        }
        crate::engine::apply::wake_waiting(&mut tx, wakes, planner.now).await?;
        if let Some(seq) = cursor {
            tx.advance_cursor(DAEMON_CURSOR, seq).await?;
        }
        tx.commit().await.context("committing plans")?;
        self.store.grew_by(
            stored
                .iter()
                .filter(|d| matches!(d.start, Start::New { .. }))
                .count() as u64,
        );
        planner.forget_planned();
        // Tag steps may have queued WeCom tag marks: wake their worker.
        if stored.iter().any(|d| {
            d.plan
                .steps
                .iter()
                .any(|s| matches!(s.action, crate::engine::plan::Action::Tag { .. }))
        }) {
            self.marks_queued.notify();
        }
        for (name, reason) in paused {
            tracing::warn!(workflow = %name, %reason, "workflow paused by the blast guard; its enrollments wait for `nurture resume`");
        }
        let mut held: std::collections::BTreeMap<&str, usize> = Default::default();
        for d in stored {
            let outcome = match (&d.start, &d.plan.outcome) {
                (_, Outcome::Held { .. }) => "held",
                (_, Outcome::Exited(_)) => "exited",
                (_, Outcome::Done) => "done",
                (Start::New { .. }, _) => "started",
                _ => "continued",
            };
            metrics::global().enrollment(&d.workflow.name, outcome);
            for s in &d.plan.steps {
                tracing::debug!(workflow = %s.workflow, contact = %s.contact_id, step = %s.step, action = s.action.name(), "applied");
                if let Action::Skip {
                    reason: reason @ crate::engine::plan::Reason::BlastGuard,
                } = &s.action
                {
                    metrics::counted_skip(&s.workflow, reason.code());
                    *held.entry(s.workflow.as_str()).or_default() += 1;
                } else if let Action::Skip { reason } = &s.action {
                    metrics::skipped(
                        &s.workflow,
                        &s.contact_id,
                        &s.step,
                        reason.code(),
                        &reason.for_the_log(),
                    );
                }
            }
        }
        // One line per workflow, not one per contact held: a mistaken
        // broadcast is what the guard catches, and it is thousands of them.
        for (workflow, n) in held {
            tracing::info!(
                workflow,
                held = n,
                "enrollments held by the blast guard until `nurture resume`"
            );
        }
        Ok(())
    }
}
