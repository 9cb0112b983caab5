//! The copy of the plan state: what the daemon would write for a batch of
//! plans, what is due, and the next moment something is.

use super::*;

impl<'a> Simulation<'a> {
    /// What the daemon would write for these plans, kept in memory.
    pub(super) fn take<F>(
        &mut self,
        batch: Vec<Decided<'a>>,
        planner: &Planner<'_>,
        on_plan: &mut F,
    ) -> Result<usize>
    where
        F: FnMut(&Decided<'a>, DateTime<Utc>) -> Result<()>,
    {
        let now = planner.now;
        let mut plans = 0;
        for d in batch {
            on_plan(&d, now)?;
            let id = match &d.start {
                Start::Passed { .. } => continue,
                Start::New { entry_key, .. } => {
                    let id = self.next_id;
                    self.next_id += 1;
                    if self.may_reenter(d.workflow, planner) {
                        self.entries
                            .insert(id, &d.workflow.name, &d.contact_id, entry_key, now);
                    }
                    self.started.add(&d.workflow.name, now);
                    id
                }
                Start::Existing { enrollment_id } => {
                    self.taken.insert(*enrollment_id);
                    *enrollment_id
                }
            };
            plans += 1;
            let (started_at, trigger) = match self.active.remove(&id) {
                Some(e) => (e.started_at, e.trigger),
                // A new enrollment starts now, with its trigger.
                None if d.is_new() => (now, d.trigger.clone()),
                None => (now, None),
            };
            if let Outcome::Waiting {
                next_step,
                until,
                wait_since,
            } = &d.plan.outcome
            {
                self.active.insert(
                    id,
                    EnrollmentRow {
                        id,
                        workflow: d.workflow.name.clone(),
                        contact_id: d.contact_id.clone(),
                        entry_key: String::new(),
                        status: EnrollmentStatus::Active,
                        step_id: next_step.clone(),
                        next_run_at: Some(*until),
                        started_at,
                        trigger,
                        wait_since: *wait_since,
                    },
                );
            }
            for s in &d.plan.steps {
                if let Action::Tag { add, .. } = &s.action {
                    for tag in add {
                        self.own_log.push_back(LogEntry {
                            seq: self.next_seq,
                            kind: "tag_added".into(),
                            contact_id: d.contact_id.clone(),
                            name: Some(tag.clone()),
                            at: now,
                            origin: None,
                            properties: Default::default(),
                        });
                        self.next_seq += 1;
                    }
                }
            }
        }
        Ok(plans)
    }

    /// Due enrollments: the store's not yet taken over, and the simulation's.
    pub(super) async fn due(&self, at: DateTime<Utc>) -> Result<Vec<EnrollmentRow>> {
        let limit = (BATCH + self.taken.len()) as i64;
        let mut rows: Vec<EnrollmentRow> = self
            .store
            .due_enrollments(at, limit)
            .await?
            .into_iter()
            .filter(|e| !self.taken.contains(&e.id))
            .collect();
        rows.extend(
            self.active
                .values()
                .filter(|e| e.next_run_at.is_some_and(|n| n <= at))
                .cloned(),
        );
        rows.sort_by_key(|e| (e.next_run_at, e.id));
        rows.truncate(BATCH);
        Ok(rows)
    }

    /// The next moment after `t` when something is due: a wait ending (in
    /// the store or the simulation) or a cron tick.
    pub(super) async fn next_moment(&self, t: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let mut next: Option<DateTime<Utc>> = None;
        let mut consider = |c: DateTime<Utc>| {
            if c > t && next.is_none_or(|n| c < n) {
                next = Some(c);
            }
        };
        let stored = crate::store::ticks::next_enrollment_due_after(self.store, ms(t)).await?;
        if let Some(s) = stored {
            consider(plan_reads::from_ms(s));
        }
        for e in self.active.values() {
            if let Some(n) = e.next_run_at {
                consider(n);
            }
        }
        for wf in self.project.workflows.iter().filter(|w| w.enabled) {
            let Some(cron) = wf.trigger.tick_cron() else {
                continue;
            };
            if let Some(n) = cron.next_after(t, self.project.settings.timezone) {
                consider(n);
            }
        }
        Ok(next)
    }
}
