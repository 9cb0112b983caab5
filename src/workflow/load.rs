//! A workflow file (YAML) → [`Workflow`], reporting every problem in the file.

use std::path::Path;

use super::model::*;
use crate::audience::Condition;
use crate::audience::parse::parse_condition;
use crate::diagnostics::{Diagnostic, Pos};
use crate::schedule::CronSchedule;
use crate::yaml::{self, Fields, Node, Reader};

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

fn read_trigger(r: &mut Reader, node: &Node) -> Option<Trigger> {
    // Unknown keys are reported with a suggestion by `fields`.
    r.fields(node, "the trigger", TRIGGER_KINDS)?;
    let (k, v) = one_kind(r, node, TRIGGER_KINDS, "trigger")?;
    match k.scalar_text().unwrap_or("") {
        "contact_created" => {
            let mut via = None;
            if !v.is_null() {
                let f = r.fields(v, "contact_created", &["via"])?;
                if let Some(n) = f.get("via") {
                    via = Some(Located::new(r.string(n, "via")?, n.pos));
                }
            }
            Some(Trigger::ContactCreated { via })
        }
        "date" => read_date_trigger(r, v),
        "staff_left" => {
            if !v.is_null() {
                r.fields(v, "staff_left", &[])?;
            }
            Some(Trigger::StaffLeft)
        }
        "tag_added" => {
            let f = r.fields(v, "tag_added", &["tag"])?;
            let Some(t) = f.get("tag") else {
                if f.misspelt("tag") {
                    return None;
                }
                r.error(
                    v.pos,
                    "tag_added needs \"tag\", e.g. tag_added: { tag: vip }",
                );
                return None;
            };
            Some(Trigger::TagAdded {
                tag: r.string(t, "tag")?,
            })
        }
        "inactive" => {
            let f = r.fields(v, "inactive", &["for", "check"])?;
            let quiet_for = match f.get("for") {
                Some(n) => r.duration(n, "for"),
                None => {
                    if !f.misspelt("for") {
                        r.error(v.pos, "inactive needs \"for\", e.g. inactive: { for: 30d }");
                    }
                    None
                }
            };
            let check = match f.get("check") {
                Some(n) => cron(r, n, "check"),
                None => CronSchedule::parse(DEFAULT_INACTIVE_CHECK).ok(),
            };
            Some(Trigger::Inactive {
                quiet_for: quiet_for?,
                check: check?,
            })
        }
        "event" => {
            let f = r.fields(v, "the event trigger", &["name"])?;
            let Some(n) = f.get("name") else {
                if f.misspelt("name") {
                    return None;
                }
                r.error(
                    v.pos,
                    "the event trigger needs \"name\", e.g. event: { name: purchase }",
                );
                return None;
            };
            Some(Trigger::Event {
                name: r.string(n, "name")?,
            })
        }
        "schedule" => {
            let f = r.fields(v, "schedule", &["cron", "on", "offset", "at"])?;
            if let Some(on) = f.get("on") {
                return read_calendar_schedule(r, &f, on);
            }
            let Some(n) = f.get("cron") else {
                if f.misspelt("cron") {
                    return None;
                }
                r.error(
                    v.pos,
                    "schedule needs \"cron\", e.g. schedule: { cron: \"0 9 * * 1\" }",
                );
                return None;
            };
            Some(Trigger::Schedule {
                cron: cron(r, n, "cron")?,
            })
        }
        _ => None,
    }
}

fn read_entry(r: &mut Reader, n: &Node) -> Option<Entry> {
    let text = r.string(n, "entry")?;
    let t = text.trim();
    match t {
        "once" => return Some(Entry::Once),
        "every_time" => return Some(Entry::EveryTime),
        _ => {}
    }
    if let Some(rest) = t.strip_prefix("once per ") {
        return match rest.trim().parse() {
            Ok(d) => Some(Entry::OncePer(d)),
            Err(crate::duration::DurationError(msg)) => {
                r.error(n.pos, format!("entry: {msg}"));
                None
            }
        };
    }
    let mut d = Diagnostic::new(r.file, n.pos, format!("unknown entry \"{t}\""))
        .did_you_mean(t, ["once", "every_time"]);
    if d.suggestion.is_none() {
        d = d.with_suggestion(
            "entry is once, every_time, or \"once per DURATION\" such as \"once per 30d\"",
        );
    }
    r.push(d);
    None
}

/// Reads a list of steps. `parent` is the id of the enclosing branch
/// ("3.then"), `None` at the top level.
fn read_steps(r: &mut Reader, items: &[Node], parent: Option<&str>) -> Vec<Step> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let default_id = match parent {
            Some(p) => format!("{p}.{i}"),
            None => i.to_string(),
        };
        if let Some(s) = read_step(r, item, default_id) {
            out.push(s);
        }
    }
    out
}

