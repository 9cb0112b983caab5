//! The one decision path. Given a workflow, a contact's stored state and the
//! clock, decide what happens, step by step, until the enrollment waits,
//! finishes or leaves. The daemon applies these plans; `dry-run` prints them.
//! Nothing here reads the real clock or writes anywhere.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::assign::{AssignState, Pick};
use crate::audience::eval::holds;
use crate::contact::Contact;
use crate::policy;
use crate::settings::Settings;
use crate::template::{Templates, render_context};
use crate::workflow::{Step, StepAction, Workflow};

/// Why a step was skipped or an enrollment ended. The text is part of the
/// dry-run's output contract (SPEC §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Unsubscribed,
    NoAddress,
    FrequencyCap,
    TemplateError(String),
    LeftAudience,
    GoalReached,
    AlreadyAssigned,
    TeamFull,
    NoMatchingSalesperson,
    /// The enrollment's step no longer exists after an edit of the workflow.
    StepRemoved(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Unsubscribed => f.write_str("unsubscribed"),
            Reason::NoAddress => f.write_str("no_address"),
            Reason::FrequencyCap => f.write_str("frequency_cap"),
            Reason::TemplateError(e) => write!(f, "template_error: {e}"),
            Reason::LeftAudience => f.write_str("left_audience"),
            Reason::GoalReached => f.write_str("goal_reached"),
            Reason::AlreadyAssigned => f.write_str("already_assigned"),
            Reason::TeamFull => f.write_str("team_full"),
            Reason::NoMatchingSalesperson => f.write_str("no_matching_salesperson"),
            Reason::StepRemoved(id) => write!(f, "step_removed: {id}"),
        }
    }
}

impl Reason {
    /// The reason's code without detail, for summaries.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Unsubscribed => "unsubscribed",
            Reason::NoAddress => "no_address",
            Reason::FrequencyCap => "frequency_cap",
            Reason::TemplateError(_) => "template_error",
            Reason::LeftAudience => "left_audience",
            Reason::GoalReached => "goal_reached",
            Reason::AlreadyAssigned => "already_assigned",
            Reason::TeamFull => "team_full",
            Reason::NoMatchingSalesperson => "no_matching_salesperson",
            Reason::StepRemoved(_) => "step_removed",
        }
    }
}

/// One decided action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send {
        channel: String,
        to: String,
        subject: Option<String>,
        body: String,
        /// When it may go out: now, or the end of the contact's quiet hours.
        at: DateTime<Utc>,
        /// The contact's timezone, to print `at` as the contact sees it.
        tz: Tz,
    },
    Assign {
        salesperson: String,
        previous: Option<String>,
        notify: Option<String>,
    },
    Tag {
        add: Vec<String>,
        remove: Vec<String>,
    },
    Wait {
        until: DateTime<Utc>,
    },
    Exit {
        reason: Reason,
    },
    Skip {
        reason: Reason,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Send { .. } => "send",
            Action::Assign { .. } => "assign",
            Action::Tag { .. } => "tag",
            Action::Wait { .. } => "wait",
            Action::Exit { .. } => "exit",
            Action::Skip { .. } => "skip",
        }
    }
}

/// An action for one contact at one step of one workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    pub workflow: String,
    pub contact_id: String,
    pub step: String,
    pub action: Action,
}

/// How an enrollment stands once its plan is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Sleeping until `until`, then continuing at `next_step` (`None`: it then ends).
    Waiting {
        next_step: Option<String>,
        until: DateTime<Utc>,
    },
    Done,
    Exited(Reason),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentPlan {
    pub steps: Vec<PlannedStep>,
    pub outcome: Outcome,
    /// The ids of steps that ran, in order (the daemon records them so none runs twice).
    pub ran: Vec<String>,
}

/// Where a plan starts: a fresh enrollment at the first step, or an existing
/// one at its stored step.
#[derive(Debug, Clone, Copy)]
pub enum StartAt<'a> {
    First,
    Step(&'a str),
}

