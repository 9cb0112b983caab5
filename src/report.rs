//! `nurture report WORKFLOW`: conversion per workflow, per split arm and for
//! the holdout, with 95% intervals and the lift over the holdout; and the
//! funnel, step by step. Read from the store: enrollments, their step
//! records (arms, skips, exits), the outbox (sent) and the goal's events.
//!
//! A contact converts when the workflow's goal holds within its window
//! after entering: for an event goal, the first such event in the store
//! (also after the enrollment ended); for a condition goal, the moment the
//! plan saw it hold (recorded as an exit `goal_reached`).

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyPool;

use crate::store::plan_reads::{from_ms, ms, parse_props};
use crate::store::reports;
use crate::workflow::{StepAction, WaitFor, Workflow};

/// Conversion of one group of enrollments.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub group: String,
    pub entered: u64,
    pub converted: u64,
    pub rate: f64,
    /// Wilson score interval, 95%.
    pub ci: [f64; 2],
}

impl Group {
    pub fn new(group: impl Into<String>, entered: u64, converted: u64) -> Group {
        let rate = if entered == 0 {
            0.0
        } else {
            converted as f64 / entered as f64
        };
        Group {
            group: group.into(),
            entered,
            converted,
            rate,
            ci: wilson(converted, entered),
        }
    }
}

/// The lift of the treated over the holdout.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lift {
    /// Difference of the rates, in points of probability (0.041 = 4.1 points).
    pub absolute: f64,
    /// Relative to the holdout's rate (`None` when the holdout never converted).
    pub relative: Option<f64>,
    /// Two-sided p-value of the two-proportion z-test.
    pub p_value: f64,
    pub significant: bool,
}

/// One step of the funnel.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct StepRow {
    pub step: String,
    pub kind: String,
    /// Enrollments that reached the step (ran it, or skipped it).
    pub reached: u64,
    /// Messages of the step delivered.
    pub sent: u64,
    /// Skips by reason code.
    pub skipped: BTreeMap<String, u64>,
    /// Of those that reached it, how many converted at or after it.
    pub converted_after: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub workflow: String,
    pub goal: Option<String>,
    pub since: Option<String>,
    /// `all`, then `arm STEP=ARM` per split arm, then `treatment` and
    /// `holdout` when the workflow has a holdout.
    pub groups: Vec<Group>,
    pub lift: Option<Lift>,
    pub steps: Vec<StepRow>,
    /// Each enrollment counted, for series over time (the console's chart
    /// per arm); not part of the report's output.
    #[serde(skip)]
    pub enrollments: Vec<Counted>,
}

/// One enrollment as the report counted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub id: i64,
    pub started: DateTime<Utc>,
    pub converted: Option<DateTime<Utc>>,
    /// The groups it is in besides `all`: `STEP=ARM` per split arm taken,
    /// and `treatment` or `holdout` when the workflow has a holdout.
    pub groups: Vec<String>,
}

/// A group's entered, sent and converted per day.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DailyGroup {
    pub group: String,
    pub entered: Vec<u64>,
    pub sent: Vec<u64>,
    pub converted: Vec<u64>,
}

impl Report {
    /// Per group (`all`, each arm, `treatment`, `holdout`), entered,
    /// messages sent and converted per day: `days` days from day number
    /// `first` (days since the epoch in local time, `offset_ms` from UTC).
    /// `sent` gives (enrollment, sent at) of the workflow's messages.
    pub fn daily(
        &self,
        sent: &[(i64, DateTime<Utc>)],
        offset_ms: i64,
        first: i64,
        days: usize,
    ) -> Vec<DailyGroup> {
        const DAY: i64 = 86_400_000;
        let slot = |t: DateTime<Utc>| -> Option<usize> {
            let d = (ms(t) + offset_ms).div_euclid(DAY) - first;
            usize::try_from(d).ok().filter(|d| *d < days)
        };
        let names: Vec<String> = self
            .groups
            .iter()
            .map(|g| g.group.strip_prefix("arm ").unwrap_or(&g.group).to_string())
            .collect();
        let mut out: Vec<DailyGroup> = names
            .iter()
            .map(|n| DailyGroup {
                group: n.clone(),
                entered: vec![0; days],
                sent: vec![0; days],
                converted: vec![0; days],
            })
            .collect();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut of: HashMap<i64, Vec<usize>> = HashMap::new();
        for e in &self.enrollments {
            let gs: Vec<usize> = std::iter::once("all")
                .chain(e.groups.iter().map(String::as_str))
                .filter_map(|g| index.get(g).copied())
                .collect();
            for &g in &gs {
                if let Some(d) = slot(e.started) {
                    out[g].entered[d] += 1;
                }
                if let Some(d) = e.converted.and_then(slot) {
                    out[g].converted[d] += 1;
                }
            }
            of.insert(e.id, gs);
        }
        for (id, at) in sent {
            let (Some(gs), Some(d)) = (of.get(id), slot(*at)) else {
                continue;
            };
            for &g in gs {
                out[g].sent[d] += 1;
            }
        }
        out
    }
}

