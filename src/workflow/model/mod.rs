//! The types of a workflow, as the rest of nurture sees it once loaded and
//! checked. Names that refer to other things (channels, templates, teams,
//! fields) keep the place they were written, so checks can point at them.

use std::path::PathBuf;

use crate::audience::Condition;
use crate::diagnostics::Pos;
use crate::duration::Duration;
use crate::schedule::CronSchedule;

mod trigger;

pub use trigger::*;

// A leaf type, used below the workflow model too (settings, audience).
pub use crate::located::Located;

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
    /// `holdout: 10%`: this share of contacts (in hundredths of a percent,
    /// 1000 = 10%) is enrolled and measured but gets no messages and no
    /// assignment: the control group. Chosen by a stable hash of
    /// (workflow, contact).
    pub holdout: Option<u32>,
    /// `goal: { event: purchase, within: 7d }` (or `{ condition: C, within }`):
    /// what counts as a conversion, measured by `nurture report`.
    pub goal: Option<Goal>,
    /// Leave the workflow once the goal is reached (default true).
    pub exit_on_goal: bool,
    /// `throttle: 200/h`: the workflow's messages go out at most this fast,
    /// evenly spaced, in the order they were planned.
    pub throttle: Option<crate::settings::RateLimit>,
    /// The file it came from, for diagnostics and `status`.
    pub file: PathBuf,
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
    /// `window: { from, to, days }`: the step runs only inside it, in the
    /// contact's time zone; outside, the enrollment waits for its next opening.
    pub window: Option<Window>,
}

/// A local time window on some weekdays (all when `days` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub from: chrono::NaiveTime,
    pub to: chrono::NaiveTime,
    pub days: Vec<chrono::Weekday>,
    /// `on: [双11, 618]`: only on these days of the named calendar.
    pub on: Vec<String>,
}

impl Window {
    fn date_ok(&self, d: chrono::NaiveDate) -> bool {
        use chrono::Datelike;
        (self.days.is_empty() || self.days.contains(&d.weekday()))
            && (self.on.is_empty()
                || self
                    .on
                    .iter()
                    .any(|n| crate::calendar::date_of(n, d.year()) == Some(d)))
    }

    /// Whether `at` is inside the window in `tz` (from inclusive, to exclusive).
    pub fn contains(&self, at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> bool {
        let l = at.with_timezone(&tz);
        let t = l.time();
        self.date_ok(l.date_naive()) && t >= self.from && t < self.to
    }

    /// The next opening of the window after `at`, in `tz`.
    pub fn next_open(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        tz: chrono_tz::Tz,
    ) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone;
        let today = at.with_timezone(&tz).date_naive();
        // A week finds a weekday; a calendar day may be a year away.
        let horizon = if self.on.is_empty() { 8 } else { 400 };
        for k in 0..horizon {
            let d = today + chrono::TimeDelta::days(k);
            if !self.date_ok(d) {
                continue;
            }
            let local = d.and_time(self.from);
            let open = tz
                .from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    tz.from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&chrono::Utc));
            if let Some(o) = open
                && o > at
            {
                return o;
            }
        }
        at + chrono::TimeDelta::days(horizon)
    }
}

/// The next moment at local time `t` at or after `at`, in `tz` (`send: { at }`).
pub fn next_local_time(
    t: chrono::NaiveTime,
    at: chrono::DateTime<chrono::Utc>,
    tz: chrono_tz::Tz,
) -> chrono::DateTime<chrono::Utc> {
    Window {
        from: t,
        to: t,
        days: vec![],
        on: vec![],
    }
    .next_open(at - chrono::TimeDelta::milliseconds(1), tz)
}

#[derive(Debug, Clone)]
pub enum StepAction {
    Send(SendStep),
    Assign(AssignStep),
    Tag(TagStep),
    Wait(Duration),
    If(IfStep),
    WaitUntil(WaitUntilStep),
    Split(SplitStep),
    Set(SetStep),
    /// Tell the contact's salesperson (the owner), without reassigning.
    Notify(Notify),
    /// Call an HTTP endpoint (a webhook channel) with a JSON body.
    Webhook(WebhookStep),
}

/// `webhook: { channel: crm_hook, body: { id: "{{contact.id}}", plan: gold } }`:
/// one signed POST of `body` (values as in `set:`, templates rendered) to
/// the channel's URL, through the outbox: the delivery layer's retries,
/// rate limit and idempotency key.
#[derive(Debug, Clone)]
pub struct WebhookStep {
    pub channel: Located<String>,
    pub body: Vec<(Located<String>, SetValue)>,
    /// `store: { crm_id: /id }`: once the call succeeds, these attributes
    /// of the contact take the values at these JSON pointers of the answer.
    pub store: Vec<(Located<String>, String)>,
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

