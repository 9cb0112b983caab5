//! What a plan says: the actions of each step, why a step was skipped or an
//! enrollment ended, where an enrollment starts, and what it changes on the
//! contact.

use super::*;

/// Why a step was skipped or an enrollment ended. The text is part of the
/// dry-run's output contract (SPEC §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Unsubscribed,
    NoAddress,
    /// The contact's address is not one the channel's provider takes (a
    /// phone number's digits, an email's form): the detail says which and
    /// why ([`crate::channels::address`]).
    BadAddress(Box<crate::channels::address::Refusal>),
    FrequencyCap,
    TemplateError(String),
    LeftAudience,
    GoalReached,
    AlreadyAssigned,
    TeamFull,
    NoMatchingSalesperson,
    /// The enrollment's step no longer exists after an edit of the workflow.
    StepRemoved(String),
    /// The trigger happened before the workflow was activated (first loaded
    /// by a daemon on this store): imports and backdated events set nothing off.
    BeforeActivation,
    /// The blast guard paused the workflow: the enrollment waits for `nurture resume`.
    BlastGuard,
    /// The contact is in the workflow's holdout (control group): enrolled and
    /// measured, never messaged or assigned.
    Holdout,
    /// A `notify:` step, and the contact has no salesperson.
    NoOwner,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Unsubscribed => f.write_str("unsubscribed"),
            Reason::NoAddress => f.write_str("no_address"),
            Reason::BadAddress(why) => write!(f, "bad_address: {why}"),
            Reason::FrequencyCap => f.write_str("frequency_cap"),
            Reason::TemplateError(e) => write!(f, "template_error: {e}"),
            Reason::LeftAudience => f.write_str("left_audience"),
            Reason::GoalReached => f.write_str("goal_reached"),
            Reason::AlreadyAssigned => f.write_str("already_assigned"),
            Reason::TeamFull => f.write_str("team_full"),
            Reason::NoMatchingSalesperson => f.write_str("no_matching_salesperson"),
            Reason::StepRemoved(id) => write!(f, "step_removed: {id}"),
            Reason::BeforeActivation => f.write_str("before_activation"),
            Reason::BlastGuard => f.write_str("blast_guard"),
            Reason::Holdout => f.write_str("holdout"),
            Reason::NoOwner => f.write_str("no_owner"),
        }
    }
}

impl Reason {
    /// The reason as the daemon's log says it: without the contact's
    /// address (which the dry-run and the step record show).
    pub fn for_the_log(&self) -> String {
        match self {
            Reason::BadAddress(r) => format!("bad_address: {}", r.without_address()),
            r => r.to_string(),
        }
    }

    /// The reason's code without detail, for summaries.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Unsubscribed => "unsubscribed",
            Reason::NoAddress => "no_address",
            Reason::BadAddress(_) => "bad_address",
            Reason::FrequencyCap => "frequency_cap",
            Reason::TemplateError(_) => "template_error",
            Reason::LeftAudience => "left_audience",
            Reason::GoalReached => "goal_reached",
            Reason::AlreadyAssigned => "already_assigned",
            Reason::TeamFull => "team_full",
            Reason::NoMatchingSalesperson => "no_matching_salesperson",
            Reason::StepRemoved(_) => "step_removed",
            Reason::BeforeActivation => "before_activation",
            Reason::BlastGuard => "blast_guard",
            Reason::Holdout => "holdout",
            Reason::NoOwner => "no_owner",
        }
    }
}

