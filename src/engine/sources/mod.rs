//! What is due at a time, planned: the pieces of a pass that the daemon
//! (`engine::scheduler`) and the dry-run (`engine::simulate`) share.
//!
//! A pass takes, in this order: enrollments whose next step is due; entries
//! of the event log not yet processed (contact created, tag added, event),
//! interleaved across workflows in the log's order; and workflows triggered
//! by a cron tick (`inactive`, `schedule`). Each piece is planned by
//! `Planner::plan`; the daemon applies the plans, the dry-run records them in
//! its copy of the plan state and prints them. Both take the same batches in
//! the same order, so the counters that plans share (round-robin positions,
//! team loads, frequency caps) advance the same way.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::audience::Condition;
use crate::contact::Contact;
use crate::engine::gates::{self, after_activation};
use crate::engine::plan::{Action, EnrollmentPlan, Outcome, PlannedStep, Planner, Reason, StartAt};
use crate::store::Store;
use crate::store::dialect::{Dialect, Sql};
use crate::store::plan_reads::{self, EnrollmentRow, ms};
use crate::workflow::{Entry, StepAction, Trigger, Workflow};

mod contacts;
mod due;
mod event_log;
mod guard;
mod scan;

pub use contacts::*;
pub use due::*;
pub use event_log::*;
pub use guard::*;
pub use scan::*;

/// Plans per batch: due enrollments and event-log entries are taken this many
/// at a time, by the daemon (one transaction each) and by the dry-run alike.
pub const BATCH: usize = 256;

/// How a piece of work starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A new enrollment with this entry key (unique per workflow and contact).
    New { entry_key: String, cause: Cause },
    /// An existing enrollment continuing at its stored step.
    Existing { enrollment_id: i64 },
    /// A trigger that does not enroll (it happened before the workflow's
    /// activation): reported, nothing stored.
    Passed { cause: Cause },
}

/// What made a new enrollment.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// An event-log entry (its sequence number).
    Log(i64),
    /// A cron tick of an `inactive` or `schedule` workflow.
    Tick(DateTime<Utc>),
    /// `--all-contacts`: the trigger imagined firing now.
    Imagined,
    /// `entry_existing` or `nurture enroll --existing`: the audience as it is.
    Existing,
}

/// One planned piece of work.
pub struct Decided<'w> {
    pub workflow: &'w Workflow,
    pub contact_id: String,
    pub start: Start,
    /// For an existing enrollment, the stored step the plan started from.
    pub from_step: Option<String>,
    pub plan: EnrollmentPlan,
    /// The event that started a new enrollment (stored with it).
    pub trigger: Option<crate::contact::TriggerEvent>,
}

impl Decided<'_> {
    pub fn is_new(&self) -> bool {
        matches!(self.start, Start::New { .. })
    }
}
