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

use crate::store::Store;
use crate::store::plan_reads::{ms, parse_props};
use crate::store::reports::{self, GoalSql};
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
}

/// A group's entered, sent and converted per day.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DailyGroup {
    pub group: String,
    pub entered: Vec<u64>,
    pub sent: Vec<u64>,
    pub converted: Vec<u64>,
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

/// The report of `wf` over enrollments started at or after `since`, for
/// `nurture report`, `status --format json`, `/metrics` and the console:
/// counted by the store (a few rows come back, not one per enrollment).
pub async fn build(store: &Store, wf: &Workflow, since: Option<DateTime<Utc>>) -> Result<Report> {
    let since_ms = since.map(ms).unwrap_or(i64::MIN);
    let decided = decide_in_rust(store, wf, since_ms).await?;
    let goal = goal_sql(wf, decided.as_deref());
    let reports::ReportCounts {
        steps,
        conversions: conv,
        sent,
    } = store.report_counts(&wf.name, since_ms, &goal).await?;
    // (entered, converted) of the enrollments with a split record at `step`
    // (of arm `arm`, or any).
    let of_split = |step: &str, arm: Option<&str>| -> (u64, u64) {
        let hit = |s: &str, a: &str, d: &Option<String>| {
            s == step && a == "split" && (arm.is_none() || d.as_deref() == arm)
        };
        let n = steps
            .iter()
            .filter(|(s, a, d, _)| hit(s, a, d))
            .map(|r| r.3 as u64)
            .sum();
        let k = conv
            .iter()
            .filter(|(s, a, d, ..)| hit(s, a, d))
            .map(|r| r.3 as u64)
            .sum();
        (n, k)
    };
    let mut groups = Vec::new();
    let (n, k) = conv
        .iter()
        .find(|(s, a, ..)| s.is_empty() && a.is_empty())
        .map(|r| (r.3 as u64, r.4 as u64))
        .unwrap_or((0, 0));
    groups.push(Group::new("all", n, k));
    for (step, arm) in arms(wf) {
        let (an, ak) = of_split(&step, Some(&arm));
        groups.push(Group::new(format!("arm {step}={arm}"), an, ak));
    }
    let mut lift_of = None;
    if wf.holdout.is_some() {
        let (n0, k0) = of_split(crate::workflow::HOLDOUT_STEP, None);
        let (n1, k1) = (n - n0, k - k0);
        groups.push(Group::new("treatment", n1, k1));
        groups.push(Group::new("holdout", n0, k0));
        lift_of = lift(k1, n1, k0, n0);
    }

    // The funnel, in the workflow's step order.
    let (mut rows, index) = empty_funnel(wf);
    for (step, action, detail, n) in &steps {
        // Left before running the step: it was not reached.
        if action == "exit" {
            continue;
        }
        let Some(&i) = index.get(step) else { continue };
        let row = &mut rows[i];
        row.reached += *n as u64;
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
    for (step, action, _, _, after) in &conv {
        if action == "exit" || step.is_empty() {
            continue;
        }
        if let Some(&i) = index.get(step) {
            rows[i].converted_after += *after as u64;
        }
    }
    for (step, n) in sent {
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
    })
}

/// (split step, arm) of every arm of the workflow, in step order.
fn arms(wf: &Workflow) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in wf.all_steps() {
        if let StepAction::Split(sp) = &s.action {
            for a in &sp.arms {
                out.push((s.id.clone(), a.name.value.clone()));
            }
        }
    }
    out
}

/// How the store decides conversions for `wf`'s goal; `decided`: the
/// conversions [`decide_in_rust`] made.
fn goal_sql<'a>(wf: &'a Workflow, decided: Option<&'a [(i64, i64)]>) -> GoalSql<'a> {
    if let Some(pairs) = decided {
        return GoalSql::Decided(pairs);
    }
    match wf.goal.as_ref().map(|g| (&g.on, g.within)) {
        None => GoalSql::None,
        Some((WaitFor::Condition(_), _)) => GoalSql::Exit,
        Some((WaitFor::Event { name, .. }, within)) => GoalSql::Event {
            event: name,
            within_ms: within.to_chrono().num_milliseconds(),
        },
    }
}

