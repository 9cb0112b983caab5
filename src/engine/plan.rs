//! The one decision path. Given a workflow, a contact's stored state and the
//! clock, decide what happens, step by step, until the enrollment waits,
//! finishes or leaves. The daemon applies these plans; `dry-run` prints them.
//! Nothing here reads the real clock or writes anywhere.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::assign::AssignState;
use crate::audience::eval::{holds, holds_since};
use crate::contact::{Contact, TriggerEvent};
use crate::policy;
use crate::settings::Settings;
use crate::template::Templates;
use crate::workflow::{Step, StepAction, Workflow};

mod assign;
use assign::Assigned;
mod row;
mod send;
mod set;
mod types;

pub use row::*;
pub use types::*;

/// The planner: settings, templates, the clock, and the counters that must
/// advance across contacts (assignment, planned messages per contact).
pub struct Planner<'a> {
    pub settings: &'a Settings,
    pub templates: &'a Templates,
    pub now: DateTime<Utc>,
    pub assign: AssignState,
    /// Activation and pause of each workflow.
    pub gates: crate::engine::gates::Gates,
    /// When each workflow was planned to send, per contact (plan times), for
    /// the frequency cap: messages not yet in the store.
    planned_sends: HashMap<String, Vec<DateTime<Utc>>>,
    /// Contacts as plans of this run left them.
    changes: HashMap<String, ContactChange>,
    /// Per throttled workflow, when its last message is due to go out (the
    /// store's latest for the workflow's sends, then this run's): the next
    /// one goes an interval later. Never forgotten: the store agrees.
    pub throttle_last: HashMap<String, DateTime<Utc>>,
    /// `on_cap: defer`: per contact, the oldest message the store counts in
    /// the frequency cap's window (see `engine::caps::load_oldest`).
    pub cap_oldest: HashMap<String, DateTime<Utc>>,
    /// `per_salesperson` on assign steps: (workflow, step) → who was given a
    /// contact when, the store's then this run's. Never forgotten: the store agrees.
    pub assigned: crate::engine::caps::PerSalesperson,
    /// `per_salesperson` on send steps: (workflow, step) → the owner and
    /// when each message goes out.
    pub owner_sends: crate::engine::caps::PerSalesperson,
    /// WeCom customers (external userid) → what the store says about their
    /// transfers (see `engine::transfer::load`).
    pub wecom_facts: HashMap<String, crate::engine::transfer::Facts>,
    /// Transfers planned in this run, per customer: when each goes out.
    /// Like planned messages, forgotten once a batch is applied (the store
    /// has them then, as queued outbox rows).
    planned_transfers: HashMap<String, Vec<i64>>,
}

impl<'a> Planner<'a> {
    pub fn new(
        settings: &'a Settings,
        templates: &'a Templates,
        now: DateTime<Utc>,
        assign: AssignState,
    ) -> Self {
        Planner {
            settings,
            templates,
            now,
            assign,
            gates: Default::default(),
            planned_sends: HashMap::new(),
            changes: HashMap::new(),
            throttle_last: HashMap::new(),
            cap_oldest: HashMap::new(),
            assigned: HashMap::new(),
            owner_sends: HashMap::new(),
            wecom_facts: HashMap::new(),
            planned_transfers: HashMap::new(),
        }
    }

    /// Forget the messages and contact changes planned so far: once a batch
    /// of plans is applied, they are in the store and count from there.
    pub fn forget_planned(&mut self) {
        self.planned_sends.clear();
        self.changes.clear();
        self.planned_transfers.clear();
    }

    /// Tags changed in the store from outside the plans (a `nurture test`
    /// case's timed tag): the contact as plans of this run left it changes
    /// too, or their remembered tag set would hide the new tag.
    pub fn tags_changed_outside(&mut self, contact_id: &str, add: &[String], remove: &[String]) {
        if let Some(tags) = self
            .changes
            .get_mut(contact_id)
            .and_then(|ch| ch.tags.as_mut())
        {
            tags.extend(add.iter().cloned());
            for r in remove {
                tags.remove(r);
            }
        }
    }

