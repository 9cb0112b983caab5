//! Audience scans on the copy, streamed in the daemon's batches, with the
//! entry policy over the simulation's own enrollments.

use super::*;

/// Above this many contacts whose date is near (a store where most share
/// one date, such as a default written on import), a date check scans
/// rather than looking each up.
const MAX_DATE_KEYS: usize = 200_000;

impl<'a> Simulation<'a> {
    /// A scan of `wf`'s audience, planned and taken in the daemon's batches,
    /// as it streams: nothing the size of the audience is held. With the
    /// blast guard on, the daemon judges a scan by its size before the first
    /// batch (it collects the scan first); here the scan is counted first
    /// and then read again (the store does not change under a dry-run).
    pub(super) async fn scan<F>(
        &mut self,
        enabled: &[&'a Workflow],
        wf: &'a Workflow,
        scan: Scan,
        planner: &mut Planner<'a>,
        on_plan: &mut F,
    ) -> Result<usize>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        let (filter, key_of, cause) = sources::scan_filter(
            wf,
            planner.now,
            planner.settings.timezone,
            self.store.dialect(),
            scan,
        )?;
        // The simulation's enrollments as the scan began (see `may_enter`);
        // none of this workflow: no look-up per contact.
        let below = self.next_id;
        // A date check looks among the contacts whose date is near, and
        // leaves out those whose occurrence this run took already, as the
        // daemon's scan leaves out those with a stored enrollment: the day
        // after a calendar day a whole audience stays due for a day, and
        // each check would read it all again only to find it taken.
        let filter = match scan {
            Scan::Trigger => {
                let filter = match self.date_keys(wf, planner.now).await? {
                    Some(keys) if keys.is_empty() => return Ok(0),
                    Some(keys) => crate::store::scans::among(&filter, &keys),
                    None => filter,
                };
                let since = planner.now - chrono::TimeDelta::days(2);
                self.entries.forget_dated_until(since);
                let taken = self.entries.dated_since(&wf.name, since, below);
                let filter = if taken.is_empty() {
                    filter
                } else {
                    crate::store::scans::excluding(&filter, &taken)
                };
                match wf.trigger {
                    // In the daemon's order (see `in_scan_order`).
                    crate::workflow::Trigger::Date(_) => crate::store::scans::in_scan_order(filter),
                    _ => filter,
                }
            }
            Scan::Existing => filter,
        };
        let store: &'a Store = self.store;
        let check = self.entries.has_workflow(&wf.name);
        let tz = planner.settings.timezone;
        let takes = |c: &Contact, at| sources::takes(wf, &cause, c, at, tz);
        let guarded = planner.settings.policies.blast_guard.is_some();
        let mut remaining: i64 = 0;
        if guarded {
            let mut stream = store.scan_contacts_threaded(&filter.text, &filter.binds);
            while let Some(c) = stream.next().await {
                let c = c?;
                if takes(&c, planner.now)
                    && (!check || self.may_enter(wf, &key_of, &c, planner.now, below))
                {
                    remaining += 1;
                }
            }
        }
        let mut stream = store.scan_contacts_threaded(&filter.text, &filter.binds);
        let mut plans = 0;
        let mut chunk: Vec<Contact> = Vec::with_capacity(BATCH);
        // One contact read ahead: a full batch is planned only once it is
        // known whether another follows (the daemon moves the event log
        // between batches, not after the last).
        let mut ahead: Option<Contact> = None;
        loop {
            let next = match ahead.take() {
                Some(c) => Some(c),
                None => loop {
                    match stream.next().await {
                        None => break None,
                        Some(c) => {
                            let c = c?;
                            if takes(&c, planner.now)
                                && (!check || self.may_enter(wf, &key_of, &c, planner.now, below))
                            {
                                break Some(c);
                            }
                        }
                    }
                },
            };
            let last = next.is_none();
            if chunk.len() < BATCH && !last {
                chunk.extend(next);
                continue;
            }
            if chunk.is_empty() {
                return Ok(plans);
            }
            ahead = next;
            remaining -= chunk.len() as i64;
            let mut batch =
                sources::plan_scan_chunk(self.store, wf, &mut chunk, &key_of, &cause, planner)
                    .await?;
            if guarded {
                let (recent, _) = self.guard_counts(&batch, planner, None).await?;
                let upcoming = HashMap::from([(wf.name.clone(), remaining)]);
                self.pause(
                    sources::guard_batch(&mut batch, planner, &recent, &upcoming),
                    planner,
                );
            }
            plans += self.take(batch, planner, on_plan)?;
            if last {
                return Ok(plans);
            }
            // As the daemon: the event log moves between batches.
            plans += self.log_step(enabled, planner, on_plan).await?;
        }
    }

    /// For a date trigger on an attribute, the contacts whose date is near
    /// at `at`: read once for each day's texts, as the store does not change
    /// under a dry-run (a full scan at each of a week's 672 checks was most
    /// of a week's preview over a million contacts). `None`: scan them all
    /// (not a date trigger, or too many contacts near for a list to help).
    async fn date_keys(&mut self, wf: &Workflow, at: DateTime<Utc>) -> Result<Option<ContactKeys>> {
        let Some((texts, sql)) =
            crate::store::scans::date_candidates(wf, at, self.store.dialect())?
        else {
            return Ok(None);
        };
        if let Some((known, keys)) = self.date_keys.get(&wf.name)
            && *known == texts
        {
            return Ok(keys.clone());
        }
        let keys = Some(self.store.contact_keys(&sql).await?).filter(|k| k.len() <= MAX_DATE_KEYS);
        self.date_keys
            .insert(wf.name.clone(), (texts, keys.clone()));
        Ok(keys)
    }

    /// The entry policy over the simulation's own enrollments (the scan's
    /// SQL checked the store's).
    /// `below`: only the simulation's enrollments with a smaller id count
    /// (those made before the scan began: the daemon collects a scan first,
    /// so enrollments made between its batches do not change what it plans).
    pub(super) fn may_enter(
        &self,
        wf: &Workflow,
        key_of: &sources::KeyOf,
        c: &Contact,
        at: DateTime<Utc>,
        below: i64,
    ) -> bool {
        match self.entries.rows(&c.id, below) {
            None => true,
            Some(mine) => sources::may_enter_given(wf, &mine, &key_of.key(wf, c), at),
        }
    }

    /// Whether `wf` could be entered again later in this run, so its new
    /// enrollments must be kept for the entry policy: an event-triggered
    /// workflow always (the log, `--all-contacts`); a ticked one if its
    /// `entry_existing` scan is still to come or it ticks again before the
    /// run ends (always when the end is not known).
    pub(super) fn may_reenter(&mut self, wf: &Workflow, planner: &Planner<'_>) -> bool {
        if !wf.trigger.is_ticked() {
            return true;
        }
        let existing_pending = wf.entry_existing
            && !self.existing_done.contains(&wf.name)
            && planner
                .gates
                .states
                .get(&wf.name)
                .is_none_or(|s| s.existing_done_at.is_none());
        let Some(horizon) = self.horizon else {
            return true;
        };
        if existing_pending {
            return true;
        }
        let now = planner.now;
        let next = match self.next_ticks.get(&wf.name) {
            Some((at, next)) if *at == now => *next,
            _ => {
                let next = next_tick(self.project, wf, now);
                self.next_ticks.insert(wf.name.clone(), (now, next));
                next
            }
        };
        next.is_some_and(|t| t <= horizon)
    }
}
