//! The event log on the copy: the store's entries after the cursor, then
//! the simulation's own, planned in the daemon's batches with the blast
//! guard's counts and the waits they wake.

use super::*;

impl<'a> Simulation<'a> {
    /// One batch of the event log, as the daemon's `event_log` takes it.
    /// With no event-triggered workflow it fires nothing (the daemon only
    /// moves its cursor over it): not read.
    pub(super) async fn log_step<F>(
        &mut self,
        enabled: &[&'a Workflow],
        planner: &mut Planner<'a>,
        on_plan: &mut F,
    ) -> Result<usize>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        if !enabled.iter().any(|w| !w.trigger.is_ticked()) && !sources::any_wait_until(enabled) {
            return Ok(0);
        }
        let entries = self.pending_log().await?;
        let Some(last) = entries.last() else {
            return Ok(0);
        };
        let last_store_seq = entries
            .iter()
            .filter(|e| e.seq <= self.cursor_limit())
            .map(|e| e.seq)
            .max();
        let event_triggered: Vec<&'a Workflow> = enabled
            .iter()
            .copied()
            .filter(|w| !w.trigger.is_ticked())
            .collect();
        let mut entered = HashSet::new();
        // The simulation's enrollments of the batch's contacts, as rows.
        let mut mine: HashMap<String, Vec<EnrollmentRow>> = HashMap::new();
        for e in &entries {
            if !mine.contains_key(&e.contact_id)
                && let Some(rows) = self.entries.rows(&e.contact_id, i64::MAX)
            {
                mine.insert(e.contact_id.clone(), rows);
            }
        }
        let mut batch = sources::plan_log_batch(
            self.store,
            &event_triggered,
            &entries,
            planner,
            &mut entered,
            Some(&mine),
            None,
        )
        .await?;
        let (recent, upcoming) = self.guard_counts(&batch, planner, Some(last.seq)).await?;
        self.pause(
            sources::guard_batch(&mut batch, planner, &recent, &upcoming),
            planner,
        );
        if let Some(seq) = last_store_seq {
            self.cursor = self.cursor.max(seq);
        }
        let plans = self.take(batch, planner, on_plan)?.max(1);
        // As the daemon: after the batch's plans, in its transaction.
        let wakes = sources::wakes(enabled, &entries);
        self.wake(&wakes, planner.now).await?;
        Ok(plans)
    }

    /// The daemon's `wake_waiting` on the copy: enrollments waiting at the
    /// woken `wait_until` steps become due at `now` (store rows are taken over).
    pub(super) async fn wake(&mut self, wakes: &[sources::Wake], now: DateTime<Utc>) -> Result<()> {
        if wakes.is_empty() {
            return Ok(());
        }
        let is_woken = |e: &EnrollmentRow| {
            e.status == EnrollmentStatus::Active
                && e.wait_since.is_some()
                && e.next_run_at.is_some_and(|n| n > now)
                && wakes.iter().any(|w| {
                    w.contact_id == e.contact_id
                        && w.workflow == e.workflow
                        && e.step_id.as_deref() == Some(w.step_id.as_str())
                })
        };
        for e in self.active.values_mut() {
            if is_woken(e) {
                e.next_run_at = Some(now);
            }
        }
        let mut ids: Vec<String> = wakes.iter().map(|w| w.contact_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let stored = self.store.enrollments_of_many(&ids).await?;
        for rows in stored.into_values() {
            for mut e in rows {
                if self.taken.contains(&e.id) || !is_woken(&e) {
                    continue;
                }
                self.taken.insert(e.id);
                e.next_run_at = Some(now);
                self.active.insert(e.id, e);
            }
        }
        Ok(())
    }

    /// The highest store sequence number (entries above it are the
    /// simulation's own).
    pub(super) fn cursor_limit(&self) -> i64 {
        self.store_max_seq
    }

    /// The next batch of the event log: the store's entries after the cursor,
    /// then the simulation's own.
    pub(super) async fn pending_log(&mut self) -> Result<Vec<LogEntry>> {
        // Read ahead in large pages (one query per 8,192 entries, not per
        // batch); handed out in the daemon's batches.
        if self.log_ahead.len() < BATCH {
            let after = self.log_ahead.back().map(|e| e.seq).unwrap_or(self.cursor);
            if after < self.cursor_limit() {
                let page = self.store.pending_log(after, 8192).await?;
                self.log_ahead
                    .extend(page.into_iter().filter(|e| e.seq <= self.store_max_seq));
            }
        }
        let take = self.log_ahead.len().min(BATCH);
        let mut entries: Vec<LogEntry> = self.log_ahead.drain(..take).collect();
        while entries.len() < BATCH {
            match self.own_log.pop_front() {
                Some(e) => entries.push(e),
                None => break,
            }
        }
        Ok(entries)
    }

    /// The blast guard's counts, as the daemon takes them from the store,
    /// plus the simulation's own enrollments and log entries.
    pub(super) async fn guard_counts(
        &self,
        batch: &[Decided<'_>],
        planner: &Planner<'_>,
        log_after: Option<i64>,
    ) -> Result<(HashMap<String, i64>, HashMap<String, i64>)> {
        // The store's counts; a log position past the store's own entries
        // counts only the simulation's.
        let limit = self.cursor_limit();
        let store_after = log_after.map(|a| a.min(limit)).filter(|a| *a < limit);
        let (mut recent, mut upcoming) =
            sources::guard_counts(self.store, batch, planner, store_after).await?;
        let Some(guard) = planner.settings.policies.blast_guard else {
            return Ok((recent, upcoming));
        };
        for (name, n) in recent.iter_mut() {
            let since = planner.gates.window_start(name, &guard, planner.now);
            *n += self.started.since(name, since);
            if log_after.is_none() {
                continue;
            }
            let Some((kind, which)) = batch
                .iter()
                .find(|d| d.workflow.name == *name)
                .and_then(|d| d.workflow.trigger.log_match())
            else {
                continue;
            };
            let mine = self
                .own_log
                .iter()
                .filter(|e| e.kind == kind && (which.is_none() || e.name.as_deref() == which))
                .count() as i64;
            *upcoming.entry(name.clone()).or_insert(0) += mine;
        }
        Ok((recent, upcoming))
    }

    pub(super) fn pause(&mut self, paused: Vec<(String, String)>, planner: &Planner<'_>) {
        for (name, reason) in paused {
            self.report.paused.push((name, planner.now, reason));
        }
    }
}