fn read_step(r: &mut Reader, node: &Node, default_id: String) -> Option<Step> {
    let Some(entries) = node.as_map() else {
        r.push(
            Diagnostic::new(
                r.file,
                node.pos,
                format!(
                    "a step must be a map such as send: {{...}}, found {}",
                    node.describe()
                ),
            )
            .with_suggestion(format!("steps are: {}", STEP_KINDS.join(", "))),
        );
        return None;
    };
    let kind = entries
        .iter()
        .find(|(k, _)| STEP_KINDS.contains(&k.scalar_text().unwrap_or("")))
        .and_then(|(k, _)| k.scalar_text())
        .unwrap_or("");
    let mut allowed: Vec<&str> = STEP_KINDS.to_vec();
    allowed.push("id");
    allowed.push("window");
    if kind == "if" {
        allowed.extend(["then", "else"]);
    }
    for (k, _) in entries {
        let text = k.scalar_text().unwrap_or("");
        if (text == "then" || text == "else") && kind == "wait_until" {
            r.push(
                Diagnostic::new(
                    r.file,
                    k.pos,
                    format!("\"{text}\" of a wait_until step goes inside it"),
                )
                .with_suggestion(format!(
                    "write wait_until: {{ event: purchase, timeout: 3d, {text}: [...] }}"
                )),
            );
        } else if (text == "then" || text == "else") && kind != "if" {
            r.error(k.pos, format!("\"{text}\" belongs to an if step"));
        } else if !allowed.contains(&text) {
            r.unknown_key(k, &allowed, "a step");
        }
    }
    let (k, v) = one_kind(r, node, STEP_KINDS, "step")?;
    let f = Fields {
        pos: node.pos,
        entries,
    };
    let id = match f.get("id") {
        Some(n) => r.string(n, "id")?,
        None => default_id,
    };
    let window = f.get("window").and_then(|w| read_window(r, w));
    let action = match k.scalar_text().unwrap_or("") {
        "send" => {
            let sf = r.fields(
                v,
                "a send step",
                &["channel", "template", "at", "per_salesperson"],
            )?;
            let per_salesperson = sf
                .get("per_salesperson")
                .and_then(|n| read_per_salesperson(r, n));
            let channel = required_located(r, &sf, v, "channel", "a send step");
            let template = required_located(r, &sf, v, "template", "a send step");
            let at = match sf.get("at") {
                Some(n) => Some(local_time(r, n, "at")?),
                None => None,
            };
            StepAction::Send(SendStep {
                channel: channel?,
                template: template?,
                at,
                per_salesperson,
            })
        }
        "assign" => read_assign(r, v)?,
        "tag" => {
            let tf = r.fields(v, "a tag step", &["add", "remove"])?;
            let add = tf
                .get("add")
                .map(|n| r.strings(n, "add"))
                .unwrap_or_default();
            let remove = tf
                .get("remove")
                .map(|n| r.strings(n, "remove"))
                .unwrap_or_default();
            if add.is_empty() && remove.is_empty() {
                r.error(v.pos, "a tag step needs add: [...] or remove: [...]");
                return None;
            }
            StepAction::Tag(TagStep { add, remove })
        }
        "wait" => StepAction::Wait(r.duration(v, "wait")?),
        "wait_until" => read_wait_until(r, v, &id)?,
        "split" => read_split(r, v, &id)?,
        "set" => read_set(r, v)?,
        "webhook" => {
            let wf_ = r.fields(v, "a webhook step", &["channel", "body", "store"])?;
            let store = wf_
                .get("store")
                .map(|n| read_webhook_store(r, n))
                .unwrap_or_default();
            let channel = required_located(r, &wf_, v, "channel", "a webhook step")?;
            let body = match wf_.get("body") {
                Some(b) => match read_set(r, b)? {
                    StepAction::Set(s) => s.values,
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            StepAction::Webhook(WebhookStep {
                channel,
                body,
                store,
            })
        }
        "notify" => StepAction::Notify(read_notify(r, v)?),
        "if" => {
            let condition = parse_condition(r, v);
            let branch = |r: &mut Reader, key: &str, short: &str| -> Vec<Step> {
                match f.get(key) {
                    Some(n) if n.is_null() => Vec::new(),
                    Some(n) => match r.seq(n, key) {
                        Some(items) => read_steps(r, items, Some(&format!("{id}.{short}"))),
                        None => Vec::new(),
                    },
                    None => Vec::new(),
                }
            };
            let then = branch(r, "then", "then");
            let otherwise = branch(r, "else", "else");
            if !f.has("then") && !f.has("else") {
                r.error(node.pos, "an if step needs then: [...] and/or else: [...]");
            }
            StepAction::If(IfStep {
                condition: condition.unwrap_or(Condition::All(Vec::new())),
                then,
                otherwise,
            })
        }
        _ => return None,
    };
    Some(Step {
        id,
        pos: node.pos,
        action,
        window,
    })
}

/// `wait_until: { event: NAME, where?: {...}, timeout: D, then?: [...], else?: [...] }`
/// or `wait_until: { condition: C, timeout: D, ... }`.
fn read_wait_until(r: &mut Reader, v: &Node, id: &str) -> Option<StepAction> {
    let f = r.fields(
        v,
        "a wait_until step",
        &["event", "where", "condition", "timeout", "then", "else"],
    )?;
    let until = match (f.get("event"), f.get("condition")) {
        (Some(_), Some(c)) => {
            r.push(
                Diagnostic::new(
                    r.file,
                    c.pos,
                    "a wait_until step waits for an event or a condition, not both",
                )
                .with_suggestion(
                    "for an event with a test of its properties, write event: NAME, where: {...}",
                ),
            );
            return None;
        }
        (Some(e), None) => {
            let name = r.string(e, "event")?;
            let where_ = match f.get("where") {
                Some(w) => Some(Box::new(crate::audience::parse::parse_where(r, w)?)),
                None => None,
            };
            WaitFor::Event {
                condition: Condition::Event {
                    name: name.clone(),
                    within: None,
                    at_least: 1,
                    where_,
                },
                name,
            }
        }
        (None, Some(c)) => {
            if let Some(w) = f.get("where") {
                r.error(w.pos, "where: tests the event of wait_until: { event: ... }; a condition has its own where: inside event: conditions");
            }
            WaitFor::Condition(parse_condition(r, c)?)
        }
        (None, None) => {
            r.push(
                Diagnostic::new(
                    r.file,
                    v.pos,
                    "a wait_until step needs event: NAME or condition: {...}",
                )
                .with_suggestion(
                    "write wait_until: { event: purchase, timeout: 3d, then: [...], else: [...] }",
                ),
            );
            return None;
        }
    };
    let Some(t) = f.get("timeout") else {
        r.push(
            Diagnostic::new(r.file, v.pos, "a wait_until step needs timeout: DURATION")
                .with_suggestion(
                    "the enrollment takes else: once the timeout passes, e.g. timeout: 3d",
                ),
        );
        return None;
    };
    let timeout = r.duration(t, "timeout")?;
    if timeout.to_chrono() <= chrono::TimeDelta::zero() {
        r.error(t.pos, "timeout must be longer than 0");
        return None;
    }
    let branch = |r: &mut Reader, key: &str| -> Vec<Step> {
        match f.get(key) {
            Some(n) if n.is_null() => Vec::new(),
            Some(n) => match r.seq(n, key) {
                Some(items) => read_steps(r, items, Some(&format!("{id}.{key}"))),
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    };
    let then = branch(r, "then");
    let otherwise = branch(r, "else");
    Some(StepAction::WaitUntil(WaitUntilStep {
        until,
        timeout,
        then,
        otherwise,
    }))
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

/// `window: { from: "10:00", to: "12:00", days: [mon, tue, ...] }`.
fn read_window(r: &mut Reader, n: &Node) -> Option<Window> {
    let f = r.fields(n, "a window", &["from", "to", "days", "on"])?;
    let (Some(fr), Some(to)) = (f.get("from"), f.get("to")) else {
        r.push(
            Diagnostic::new(r.file, n.pos, "a window needs from: and to:").with_suggestion(
                "e.g. window: { from: \"10:00\", to: \"12:00\", days: [mon, tue, wed, thu, fri] }",
            ),
        );
        return None;
    };
    let from = local_time(r, fr, "from")?;
    let to_t = local_time(r, to, "to")?;
    if to_t <= from {
        r.push(
            Diagnostic::new(
                r.file,
                to.pos,
                "to: must be later than from: on the same day",
            )
            .with_suggestion(
                "a window does not run over midnight: end it at \"23:59\", or start at \"00:00\"",
            ),
        );
        return None;
    }
    const DAYS: [(&str, chrono::Weekday); 7] = [
        ("mon", chrono::Weekday::Mon),
        ("tue", chrono::Weekday::Tue),
        ("wed", chrono::Weekday::Wed),
        ("thu", chrono::Weekday::Thu),
        ("fri", chrono::Weekday::Fri),
        ("sat", chrono::Weekday::Sat),
        ("sun", chrono::Weekday::Sun),
    ];
    let mut days = Vec::new();
    if let Some(dn) = f.get("days") {
        let items = r.seq(dn, "days")?;
        for it in items {
            let Some(t) = r.string(it, "a day") else {
                continue;
            };
            match DAYS.iter().find(|(n, _)| *n == t.to_lowercase()) {
                Some((_, d)) => days.push(*d),
                None => r.push(
                    Diagnostic::new(r.file, it.pos, format!("unknown day \"{t}\""))
                        .did_you_mean(&t, DAYS.iter().map(|(n, _)| *n)),
                ),
            }
        }
    }
    let mut on = Vec::new();
    if let Some(on_node) = f.get("on") {
        for it in r.seq(on_node, "on")? {
            let Some(name) = r.string(it, "a calendar day") else {
                continue;
            };
            if crate::calendar::is_day(&name) {
                on.push(name);
            } else {
                r.push(
                    Diagnostic::new(r.file, it.pos, format!("no calendar day \"{name}\""))
                        .did_you_mean(
                            &name,
                            crate::calendar::NAMES
                                .iter()
                                .flat_map(|(zh, en)| [*zh, *en]),
                        ),
                );
            }
        }
    }
    Some(Window {
        from,
        to: to_t,
        days,
        on,
    })
}

/// `schedule: { on: 春节, offset: -7d, at: "10:00" }`: a day of the named
/// calendar each year, in each contact's time zone.
fn read_calendar_schedule(r: &mut Reader, f: &Fields, on: &Node) -> Option<Trigger> {
    if let Some(c) = f.get("cron") {
        r.error(c.pos, "a schedule is on: a calendar day or cron:, not both");
        return None;
    }
    let name = r.string(on, "on")?;
    if !crate::calendar::is_day(&name) {
        let mut d = Diagnostic::new(r.file, on.pos, format!("no calendar day \"{name}\""))
            .did_you_mean(
                &name,
                crate::calendar::NAMES
                    .iter()
                    .flat_map(|(zh, en)| [*zh, *en]),
            );
        if d.suggestion.is_none() {
            d = d.with_suggestion(format!(
                "the calendar knows {}",
                crate::calendar::NAMES
                    .iter()
                    .map(|(zh, _)| *zh)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        r.push(d);
        return None;
    }
    let offset_days = match f.get("offset") {
        None => 0,
        Some(n) => whole_days(r, n)?,
    };
    let at = match f.get("at") {
        None => chrono::NaiveTime::from_hms_opt(9, 0, 0).expect("a valid time"),
        Some(n) => local_time(r, n, "at")?,
    };
    Some(Trigger::Date(DateTrigger {
        field: Located::new(String::new(), on.pos),
        calendar: Some(name),
        offset_days,
        at,
        every_year: true,
        check: CronSchedule::parse(DateTrigger::CHECK).ok()?,
    }))
}

/// `-3d`, `7d`, `+1w`: whole days before (negative) or after.
fn whole_days(r: &mut Reader, n: &Node) -> Option<i64> {
    let text = r.string(n, "offset")?;
    let t = text.trim();
    let (neg, rest) = match t.strip_prefix('-') {
        Some(x) => (true, x),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let days = rest
        .parse::<crate::duration::Duration>()
        .ok()
        .map(|d| d.to_chrono())
        .filter(|d| *d == chrono::TimeDelta::days(d.num_days()))
        .map(|d| d.num_days());
    match days {
        Some(d) => Some(if neg { -d } else { d }),
        None => {
            r.push(
                Diagnostic::new(
                    r.file,
                    n.pos,
                    format!("offset \"{text}\" must be whole days, e.g. -3d or 7d"),
                )
                .with_suggestion("the time of day is at: \"10:00\""),
            );
            None
        }
    }
}

/// `date: { field, offset?, at?, every? }`.
fn read_date_trigger(r: &mut Reader, v: &Node) -> Option<Trigger> {
    let f = r.fields(v, "the date trigger", &["field", "offset", "at", "every"])?;
    let Some(fnode) = f.get("field") else {
        r.push(
            Diagnostic::new(
                r.file,
                v.pos,
                "the date trigger needs field: (a date attribute)",
            )
            .with_suggestion("e.g. date: { field: birthday, at: \"10:00\", every: year }"),
        );
        return None;
    };
    let field = Located::new(r.string(fnode, "field")?, fnode.pos);
    let offset_days = match f.get("offset") {
        None => 0,
        Some(n) => {
            let text = r.string(n, "offset")?;
            let t = text.trim();
            let (neg, rest) = match t.strip_prefix('-') {
                Some(x) => (true, x),
                None => (false, t.strip_prefix('+').unwrap_or(t)),
            };
            let days = rest
                .parse::<crate::duration::Duration>()
                .ok()
                .map(|d| d.to_chrono())
                .filter(|d| *d == chrono::TimeDelta::days(d.num_days()))
                .map(|d| d.num_days());
            let Some(days) = days else {
                r.push(
                    Diagnostic::new(
                        r.file,
                        n.pos,
                        format!("offset \"{text}\" must be whole days, e.g. -3d or 7d"),
                    )
                    .with_suggestion("the time of day is at: \"10:00\""),
                );
                return None;
            };
            if neg { -days } else { days }
        }
    };
    let at = match f.get("at") {
        None => chrono::NaiveTime::from_hms_opt(9, 0, 0).expect("a valid time"),
        Some(n) => {
            let text = r.string(n, "at")?;
            match chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M") {
                Ok(t) => t,
                Err(_) => {
                    r.error(
                        n.pos,
                        format!("at \"{text}\" must be a time HH:MM such as \"10:00\""),
                    );
                    return None;
                }
            }
        }
    };
    let every_year = match f.get("every") {
        None => true,
        Some(n) => match r.string(n, "every")?.as_str() {
            "year" => true,
            "once" => false,
            other => {
                r.push(
                    Diagnostic::new(r.file, n.pos, format!("every \"{other}\" is year or once"))
                        .did_you_mean(other, ["year", "once"]),
                );
                return None;
            }
        },
    };
    Some(Trigger::Date(DateTrigger {
        field,
        calendar: None,
        offset_days,
        at,
        every_year,
        check: CronSchedule::parse(DateTrigger::CHECK).ok()?,
    }))
}

/// `goal: { event: NAME, where?: {...}, within: D }` or `goal: { condition: C, within: D }`.
fn read_goal(r: &mut Reader, v: &Node) -> Option<Goal> {
    let f = r.fields(v, "a goal", &["event", "where", "condition", "within"])?;
    let on = match (f.get("event"), f.get("condition")) {
        (Some(_), Some(c)) => {
            r.error(c.pos, "a goal is an event or a condition, not both");
            return None;
        }
        (Some(e), None) => {
            let name = r.string(e, "event")?;
            let where_ = match f.get("where") {
                Some(w) => Some(Box::new(crate::audience::parse::parse_where(r, w)?)),
                None => None,
            };
            WaitFor::Event {
                condition: Condition::Event {
                    name: name.clone(),
                    within: None,
                    at_least: 1,
                    where_,
                },
                name,
            }
        }
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
    let Some(w) = f.get("within") else {
        r.push(
            Diagnostic::new(
                r.file,
                v.pos,
                "a goal needs within: DURATION (the conversion window)",
            )
            .with_suggestion("e.g. goal: { event: purchase, within: 7d }"),
        );
        return None;
    };
    let within = r.duration(w, "within")?;
    Some(Goal { on, within })
}

/// `split: { arms: [ { name, weight, steps }, ... ] }`.
fn read_split(r: &mut Reader, v: &Node, id: &str) -> Option<StepAction> {
    let f = r.fields(v, "a split step", &["arms"])?;
    let Some(arms_node) = f.get("arms") else {
        r.push(
            Diagnostic::new(r.file, v.pos, "a split step needs arms: [...]").with_suggestion(
                "write split: { arms: [ { name: a, weight: 50, steps: [...] }, { name: b, weight: 50, steps: [...] } ] }",
            ),
        );
        return None;
    };
    let items = r.seq(arms_node, "arms")?;
    if items.len() < 2 {
        r.error(arms_node.pos, "a split needs at least two arms");
    }
    let mut arms: Vec<Arm> = Vec::new();
    for item in items {
        let Some(af) = r.fields(item, "an arm", &["name", "weight", "steps"]) else {
            continue;
        };
        let Some(name_node) = af.get("name") else {
            r.error(
                item.pos,
                "an arm needs name: (recorded for each contact, used in reports)",
            );
            continue;
        };
        let Some(name) = r.string(name_node, "name") else {
            continue;
        };
        if !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
            || name == "then"
            || name == "else"
        {
            r.error(
                name_node.pos,
                format!(
                    "arm name \"{name}\" must be letters, digits, - and _ (and not then or else)"
                ),
            );
            continue;
        }
        if let Some(first) = arms.iter().find(|a| a.name.value == name) {
            r.error(
                name_node.pos,
                format!(
                    "duplicate arm \"{name}\" (first at line {})",
                    first.name.pos.line
                ),
            );
            continue;
        }
        let weight = match af.get("weight") {
            Some(w) => match r.u32(w, "weight") {
                Some(0) => {
                    r.error(w.pos, "weight must be 1 or more");
                    continue;
                }
                Some(k) => k,
                None => continue,
            },
            None => 1,
        };
        let steps = match af.get("steps") {
            Some(n) if n.is_null() => Vec::new(),
            Some(n) => match r.seq(n, "steps") {
                Some(items) => read_steps(r, items, Some(&format!("{id}.{name}"))),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        arms.push(Arm {
            name: Located::new(name, name_node.pos),
            weight,
            steps,
        });
    }
    if arms.is_empty() {
        return None;
    }
    Some(StepAction::Split(SplitStep { arms }))
}

/// `notify: wecom` or `notify: { channel: wecom, template: T }`.
fn read_notify(r: &mut Reader, n: &Node) -> Option<Notify> {
    if n.as_map().is_some() {
        let g = r.fields(n, "notify", &["channel", "template"])?;
        let channel = required_located(r, &g, n, "channel", "notify")?;
        let template = g
            .get("template")
            .and_then(|t| r.string(t, "template").map(|s| Located::new(s, t.pos)));
        Some(Notify { channel, template })
    } else {
        r.string(n, "notify").map(|s| Notify {
            channel: Located::new(s, n.pos),
            template: None,
        })
    }
}

/// `set: { FIELD: VALUE, ... }`.
fn read_set(r: &mut Reader, v: &Node) -> Option<StepAction> {
    let Some(entries) = v.as_map() else {
        r.push(
            Diagnostic::new(
                r.file,
                v.pos,
                format!("set: needs a map of attributes, found {}", v.describe()),
            )
            .with_suggestion("write set: { level: gold, plan: \"{{event.properties.plan}}\" }"),
        );
        return None;
    };
    if entries.is_empty() {
        r.error(v.pos, "set: needs at least one attribute");
        return None;
    }
    let mut values = Vec::new();
    for (k, val) in entries {
        let Some(name) = k.scalar_text().map(str::to_string) else {
            r.error(k.pos, "an attribute name must be text");
            continue;
        };
        let value = match &val.kind {
            yaml::Kind::Null => SetValue::Literal(serde_json::Value::Null),
            yaml::Kind::Scalar { text, .. } => {
                if let Some(s) = val.as_str() {
                    if s.contains("{{") {
                        if let Err(e) = handlebars::Template::compile(s) {
                            r.error(
                                val.pos,
                                format!("the value of {name} is not a valid template: {e}"),
                            );
                            continue;
                        }
                        SetValue::Template(s.to_string())
                    } else {
                        SetValue::Literal(serde_json::Value::String(s.to_string()))
                    }
                } else if let Some(b) = val.as_bool() {
                    SetValue::Literal(serde_json::Value::Bool(b))
                } else if let Some(i) = val.as_i64() {
                    SetValue::Literal(serde_json::Value::from(i))
                } else if let Some(f) = val.as_f64() {
                    SetValue::Literal(serde_json::Value::from(f))
                } else {
                    SetValue::Literal(serde_json::Value::String(text.clone()))
                }
            }
            _ => {
                r.error(
                    val.pos,
                    format!("the value of {name} must be text, a number, true/false or null"),
                );
                continue;
            }
        };
        values.push((Located::new(name, k.pos), value));
    }
    Some(StepAction::Set(SetStep { values }))
}

fn required_located(
    r: &mut Reader,
    f: &Fields,
    at: &Node,
    key: &str,
    what: &str,
) -> Option<Located<String>> {
    match f.get(key) {
        Some(n) => r.string(n, key).map(|s| Located::new(s, n.pos)),
        None => {
            if !f.misspelt(key) {
                r.error(at.pos, format!("{what} needs \"{key}\""));
            }
            // An empty name is a placeholder the checks skip (already reported).
            Some(Located::new(String::new(), at.pos))
        }
    }
}

fn read_assign(r: &mut Reader, v: &Node) -> Option<StepAction> {
    let f = r.fields(
        v,
        "an assign step",
        &[
            "team",
            "strategy",
            "field",
            "only_if_unassigned",
            "notify",
            "per_salesperson",
        ],
    )?;
    let per_salesperson = f
        .get("per_salesperson")
        .and_then(|n| read_per_salesperson(r, n));
    let team = required_located(r, &f, v, "team", "an assign step");
    let strategy = match f.get("strategy") {
        None => Some(Strategy::RoundRobin),
        Some(n) => {
            let s = r.string(n, "strategy")?;
            match s.as_str() {
                "round_robin" => Some(Strategy::RoundRobin),
                "least_loaded" => Some(Strategy::LeastLoaded),
                "by_field" => Some(Strategy::ByField),
                _ => {
                    let mut d = Diagnostic::new(r.file, n.pos, format!("unknown strategy \"{s}\""))
                        .did_you_mean(&s, STRATEGIES);
                    if d.suggestion.is_none() {
                        d = d.with_suggestion(format!("strategies are: {}", STRATEGIES.join(", ")));
                    }
                    r.push(d);
                    None
                }
            }
        }
    };
    let field = f
        .get("field")
        .and_then(|n| r.string(n, "field").map(|s| Located::new(s, n.pos)));
    match (strategy, &field) {
        (Some(Strategy::ByField), None) => {
            r.push(
                Diagnostic::new(r.file, f.get("strategy").map_or(v.pos, |n| n.pos), "strategy by_field needs \"field\"")
                    .with_suggestion("name the contact field matched against a salesperson's id or region, e.g. field: region"),
            );
        }
        (Some(Strategy::RoundRobin | Strategy::LeastLoaded), Some(fl)) => {
            r.error(fl.pos, "\"field\" is only used with strategy: by_field");
        }
        _ => {}
    }
    let only_if_unassigned = f
        .get("only_if_unassigned")
        .and_then(|n| r.bool(n, "only_if_unassigned"))
        .unwrap_or(false);
    let notify = f.get("notify").and_then(|n| read_notify(r, n));
    Some(StepAction::Assign(AssignStep {
        team: team?,
        // Placeholder after an unknown strategy (reported), so `team` and
        // `notify` are still checked.
        strategy: strategy.unwrap_or(Strategy::RoundRobin),
        field,
        only_if_unassigned,
        notify,
        per_salesperson,
    }))
}

/// A webhook step's `store: { ATTRIBUTE: /json/pointer }`.
fn read_webhook_store(r: &mut Reader, n: &Node) -> Vec<(Located<String>, String)> {
    let Some(entries) = n.as_map() else {
        r.push(
            Diagnostic::new(
                r.file,
                n.pos,
                format!(
                    "store: needs a map of attribute: /json/pointer, found {}",
                    n.describe()
                ),
            )
            .with_suggestion("write store: { crm_id: /id, crm_stage: /deal/stage }"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.scalar_text().map(str::to_string) else {
            r.error(k.pos, "an attribute name must be text");
            continue;
        };
        if crate::contact::BUILTIN_FIELDS.contains(&name.as_str()) {
            r.error(
                k.pos,
                format!("store: \"{name}\" is a built-in field; a webhook's answer sets custom attributes only"),
            );
            continue;
        }
        let Some(pointer) = r.string(v, "a JSON pointer") else {
            continue;
        };
        if !pointer.starts_with('/') {
            r.push(
                Diagnostic::new(
                    r.file,
                    v.pos,
                    format!("store: \"{pointer}\" is not a JSON pointer"),
                )
                .with_suggestion(format!(
                    "a JSON pointer starts with / and names the path: /{} or /data/{}",
                    pointer.trim_start_matches('.'),
                    pointer.trim_start_matches('.')
                )),
            );
            continue;
        }
        out.push((Located::new(name, k.pos), pointer));
    }
    out
}

/// `per_salesperson: 30/d`.
fn read_per_salesperson(r: &mut Reader, n: &Node) -> Option<crate::settings::RateLimit> {
    let text = r.string(n, "per_salesperson")?;
    let rate = crate::settings::parse_rate(&text);
    if rate.is_none() {
        r.push(
            Diagnostic::new(
                r.file,
                n.pos,
                format!("per_salesperson \"{text}\" must be a rate such as 30/d"),
            )
            .with_suggestion("COUNT/h or COUNT/d: at most COUNT per salesperson in that time"),
        );
    }
    rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_of(src: &str) -> Entry {
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        wf.unwrap().workflow.entry
    }

    #[test]
    fn per_salesperson_is_a_rate_on_assign_and_send() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: t, per_salesperson: 30/d }\n  - send: { channel: c, template: x, per_salesperson: 5/h }\n";
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        match (&wf.steps[0].action, &wf.steps[1].action) {
            (StepAction::Assign(a), StepAction::Send(s)) => {
                let a = a.per_salesperson.unwrap();
                assert_eq!(
                    (a.count, a.per.to_chrono()),
                    (30, chrono::TimeDelta::days(1))
                );
                assert_eq!(s.per_salesperson.unwrap().count, 5);
            }
            other => panic!("{other:?}"),
        }
        let (_, diags) = load_str(
            Path::new("w.yaml"),
            "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: t, per_salesperson: lots }\n",
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].pos, Pos::new(3, 41));
        assert!(
            diags[0]
                .message
                .contains("per_salesperson \"lots\" must be a rate such as 30/d")
        );
    }

    #[test]
    fn staff_left_fires_on_the_wecom_staff_left_event() {
        use crate::store::plan_reads::LogEntry;
        for src in [
            "trigger: { staff_left: {} }\nsteps:\n  - wait: 1d\n",
            "trigger:\n  staff_left:\nsteps:\n  - wait: 1d\n",
        ] {
            let (wf, diags) = load_str(Path::new("w.yaml"), src);
            assert!(diags.is_empty(), "{diags:?}");
            let wf = wf.unwrap().workflow;
            assert_eq!(wf.trigger.kind(), "staff_left");
            let entry = |kind: &str, name: &str| LogEntry {
                seq: 1,
                kind: kind.into(),
                contact_id: "c1".into(),
                name: Some(name.into()),
                at: chrono::Utc::now(),
                origin: None,
                properties: Default::default(),
            };
            assert!(crate::engine::sources::fires(
                &wf,
                &entry("event", "wecom_staff_left")
            ));
            assert!(!crate::engine::sources::fires(
                &wf,
                &entry("event", "purchase")
            ));
            assert!(!crate::engine::sources::fires(
                &wf,
                &entry("tag_added", "wecom_staff_left")
            ));
        }
        let (_, diags) = load_str(
            Path::new("w.yaml"),
            "trigger: { staff_left: { who: lisi } }\nsteps:\n  - wait: 1d\n",
        );
        assert!(!diags.is_empty());
    }

    #[test]
    fn a_schedule_enters_on_every_tick_unless_told_otherwise() {
        let steps = "steps:\n  - wait: 1d\n";
        assert_eq!(
            entry_of(&format!(
                "trigger: {{ schedule: {{ cron: \"0 9 1 * *\" }} }}\n{steps}"
            )),
            Entry::EveryTime
        );
        assert_eq!(
            entry_of(&format!(
                "trigger: {{ schedule: {{ cron: \"0 9 1 * *\" }} }}\nentry: once\n{steps}"
            )),
            Entry::Once
        );
        assert_eq!(
            entry_of(&format!("trigger: {{ contact_created: {{}} }}\n{steps}")),
            Entry::Once
        );
    }
}

#[cfg(test)]
mod wait_until_tests {
    use super::*;

    const SRC: &str = r#"
name: cart
trigger: { event: { name: cart_abandoned } }
steps:
  - id: w
    wait_until:
      event: purchase
      where: { field: amount, gte: 100 }
      timeout: 3d
      then:
        - tag: { add: [bought] }
      else:
        - tag: { add: [nudged] }
        - tag: { add: [nudged-twice] }
  - id: after
    tag: { add: [done] }
"#;

    #[test]
    fn reads_an_event_wait_with_its_branches_and_their_ids() {
        let (wf, diags) = load_str(Path::new("w.yaml"), SRC);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        let StepAction::WaitUntil(w) = &wf.steps[0].action else {
            panic!("{:?}", wf.steps[0]);
        };
        assert_eq!(w.timeout.to_string(), "3d");
        match &w.until {
            WaitFor::Event { name, condition } => {
                assert_eq!(name, "purchase");
                assert!(condition.has_event_where());
            }
            other => panic!("{other:?}"),
        }
        let ids: Vec<&str> = wf.all_steps().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["w", "w.then.0", "w.else.0", "w.else.1", "after"]);
        // The end of either branch continues after the step.
        assert_eq!(wf.next_after("w.then.0").unwrap().id, "after");
        assert_eq!(wf.next_after("w.else.0").unwrap().id, "w.else.1");
        assert_eq!(wf.next_after("w.else.1").unwrap().id, "after");
    }

    #[test]
    fn reads_a_condition_wait() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - wait_until: { condition: { tag: vip }, timeout: 2h }\n";
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        let StepAction::WaitUntil(w) = &wf.steps[0].action else {
            panic!();
        };
        assert!(matches!(&w.until, WaitFor::Condition(Condition::Tag(t)) if t == "vip"));
        assert!(w.then.is_empty() && w.otherwise.is_empty());
    }

    fn errors(src: &str) -> Vec<String> {
        let (_, diags) = load_str(Path::new("w.yaml"), src);
        diags
            .iter()
            .map(|d| {
                format!(
                    "{}:{}: {}{}",
                    d.pos.line,
                    d.pos.col,
                    d.message,
                    d.suggestion
                        .as_deref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn reports_mistakes_where_they_are_written() {
        let head = "trigger: { contact_created: {} }\nsteps:\n";
        let e = errors(&format!(
            "{head}  - wait_until:\n      event: purchase\n      timout: 3d\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("5:7: unknown key \"timout\"") && m.contains("timeout")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("needs timeout")), "{e:?}");
        let e = errors(&format!("{head}  - wait_until: {{ timeout: 3d }}\n"));
        assert!(
            e.iter()
                .any(|m| m.contains("needs event: NAME or condition")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{head}  - wait_until: {{ event: a, condition: {{ tag: b }}, timeout: 1d }}\n"
        ));
        assert!(e.iter().any(|m| m.contains("not both")), "{e:?}");
        let e = errors(&format!(
            "{head}  - wait_until: {{ event: a, timeout: 1d }}\n    then: []\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("4:5:") && m.contains("goes inside it")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{head}  - wait_until: {{ event: a, timeout: 0s }}\n"
        ));
        assert!(e.iter().any(|m| m.contains("longer than 0")), "{e:?}");
    }
}

#[cfg(test)]
mod set_notify_tests {
    use super::*;

    #[test]
    fn reads_set_values_by_their_yaml_type_and_notify() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - set: { a: text, b: 12, c: 1.5, d: true, e: null, f: \"{{contact.name}}\", g: \"12\" }\n  - notify: wecom\n  - notify: { channel: sms, template: t }\n";
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        let StepAction::Set(st) = &wf.steps[0].action else {
            panic!();
        };
        let got: Vec<(&str, &SetValue)> = st
            .values
            .iter()
            .map(|(k, v)| (k.value.as_str(), v))
            .collect();
        use serde_json::json;
        assert_eq!(
            got,
            vec![
                ("a", &SetValue::Literal(json!("text"))),
                ("b", &SetValue::Literal(json!(12))),
                ("c", &SetValue::Literal(json!(1.5))),
                ("d", &SetValue::Literal(json!(true))),
                ("e", &SetValue::Literal(json!(null))),
                ("f", &SetValue::Template("{{contact.name}}".into())),
                ("g", &SetValue::Literal(json!("12"))),
            ]
        );
        assert!(
            matches!(&wf.steps[1].action, StepAction::Notify(n) if n.channel.value == "wecom" && n.template.is_none())
        );
        assert!(
            matches!(&wf.steps[2].action, StepAction::Notify(n) if n.template.as_ref().unwrap().value == "t")
        );
    }

    #[test]
    fn a_broken_template_value_is_reported_where_it_is() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - set: { a: \"{{#if x}}\" }\n";
        let (_, diags) = load_str(Path::new("w.yaml"), src);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].pos.line, diags[0].pos.col), (3, 15));
        assert!(diags[0].message.contains("not a valid template"));
    }
}
