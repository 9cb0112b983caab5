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

/// The event `staff_left` workflows fire on (logged by
/// `channels::wecom::resigned`).
pub const STAFF_LEFT_EVENT: &str = "wecom_staff_left";

#[derive(Debug, Clone)]
pub enum Trigger {
    /// A contact is created (or added again on WeCom); with `via`, only
    /// through that contact-way code (`contact_ways/NAME.yaml`).
    ContactCreated {
        via: Option<Located<String>>,
    },
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
    /// `date: { field: birthday, offset: -3d, at: "10:00", every: year }`:
    /// on the date of a contact's date attribute (shifted by `offset`), at
    /// `at` in the contact's time zone; each year, or once.
    Date(DateTrigger),
}

#[derive(Debug, Clone)]
pub struct DateTrigger {
    /// The date attribute (unused with `calendar`).
    pub field: Located<String>,
    /// `schedule: { on: 春节 }`: a day of the named calendar
    /// (`crate::calendar`) instead of an attribute, every year.
    pub calendar: Option<String>,
    /// Whole days before (negative) or after the date.
    pub offset_days: i64,
    pub at: chrono::NaiveTime,
    pub every_year: bool,
    /// When the daemon looks (every 15 minutes).
    pub check: CronSchedule,
}

impl DateTrigger {
    /// The check that date triggers run on.
    pub const CHECK: &'static str = "*/15 * * * *";

    /// The occurrence due for a contact whose attribute is `value`, at `now`
    /// in time zone `tz`: its date and moment, when the moment is in the
    /// last day up to `now` (a daemon down for less than a day catches up).
    /// A date-only value is a calendar date; a timestamp is taken on its
    /// date in `tz`. Each year, a 29 February falls on the 28th in common
    /// years.
    pub fn due(
        &self,
        value: &serde_json::Value,
        tz: chrono_tz::Tz,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(chrono::NaiveDate, chrono::DateTime<chrono::Utc>)> {
        use chrono::Datelike;
        let text = value.as_str()?.trim();
        let base = match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(d) => d,
            Err(_) => chrono::DateTime::parse_from_rfc3339(text)
                .ok()?
                .with_timezone(&tz)
                .date_naive(),
        };
        let shift = chrono::TimeDelta::days(self.offset_days);
        let candidates: Vec<chrono::NaiveDate> = if self.every_year {
            let y = now.with_timezone(&tz).year();
            (y - 1..=y + 1)
                .filter_map(|y| {
                    chrono::NaiveDate::from_ymd_opt(y, base.month(), base.day())
                        .or_else(|| chrono::NaiveDate::from_ymd_opt(y, 2, 28))
                })
                .map(|d| d + shift)
                .collect()
        } else {
            vec![base + shift]
        };
        self.first_due(candidates, tz, now)
    }

