//! A workflow file (YAML) → [`Workflow`], reporting every problem in the file.

use std::path::Path;

use super::model::*;
use crate::audience::Condition;
use crate::audience::parse::parse_condition;
use crate::diagnostics::{Diagnostic, Pos};
use crate::schedule::CronSchedule;
use crate::yaml::{self, Fields, Node, Reader};

mod assign;
mod branch;
mod step;
mod trigger;

use assign::{read_assign, read_notify, read_per_salesperson};
use branch::{read_split, read_wait_until};
use step::read_steps;
use trigger::{read_entry, read_trigger};

pub const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "description",
    "enabled",
    "trigger",
    "audience",
    "entry",
    "steps",
    "exit_when",
    "entry_existing",
    "holdout",
    "goal",
    "exit_on_goal",
    "throttle",
];
pub const TRIGGER_KINDS: &[&str] = &[
    "contact_created",
    "tag_added",
    "inactive",
    "event",
    "schedule",
    "staff_left",
    "date",
];
pub const STEP_KINDS: &[&str] = &[
    "send",
    "assign",
    "tag",
    "wait",
    "if",
    "wait_until",
    "split",
    "set",
    "notify",
    "webhook",
];
pub const STRATEGIES: &[&str] = &["round_robin", "least_loaded", "by_field"];
/// `check:` of an `inactive` trigger when none is written: hourly.
pub const DEFAULT_INACTIVE_CHECK: &str = "0 * * * *";

/// A loaded workflow and the places the checks need that the model does not keep.
#[derive(Debug, Clone)]
pub struct LoadedWorkflow {
    pub workflow: Workflow,
    /// Where `name:` was written; 1:1 when the name comes from the file name.
    pub name_pos: Pos,
}

/// The workflow of `path` when it has no problem of its own (the project
/// checks — unique names, existing channels, ... — are not run here).
pub fn load_valid(path: &Path) -> Result<LoadedWorkflow, Vec<Diagnostic>> {
    match load_file(path) {
        (Some(w), d) if d.is_empty() => Ok(w),
        (_, d) => Err(d),
    }
}

/// Reads and loads one workflow file.
pub fn load_file(path: &Path) -> (Option<LoadedWorkflow>, Vec<Diagnostic>) {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(src) => load_str(path, &src),
            Err(_) => (
                None,
                vec![Diagnostic::new(
                    path,
                    Pos::new(1, 1),
                    "file is not UTF-8 text",
                )],
            ),
        },
        Err(e) => (
            None,
            vec![Diagnostic::new(
                path,
                Pos::default(),
                format!("cannot read the file: {e}"),
            )],
        ),
    }
}

/// Loads a workflow from `src`, the text of `path`.
///
/// The workflow comes back whenever the file is a YAML map, even with
/// problems (parts that could not be read are left out or replaced by
/// placeholders), so that the project checks can still look at it. **Any
/// diagnostic means the workflow is not valid and must not run**; use
/// [`load_valid`] when only a valid workflow will do.
pub fn load_str(path: &Path, src: &str) -> (Option<LoadedWorkflow>, Vec<Diagnostic>) {
    let (node, diags) = yaml::parse(path, src);
    let mut r = Reader::new(path);
    r.diags = diags;
    if let Some(d) = node
        .as_ref()
        .and_then(|n| super::limits::check_size(path, n))
    {
        r.diags.push(d);
        return (None, r.diags);
    }
    let wf = node.and_then(|n| read_workflow(&mut r, &n, path));
    (wf, r.diags)
}