/// The 95% Wilson score interval of k successes in n.
pub fn wilson(k: u64, n: u64) -> [f64; 2] {
    if n == 0 {
        return [0.0, 0.0];
    }
    let z = 1.959_963_984_540_054_f64;
    let n = n as f64;
    let p = k as f64 / n;
    let den = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / den;
    let half = z * ((p * (1.0 - p) / n) + z * z / (4.0 * n * n)).sqrt() / den;
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// The standard normal CDF (Abramowitz & Stegun 7.1.26 for erf; error < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * (x.abs() / std::f64::consts::SQRT_2));
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + y)
    } else {
        0.5 * (1.0 - y)
    }
}

/// Treated (k1 of n1) against the holdout (k0 of n0): the pooled
/// two-proportion z-test, two-sided, at 95%.
pub fn lift(k1: u64, n1: u64, k0: u64, n0: u64) -> Option<Lift> {
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let (p1, p0) = (k1 as f64 / n1 as f64, k0 as f64 / n0 as f64);
    let pooled = (k1 + k0) as f64 / (n1 + n0) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n0 as f64)).sqrt();
    let p_value = if se == 0.0 {
        1.0
    } else {
        2.0 * (1.0 - normal_cdf(((p1 - p0) / se).abs()))
    };
    Some(Lift {
        absolute: p1 - p0,
        relative: (p0 > 0.0).then(|| (p1 - p0) / p0),
        p_value,
        significant: p_value < 0.05,
    })
}

/// (enrollment, step, action, detail, ran at).
type StepRecord = (i64, String, String, Option<String>, DateTime<Utc>);
/// A goal event's time and properties.
type GoalEvent = (DateTime<Utc>, serde_json::Map<String, serde_json::Value>);

struct Enrolled {
    contact: String,
    started: DateTime<Utc>,
    converted: Option<DateTime<Utc>>,
    arms: Vec<String>,
    holdout: bool,
}

