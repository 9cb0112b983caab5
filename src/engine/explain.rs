//! `dry-run --explain ID`: for one contact and every workflow, which
//! condition held or failed and why, in words a marketer can act on.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::audience::eval::holds;
use crate::audience::{Condition, FieldTest, Literal, OwnerTest};
use crate::contact::Contact;
use crate::engine::plan::PlannedStep;
use crate::store::plan_reads::EnrollmentRow;
use crate::workflow::{Entry, Trigger, Workflow};

/// What the explanation needs to know besides the contact and the workflow.
pub struct ExplainInput<'a> {
    pub wf: &'a Workflow,
    pub contact: &'a Contact,
    pub at: DateTime<Utc>,
    pub tz: Tz,
    pub enrollments: &'a [EnrollmentRow],
    /// Unprocessed event-log entries for this contact that fire this workflow.
    pub pending_triggers: usize,
    /// Of those, the ones from before the workflow's activation (they do not enroll).
    pub before_activation: usize,
    /// When the workflow was activated (`None`: no daemon has loaded it yet).
    pub activated_at: Option<DateTime<Utc>>,
    /// The steps it would get if it entered now (planned by the same planner).
    pub would_do: Option<&'a [PlannedStep]>,
}

pub fn explain(input: &ExplainInput<'_>) -> String {
    let ExplainInput {
        wf,
        contact: c,
        at,
        tz,
        ..
    } = *input;
    let mut out = String::new();
    let mark = |b: bool| if b { "✓" } else { "✗" };
    let _ = writeln!(
        out,
        "{} ({}){}",
        wf.name,
        wf.file.display(),
        if wf.enabled { "" } else { " — disabled" }
    );

    match input.activated_at {
        Some(t) => {
            let _ = writeln!(
                out,
                "  activated {}: trigger events before it do not enroll",
                t.with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  not activated yet: the daemon activates it when it first loads it; trigger events before that do not enroll"
            );
        }
    }
    if input.before_activation > 0 {
        let _ = writeln!(
            out,
            "  ✗ {} trigger event(s) in the event log are from before the activation: skipped (before_activation)",
            input.before_activation
        );
    }
    // Trigger.
    let trigger_ok = match &wf.trigger {
        Trigger::ContactCreated { .. } => {
            let ok = input.pending_triggers > 0;
            let _ = writeln!(
                out,
                "  {} trigger contact_created: contact created {}; {} unprocessed creation in the event log",
                mark(ok),
                c.created_at
                    .with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                input.pending_triggers
            );
            ok
        }
        Trigger::TagAdded { tag } => {
            let ok = input.pending_triggers > 0;
            let has = c.tags.contains(tag);
            let _ = writeln!(
                out,
                "  {} trigger tag_added {tag}: contact {} the tag; {} unprocessed tag_added {tag} in the event log",
                mark(ok),
                if has { "has" } else { "does not have" },
                input.pending_triggers
            );
            ok
        }
        Trigger::Event { name } => {
            let ok = input.pending_triggers > 0;
            let _ = writeln!(
                out,
                "  {} trigger event {name}: {} unprocessed {name} events in the event log",
                mark(ok),
                input.pending_triggers
            );
            ok
        }
        Trigger::StaffLeft => {
            let ok = input.pending_triggers > 0;
            let _ = writeln!(
                out,
                "  {} trigger staff_left: {} unprocessed {} events in the event log (a follow-user left; see nurture wecom resigned)",
                mark(ok),
                input.pending_triggers,
                crate::workflow::model::STAFF_LEFT_EVENT
            );
            ok
        }
        Trigger::Inactive { quiet_for, check } => {
            let since = c.quiet_since();
            let threshold = at - quiet_for.to_chrono();
            let ok = since < threshold;
            let days = (at - since).num_hours() as f64 / 24.0;
            let _ = writeln!(
                out,
                "  {} trigger inactive for {quiet_for} (checked \"{}\": {}): quiet since {} ({days:.1} days){}",
                mark(ok),
                check.source(),
                check.describe(),
                since
                    .with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                if ok { "" } else { ", not long enough" }
            );
            ok
        }
        Trigger::Schedule { cron } => {
            let _ = writeln!(
                out,
                "  ✓ trigger schedule \"{}\": {}",
                cron.source(),
                cron.describe()
            );
            true
        }
        Trigger::Date(d) => {
            let due = crate::engine::sources::date_due(wf, c, at, tz);
            let _ = writeln!(
                out,
                "  {} trigger date {} {:+}d at {} ({}): {}",
                mark(due.is_some()),
                d.calendar.as_deref().unwrap_or(&d.field.value),
                d.offset_days,
                d.at.format("%H:%M"),
                if d.every_year { "every year" } else { "once" },
                match (&due, c.attrs.get(&d.field.value)) {
                    (Some(day), _) => format!("due now, for {day}"),
                    (None, Some(v)) => format!("{} is {v}: not due now", d.field.value),
                    (None, None) => format!("the contact has no {}", d.field.value),
                }
            );
            due.is_some()
        }
    };

    // Entry policy.
    let mine: Vec<&EnrollmentRow> = input
        .enrollments
        .iter()
        .filter(|e| e.workflow == wf.name)
        .collect();
    let entry_ok = match wf.entry {
        Entry::Once => {
            let ok = mine.is_empty();
            let _ = writeln!(
                out,
                "  {} entry once: {}",
                mark(ok),
                if ok {
                    "never enrolled".to_string()
                } else {
                    format!(
                        "already enrolled {}",
                        mine[0]
                            .started_at
                            .with_timezone(&tz)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                }
            );
            ok
        }
        Entry::EveryTime => {
            let _ = writeln!(
                out,
                "  ✓ entry every_time ({} earlier enrollments)",
                mine.len()
            );
            true
        }
        Entry::OncePer(d) => {
            let last = mine.iter().map(|e| e.started_at).max();
            let ok = last.is_none_or(|l| l <= at - d.to_chrono());
            let _ = writeln!(
                out,
                "  {} entry once per {d}: {}",
                mark(ok),
                match last {
                    None => "never enrolled".to_string(),
                    Some(l) => format!(
                        "last enrolled {}",
                        l.with_timezone(&tz)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                }
            );
            ok
        }
    };
    for e in &mine {
        let _ = writeln!(
            out,
            "    enrollment #{} {} (entry {}), next step {}",
            e.id,
            e.status,
            e.entry_key,
            e.step_id.as_deref().unwrap_or("-")
        );
        // A running enrollment checks its goal before each step, counting
        // events from its own start: say what that check finds now, so the
        // explanation agrees with the preview's exit.
        if e.status == crate::store::states::EnrollmentStatus::Active
            && let Some(cond) = &wf.exit_when
        {
            let reached = crate::audience::eval::holds_since(cond, c, at, e.started_at);
            let _ = writeln!(
                out,
                "      {} exit_when (events since it entered {}): {}",
                mark(!reached),
                e.started_at
                    .with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                if reached {
                    "holds: it leaves before its next step (goal_reached)"
                } else {
                    "does not hold: it goes on"
                }
            );
            let since = Contact {
                events: c
                    .events
                    .iter()
                    .filter(|ev| ev.at >= e.started_at)
                    .cloned()
                    .collect(),
                ..c.clone()
            };
            tree(&mut out, cond, &since, at, 4);
        }
        // Waiting at a wait_until step: for what, since when, and whether
        // it would end now.
        if let (Some(since), Some(step)) = (
            e.wait_since,
            e.step_id.as_deref().and_then(|id| wf.step(id)),
        ) && let crate::workflow::StepAction::WaitUntil(w) = &step.action
        {
            let deadline = since + w.timeout.to_chrono();
            let (met, what) = match &w.until {
                crate::workflow::WaitFor::Event { name, condition } => (
                    crate::audience::eval::holds_since(condition, c, at, since),
                    format!(
                        "event {name} logged since {}",
                        since
                            .with_timezone(&tz)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ),
                crate::workflow::WaitFor::Condition(cond) => {
                    (holds(cond, c, at), "the condition".to_string())
                }
            };
            let _ = writeln!(
                out,
                "      wait_until: waiting for {what}; {}; timeout at {}",
                if met {
                    "it came: takes then at its next pass"
                } else if at >= deadline {
                    "timed out: takes else at its next pass"
                } else {
                    "not yet"
                },
                deadline
                    .with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            tree(&mut out, w.until.condition(), c, at, 4);
        }
    }

    // Holdout and split arms: fixed by a hash of the contact's id.
    if let Some(bp) = wf.holdout {
        let _ = writeln!(
            out,
            "  {} holdout {}%: {}",
            if wf.held_out(&c.id) { "•" } else { "·" },
            f64::from(bp) / 100.0,
            if wf.held_out(&c.id) {
                "in the control group (enrolled and measured, never messaged or assigned)"
            } else {
                "not held out"
            }
        );
    }
    for s in wf.all_steps() {
        if let crate::workflow::StepAction::Split(sp) = &s.action {
            let _ = writeln!(
                out,
                "  · split {}: arm {}",
                s.id,
                wf.arm(sp, &s.id, &c.id).name.value
            );
        }
    }

    // Audience.
    let audience_ok = match &wf.audience {
        None => {
            let _ = writeln!(out, "  ✓ audience: every contact");
            true
        }
        Some(cond) => {
            let ok = holds(cond, c, at);
            let _ = writeln!(out, "  {} audience:", mark(ok));
            tree(&mut out, cond, c, at, 2);
            ok
        }
    };
    let goal = match &wf.exit_when {
        None => false,
        Some(cond) => {
            // A goal counts events from the moment the contact enters (now),
            // not its history.
            let entering = Contact {
                events: c.events.iter().filter(|e| e.at >= at).cloned().collect(),
                ..c.clone()
            };
            let c = &entering;
            let reached = holds(cond, c, at);
            let _ = writeln!(
                out,
                "  {} exit_when for an entry now (events after entry only) {}:",
                mark(!reached),
                if reached {
                    "holds: the contact is at the goal and would leave"
                } else {
                    "does not hold"
                }
            );
            tree(&mut out, cond, c, at, 2);
            reached
        }
    };

    if let Some(g) = &wf.goal {
        let what = match &g.on {
            crate::workflow::WaitFor::Event { name, .. } => format!("event {name}"),
            crate::workflow::WaitFor::Condition(_) => "the condition".to_string(),
        };
        let _ = writeln!(
            out,
            "  · goal: {what} within {} of entering ({})",
            g.within,
            if wf.exit_on_goal {
                "the contact then leaves"
            } else {
                "measured, the contact stays"
            }
        );
    }
    let enters = wf.enabled && trigger_ok && entry_ok && audience_ok;
    if enters {
        let _ = writeln!(
            out,
            "  → would enter{}",
            if goal {
                ", and leave at once (goal reached)"
            } else {
                ""
            }
        );
        if let Some(steps) = input.would_do {
            for s in steps {
                let _ = writeln!(out, "      step {}: {}", s.step, describe_step(s, tz));
            }
        }
    } else {
        let why: Vec<&str> = [
            (!wf.enabled, "the workflow is disabled"),
            (!trigger_ok, "the trigger does not fire"),
            (!entry_ok, "the entry policy refuses"),
            (!audience_ok, "not in the audience"),
        ]
        .into_iter()
        .filter_map(|(b, s)| b.then_some(s))
        .collect();
        let _ = writeln!(out, "  → would not enter: {}", why.join(", "));
    }
    out
}

fn describe_step(s: &PlannedStep, tz: Tz) -> String {
    use crate::engine::plan::Action::*;
    match &s.action {
        Send {
            channel,
            to,
            body,
            at,
            tz: ctz,
            ..
        } => {
            format!(
                "send on {channel} to {to} at {}: {}",
                at.with_timezone(ctz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                body.replace('\n', " ")
            )
        }
        Assign { salesperson, .. } => format!("assign to {salesperson}"),
        Tag { add, remove, .. } => format!("tag +{:?} -{:?}", add, remove),
        Wait { until } => format!(
            "wait until {}",
            until
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        Split { arm } => format!("split: arm {arm}"),
        Webhook { channel, body, .. } => format!("webhook {channel}: {body}"),
        Set { values } => format!(
            "set {}",
            values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Notify {
            salesperson,
            channel,
            ..
        } => format!("notify {salesperson} on {channel}"),
        WaitEnded { met, why } => format!(
            "wait_until ends: {} ({why})",
            if *met { "then" } else { "else" }
        ),
        Exit { reason } => format!("exit ({reason})"),
        Skip { reason } => format!("skip ({reason})"),
    }
}

/// The condition tree, each node marked with whether it held, and the
/// contact's actual value beside each leaf.
fn tree(out: &mut String, cond: &Condition, c: &Contact, at: DateTime<Utc>, depth: usize) {
    let pad = "  ".repeat(depth);
    let m = if holds(cond, c, at) { "✓" } else { "✗" };
    match cond {
        Condition::Segment(name) => {
            let _ = writeln!(out, "{pad}{m} segment {} (not resolved)", name.value);
        }
        Condition::All(cs) | Condition::Any(cs) => {
            let word = if matches!(cond, Condition::All(_)) {
                "all of"
            } else {
                "any of"
            };
            let _ = writeln!(out, "{pad}{m} {word}:");
            for sub in cs {
                tree(out, sub, c, at, depth + 1);
            }
        }
        Condition::Not(inner) => {
            let _ = writeln!(out, "{pad}{m} not:");
            tree(out, inner, c, at, depth + 1);
        }
        Condition::Tag(t) => {
            let tags: Vec<&str> = c.tags.iter().map(String::as_str).collect();
            let _ = writeln!(out, "{pad}{m} tag {t} (tags: [{}])", tags.join(", "));
        }
        Condition::Owner(o) => {
            let want = match o {
                OwnerTest::None => "none".to_string(),
                OwnerTest::Any => "any".to_string(),
                OwnerTest::Is(id) => id.clone(),
            };
            let _ = writeln!(
                out,
                "{pad}{m} owner {want} (owner: {})",
                c.owner.as_deref().unwrap_or("none")
            );
        }
        Condition::Event {
            name,
            within,
            at_least,
            where_,
        } => {
            let n = c
                .events
                .iter()
                .filter(|e| {
                    &e.name == name
                        && within.is_none_or(|w| e.at > at - w.to_chrono())
                        && where_.as_ref().is_none_or(|w| {
                            crate::audience::eval::property_holds(w, &e.properties, at)
                        })
                })
                .count();
            let _ = writeln!(
                out,
                "{pad}{m} event {name}{}{} ({n} found)",
                within.map(|w| format!(" within {w}")).unwrap_or_default(),
                if *at_least > 1 {
                    format!(" at least {at_least}")
                } else {
                    String::new()
                }
            );
        }
        Condition::Field { field, test } => {
            let value = field_value(c, field);
            let _ = writeln!(
                out,
                "{pad}{m} field {} {} (value: {value})",
                field.value,
                describe_test(test)
            );
        }
    }
}

fn describe_test(t: &FieldTest) -> String {
    let lit = |l: &Literal| match l {
        Literal::Str(s) => format!("{s:?}"),
        Literal::Num(n) => n.to_string(),
        Literal::Bool(b) => b.to_string(),
    };
    let list = |ls: &[Literal]| format!("[{}]", ls.iter().map(lit).collect::<Vec<_>>().join(", "));
    match t {
        FieldTest::Equals(l) => format!("equals {}", lit(l)),
        FieldTest::NotEquals(l) => format!("not_equals {}", lit(l)),
        FieldTest::In(ls) => format!("in {}", list(ls)),
        FieldTest::NotIn(ls) => format!("not_in {}", list(ls)),
        FieldTest::Contains(s) => format!("contains {s:?}"),
        FieldTest::StartsWith(s) => format!("starts_with {s:?}"),
        FieldTest::Gt(l) => format!("gt {}", lit(l)),
        FieldTest::Gte(l) => format!("gte {}", lit(l)),
        FieldTest::Lt(l) => format!("lt {}", lit(l)),
        FieldTest::Lte(l) => format!("lte {}", lit(l)),
        FieldTest::Exists(b) => format!("exists {b}"),
        FieldTest::OlderThan(d) => format!("older_than {d}"),
        FieldTest::NewerThan(d) => format!("newer_than {d}"),
    }
}

fn field_value(c: &Contact, field: &str) -> String {
    let v = c.template_value();
    match v.get(field) {
        None | Some(serde_json::Value::Null) => "missing".to_string(),
        Some(serde_json::Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}