/// The step id under which an enrollment in the holdout is recorded.
pub use crate::workflow::HOLDOUT_STEP;

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
        /// The template's `attachments:` (WeCom), rendered.
        attachments: Vec<crate::attachments::Attachment>,
    },
    Assign {
        salesperson: String,
        previous: Option<String>,
        /// The channel the salesperson is told on.
        notify: Option<String>,
        /// The notice, rendered for each salesperson the daemon may choose
        /// when it applies the plan (round robin and least loaded choose
        /// again under the team's lock): `salesperson`'s, and for those
        /// strategies every other team member's. `Err` is a template error.
        notices: std::collections::BTreeMap<String, Result<String, String>>,
        /// The WeCom transfer the new owner calls for, with its verdict
        /// (see `engine::transfer`).
        transfer: Option<crate::engine::transfer::Transfer>,
    },
    Tag {
        add: Vec<String>,
        remove: Vec<String>,
        /// The wecom channels that also mark these as corp tags in WeCom
        /// (a contact mirrored from WeCom; see `channels::wecom::tag_marks`).
        wecom: Vec<String>,
    },
    Wait {
        until: DateTime<Utc>,
    },
    /// A `wait_until` step ended: the event came (or the condition held),
    /// `met`, and the enrollment takes `then`; or the timeout passed and it
    /// takes `else`. Recorded at the step id `ID.then` or `ID.else`.
    /// The contact took arm `arm` of a split (or, at step `@holdout`, is in
    /// the workflow's holdout).
    Split {
        arm: String,
    },
    /// Custom attributes set (`null`: removed): only the ones that change.
    Set {
        values: std::collections::BTreeMap<String, serde_json::Value>,
    },
    /// A notice to the contact's salesperson, who stays the owner. `Err`:
    /// its template does not render (nothing is sent).
    Notify {
        salesperson: String,
        channel: String,
        body: Result<String, String>,
    },
    /// A webhook step's call: its JSON body, and the attributes its answer
    /// will set (attribute → JSON pointer), which no preview can know.
    Webhook {
        channel: String,
        body: serde_json::Value,
        store: std::collections::BTreeMap<String, String>,
    },
    WaitEnded {
        met: bool,
        /// What ended it, for people: "event purchase at …", "timeout 3d".
        why: String,
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
            Action::WaitEnded { .. } => "wait_until",
            Action::Split { .. } => "split",
            Action::Set { .. } => "set",
            Action::Notify { .. } => "notify",
            Action::Webhook { .. } => "webhook",
            Action::Exit { .. } => "exit",
            Action::Skip { .. } => "skip",
        }
    }
}

impl EnrollmentPlan {
    /// A new enrollment the blast guard holds: one skip row at the first
    /// step, nothing run.
    pub fn held(wf: &Workflow, contact_id: &str) -> EnrollmentPlan {
        let first = wf.steps.first().map(|s| s.id.clone()).unwrap_or_default();
        EnrollmentPlan {
            steps: vec![PlannedStep {
                workflow: wf.name.clone(),
                contact_id: contact_id.to_string(),
                step: first.clone(),
                action: Action::Skip {
                    reason: Reason::BlastGuard,
                },
            }],
            outcome: Outcome::Held { first_step: first },
            ran: vec![],
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
        /// Waiting at a `wait_until` step (`next_step`): since when. Stored
        /// with the enrollment; the plan resumes from it.
        wait_since: Option<DateTime<Utc>>,
    },
    Done,
    Exited(Reason),
    /// The blast guard holds the new enrollment at `first_step` until
    /// `nurture resume`; nothing of it ran.
    Held {
        first_step: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentPlan {
    pub steps: Vec<PlannedStep>,
    pub outcome: Outcome,
    /// The ids of steps that ran, in order (the daemon records them so none runs twice).
    pub ran: Vec<String>,
}

/// Where a plan starts: a fresh enrollment at the first step, or an existing
/// one at its stored step. `since` is when the enrollment began: goals
/// (`exit_when`) count only events at or after it.
#[derive(Debug, Clone, Copy)]
pub enum StartAt<'a> {
    First {
        since: DateTime<Utc>,
    },
    /// `waiting_since`: the enrollment waits at this `wait_until` step since
    /// then (`None`: it arrives at the step now).
    Step {
        id: &'a str,
        since: DateTime<Utc>,
        waiting_since: Option<DateTime<Utc>>,
    },
}

impl StartAt<'_> {
    /// When the enrollment began.
    pub fn since(&self) -> DateTime<Utc> {
        match self {
            StartAt::First { since } | StartAt::Step { since, .. } => *since,
        }
    }
}

/// What plans made in this run changed in a contact (owner, tags): later
/// plans of the same run see the contact as the daemon will have left it,
/// whether they come in the same batch or a later one. The daemon forgets
/// these once a batch is committed (the store has them then); the dry-run
/// keeps them for the whole simulation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactChange {
    pub owner: Option<Option<String>>,
    pub tags: Option<std::collections::BTreeSet<String>>,
    pub attrs: Option<serde_json::Map<String, serde_json::Value>>,
}