/// The report of `wf` over enrollments started at or after `since`.
pub async fn build(pool: &AnyPool, wf: &Workflow, since: Option<DateTime<Utc>>) -> Result<Report> {
    let since_ms = since.map(ms).unwrap_or(i64::MIN);
    let mut enrolled: HashMap<i64, Enrolled> = HashMap::new();
    for (id, contact, started) in reports::enrollments(pool, &wf.name, since_ms).await? {
        enrolled.insert(
            id,
            Enrolled {
                contact,
                started: from_ms(started),
                converted: None,
                arms: vec![],
                holdout: false,
            },
        );
    }
    // Step records: arms, skips, exits, and when each step was reached.
    let mut reached: Vec<StepRecord> = Vec::new();
    for (id, step, action, detail, at) in reports::steps(pool, &wf.name, since_ms).await? {
        let at = from_ms(at);
        if let Some(e) = enrolled.get_mut(&id) {
            if action == "split" && step == crate::engine::plan::HOLDOUT_STEP {
                e.holdout = true;
            } else if action == "split" {
                e.arms
                    .push(format!("{step}={}", detail.clone().unwrap_or_default()));
            }
            // A condition goal is seen by the plan, which exits on it.
            if action == "exit"
                && detail.as_deref() == Some("goal_reached")
                && matches!(wf.goal.as_ref().map(|g| &g.on), Some(WaitFor::Condition(_)))
            {
                e.converted = Some(at);
            }
        }
        reached.push((id, step, action, detail, at));
    }
    // Event goals: the first goal event in each enrollment's window.
    if let Some(g) = &wf.goal
        && let WaitFor::Event { name, condition } = &g.on
    {
        let mut events: HashMap<String, Vec<GoalEvent>> = HashMap::new();
        for (contact, at, props) in reports::goal_events(pool, name, &wf.name, since_ms).await? {
            events
                .entry(contact)
                .or_default()
                .push((from_ms(at), parse_props(props.as_deref())));
        }
        let now = Utc::now();
        for e in enrolled.values_mut() {
            let end = e.started + g.within.to_chrono();
            e.converted = events
                .get(&e.contact)
                .into_iter()
                .flatten()
                .filter(|(at, props)| {
                    *at >= e.started
                        && *at <= end
                        && crate::workflow::event_passes(condition, name, props, now)
                })
                .map(|(at, _)| *at)
                .min();
        }
    }

    let count = |f: &dyn Fn(&Enrolled) -> bool| -> (u64, u64) {
        let n = enrolled.values().filter(|e| f(e)).count() as u64;
        let k = enrolled
            .values()
            .filter(|e| f(e) && e.converted.is_some())
            .count() as u64;
        (n, k)
    };
    let mut groups = Vec::new();
    let (n, k) = count(&|_| true);
    groups.push(Group::new("all", n, k));
    for s in wf.all_steps() {
        if let StepAction::Split(sp) = &s.action {
            for a in &sp.arms {
                let key = format!("{}={}", s.id, a.name.value);
                let (n, k) = count(&|e| e.arms.contains(&key));
                groups.push(Group::new(format!("arm {key}"), n, k));
            }
        }
    }
    let mut lift_of = None;
    if wf.holdout.is_some() {
        let (n1, k1) = count(&|e| !e.holdout);
        let (n0, k0) = count(&|e| e.holdout);
        groups.push(Group::new("treatment", n1, k1));
        groups.push(Group::new("holdout", n0, k0));
        lift_of = lift(k1, n1, k0, n0);
    }

    // The funnel, in the workflow's step order.
    let mut sent: HashMap<(i64, String), u64> = HashMap::new();
    for key in reports::sent(pool, &wf.name).await? {
        *sent.entry(key).or_insert(0) += 1;
    }
    let (mut rows, index) = empty_funnel(wf);
    for (id, step, action, detail, at) in &reached {
        let Some(&i) = index.get(step) else { continue };
        let Some(e) = enrolled.get(id) else { continue };
        let row = &mut rows[i];
        if action == "exit" {
            // Left before running the step: it was not reached.
            continue;
        }
        row.reached += 1;
        if action == "skip" {
            let code = detail
                .as_deref()
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            *row.skipped.entry(code).or_insert(0) += 1;
        }
        row.sent += sent.get(&(*id, step.clone())).copied().unwrap_or(0);
        if e.converted.is_some_and(|c| c >= *at) {
            row.converted_after += 1;
        }
    }
    Ok(Report {
        workflow: wf.name.clone(),
        goal: wf.goal.as_ref().map(|g| match &g.on {
            WaitFor::Event { name, .. } => format!("event {name} within {}", g.within),
            WaitFor::Condition(_) => format!("condition within {}", g.within),
        }),
        since: since.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        groups,
        lift: lift_of,
        steps: rows,
        enrollments: enrolled
            .iter()
            .map(|(id, e)| Counted {
                id: *id,
                started: e.started,
                converted: e.converted,
                groups: e
                    .arms
                    .iter()
                    .cloned()
                    .chain(
                        wf.holdout
                            .is_some()
                            .then(|| if e.holdout { "holdout" } else { "treatment" }.to_string()),
                    )
                    .collect(),
            })
            .collect(),
    })
}