fn read_workflow(r: &mut Reader, node: &Node, path: &Path) -> Option<LoadedWorkflow> {
    if node.is_null() {
        r.error(
            Pos::new(1, 1),
            "the workflow file is empty; it needs at least a trigger and steps",
        );
        return None;
    }
    let f = r.fields(node, "a workflow", WORKFLOW_KEYS)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (name, name_pos) = match f.get("name") {
        Some(n) => (r.string(n, "name").unwrap_or(stem), n.pos),
        None => (stem, Pos::new(1, 1)),
    };
    let description = f
        .get("description")
        .and_then(|n| r.string(n, "description"));
    let enabled = f
        .get("enabled")
        .and_then(|n| r.bool(n, "enabled"))
        .unwrap_or(true);
    let entry_existing = f
        .get("entry_existing")
        .and_then(|n| r.bool(n, "entry_existing"))
        .unwrap_or(false);
    let trigger = match f.get("trigger") {
        Some(n) => read_trigger(r, n),
        None => {
            r.push(
                Diagnostic::new(r.file, f.pos, "a workflow needs a trigger").with_suggestion(
                    format!("add trigger: with one of {}", TRIGGER_KINDS.join(", ")),
                ),
            );
            None
        }
    };
    let audience = opt_condition(r, &f, "audience");
    let exit_when = opt_condition(r, &f, "exit_when");
    // `once` is the default, except for a `schedule`: a recurring broadcast
    // that reached each contact only on its first tick would surprise anyone
    // (docs/decisions.md).
    let default_entry = match &trigger {
        Some(Trigger::Schedule { .. } | Trigger::Date(_)) => Entry::EveryTime,
        _ => Entry::Once,
    };
    let entry = f
        .get("entry")
        .and_then(|n| read_entry(r, n))
        .unwrap_or(default_entry);
    let holdout = f.get("holdout").and_then(|n| read_percent(r, n, "holdout"));
    let goal = f.get("goal").and_then(|n| read_goal(r, n));
    let throttle = f.get("throttle").and_then(|n| {
        let text = r.string(n, "throttle")?;
        let rate = crate::settings::parse_rate(&text);
        if rate.is_none() {
            r.push(
                Diagnostic::new(
                    r.file,
                    n.pos,
                    format!("throttle \"{text}\" must be a rate such as 200/h"),
                )
                .with_suggestion("COUNT/s, COUNT/m, COUNT/h or COUNT/d"),
            );
        }
        rate
    });
    let exit_on_goal = match f.get("exit_on_goal") {
        Some(n) => {
            let v = r.bool(n, "exit_on_goal").unwrap_or(true);
            if goal.is_none() && f.get("goal").is_none() {
                r.push(
                    Diagnostic::new(r.file, n.pos, "exit_on_goal without a goal")
                        .with_suggestion("add goal: { event: purchase, within: 7d }"),
                );
            }
            v
        }
        None => true,
    };
    let steps = match f.get("steps") {
        Some(n) => match r.seq(n, "steps") {
            Some([]) => {
                r.error(n.pos, "steps is empty; a workflow needs at least one step");
                Vec::new()
            }
            Some(items) => read_steps(r, items, None),
            None => Vec::new(),
        },
        None => {
            r.push(
                Diagnostic::new(r.file, f.pos, "a workflow needs steps")
                    .with_suggestion(format!("add steps: a list of {}", STEP_KINDS.join(", "))),
            );
            Vec::new()
        }
    };
    Some(LoadedWorkflow {
        workflow: Workflow {
            name,
            description,
            enabled,
            // A placeholder when the trigger is wrong (already reported), so
            // that the project checks still look at the rest of the file.
            trigger: trigger.unwrap_or(Trigger::ContactCreated { via: None }),
            audience,
            entry,
            steps,
            exit_when,
            entry_existing,
            holdout,
            goal,
            exit_on_goal,
            throttle,
            file: path.to_path_buf(),
        },
        name_pos,
    })
}

fn opt_condition(r: &mut Reader, f: &Fields, key: &str) -> Option<Condition> {
    let n = f.get(key)?;
    if n.is_null() {
        return None;
    }
    parse_condition(r, n)
}

fn cron(r: &mut Reader, n: &Node, what: &str) -> Option<CronSchedule> {
    let text = r.string(n, what)?;
    match CronSchedule::parse(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            r.error(n.pos, e);
            None
        }
    }
}

/// The value of `key`, which the map `at` (read as `f`) must have. When it
/// is missing, reports `missing` (with `suggestion`) at `at`, unless another
/// key of the map is a misspelling of it: `fields` has already said that,
/// with a did-you-mean, and a second error about the same key is noise.
/// Every "X needs KEY" of the loader goes through here, so a misspelt
/// required key is always reported once.
fn required<'n>(
    r: &mut Reader,
    f: &Fields<'n>,
    at: &Node,
    key: &str,
    missing: impl Into<String>,
    suggestion: Option<&str>,
) -> Option<&'n Node> {
    let found = f.get(key);
    if found.is_none() && !f.misspelt(key) {
        let mut d = Diagnostic::new(r.file, at.pos, missing);
        if let Some(s) = suggestion {
            d = d.with_suggestion(s);
        }
        r.push(d);
    }
    found
}