/// The planner: settings, templates, the clock, and the counters that must
/// advance across contacts (assignment, planned messages per contact).
pub struct Planner<'a> {
    pub settings: &'a Settings,
    pub templates: &'a Templates,
    pub now: DateTime<Utc>,
    pub assign: AssignState,
    /// Messages planned in this run, per contact, for the frequency cap.
    planned_sends: HashMap<String, u32>,
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
            planned_sends: HashMap::new(),
        }
    }

    /// Forget the messages planned so far: once a batch of plans is applied,
    /// its messages are in the store and count from there.
    pub fn forget_planned(&mut self) {
        self.planned_sends.clear();
    }

    /// Plan a contact's way through `wf` from `start`, until a wait, the end,
    /// or an exit. `recent_messages` is how many messages the store holds for
    /// the contact inside the frequency cap's window.
    pub fn plan(
        &mut self,
        wf: &Workflow,
        contact: &Contact,
        start: StartAt<'_>,
        recent_messages: u32,
    ) -> EnrollmentPlan {
        // Copied only when a step changes it (assign, tag): most plans only read.
        let mut c = std::borrow::Cow::Borrowed(contact);
        let mut steps = Vec::new();
        let mut ran = Vec::new();
        let row = |step: &Step, action: Action| PlannedStep {
            workflow: wf.name.clone(),
            contact_id: contact.id.clone(),
            step: step.id.clone(),
            action,
        };

        let mut current: Option<&Step> = match start {
            StartAt::First => wf.steps.first(),
            StartAt::Step(id) => match wf.step(id) {
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
                .is_some_and(|g| holds(g, &c, self.now))
            {
                Some(Reason::GoalReached)
            } else if wf
                .audience
                .as_ref()
                .is_some_and(|a| !holds(a, &c, self.now))
            {
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

            ran.push(step.id.clone());
            let mut next = wf.next_after(&step.id);
            match &step.action {
                StepAction::Send(send) => {
                    let action = self.plan_send(
                        wf,
                        &c,
                        &send.channel.value,
                        &send.template.value,
                        recent_messages,
                    );
                    steps.push(row(step, action));
                }
                StepAction::Assign(a) => {
                    let team = self
                        .settings
                        .teams
                        .get(&a.team.value)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    let action = match self.assign.pick(a, team, &c) {
                        Pick::Chosen(id) => {
                            let previous = c.to_mut().owner.replace(id.clone());
                            Action::Assign {
                                salesperson: id,
                                previous,
                                notify: a.notify.as_ref().map(|n| n.value.clone()),
                            }
                        }
                        Pick::AlreadyAssigned => Action::Skip {
                            reason: Reason::AlreadyAssigned,
                        },
                        Pick::TeamFull => Action::Skip {
                            reason: Reason::TeamFull,
                        },
                        Pick::NoMatch => Action::Skip {
                            reason: Reason::NoMatchingSalesperson,
                        },
                    };
                    steps.push(row(step, action));
                }
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
                    steps.push(row(step, Action::Tag { add, remove }));
                }
                StepAction::Wait(d) => {
                    let until = self.now + d.to_chrono();
                    steps.push(row(step, Action::Wait { until }));
                    return EnrollmentPlan {
                        steps,
                        outcome: Outcome::Waiting {
                            next_step: next.map(|s| s.id.clone()),
                            until,
                        },
                        ran,
                    };
                }
                StepAction::If(branch) => {
                    let taken = if holds(&branch.condition, &c, self.now) {
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

    /// Decide one message: consent, address, cap, rendering, quiet hours.
    fn plan_send(
        &mut self,
        wf: &Workflow,
        c: &Contact,
        channel: &str,
        template: &str,
        recent: u32,
    ) -> Action {
        let Some(ch) = self.settings.channels.get(channel) else {
            // `validate` refuses unknown channels, so this only happens on a broken reload.
            return Action::Skip {
                reason: Reason::TemplateError(format!("unknown channel \"{channel}\"")),
            };
        };
        if !policy::consents(c, channel) {
            return Action::Skip {
                reason: Reason::Unsubscribed,
            };
        }
        // A log or webhook channel reaches the contact by id, unless its
        // `address:` option names the field it stands in for (a `log` channel
        // named `sms` in a quick start previews real phone numbers).
        let field = ch
            .kind
            .address_field()
            .or_else(|| ch.options.get("address").map(|a| a.value.as_str()));
        let to = match field {
            Some("phone") => c.phone.clone(),
            Some("email") => c.email.clone(),
            // A customer whose WeCom relationship ended (marked by the
            // callback) cannot be reached there any more.
            Some("wecom_external_userid") => c
                .wecom_external_userid
                .clone()
                .filter(|_| !c.attrs.contains_key(crate::store::wecom::ATTR_DELETED_BY)),
            _ => Some(c.id.clone()),
        };
        let Some(to) = to.filter(|t| !t.trim().is_empty()) else {
            return Action::Skip {
                reason: Reason::NoAddress,
            };
        };
        let planned = self.planned_sends.get(&c.id).copied().unwrap_or(0);
        if policy::over_cap(
            self.settings.policies.frequency_cap.as_ref(),
            recent + planned,
        ) {
            return Action::Skip {
                reason: Reason::FrequencyCap,
            };
        }
        let tz = policy::contact_tz(c, self.settings);
        let owner = c
            .owner
            .as_deref()
            .and_then(|id| self.settings.salesperson(id))
            .map(|s| s.template_value());
        let ctx =
            handlebars::Context::from(render_context(c, owner.as_ref(), &wf.name, self.now, tz));
        let rendered = match self
            .templates
            .render_limited(template, &ctx, ch.kind.message_limit())
        {
            Ok(r) => r,
            Err(e) => {
                return Action::Skip {
                    reason: Reason::TemplateError(e.to_string()),
                };
            }
        };
        *self.planned_sends.entry(c.id.clone()).or_insert(0) += 1;
        let at = policy::deliverable_at(self.settings.policies.quiet_hours.as_ref(), self.now, tz);
        Action::Send {
            channel: channel.to_string(),
            to,
            subject: rendered.subject,
            body: rendered.body,
            at,
            tz,
        }
    }
}

/// A planned step as one flat JSON object, in the SPEC's field order.
#[derive(Serialize)]
pub struct RowJson<'a> {
    pub workflow: &'a str,
    pub contact_id: &'a str,
    pub step: &'a str,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salesperson: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PlannedStep {
    pub fn to_json_row(&self, settings_tz: Tz) -> RowJson<'_> {
        let mut r = RowJson {
            workflow: &self.workflow,
            contact_id: &self.contact_id,
            step: &self.step,
            action: self.action.name(),
            channel: None,
            to: None,
            subject: None,
            body: None,
            at: None,
            salesperson: None,
            notify: None,
            add: None,
            remove: None,
            until: None,
            reason: None,
        };
        match &self.action {
            Action::Send {
                channel,
                to,
                subject,
                body,
                at,
                tz,
            } => {
                r.channel = Some(channel);
                r.to = Some(to);
                r.subject = subject.as_deref();
                r.body = Some(body);
                r.at = Some(at.with_timezone(tz).to_rfc3339());
            }
            Action::Assign {
                salesperson,
                notify,
                ..
            } => {
                r.salesperson = Some(salesperson);
                r.notify = notify.as_deref();
            }
            Action::Tag { add, remove } => {
                r.add = Some(add);
                r.remove = Some(remove);
            }
            Action::Wait { until } => {
                r.until = Some(until.with_timezone(&settings_tz).to_rfc3339())
            }
            Action::Exit { reason } | Action::Skip { reason } => {
                r.reason = Some(reason.to_string())
            }
        }
        r
    }
}