    /// The contact as the plans of this run left it.
    pub fn current<'c>(&self, contact: &'c Contact) -> std::borrow::Cow<'c, Contact> {
        match self.changes.get(&contact.id) {
            None => std::borrow::Cow::Borrowed(contact),
            Some(ch) => {
                let mut c = contact.clone();
                if let Some(o) = &ch.owner {
                    c.owner = o.clone();
                }
                if let Some(t) = &ch.tags {
                    c.tags = t.clone();
                }
                if let Some(a) = &ch.attrs {
                    c.attrs = a.clone();
                }
                std::borrow::Cow::Owned(c)
            }
        }
    }

    /// Plan a contact's way through `wf` from `start`, until a wait, the end,
    /// or an exit. `recent_messages` is how many messages the store holds for
    /// the contact inside the frequency cap's window. The contact is seen as
    /// earlier plans of this run left it, and what this plan changes in it is
    /// remembered for the plans after it. `trigger` is the event that
    /// started the enrollment (templates read it as `event`).
    pub fn plan(
        &mut self,
        wf: &Workflow,
        contact: &Contact,
        start: StartAt<'_>,
        recent_messages: u32,
        trigger: Option<&TriggerEvent>,
    ) -> EnrollmentPlan {
        let mut c = self.current(contact);
        let plan = self.plan_steps(wf, &mut c, start, recent_messages, trigger);
        if let std::borrow::Cow::Owned(c) = c {
            self.changes.insert(
                c.id.clone(),
                ContactChange {
                    owner: Some(c.owner),
                    tags: Some(c.tags),
                    attrs: Some(c.attrs),
                },
            );
        }
        plan
    }

    fn plan_steps(
        &mut self,
        wf: &Workflow,
        c: &mut std::borrow::Cow<'_, Contact>,
        start: StartAt<'_>,
        recent_messages: u32,
        trigger: Option<&TriggerEvent>,
    ) -> EnrollmentPlan {
        let contact_id = c.id.clone();
        let mut steps = Vec::new();
        let mut ran = Vec::new();
        let row = |step: &Step, action: Action| PlannedStep {
            workflow: wf.name.clone(),
            contact_id: contact_id.clone(),
            step: step.id.clone(),
            action,
        };
        let since = start.since();
        // Only the step the plan starts from can be a wait it resumes.
        let first_plan = matches!(start, StartAt::First { .. });
        // The control group is recorded once, when the contact enters.
        if first_plan && wf.held_out(&contact_id) {
            steps.push(PlannedStep {
                workflow: wf.name.clone(),
                contact_id: contact_id.clone(),
                step: HOLDOUT_STEP.into(),
                action: Action::Split {
                    arm: "holdout".into(),
                },
            });
        }
        let mut resuming = match start {
            StartAt::Step { waiting_since, .. } => waiting_since,
            StartAt::First { .. } => None,
        };

        let mut current: Option<&Step> = match start {
            StartAt::First { .. } => wf.steps.first(),
            StartAt::Step { id, .. } => match wf.step(id) {
                Some(s) => Some(s),
                None => {
                    return EnrollmentPlan {
                        steps,
                        outcome: Outcome::Exited(Reason::StepRemoved(id.to_string())),
                        ran,
                    };
                }
            },
        };

        while let Some(step) = current {
            // Before every step: the goal, then the audience.
            let leave = if wf
                .exit_when
                .as_ref()
                .is_some_and(|g| holds_since(g, c, self.now, since))
                || (wf.exit_on_goal
                    && wf
                        .goal
                        .as_ref()
                        .is_some_and(|g| g.converted_at(c, self.now, since).is_some()))
            {
                Some(Reason::GoalReached)
            } else if wf.audience.as_ref().is_some_and(|a| !holds(a, c, self.now)) {
                Some(Reason::LeftAudience)
            } else {
                None
            };
            if let Some(reason) = leave {
                steps.push(row(
                    step,
                    Action::Exit {
                        reason: reason.clone(),
                    },
                ));
                return EnrollmentPlan {
                    steps,
                    outcome: Outcome::Exited(reason),
                    ran,
                };
            }

            // A window on the step: outside it, wait for its next opening
            // (recorded as STEP@window), then run the step.
            if let Some(win) = &step.window {
                let tz = policy::contact_tz(c, self.settings);
                if !win.contains(self.now, tz) {
                    let until = win.next_open(self.now, tz);
                    steps.push(PlannedStep {
                        workflow: wf.name.clone(),
                        contact_id: contact_id.clone(),
                        step: format!("{}@window", step.id),
                        action: Action::Wait { until },
                    });
                    return EnrollmentPlan {
                        steps,
                        outcome: Outcome::Waiting {
                            next_step: Some(step.id.clone()),
                            until,
                            wait_since: resuming,
                        },
                        ran,
                    };
                }
            }
            let waited_since = resuming.take();
            if let StepAction::WaitUntil(w) = &step.action {
                let arrived = waited_since.is_none();
                // A wait reached in the plan of the event that started the
                // enrollment begins just after that event: what was logged
                // since (before the daemon got to it) counts, the trigger
                // itself does not. Otherwise it begins now.
                let ws = match (waited_since, first_plan.then_some(trigger).flatten()) {
                    (Some(ws), _) => ws,
                    (None, Some(t)) => t.at + chrono::TimeDelta::milliseconds(1),
                    (None, None) => self.now,
                };
                let deadline = ws + w.timeout.to_chrono();
                // The event that ends the wait: logged after it began and by
                // its deadline (a daemon late to the deadline does not count
                // what came after it). On arrival nothing logged before counts.
                let came = match &w.until {
                    crate::workflow::WaitFor::Event { condition, .. } if !arrived => {
                        c.events.iter().find(|e| {
                            e.at >= ws
                                && e.at <= deadline
                                && crate::workflow::event_passes(
                                    condition,
                                    &e.name,
                                    &e.properties,
                                    self.now,
                                )
                        })
                    }
                    _ => None,
                };
                let met = match &w.until {
                    crate::workflow::WaitFor::Event { .. } => came.is_some(),
                    crate::workflow::WaitFor::Condition(cond) => holds(cond, c, self.now),
                };
                let taken = if met {
                    Some(true)
                } else if self.now >= deadline {
                    Some(false)
                } else {
                    None
                };
                let Some(met) = taken else {
                    // Waiting (on): until the deadline, woken early by the event
                    // path; a condition also looks again every hour.
                    if arrived {
                        ran.push(step.id.clone());
                        steps.push(row(step, Action::Wait { until: deadline }));
                    }
                    let until = match &w.until {
                        crate::workflow::WaitFor::Condition(_) => {
                            deadline.min(self.now + crate::workflow::WaitFor::RECHECK)
                        }
                        crate::workflow::WaitFor::Event { .. } => deadline,
                    };
                    return EnrollmentPlan {
                        steps,
                        outcome: Outcome::Waiting {
                            next_step: Some(step.id.clone()),
                            until,
                            wait_since: Some(ws),
                        },
                        ran,
                    };
                };
                let why = match (&w.until, came) {
                    (crate::workflow::WaitFor::Event { name, .. }, Some(e)) => format!(
                        "event {name} at {}",
                        secs(e.at.with_timezone(&self.settings.timezone))
                    ),
                    (crate::workflow::WaitFor::Condition(_), _) if met => "condition holds".into(),
                    _ => format!("timeout {}", w.timeout),
                };
                ran.push(step.id.clone());
                let branch = if met { "then" } else { "else" };
                steps.push(PlannedStep {
                    workflow: wf.name.clone(),
                    contact_id: contact_id.clone(),
                    step: format!("{}.{branch}", step.id),
                    action: Action::WaitEnded { met, why },
                });
                let taken = if met { &w.then } else { &w.otherwise };
                current = taken.first().or_else(|| wf.next_after(&step.id));
                continue;
            }
            ran.push(step.id.clone());
            let mut next = wf.next_after(&step.id);
            match &step.action {
                StepAction::Send(send) => {
                    let action = self.plan_send(wf, &step.id, c, send, recent_messages, trigger);
                    // `on_cap: defer`: the send waits (not run) until the
                    // oldest message counted leaves the window, then tries again.
                    if matches!(
                        action,
                        Action::Skip {
                            reason: Reason::FrequencyCap
                        }
                    ) && let Some(cap) = self.settings.policies.frequency_cap
                        && cap.on_cap == crate::settings::OnCap::Defer
                    {
                        ran.pop();
                        let until = self.cap_frees(&c.id, cap);
                        return self.wait_at(wf, &contact_id, step, "cap", until, steps, ran);
                    }
                    steps.push(row(step, action));
                }
                StepAction::Assign(_) if wf.held_out(&c.id) => {
                    steps.push(row(
                        step,
                        Action::Skip {
                            reason: Reason::Holdout,
                        },
                    ));
                }
                StepAction::Assign(a) => match self.plan_assign(wf, step, c, a) {
                    Assigned::Decided(action) => steps.push(row(step, action)),
                    // The whole team (or the matching salesperson) is at the
                    // cap: the step waits, not run, and is taken again then.
                    Assigned::WaitsForCap(until) => {
                        ran.pop();
                        return self.wait_at(wf, &contact_id, step, "cap", until, steps, ran);
                    }
                },
                StepAction::Tag(t) => {
                    // Only real changes are reported, as only they produce tag events.
                    let add: Vec<String> = t
                        .add
                        .iter()
                        .filter(|x| !c.tags.contains(*x))
                        .cloned()
                        .collect();
                    let remove: Vec<String> = t
                        .remove
                        .iter()
                        .filter(|x| c.tags.contains(*x))
                        .cloned()
                        .collect();
                    c.to_mut().tags.extend(add.iter().cloned());
                    for r in &remove {
                        c.to_mut().tags.remove(r);
                    }
                    let mirrored = c
                        .wecom_external_userid
                        .as_deref()
                        .is_some_and(|id| !id.is_empty());
                    let wecom = if mirrored && (!add.is_empty() || !remove.is_empty()) {
                        crate::wecom::tag_marks::marking_channels(self.settings)
                    } else {
                        Vec::new()
                    };
                    steps.push(row(step, Action::Tag { add, remove, wecom }));
                }
                StepAction::Wait(d) => {
                    let until = self.now + d.to_chrono();
                    steps.push(row(step, Action::Wait { until }));
                    return EnrollmentPlan {
                        steps,
                        outcome: Outcome::Waiting {
                            next_step: next.map(|s| s.id.clone()),
                            until,
                            wait_since: None,
                        },
                        ran,
                    };
                }
                // Decided above, before the step is recorded.
                StepAction::WaitUntil(_) => {}
                StepAction::Set(st) => {
                    let action = match self.set_values(wf, c, st, trigger) {
                        Ok(values) => {
                            let values: std::collections::BTreeMap<String, serde_json::Value> =
                                values
                                    .into_iter()
                                    .filter(|(k, v)| match c.attrs.get(k) {
                                        Some(old) => old != v,
                                        None => !v.is_null(),
                                    })
                                    .collect();
                            for (k, v) in &values {
                                if v.is_null() {
                                    c.to_mut().attrs.remove(k);
                                } else {
                                    c.to_mut().attrs.insert(k.clone(), v.clone());
                                }
                            }
                            Action::Set { values }
                        }
                        Err(e) => Action::Skip {
                            reason: Reason::TemplateError(e),
                        },
                    };
                    steps.push(row(step, action));
                }
                StepAction::Webhook(wh) => {
                    let st = crate::workflow::SetStep {
                        values: wh.body.clone(),
                    };
                    let action = match self.set_values(wf, c, &st, trigger) {
                        Ok(values) => Action::Webhook {
                            channel: wh.channel.value.clone(),
                            body: serde_json::Value::Object(values.into_iter().collect()),
                            store: wh
                                .store
                                .iter()
                                .map(|(k, p)| (k.value.clone(), p.clone()))
                                .collect(),
                        },
                        Err(e) => Action::Skip {
                            reason: Reason::TemplateError(e),
                        },
                    };
                    steps.push(row(step, action));
                }
                StepAction::Notify(_) if wf.held_out(&c.id) => {
                    steps.push(row(
                        step,
                        Action::Skip {
                            reason: Reason::Holdout,
                        },
                    ));
                }
                StepAction::Notify(n) => {
                    let action = match c.owner.clone() {
                        None => Action::Skip {
                            reason: Reason::NoOwner,
                        },
                        Some(owner) => Action::Notify {
                            body: self.notice(wf, c, &owner, n.template_name()),
                            salesperson: owner,
                            channel: n.channel.value.clone(),
                        },
                    };
                    steps.push(row(step, action));
                }
                StepAction::Split(sp) => {
                    let arm = wf.arm(sp, &step.id, &c.id);
                    steps.push(row(
                        step,
                        Action::Split {
                            arm: arm.name.value.clone(),
                        },
                    ));
                    if let Some(first) = arm.steps.first() {
                        next = Some(first);
                    }
                }
                StepAction::If(branch) => {
                    let taken = if holds(&branch.condition, c, self.now) {
                        &branch.then
                    } else {
                        &branch.otherwise
                    };
                    if let Some(first) = taken.first() {
                        next = Some(first);
                    }
                }
            }
            current = next;
        }
        EnrollmentPlan {
            steps,
            outcome: Outcome::Done,
            ran,
        }
    }

    /// The plan stops before `step`, which waits until `until` (recorded as
    /// STEP@WHY) and is run then.
    #[allow(clippy::too_many_arguments)]
    fn wait_at(
        &self,
        wf: &Workflow,
        contact_id: &str,
        step: &Step,
        why: &str,
        until: DateTime<Utc>,
        mut steps: Vec<PlannedStep>,
        ran: Vec<String>,
    ) -> EnrollmentPlan {
        let until = until.max(self.now);
        steps.push(PlannedStep {
            workflow: wf.name.clone(),
            contact_id: contact_id.to_string(),
            step: format!("{}@{why}", step.id),
            action: Action::Wait { until },
        });
        EnrollmentPlan {
            steps,
            outcome: Outcome::Waiting {
                next_step: Some(step.id.clone()),
                until,
                wait_since: None,
            },
            ran,
        }
    }
}

#[cfg(test)]
mod tests;