/// The report of `wf` counted by the store (set-based SQL: a few rows come
/// back, not one per enrollment), for `nurture report`: the same groups,
/// lift and funnel as [`build`], without the per-enrollment list (the
/// console's chart reads that from [`build`]). A goal on an event's
/// properties is decided in Rust (`property_holds`): [`build`] then.
pub async fn build_summary(
    pool: &AnyPool,
    wf: &Workflow,
    since: Option<DateTime<Utc>>,
) -> Result<Report> {
    use crate::audience::Condition;
    use reports::GoalSql;
    let goal = match wf.goal.as_ref().map(|g| (&g.on, g.within)) {
        None => GoalSql::None,
        Some((WaitFor::Condition(_), _)) => GoalSql::Exit,
        Some((
            WaitFor::Event {
                name,
                condition:
                    Condition::Event {
                        name: want,
                        where_: None,
                        ..
                    },
            },
            within,
        )) if want == name => GoalSql::Event {
            event: name,
            within_ms: within.to_chrono().num_milliseconds(),
        },
        Some(_) => return build(pool, wf, since).await,
    };
    let since_ms = since.map(ms).unwrap_or(i64::MIN);
    let counts = reports::counts(pool, &wf.name, since_ms, &goal).await?;
    // Entered and converted of the enrollments with a split record.
    let find = |step: &str, detail: Option<&str>| -> (u64, u64) {
        counts
            .iter()
            .filter(|(s, a, d, ..)| {
                s == step && a == "split" && (detail.is_none() || d.as_deref() == detail)
            })
            .fold((0, 0), |(n, k), (_, _, _, a, b, _)| {
                (n + *a as u64, k + *b as u64)
            })
    };
    let mut groups = Vec::new();
    let (n, k) = counts
        .iter()
        .find(|(s, a, ..)| s.is_empty() && a.is_empty())
        .map(|(_, _, _, n, k, _)| (*n as u64, *k as u64))
        .unwrap_or((0, 0));
    groups.push(Group::new("all", n, k));
    for s in wf.all_steps() {
        if let StepAction::Split(sp) = &s.action {
            for a in &sp.arms {
                let (n, k) = find(&s.id, Some(&a.name.value));
                groups.push(Group::new(format!("arm {}={}", s.id, a.name.value), n, k));
            }
        }
    }
    let mut lift_of = None;
    if wf.holdout.is_some() {
        let (n0, k0) = find(crate::engine::plan::HOLDOUT_STEP, None);
        let (n1, k1) = (n - n0, k - k0);
        groups.push(Group::new("treatment", n1, k1));
        groups.push(Group::new("holdout", n0, k0));
        lift_of = lift(k1, n1, k0, n0);
    }
    let (mut rows, index) = empty_funnel(wf);
    for (step, action, detail, n, _, after) in &counts {
        // Left before running the step: it was not reached.
        if action == "exit" {
            continue;
        }
        let Some(&i) = index.get(step) else { continue };
        let row = &mut rows[i];
        row.reached += *n as u64;
        row.converted_after += *after as u64;
        if action == "skip" {
            let code = detail
                .as_deref()
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("");
            *row.skipped.entry(code.to_string()).or_insert(0) += *n as u64;
        }
    }
    for (step, n) in reports::sent_counts(pool, &wf.name, since_ms).await? {
        if let Some(&i) = index.get(&step) {
            rows[i].sent += n as u64;
        }
    }
    Ok(Report {
        workflow: wf.name.clone(),
        goal: wf.goal.as_ref().map(|g| match &g.on {
            WaitFor::Event { name, .. } => format!("event {name} within {}", g.within),
            WaitFor::Condition(_) => format!("condition within {}", g.within),
        }),
        since: since.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        groups,
        lift: lift_of,
        steps: rows,
        enrollments: Vec::new(),
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

impl Report {
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: goal {}{}",
            self.workflow,
            self.goal
                .as_deref()
                .unwrap_or("none (conversion not measured)"),
            self.since
                .as_deref()
                .map(|s| format!(", enrollments since {s}"))
                .unwrap_or_default()
        );
        let w = self
            .groups
            .iter()
            .map(|g| g.group.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "\n{:<w$}  {:>8}  {:>9}  {:>6}  95% INTERVAL",
            "GROUP", "ENTERED", "CONVERTED", "RATE"
        );
        for g in &self.groups {
            let _ = writeln!(
                out,
                "{:<w$}  {:>8}  {:>9}  {:>6}  [{}, {}]",
                g.group,
                g.entered,
                g.converted,
                pct(g.rate),
                pct(g.ci[0]),
                pct(g.ci[1])
            );
        }
        if let Some(l) = &self.lift {
            let _ = writeln!(
                out,
                "\nlift over the holdout: {:+.1} points{}, p = {:.3}: {}",
                l.absolute * 100.0,
                l.relative
                    .map(|r| format!(" ({:+.0}% relative)", r * 100.0))
                    .unwrap_or_default(),
                l.p_value,
                if l.significant {
                    "significant at 95%"
                } else {
                    "not significant at 95%"
                }
            );
        }
        let sw = self
            .steps
            .iter()
            .map(|s| s.step.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "\n{:<sw$}  {:<10}  {:>7}  {:>6}  {:>15}  SKIPPED",
            "STEP", "KIND", "REACHED", "SENT", "CONVERTED AFTER"
        );
        for s in &self.steps {
            let skipped = s
                .skipped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "{:<sw$}  {:<10}  {:>7}  {:>6}  {:>15}  {}",
                s.step,
                s.kind,
                s.reached,
                s.sent,
                s.converted_after,
                if skipped.is_empty() { "-" } else { &skipped }
            );
        }
        out
    }

    /// One CSV: a row per group, then a row per step.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "section,name,entered,converted,rate,ci_low,ci_high,kind,reached,sent,skipped,converted_after\n",
        );
        let q = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        for g in &self.groups {
            out.push_str(&format!(
                "group,{},{},{},{:.4},{:.4},{:.4},,,,,\n",
                q(&g.group),
                g.entered,
                g.converted,
                g.rate,
                g.ci[0],
                g.ci[1]
            ));
        }
        for s in &self.steps {
            let skipped = s
                .skipped
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";");
            out.push_str(&format!(
                "step,{},,,,,,{},{},{},{},{}\n",
                q(&s.step),
                s.kind,
                s.reached,
                s.sent,
                q(&skipped),
                s.converted_after
            ));
        }
        out
    }
}

