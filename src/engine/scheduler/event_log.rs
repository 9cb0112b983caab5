//! The event log's part of a pass: a batch of new entries planned and
//! applied with the cursor that moves over them, by one daemon at a time.

use super::*;

impl Scheduler {
    /// New entries of the event log, for event-triggered workflows.
    ///
    /// `early`: the batch may be planned before this daemon takes its write
    /// turn (SQLite, between whole passes). Planning then runs while the
    /// delivery worker writes its claims and outcomes, instead of holding the
    /// store's one writer; the cursor is read again under the lock, and a
    /// batch another daemon took meanwhile is dropped (`LogBatch::Raced`).
    /// Mid-scan (the planner carries the scan's state) the batch is planned
    /// under the lock, as on PostgreSQL, where the cursor's lock is what
    /// elects the one daemon that plans it.
    pub(super) async fn event_log(
        &self,
        enabled: &[&Workflow],
        planner: &mut Planner<'_>,
        pass: &mut Pass,
        early: bool,
    ) -> Result<LogBatch> {
        let dialect = self.store.dialect();
        // Nothing new (the usual idle pass): no transaction, no lock.
        let seen = self.store.cursor(DAEMON_CURSOR).await?;
        if early && dialect == Dialect::Sqlite {
            let entries = self.store.pending_log(seen, BATCH as i64).await?;
            if entries.is_empty() {
                return Ok(LogBatch::Empty);
            }
            let planned = self.plan_log(enabled, planner, &entries).await?;
            let _turn = self.store.write_turn().await;
            let mut tx = self
                .store
                .transaction()
                .await
                .context("beginning a transaction")?;
            if tx.cursor(DAEMON_CURSOR).await? != seen {
                // Another process moved the cursor while this batch was
                // planned: its plans (and the planner's counters) are stale.
                return Ok(LogBatch::Raced);
            }
            self.commit_log(tx, planner, planned, pass).await?;
            return Ok(LogBatch::Applied);
        }
        if self.store.pending_log(seen, 1).await?.is_empty() {
            return Ok(LogBatch::Empty);
        }
        // The transaction that applies the batch is opened first: on
        // PostgreSQL it takes the cursor's lock before reading the cursor, so
        // one daemon plans each batch (the others find the lock taken and move
        // on), and the cursor moves with the batch's plans.
        let _turn = self.store.write_turn().await;
        let mut tx = self
            .store
            .transaction()
            .await
            .context("beginning a transaction")?;
        if !tx.try_lock_cursor().await? {
            return Ok(LogBatch::Empty);
        }
        let after = tx.cursor(DAEMON_CURSOR).await?;
        let entries = tx.pending_log(after, BATCH as i64).await?;
        if entries.is_empty() {
            return Ok(LogBatch::Empty);
        }
        let planned = self.plan_log(enabled, planner, &entries).await?;
        self.commit_log(tx, planner, planned, pass).await?;
        Ok(LogBatch::Applied)
    }

    /// Plans a batch of event-log entries (not empty): the plans, the blast
    /// guard's verdict, the waits the entries wake and the cursor's new place.
    pub(super) async fn plan_log<'w>(
        &self,
        enabled: &[&'w Workflow],
        planner: &mut Planner<'_>,
        entries: &[plan_reads::LogEntry],
    ) -> Result<PlannedLog<'w>> {
        let last = entries.last().map_or(0, |e| e.seq);
        for entry in entries {
            metrics::global().event(&entry.kind);
        }
        let event_triggered: Vec<&Workflow> = enabled
            .iter()
            .copied()
            .filter(|w| !w.trigger.is_ticked())
            .collect();
        let mut entered: HashSet<(String, String)> = HashSet::new();
        let mut batch = sources::plan_log_batch(
            &self.store,
            &event_triggered,
            entries,
            planner,
            &mut entered,
            None,
            // The pass fixed its clock when it began, and reads the log
            // after its due steps: each entry is planned no earlier than it
            // was written (a contact created in between waits from its
            // creation), nor later than now.
            Some(Utc::now()),
        )
        .await?;
        let (recent, upcoming) =
            sources::guard_counts(&self.store, &batch, planner, Some(last)).await?;
        let paused = sources::guard_batch(&mut batch, planner, &recent, &upcoming);
        // Enrollments waiting for these entries (wait_until) become due,
        // with the batch's own new enrollments.
        let wakes = sources::wakes(enabled, entries);
        Ok(PlannedLog {
            batch,
            paused,
            wakes,
            last,
        })
    }

    /// Applies a planned log batch in `tx`: the plans and the cursor move together.
    pub(super) async fn commit_log(
        &self,
        tx: Tx,
        planner: &mut Planner<'_>,
        planned: PlannedLog<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let PlannedLog {
            batch,
            paused,
            wakes,
            last,
        } = planned;
        self.commit_in(tx, planner, batch, Some(last), &paused, &wakes, pass)
            .await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }
}

/// What became of a pass's event-log batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogBatch {
    /// Nothing new (or another daemon holds the log).
    Empty,
    Applied,
    /// Planned, then found taken by another daemon: dropped.
    Raced,
}

/// A planned event-log batch waiting for its transaction.
pub(super) struct PlannedLog<'w> {
    batch: Vec<Decided<'w>>,
    paused: Vec<(String, String)>,
    wakes: Vec<sources::Wake>,
    /// The last entry's sequence number: where the cursor moves.
    last: i64,
}
