//! Audience scans: cron ticks of `inactive`, `schedule` and date workflows
//! (once per tick across daemons) and `entry_existing`, applied a batch at a
//! time beside the event log.

use super::*;

impl Scheduler {
    /// A cron-ticked workflow: run its latest tick if not taken yet.
    pub(super) async fn tick(
        &self,
        project: &Project,
        enabled: &[&Workflow],
        wf: &Workflow,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let now = planner.now;
        let Some(cron) = wf.trigger.tick_cron() else {
            return Ok(());
        };
        let Some(tick) = cron.latest_at_or_before(now, project.settings.timezone) else {
            return Ok(());
        };
        // On PostgreSQL a tick runs under a session advisory lock per
        // workflow: one daemon runs it, the others see the lock taken (and,
        // after it is released, the tick recorded). A daemon that dies
        // mid-tick loses its session and the lock with it; the next daemon
        // runs the tick again, and the entry keys make that harmless.
        if self.store.dialect() == Dialect::Postgres {
            // Taken already (the usual pass): no lock needed to know it.
            let last = ticks::last_tick(&self.store, &wf.name).await?;
            if last.is_some_and(|t| t >= ms(tick)) {
                return Ok(());
            }
            let Some(lock) = ticks::try_lock_tick(&self.store, &wf.name).await? else {
                return Ok(());
            };
            let ran = self.run_tick(enabled, wf, tick, planner, pass).await;
            lock.release().await;
            return ran;
        }
        self.run_tick(enabled, wf, tick, planner, pass).await
    }

    /// Runs `tick` of `wf` unless it was taken already.
    pub(super) async fn run_tick(
        &self,
        enabled: &[&Workflow],
        wf: &Workflow,
        tick: DateTime<Utc>,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let now = planner.now;
        let last = ticks::last_tick(&self.store, &wf.name).await?;
        match sources::tick_due(last, tick) {
            sources::TickDue::FirstSight => {
                ticks::take_tick(&self.store, &wf.name, ms(tick), ms(now)).await?;
                return Ok(());
            }
            sources::TickDue::Taken => return Ok(()),
            sources::TickDue::Run => {}
        }
        tracing::info!(workflow = %wf.name, tick = %tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "cron tick");
        if !self.scan(enabled, wf, Scan::Trigger, planner, pass).await? {
            // Shutting down mid-scan: the tick is not recorded, so the next
            // start runs it again (its entry keys make that harmless).
            return Ok(());
        }
        ticks::take_tick(&self.store, &wf.name, ms(tick), ms(now)).await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }

    /// `entry_existing`: enroll the audience as it is, once.
    pub(super) async fn enroll_existing(
        &self,
        enabled: &[&Workflow],
        wf: &Workflow,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        tracing::info!(workflow = %wf.name, "entry_existing: enrolling the contacts already in the audience");
        if !self
            .scan(enabled, wf, Scan::Existing, planner, pass)
            .await?
        {
            return Ok(());
        }
        self.store
            .record_existing_done(&wf.name, planner.now)
            .await?;
        pass.plans = pass.plans.max(1);
        Ok(())
    }

    /// Scans the workflow's audience and applies the plans in batches. The
    /// blast guard sees the whole scan before the first batch: a broadcast
    /// over the limit is held as a whole, not cut off half-way.
    ///
    /// A big scan does not hold the rest up: after each batch, one batch of
    /// the event log is planned (new contacts and events keep flowing while
    /// a million-contact broadcast is planned), and a shutdown stops the scan
    /// between batches (returns `false`: not finished).
    pub(super) async fn scan(
        &self,
        enabled: &[&Workflow],
        wf: &Workflow,
        scan: Scan,
        planner: &mut Planner<'_>,
        pass: &mut Pass,
    ) -> Result<bool> {
        let (filter, key_of, cause) = sources::scan_filter(
            wf,
            planner.now,
            planner.settings.timezone,
            self.store.dialect(),
            scan,
        )?;
        let filter = match (&wf.trigger, scan) {
            (crate::workflow::Trigger::Date(_), Scan::Trigger) => {
                crate::store::scans::in_scan_order(filter)
            }
            _ => filter,
        };
        // The blast guard judges the whole scan before its first batch: with
        // a guard, the audience is counted first (as the dry-run counts it).
        // The scan itself is streamed beside the writes below (a read of its
        // own, one snapshot), so memory stays flat however many match.
        let (now, tz) = (planner.now, planner.settings.timezone);
        let takes = |c: &Result<Contact, _>| {
            std::future::ready(
                c.as_ref()
                    .map_or(true, |c| sources::takes(wf, &cause, c, now, tz)),
            )
        };
        let mut remaining: i64 = 0;
        if planner.settings.policies.blast_guard.is_some() {
            let mut count = self
                .store
                .scan_contacts_beside_writes(&filter.text, &filter.binds)
                .filter(takes);
            while let Some(c) = count.next().await {
                c?;
                remaining += 1;
            }
        }
        let mut contacts = self
            .store
            .scan_contacts_beside_writes(&filter.text, &filter.binds)
            .filter(takes)
            .peekable();
        let mut chunk: Vec<Contact> = Vec::with_capacity(BATCH);
        while std::pin::Pin::new(&mut contacts).peek().await.is_some() {
            while chunk.len() < BATCH {
                match contacts.next().await {
                    Some(c) => chunk.push(c?),
                    None => break,
                }
            }
            remaining -= chunk.len() as i64;
            let mut batch =
                sources::plan_scan_chunk(&self.store, wf, &mut chunk, &key_of, &cause, planner)
                    .await?;
            let (recent, _) = sources::guard_counts(&self.store, &batch, planner, None).await?;
            let upcoming = HashMap::from([(wf.name.clone(), remaining.max(0))]);
            let paused = sources::guard_batch(&mut batch, planner, &recent, &upcoming);
            // In turn with the API's writes (SQLite has one writer): a
            // contact posted during a long scan is written between batches.
            let turn = self.store.write_turn().await;
            let tx = self
                .store
                .transaction()
                .await
                .context("beginning a transaction")?;
            self.commit_in(tx, planner, batch, None, &paused, &[], pass)
                .await?;
            drop(turn);
            if std::pin::Pin::new(&mut contacts).peek().await.is_some() {
                if self.shutdown.is_cancelled() {
                    return Ok(false);
                }
                self.event_log(enabled, planner, pass, false).await?;
            }
        }
        Ok(true)
    }
}
