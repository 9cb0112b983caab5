//! The types of a workflow, as the rest of nurture sees it once loaded and
//! checked. Names that refer to other things (channels, templates, teams,
//! fields) keep the place they were written, so checks can point at them.

use std::path::PathBuf;

use crate::audience::Condition;
use crate::diagnostics::Pos;
use crate::duration::Duration;
use crate::schedule::CronSchedule;

/// A value together with where it was written in the user's file.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Located<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Located { value, pos }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub trigger: Trigger,
    /// `None` means every contact.
    pub audience: Option<Condition>,
    pub entry: Entry,
    pub steps: Vec<Step>,
    pub exit_when: Option<Condition>,
    /// Enroll the contacts already in the audience once, when the workflow is
    /// activated (or on `nurture enroll --existing`); by default a workflow
    /// acts only on what happens after its activation.
    pub entry_existing: bool,
    /// The file it came from, for diagnostics and `status`.
    pub file: PathBuf,
}

/// The event `staff_left` workflows fire on (logged by
/// `channels::wecom::resigned`).
pub const STAFF_LEFT_EVENT: &str = "wecom_staff_left";

#[derive(Debug, Clone)]
pub enum Trigger {
    ContactCreated,
    TagAdded {
        tag: String,
    },
    /// Fires at each `check` tick for contacts quiet for longer than `quiet_for`,
    /// once per quiet spell.
    Inactive {
        quiet_for: Duration,
        check: CronSchedule,
    },
    Event {
        name: String,
    },
    Schedule {
        cron: CronSchedule,
    },
    /// A WeCom follow-user of the contact left the company: the contact is
    /// on WeCom's unassigned list (`nurture wecom resigned`, or the daemon's
    /// daily look, logs the event `wecom_staff_left`).
    StaffLeft,
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::ContactCreated => "contact_created",
            Trigger::TagAdded { .. } => "tag_added",
            Trigger::Inactive { .. } => "inactive",
            Trigger::Event { .. } => "event",
            Trigger::Schedule { .. } => "schedule",
            Trigger::StaffLeft => "staff_left",
        }
    }
    /// The event-log entries that fire it: (kind, name).
    pub fn log_match(&self) -> Option<(&'static str, Option<&str>)> {
        match self {
            Trigger::ContactCreated => Some(("contact_created", None)),
            Trigger::TagAdded { tag } => Some(("tag_added", Some(tag))),
            Trigger::Event { name } => Some(("event", Some(name))),
            Trigger::StaffLeft => Some(("event", Some(STAFF_LEFT_EVENT))),
            Trigger::Inactive { .. } | Trigger::Schedule { .. } => None,
        }
    }
    /// Triggers fired by a cron tick rather than by an entry in the event log.
    pub fn is_ticked(&self) -> bool {
        matches!(self, Trigger::Inactive { .. } | Trigger::Schedule { .. })
    }
}

/// How often one contact may enter the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Once,
    EveryTime,
    OncePer(Duration),
}

#[derive(Debug, Clone)]
pub struct Step {
    /// The user's `id:` or, by default, the step's position ("0", "3.then.1").
    pub id: String,
    pub pos: Pos,
    pub action: StepAction,
}

#[derive(Debug, Clone)]
pub enum StepAction {
    Send(SendStep),
    Assign(AssignStep),
    Tag(TagStep),
    Wait(Duration),
    If(IfStep),
    WaitUntil(WaitUntilStep),
}