/// A goal on an event's properties (`where:`): the audience's SQL leaves
/// properties to Rust, and so does the report. The goal events inside each
/// enrollment's window are read, and the first that passes is the
/// conversion: (enrollment, converted at). `None` for other goals, which
/// the store decides by itself.
async fn decide_in_rust(
    store: &Store,
    wf: &Workflow,
    since_ms: i64,
) -> Result<Option<Vec<(i64, i64)>>> {
    use crate::audience::Condition;
    let Some(g) = &wf.goal else { return Ok(None) };
    let WaitFor::Event { name, condition } = &g.on else {
        return Ok(None);
    };
    if let Condition::Event {
        name: want,
        where_: None,
        ..
    } = condition
        && want == name
    {
        return Ok(None);
    }
    let within = g.within.to_chrono().num_milliseconds();
    let now = Utc::now();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (id, at, props) in store
        .report_goal_candidates(&wf.name, since_ms, name, within)
        .await?
    {
        // By enrollment, then time: the first that passes is the one.
        if out.last().is_some_and(|(last, _)| *last == id) {
            continue;
        }
        if crate::workflow::event_passes(condition, name, &parse_props(props.as_deref()), now) {
            out.push((id, at));
        }
    }
    Ok(Some(out))
}

/// Per group of the report (`all`, each arm, `treatment`, `holdout`; arm
/// groups named `STEP=ARM`): entered, messages sent and converted per day,
/// `days` days from day number `first` (days since the epoch in local
/// time, `offset_ms` from UTC), of the enrollments started since `since`.
/// Counted by the store, as [`build`].
pub async fn daily(
    store: &Store,
    wf: &Workflow,
    since: DateTime<Utc>,
    offset_ms: i64,
    first: i64,
    days: usize,
) -> Result<Vec<DailyGroup>> {
    let since_ms = ms(since);
    let decided = decide_in_rust(store, wf, since_ms).await?;
    let goal = goal_sql(wf, decided.as_deref());
    let counts = store
        .report_daily(&wf.name, since_ms, &goal, offset_ms, since_ms)
        .await?;
    let holdout = crate::workflow::HOLDOUT_STEP;
    let mut names = vec!["all".to_string()];
    names.extend(arms(wf).into_iter().map(|(s, a)| format!("{s}={a}")));
    if wf.holdout.is_some() {
        names.extend(["treatment".to_string(), "holdout".to_string()]);
    }
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
    for (what, day, step, arm, n) in &counts {
        let Some(d) = usize::try_from(day - first).ok().filter(|d| *d < days) else {
            continue;
        };
        let group = if step.is_empty() {
            "all".to_string()
        } else if step == holdout {
            "holdout".to_string()
        } else {
            format!("{step}={}", arm.as_deref().unwrap_or(""))
        };
        let Some(&g) = index.get(group.as_str()) else {
            continue;
        };
        let series = match what.as_str() {
            reports::ENTERED => &mut out[g].entered,
            reports::CONVERTED => &mut out[g].converted,
            _ => &mut out[g].sent,
        };
        series[d] += *n as u64;
    }
    // The treatment is everyone but the holdout.
    if let (Some(&t), Some(&h), Some(&a)) = (
        index.get("treatment"),
        index.get("holdout"),
        index.get("all"),
    ) {
        for d in 0..days {
            out[t].entered[d] = out[a].entered[d] - out[h].entered[d].min(out[a].entered[d]);
            out[t].sent[d] = out[a].sent[d] - out[h].sent[d].min(out[a].sent[d]);
            out[t].converted[d] =
                out[a].converted[d] - out[h].converted[d].min(out[a].converted[d]);
        }
    }
    Ok(out)
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
        // Without a goal there is no conversion to show: entries only.
        let measured = self.goal.is_some();
        if measured {
            let _ = writeln!(
                out,
                "\n{:<w$}  {:>8}  {:>9}  {:>6}  95% INTERVAL",
                "GROUP", "ENTERED", "CONVERTED", "RATE"
            );
        } else {
            let _ = writeln!(out, "\n{:<w$}  {:>8}", "GROUP", "ENTERED");
        }
        for g in &self.groups {
            if !measured {
                let _ = writeln!(out, "{:<w$}  {:>8}", g.group, g.entered);
            } else if g.entered == 0 {
                // No rate of nobody.
                let _ = writeln!(out, "{:<w$}  {:>8}  {:>9}  {:>6}  -", g.group, 0, 0, "-");
            } else {
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
                if measured {
                    s.converted_after.to_string()
                } else {
                    "-".to_string()
                },
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