    /// Every list of steps inside this one: `then` and `else`, or a split's arms.
    pub fn children(&self) -> Vec<&[Step]> {
        match self {
            StepAction::Split(s) => s.arms.iter().map(|a| a.steps.as_slice()).collect(),
            _ => match self.branches() {
                Some((t, e)) => vec![t, e],
                None => vec![],
            },
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
            StepAction::Split(_) => "split",
            StepAction::Set(_) => "set",
            StepAction::Notify(_) => "notify",
            StepAction::Webhook(_) => "webhook",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SendStep {
    pub channel: Located<String>,
    pub template: Located<String>,
    /// `at: "10:00"`: the message goes out at the next such local time of
    /// the contact (the enrollment moves on; the message waits in the outbox).
    pub at: Option<chrono::NaiveTime>,
    /// `per_salesperson: 30/d`: at most this many of the step's messages go
    /// out per salesperson (the contact's owner, who sends on WeCom) within
    /// the window; the excess waits in the outbox, in order.
    pub per_salesperson: Option<crate::settings::RateLimit>,
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
    /// `per_salesperson: 30/d`: at most this many contacts per salesperson
    /// from this step within the window; those at it are passed over, and
    /// when the whole team is, the enrollment waits (in order) for the first
    /// place to free.
    pub per_salesperson: Option<crate::settings::RateLimit>,
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

/// `set: { level: gold, plan: "{{event.properties.plan}}", coupon: null }`:
/// custom attributes of the contact; a string with `{{` is a template
/// (rendered like a message, with `contact`, `owner`, `event`); `null`
/// removes the attribute.
#[derive(Debug, Clone, Default)]
pub struct SetStep {
    pub values: Vec<(Located<String>, SetValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    Literal(serde_json::Value),
    Template(String),
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

/// `split: { arms: [ { name: a, weight: 50, steps: [...] }, ... ] }`: each
/// contact takes one arm, chosen by a stable hash of (workflow, contact,
/// split id) in proportion to the weights, so re-entry, the dry-run and the
/// daemon agree. The arm is recorded (`history`, reports).
#[derive(Debug, Clone)]
pub struct SplitStep {
    pub arms: Vec<Arm>,
}

#[derive(Debug, Clone)]
pub struct Arm {
    pub name: Located<String>,
    pub weight: u32,
    pub steps: Vec<Step>,
}

impl SplitStep {
    /// The arm of the contact with this hash bucket (0..2^64).
    pub fn arm_for(&self, h: u64) -> &Arm {
        let total: u64 = self.arms.iter().map(|a| u64::from(a.weight)).sum();
        let mut x = ((u128::from(h) * u128::from(total.max(1))) >> 64) as u64;
        for a in &self.arms {
            if x < u64::from(a.weight) {
                return a;
            }
            x -= u64::from(a.weight);
        }
        self.arms.last().expect("a split has arms")
    }
}

/// A stable 64-bit hash of the parts (FNV-1a, then a SplitMix64 finish so
/// nearby ids spread evenly): the same on every machine, in every release.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Workflow {
    /// Whether the contact is in the workflow's holdout (control group).
    pub fn held_out(&self, contact_id: &str) -> bool {
        self.holdout.is_some_and(|bp| {
            stable_hash(&[&self.name, contact_id, "holdout"]) % 10_000 < u64::from(bp)
        })
    }

    /// The arm of `split` (the step `step_id`) the contact takes.
    pub fn arm<'s>(&self, split: &'s SplitStep, step_id: &str, contact_id: &str) -> &'s Arm {
        split.arm_for(stable_hash(&[&self.name, contact_id, step_id]))
    }
}

/// A workflow's goal: a contact converts when it holds within `within`
/// after entering.
#[derive(Debug, Clone)]
pub struct Goal {
    /// As a wait: an event (with `where:`) logged after the enrollment
    /// began, or a condition on the contact.
    pub on: WaitFor,
    pub within: Duration,
}

impl Goal {
    /// When the enrollment that began at `since` converted, as far as `c`
    /// shows at `now`: the first goal event in the window, or (a condition)
    /// now, if it holds and the window is open.
    pub fn converted_at(
        &self,
        c: &crate::contact::Contact,
        now: chrono::DateTime<chrono::Utc>,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let end = since + self.within.to_chrono();
        match &self.on {
            WaitFor::Event { condition, .. } => c
                .events
                .iter()
                .filter(|e| e.at >= since && e.at <= end && e.at <= now)
                .filter(|e| event_passes(condition, &e.name, &e.properties, now))
                .map(|e| e.at)
                .min(),
            WaitFor::Condition(cond) => {
                (now <= end && crate::audience::eval::holds(cond, c, now)).then_some(now)
            }
        }
    }
}

/// Whether an event (name, properties) is the one an event condition
/// (`Condition::Event` with its `where:`) names.
pub fn event_passes(
    cond: &Condition,
    name: &str,
    properties: &serde_json::Map<String, serde_json::Value>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    match cond {
        Condition::Event {
            name: want, where_, ..
        } => {
            want == name
                && where_
                    .as_ref()
                    .is_none_or(|w| crate::audience::eval::property_holds(w, properties, now))
        }
        _ => false,
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
                for child in s.action.children() {
                    walk(child, out);
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
                for child in s.action.children() {
                    if let Some(r) = find(child, id, following) {
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

#[cfg(test)]
mod tests;