    /// The occurrence due for a calendar day (`schedule: { on: 春节 }`).
    pub fn due_on_calendar(
        &self,
        name: &str,
        tz: chrono_tz::Tz,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(chrono::NaiveDate, chrono::DateTime<chrono::Utc>)> {
        use chrono::Datelike;
        let y = now.with_timezone(&tz).year();
        let shift = chrono::TimeDelta::days(self.offset_days);
        let candidates = (y - 1..=y + 1)
            .filter_map(|y| crate::calendar::date_of(name, y))
            .map(|d| d + shift)
            .collect();
        self.first_due(candidates, tz, now)
    }

    fn first_due(
        &self,
        candidates: Vec<chrono::NaiveDate>,
        tz: chrono_tz::Tz,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(chrono::NaiveDate, chrono::DateTime<chrono::Utc>)> {
        use chrono::TimeZone;
        let moment = |d: chrono::NaiveDate| {
            let local = d.and_time(self.at);
            tz.from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    tz.from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        candidates.into_iter().find_map(|d| {
            let m = moment(d)?;
            (m <= now && m > now - chrono::TimeDelta::days(1)).then_some((d, m))
        })
    }
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::ContactCreated { .. } => "contact_created",
            Trigger::TagAdded { .. } => "tag_added",
            Trigger::Inactive { .. } => "inactive",
            Trigger::Event { .. } => "event",
            Trigger::Schedule { .. } => "schedule",
            Trigger::StaffLeft => "staff_left",
            Trigger::Date(_) => "date",
        }
    }
    /// The event-log entries that fire it: (kind, name).
    pub fn log_match(&self) -> Option<(&'static str, Option<&str>)> {
        match self {
            Trigger::ContactCreated { via } => {
                Some(("contact_created", via.as_ref().map(|v| v.value.as_str())))
            }
            Trigger::TagAdded { tag } => Some(("tag_added", Some(tag))),
            Trigger::Event { name } => Some(("event", Some(name))),
            Trigger::StaffLeft => Some(("event", Some(STAFF_LEFT_EVENT))),
            Trigger::Inactive { .. } | Trigger::Schedule { .. } | Trigger::Date(_) => None,
        }
    }
    /// Triggers fired by a cron tick rather than by an entry in the event log.
    pub fn is_ticked(&self) -> bool {
        self.tick_cron().is_some()
    }
    /// The cron a ticked trigger runs on.
    pub fn tick_cron(&self) -> Option<&CronSchedule> {
        match self {
            Trigger::Inactive { check, .. } => Some(check),
            Trigger::Schedule { cron } => Some(cron),
            Trigger::Date(d) => Some(&d.check),
            _ => None,
        }
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
mod split_tests {
    use super::*;

    fn split(weights: &[u32]) -> SplitStep {
        SplitStep {
            arms: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Arm {
                    name: Located::new(format!("arm{i}"), Pos::new(1, 1)),
                    weight: *w,
                    steps: vec![],
                })
                .collect(),
        }
    }

    fn wf(holdout: Option<u32>) -> Workflow {
        Workflow {
            name: "ab".into(),
            description: None,
            enabled: true,
            trigger: Trigger::ContactCreated { via: None },
            audience: None,
            entry: Entry::Once,
            steps: vec![],
            exit_when: None,
            entry_existing: false,
            holdout,
            goal: None,
            exit_on_goal: true,
            throttle: None,
            file: PathBuf::from("ab.yaml"),
        }
    }

    /// Over 10,000 contacts each arm's share is within 1.5 points of its weight.
    #[test]
    fn arms_take_their_weights_over_ten_thousand_contacts() {
        for weights in [&[50, 50][..], &[10, 30, 60], &[1, 1, 1, 1], &[95, 5]] {
            let sp = split(weights);
            let w = wf(None);
            let mut counts = vec![0u32; weights.len()];
            for i in 0..10_000 {
                let arm = w.arm(&sp, "offer", &format!("c{i:07}"));
                let k: usize = arm.name.value[3..].parse().unwrap();
                counts[k] += 1;
            }
            let total: u32 = weights.iter().sum();
            for (k, n) in counts.iter().enumerate() {
                let want = f64::from(weights[k]) / f64::from(total);
                let got = f64::from(*n) / 10_000.0;
                assert!(
                    (got - want).abs() < 0.015,
                    "weights {weights:?}: arm {k} got {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn the_arm_is_stable_and_depends_on_workflow_contact_and_split() {
        let sp = split(&[50, 50]);
        let w = wf(None);
        // The same answer every time (re-entry, dry-run, daemon, another machine).
        let first: Vec<String> = (0..200)
            .map(|i| w.arm(&sp, "offer", &format!("c{i}")).name.value.clone())
            .collect();
        let again: Vec<String> = (0..200)
            .map(|i| w.arm(&sp, "offer", &format!("c{i}")).name.value.clone())
            .collect();
        assert_eq!(first, again);
        // Pinned values: a change of the hash would move running tests' contacts.
        assert_eq!(
            stable_hash(&["ab", "c1", "offer"]),
            0x615e_e21b_9b29_2e5a_u64
        );
        // Another split in the same workflow is independent of the first.
        let other: Vec<String> = (0..200)
            .map(|i| w.arm(&sp, "second", &format!("c{i}")).name.value.clone())
            .collect();
        let same = first.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!((60..140).contains(&same), "{same} of 200 agree");
    }

    #[test]
    fn the_holdout_takes_its_share() {
        let w = wf(Some(1000));
        let held = (0..10_000)
            .filter(|i| w.held_out(&format!("c{i:07}")))
            .count();
        assert!((850..1150).contains(&held), "{held}");
        assert!((0..1000).all(|i| !wf(None).held_out(&format!("c{i}"))));
    }
}

#[cfg(test)]
mod goal_tests {
    use chrono::{TimeZone, Utc};

    #[test]
    fn an_event_goal_counts_events_inside_the_window_only() {
        let (wf, d) = crate::workflow::load_str(
            std::path::Path::new("g.yaml"),
            "trigger: { contact_created: {} }\ngoal: { event: purchase, where: { field: item, equals: scarf }, within: 1d }\nsteps:\n  - wait: 1h\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let wf = wf.unwrap().workflow;
        let g = wf.goal.as_ref().unwrap();
        assert!(wf.exit_on_goal);
        let t = |h: i64| {
            Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::hours(h)
        };
        let ev = |h: i64, item: &str| crate::contact::EventFact {
            name: "purchase".into(),
            at: t(h),
            properties: serde_json::json!({ "item": item })
                .as_object()
                .unwrap()
                .clone(),
        };
        let c = |events| crate::contact::Contact {
            id: "c".into(),
            events,
            ..Default::default()
        };
        // Before entering, after the window, or another item: no.
        let none = c(vec![ev(-1, "scarf"), ev(25, "scarf"), ev(2, "hat")]);
        assert_eq!(g.converted_at(&none, t(30), t(0)), None);
        // The first one inside the window.
        let two = c(vec![ev(5, "scarf"), ev(3, "scarf")]);
        assert_eq!(g.converted_at(&two, t(30), t(0)), Some(t(3)));
        // Not yet happened as of now.
        assert_eq!(g.converted_at(&two, t(2), t(0)), None);
    }
}

#[cfg(test)]
mod date_trigger_tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn trigger(src: &str) -> super::DateTrigger {
        let (wf, d) = crate::workflow::load_str(
            std::path::Path::new("d.yaml"),
            &format!("trigger: {{ date: {src} }}\nsteps:\n  - wait: 1d\n"),
        );
        assert!(d.is_empty(), "{d:?}");
        match wf.unwrap().workflow.trigger {
            super::Trigger::Date(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_birthday_fires_at_the_local_time_of_the_contact() {
        let t = trigger("{ field: birthday, offset: -1d, at: \"10:00\" }");
        let sh = chrono_tz::Asia::Shanghai;
        let ny = chrono_tz::America::New_York;
        let v = json!("1990-06-15");
        // 10:00 in Shanghai on the 14th is 02:00 UTC.
        let at = |y, m, d, h, mi| Utc.with_ymd_and_hms(y, m, d, h, mi, 0).unwrap();
        assert_eq!(t.due(&v, sh, at(2030, 6, 14, 1, 59)), None);
        let (day, when) = t.due(&v, sh, at(2030, 6, 14, 2, 0)).unwrap();
        assert_eq!(day.to_string(), "2030-06-14");
        assert_eq!(when, at(2030, 6, 14, 2, 0));
        // Still due later that day (a daemon that was down), not a day later.
        assert!(t.due(&v, sh, at(2030, 6, 15, 1, 0)).is_some());
        assert_eq!(t.due(&v, sh, at(2030, 6, 15, 2, 1)), None);
        // In New York it is 10:00 EDT = 14:00 UTC.
        assert_eq!(t.due(&v, ny, at(2030, 6, 14, 13, 59)), None);
        assert!(t.due(&v, ny, at(2030, 6, 14, 14, 0)).is_some());
        // A timestamp is taken on its date in the contact's zone: 1990-06-14T20:00Z
        // is the 15th in Shanghai.
        let ts = json!("1990-06-14T20:00:00Z");
        assert!(t.due(&ts, sh, at(2030, 6, 14, 2, 0)).is_some());
        // Not a date: never.
        assert_eq!(t.due(&json!("soon"), sh, at(2030, 6, 14, 2, 0)), None);
        assert_eq!(t.due(&json!(19900615), sh, at(2030, 6, 14, 2, 0)), None);
    }

    #[test]
    fn a_29_february_birthday_falls_on_the_28th_in_common_years() {
        let t = trigger("{ field: birthday, at: \"09:00\" }");
        let utc = chrono_tz::UTC;
        let v = json!("2000-02-29");
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 9, 30, 0).unwrap();
        assert_eq!(
            t.due(&v, utc, at(2031, 2, 28)).unwrap().0.to_string(),
            "2031-02-28"
        );
        assert_eq!(t.due(&v, utc, at(2031, 3, 1)), None);
        assert_eq!(t.due(&v, utc, at(2032, 2, 28)), None);
        assert_eq!(
            t.due(&v, utc, at(2032, 2, 29)).unwrap().0.to_string(),
            "2032-02-29"
        );
    }

    #[test]
    fn once_fires_for_the_date_itself_only() {
        let t = trigger("{ field: renewal_at, offset: -3d, at: \"10:00\", every: once }");
        let utc = chrono_tz::UTC;
        let v = json!("2030-06-20");
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 11, 0, 0).unwrap();
        assert_eq!(
            t.due(&v, utc, at(2030, 6, 17)).unwrap().0.to_string(),
            "2030-06-17"
        );
        assert_eq!(t.due(&v, utc, at(2031, 6, 17)), None);
    }

    #[test]
    fn validate_reads_offsets_and_refuses_mistakes() {
        for (src, want) in [
            ("{ field: b, offset: 36h }", "must be whole days"),
            ("{ field: b, at: \"25:00\" }", "must be a time HH:MM"),
            ("{ field: b, every: yaer }", "did you mean \"year\"?"),
            ("{ offset: 1d }", "needs field:"),
        ] {
            let (_, d) = crate::workflow::load_str(
                std::path::Path::new("d.yaml"),
                &format!("trigger: {{ date: {src} }}\nsteps:\n  - wait: 1d\n"),
            );
            let all: String = d
                .iter()
                .map(|x| format!("{} {}", x.message, x.suggestion.clone().unwrap_or_default()))
                .collect();
            assert!(all.contains(want), "{src}: {all}");
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use chrono::{NaiveTime, TimeZone, Utc, Weekday};

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn a_weekday_window_in_the_contacts_zone() {
        let w = Window {
            from: t(10, 0),
            to: t(12, 0),
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            on: vec![],
        };
        let sh = chrono_tz::Asia::Shanghai;
        // Friday 2030-06-14 11:59 Shanghai is inside; 12:00 is not.
        let at = |d, h, m| {
            sh.with_ymd_and_hms(2030, 6, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert!(w.contains(at(14, 11, 59), sh));
        assert!(!w.contains(at(14, 12, 0), sh));
        assert!(w.contains(at(14, 10, 0), sh));
        // Friday after noon: next opening Monday 10:00.
        assert_eq!(w.next_open(at(14, 12, 0), sh), at(17, 10, 0));
        // Saturday: Monday. Monday 09:00: that morning.
        assert_eq!(w.next_open(at(15, 9, 0), sh), at(17, 10, 0));
        assert_eq!(w.next_open(at(17, 9, 0), sh), at(17, 10, 0));
        // The same instant is Friday 22:00 in New York: outside.
        let ny = chrono_tz::America::New_York;
        assert!(!w.contains(at(15, 10, 0), ny));
    }

    #[test]
    fn a_window_on_calendar_days() {
        let w = Window {
            from: t(10, 0),
            to: t(22, 0),
            days: vec![],
            on: vec!["双11".into(), "618".into()],
        };
        let sh = chrono_tz::Asia::Shanghai;
        let at = |m, d, h| {
            sh.with_ymd_and_hms(2030, m, d, h, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert!(w.contains(at(11, 11, 12), sh));
        assert!(!w.contains(at(11, 12, 12), sh));
        assert_eq!(w.next_open(at(7, 1, 9), sh), at(11, 11, 10));
        let next_618 = sh
            .with_ymd_and_hms(2031, 6, 18, 10, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(w.next_open(at(11, 11, 23), sh), next_618);
    }

    #[test]
    fn send_at_is_the_next_such_local_time() {
        let sh = chrono_tz::Asia::Shanghai;
        let at = |d, h, m| {
            sh.with_ymd_and_hms(2030, 6, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(next_local_time(t(10, 0), at(14, 9, 0), sh), at(14, 10, 0));
        assert_eq!(next_local_time(t(10, 0), at(14, 10, 0), sh), at(14, 10, 0));
        assert_eq!(next_local_time(t(10, 0), at(14, 10, 1), sh), at(15, 10, 0));
        // A DST gap: 02:30 does not exist in New York on 2030-03-10; the hour after.
        let ny = chrono_tz::America::New_York;
        let before = ny
            .with_ymd_and_hms(2030, 3, 10, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let got = next_local_time(t(2, 30), before, ny).with_timezone(&ny);
        assert_eq!(got.format("%Y-%m-%d %H:%M").to_string(), "2030-03-10 03:30");
    }
}