/// The funnel's rows in the workflow's step order, all zero, and where
/// each step's row is.
fn empty_funnel(wf: &Workflow) -> (Vec<StepRow>, HashMap<String, usize>) {
    let rows: Vec<StepRow> = wf
        .all_steps()
        .iter()
        .map(|s| StepRow {
            step: s.id.clone(),
            kind: s.action.kind().to_string(),
            ..Default::default()
        })
        .collect();
    let index = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.step.clone(), i))
        .collect();
    (rows, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // 8 of 10: [0.490, 0.943] (Wilson 1927; Newcombe 1998, table I).
        let [lo, hi] = wilson(8, 10);
        assert!(
            (lo - 0.4902).abs() < 5e-4 && (hi - 0.9433).abs() < 5e-4,
            "{lo} {hi}"
        );
        // 0 of 10: [0, 0.2775].
        let [lo, hi] = wilson(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 5e-4, "{hi}");
        assert_eq!(wilson(0, 0), [0.0, 0.0]);
    }

    #[test]
    fn lift_is_significant_only_when_it_should_be() {
        // 120/1000 against 80/1000: z = 2.98, p = 0.003.
        let l = lift(120, 1000, 80, 1000).unwrap();
        assert!((l.absolute - 0.04).abs() < 1e-9);
        assert!((l.relative.unwrap() - 0.5).abs() < 1e-9);
        assert!((l.p_value - 0.0029).abs() < 5e-4, "{}", l.p_value);
        assert!(l.significant);
        // 11/100 against 9/100: z = 0.471, p = 0.637.
        let l = lift(11, 100, 9, 100).unwrap();
        assert!(!l.significant, "{}", l.p_value);
        assert!((l.p_value - 0.6374).abs() < 5e-4, "{}", l.p_value);
        assert_eq!(lift(1, 0, 1, 1), None);
    }
}