/// A required text value with its position. When it is missing (reported),
/// an empty placeholder at `at` that the checks skip, so that the rest of
/// the step is still read and checked.
fn required_located(
    r: &mut Reader,
    f: &Fields,
    at: &Node,
    key: &str,
    what: &str,
) -> Option<Located<String>> {
    match required(r, f, at, key, format!("{what} needs \"{key}\""), None) {
        Some(n) => r.string(n, key).map(|s| Located::new(s, n.pos)),
        None => Some(Located::new(String::new(), at.pos)),
    }
}

fn one_kind<'n>(
    r: &mut Reader,
    node: &'n Node,
    kinds: &[&str],
    what: &str,
) -> Option<(&'n Node, &'n Node)> {
    let entries = node.as_map()?;
    let found: Vec<&(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| kinds.contains(&k.scalar_text().unwrap_or("")))
        .collect();
    match found.as_slice() {
        [] => {
            if entries.is_empty() {
                r.push(
                    Diagnostic::new(r.file, node.pos, format!("empty {what}"))
                        .with_suggestion(format!("write one of: {}", kinds.join(", "))),
                );
            }
            None
        }
        [(k, v)] => Some((k, v)),
        [(a, _), (b, _), ..] => {
            r.push(Diagnostic::new(
                r.file,
                b.pos,
                format!(
                    "a {what} has exactly one kind, but this one has \"{}\" and \"{}\"",
                    a.scalar_text().unwrap_or(""),
                    b.scalar_text().unwrap_or("")
                ),
            ));
            None
        }
    }
}

/// `10%`, `2.5%`: a share in hundredths of a percent (1000 = 10%), more
/// than 0 and less than 100%.
fn read_percent(r: &mut Reader, n: &Node, what: &str) -> Option<u32> {
    let text = r.string(n, what)?;
    let parsed = text
        .trim()
        .strip_suffix('%')
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0 && *v < 100.0)
        .map(|v| (v * 100.0).round() as u32)
        .filter(|bp| *bp > 0);
    if parsed.is_none() {
        r.push(
            Diagnostic::new(
                r.file,
                n.pos,
                format!("{what} must be a share such as 10%, found \"{text}\""),
            )
            .with_suggestion("more than 0% and less than 100%, e.g. holdout: 10%"),
        );
    }
    parsed
}

/// A local time `HH:MM`.
fn local_time(r: &mut Reader, n: &Node, what: &str) -> Option<chrono::NaiveTime> {
    let text = r.string(n, what)?;
    match chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M") {
        Ok(t) => Some(t),
        Err(_) => {
            r.error(
                n.pos,
                format!("{what} \"{text}\" must be a time HH:MM such as \"10:00\""),
            );
            None
        }
    }
}

/// `goal: { event: NAME, where?: {...}, within: D }` or `goal: { condition: C, within: D }`.
/// An event to wait for (`wait_until:` or a goal): `event: NAME` with an
/// optional `where:` test of its properties, one occurrence.
fn wait_for_event(r: &mut Reader, e: &Node, f: &Fields) -> Option<WaitFor> {
    let name = r.string(e, "event")?;
    let where_ = match f.get("where") {
        Some(w) => Some(Box::new(crate::audience::parse::parse_where(r, w)?)),
        None => None,
    };
    Some(WaitFor::Event {
        condition: Condition::Event {
            name: name.clone(),
            within: None,
            at_least: 1,
            where_,
        },
        name,
    })
}

fn read_goal(r: &mut Reader, v: &Node) -> Option<Goal> {
    let f = r.fields(v, "a goal", &["event", "where", "condition", "within"])?;
    let on = match (f.get("event"), f.get("condition")) {
        (Some(_), Some(c)) => {
            r.error(c.pos, "a goal is an event or a condition, not both");
            return None;
        }
        (Some(e), None) => wait_for_event(r, e, &f)?,
        (None, Some(c)) => WaitFor::Condition(parse_condition(r, c)?),
        (None, None) => {
            r.push(
                Diagnostic::new(
                    r.file,
                    v.pos,
                    "a goal needs event: NAME or condition: {...}",
                )
                .with_suggestion("write goal: { event: purchase, within: 7d }"),
            );
            return None;
        }
    };
    let w = required(
        r,
        &f,
        v,
        "within",
        "a goal needs within: DURATION (the conversion window)",
        Some("e.g. goal: { event: purchase, within: 7d }"),
    )?;
    let within = r.duration(w, "within")?;
    Some(Goal { on, within })
}

#[cfg(test)]
mod tests;