impl StepAction {
    /// The `then` and `else` steps of a step that branches (`if`, `wait_until`).
    pub fn branches(&self) -> Option<(&[Step], &[Step])> {
        match self {
            StepAction::If(i) => Some((&i.then, &i.otherwise)),
            StepAction::WaitUntil(w) => Some((&w.then, &w.otherwise)),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StepAction::Send(_) => "send",
            StepAction::Assign(_) => "assign",
            StepAction::Tag(_) => "tag",
            StepAction::Wait(_) => "wait",
            StepAction::If(_) => "if",
            StepAction::WaitUntil(_) => "wait_until",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SendStep {
    pub channel: Located<String>,
    pub template: Located<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    LeastLoaded,
    ByField,
}

#[derive(Debug, Clone)]
pub struct AssignStep {
    pub team: Located<String>,
    pub strategy: Strategy,
    /// Required with `by_field`: the contact field matched against a salesperson's id or region.
    pub field: Option<Located<String>>,
    pub only_if_unassigned: bool,
    /// How the chosen salesperson is told about the new contact.
    pub notify: Option<Notify>,
}

/// `notify: wecom` or `notify: { channel: wecom, template: assigned }`.
#[derive(Debug, Clone)]
pub struct Notify {
    pub channel: Located<String>,
    /// The notice's template; `None`: the shipped default (or the project's
    /// own `templates/assigned.hbs`).
    pub template: Option<Located<String>>,
}

impl Notify {
    /// The template the notice renders: the one named, else `assigned`.
    pub fn template_name(&self) -> &str {
        self.template
            .as_ref()
            .map_or(crate::template::NOTICE_TEMPLATE, |t| t.value.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct TagStep {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// `wait_until: { event: purchase, where: {...}, timeout: 3d, then: [...], else: [...] }`
/// or `wait_until: { condition: C, timeout: 3d, ... }`: the enrollment waits
/// at this step until the event is logged (or the condition holds), then
/// continues with `then`; when `timeout` passes first, with `else`. Either
/// branch may be empty: the workflow continues after the step.
#[derive(Debug, Clone)]
pub struct WaitUntilStep {
    pub until: WaitFor,
    pub timeout: Duration,
    pub then: Vec<Step>,
    pub otherwise: Vec<Step>,
}

#[derive(Debug, Clone)]
pub enum WaitFor {
    /// An event logged at or after the wait began; the condition is
    /// `Condition::Event` with the step's `where:`. Woken by the event path.
    Event { name: String, condition: Condition },
    /// A condition on the contact (tags, fields, events): checked on arrival,
    /// whenever the event log has an entry for the contact (tag added or
    /// removed, event), and at least every [`WaitFor::RECHECK`].
    Condition(Condition),
}

impl WaitFor {
    /// How often a condition wait looks again without an entry in the event
    /// log (attribute changes are not logged).
    pub const RECHECK: chrono::TimeDelta = chrono::TimeDelta::hours(1);

    pub fn condition(&self) -> &Condition {
        match self {
            WaitFor::Event { condition, .. } | WaitFor::Condition(condition) => condition,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IfStep {
    pub condition: Condition,
    pub then: Vec<Step>,
    pub otherwise: Vec<Step>,
}

impl Workflow {
    /// Every step, depth first, in the order they would run on the `then` path.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for s in steps {
                out.push(s);
                if let Some((then, otherwise)) = s.action.branches() {
                    walk(then, out);
                    walk(otherwise, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        out
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.all_steps().into_iter().find(|s| s.id == id)
    }

    /// The step that runs after step `id` completes, leaving branches as needed:
    /// the last step of a `then` continues after its `if`.
    pub fn next_after(&self, id: &str) -> Option<&Step> {
        fn find<'a>(
            steps: &'a [Step],
            id: &str,
            after: Option<&'a Step>,
        ) -> Option<Option<&'a Step>> {
            for (i, s) in steps.iter().enumerate() {
                let following = steps.get(i + 1).or(after);
                if s.id == id {
                    return Some(following);
                }
                if let Some((then, otherwise)) = s.action.branches() {
                    if let Some(r) = find(then, id, following) {
                        return Some(r);
                    }
                    if let Some(r) = find(otherwise, id, following) {
                        return Some(r);
                    }
                }
            }
            None
        }
        find(&self.steps, id, None).flatten()
    }

    pub fn first_step(&self) -> Option<&Step> {
        self.steps.first()
    }
}
