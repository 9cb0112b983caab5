//! Rules that need the whole project (SPEC §3.1): workflow names are unique;
//! step ids are unique within a workflow; every channel, template, team,
//! field and salesperson referred to exists; time comparisons are on
//! timestamp fields; and every template renders for a sample contact.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::load::LoadedWorkflow;
use super::model::*;
use crate::audience::{Condition, FieldTest, OwnerTest};
use crate::contact::{BUILTIN_FIELDS, TIMESTAMP_FIELDS};
use crate::diagnostics::{Diagnostic, Pos};
use crate::settings::{FieldType, Salesperson, Settings};
use crate::template::{self, TemplateError, Templates};

/// Everything `check_project` needs to know besides the workflows.
pub struct CheckContext<'a> {
    pub settings: &'a Settings,
    pub templates: &'a Templates,
    /// Names of every `*.hbs` file in the templates folder, including those
    /// that failed to compile (their errors are reported by the loader; a
    /// reference to them is not "missing").
    pub template_files: &'a BTreeSet<String>,
    /// The `now` of the sample render.
    pub now: DateTime<Utc>,
}

/// Checks every workflow against the others and against the settings and
/// templates. Templates no workflow refers to are rendered too.
pub fn check_project(cx: &CheckContext, workflows: &[LoadedWorkflow]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, &LoadedWorkflow> = HashMap::new();
    for lw in workflows {
        let wf = &lw.workflow;
        if let Some(first) = names.get(wf.name.as_str()) {
            out.push(
                Diagnostic::new(
                    &wf.file,
                    lw.name_pos,
                    format!("workflow name \"{}\" is already used", wf.name),
                )
                .with_suggestion(format!(
                    "the first is {}:{}:{}; names must be unique (set name: or rename the file)",
                    first.workflow.file.display(),
                    first.name_pos.line,
                    first.name_pos.col
                )),
            );
        } else {
            names.insert(&wf.name, lw);
        }
        check_workflow(cx, wf, &mut out);
    }
    // Templates no workflow sends are still checked: they may be used soon.
    let used: BTreeSet<&str> = workflows
        .iter()
        .flat_map(|lw| lw.workflow.all_steps())
        .filter_map(|s| match &s.action {
            StepAction::Send(x) => Some(x.template.value.as_str()),
            _ => None,
        })
        .collect();
    let unused: Vec<String> = cx
        .templates
        .names()
        .filter(|n| !used.contains(n))
        .map(str::to_string)
        .collect();
    for name in unused {
        if let Err(e) = cx
            .templates
            .render(&name, &sample_context(cx, "sample-workflow"))
        {
            let file = cx.settings.templates_dir.join(format!("{name}.hbs"));
            let line = template_error_line(&e).unwrap_or(1);
            out.push(render_diag(
                cx,
                Diagnostic::new(
                    file,
                    Pos::new(line, 1),
                    format!("template does not render for a sample contact: {e}"),
                ),
                &e,
            ));
        }
    }
    out
}

fn template_error_line(e: &TemplateError) -> Option<u32> {
    match e {
        TemplateError::MissingVariable { line, .. } | TemplateError::Render { line, .. } => *line,
        TemplateError::NotFound(_) | TemplateError::TooLong { .. } => None,
    }
}

/// Adds a did-you-mean to a missing `contact.X` variable.
fn render_diag(cx: &CheckContext, d: Diagnostic, e: &TemplateError) -> Diagnostic {
    if let TemplateError::MissingVariable { var: Some(var), .. } = e
        && let Some(field) = var.strip_prefix("contact.")
    {
        let known = known_fields(cx.settings);
        let d = d.did_you_mean(field, &known);
        if d.suggestion.is_some() {
            return d;
        }
        return d.with_suggestion(format!(
            "use {{{{default {var} \"...\"}}}} for a field some contacts lack, or declare it under fields: in nurture.yaml"
        ));
    }
    d
}

fn known_fields(settings: &Settings) -> Vec<String> {
    BUILTIN_FIELDS
        .iter()
        .map(|s| s.to_string())
        .chain(settings.fields.keys().cloned())
        .collect()
}

fn check_workflow(cx: &CheckContext, wf: &Workflow, out: &mut Vec<Diagnostic>) {
    let s = cx.settings;
    let file = &wf.file;
    let channels: Vec<&str> = s.channels.keys().map(String::as_str).collect();
    let teams: Vec<&str> = s.teams.keys().map(String::as_str).collect();

    let mut ids: HashMap<&str, Pos> = HashMap::new();
    let mut rendered: BTreeSet<&str> = BTreeSet::new();
    for step in wf.all_steps() {
        if let Some(first) = ids.get(step.id.as_str()) {
            out.push(Diagnostic::new(
                file,
                step.pos,
                format!("duplicate step id \"{}\" (first used at line {})", step.id, first.line),
            ).with_suggestion("step ids must be unique within a workflow: running contacts are kept at their step by id"));
        } else {
            ids.insert(&step.id, step.pos);
        }
        match &step.action {
            StepAction::Send(send) => {
                check_channel(file, &send.channel, &channels, out);
                let t = &send.template;
                if t.value.is_empty() {
                    // Missing in the file: reported by the loader.
                } else if !cx.templates.contains(t) && !cx.template_files.contains(&t.value) {
                    let mut d = Diagnostic::new(
                        file,
                        t.pos,
                        format!(
                            "no template \"{}\" ({} does not exist)",
                            t.value,
                            s.templates_dir.join(format!("{}.hbs", t.value)).display()
                        ),
                    )
                    .did_you_mean(&t.value, cx.template_files);
                    if d.suggestion.is_none() && !cx.template_files.is_empty() {
                        d = d.with_suggestion(format!(
                            "templates are: {}",
                            cx.template_files
                                .iter()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    out.push(d);
                } else if cx.templates.contains(t)
                    && rendered.insert(t.value.as_str())
                    && let Err(e) = cx.templates.render(t, &sample_context(cx, &wf.name))
                {
                    out.push(render_diag(
                        cx,
                        Diagnostic::new(
                            file,
                            t.pos,
                            format!(
                                "template \"{}\" does not render for a sample contact: {e}",
                                t.value
                            ),
                        ),
                        &e,
                    ));
                }
            }
            StepAction::Assign(a) => {
                if !a.team.value.is_empty() && !s.teams.contains_key(&a.team.value) {
                    let mut d = Diagnostic::new(
                        file,
                        a.team.pos,
                        format!("no team \"{}\" in the settings", a.team.value),
                    )
                    .did_you_mean(&a.team.value, &teams);
                    if d.suggestion.is_none() {
                        d = d.with_suggestion(if teams.is_empty() {
                            "define it under teams: in nurture.yaml".to_string()
                        } else {
                            format!("teams are: {}", teams.join(", "))
                        });
                    }
                    out.push(d);
                }
                if let Some(n) = &a.notify {
                    check_channel(file, n, &channels, out);
                }
                if let Some(f) = &a.field {
                    check_field_name(cx, file, f, out);
                }
            }
            StepAction::If(i) => check_condition(cx, file, &i.condition, out),
            StepAction::Tag(_) | StepAction::Wait(_) => {}
        }
    }
    for c in [&wf.audience, &wf.exit_when].into_iter().flatten() {
        check_condition(cx, file, c, out);
    }
}

fn check_channel(
    file: &std::path::Path,
    ch: &Located<String>,
    channels: &[&str],
    out: &mut Vec<Diagnostic>,
) {
    if ch.value.is_empty() || channels.contains(&ch.value.as_str()) {
        return;
    }
    let mut d = Diagnostic::new(
        file,
        ch.pos,
        format!("no channel \"{}\" in the settings", ch.value),
    )
    .did_you_mean(&ch.value, channels);
    if d.suggestion.is_none() {
        d = d.with_suggestion(format!("channels are: {}", channels.join(", ")));
    }
    out.push(d);
}

/// Unknown field names are reported only when the settings declare
/// `fields:`; without that list any custom attribute may exist.
fn check_field_name(
    cx: &CheckContext,
    file: &std::path::Path,
    f: &Located<String>,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let s = cx.settings;
    if s.fields.is_empty()
        || BUILTIN_FIELDS.contains(&f.value.as_str())
        || s.fields.contains_key(&f.value)
    {
        return true;
    }
    let known = known_fields(s);
    let mut d = Diagnostic::new(file, f.pos, format!("unknown field \"{}\"", f.value))
        .did_you_mean(&f.value, &known);
    if d.suggestion.is_none() {
        d = d.with_suggestion("declare custom attributes under fields: in nurture.yaml");
    }
    out.push(d);
    false
}

fn check_condition(
    cx: &CheckContext,
    file: &std::path::Path,
    c: &Condition,
    out: &mut Vec<Diagnostic>,
) {
    match c {
        Condition::All(cs) | Condition::Any(cs) => {
            cs.iter().for_each(|c| check_condition(cx, file, c, out))
        }
        Condition::Not(c) => check_condition(cx, file, c, out),
        Condition::Field { field, test } => {
            if !check_field_name(cx, file, field, out) {
                return;
            }
            if matches!(test, FieldTest::OlderThan(_) | FieldTest::NewerThan(_)) {
                let is_ts = TIMESTAMP_FIELDS.contains(&field.value.as_str())
                    || cx.settings.fields.get(&field.value) == Some(&FieldType::Timestamp);
                let known_other = BUILTIN_FIELDS.contains(&field.value.as_str())
                    || cx.settings.fields.contains_key(&field.value);
                if !is_ts && known_other {
                    let op = if matches!(test, FieldTest::OlderThan(_)) {
                        "older_than"
                    } else {
                        "newer_than"
                    };
                    out.push(Diagnostic::new(
                        file,
                        field.pos,
                        format!(
                            "{op} compares times, but \"{}\" is not a timestamp field",
                            field.value
                        ),
                    ));
                }
            }
        }
        Condition::Owner(OwnerTest::Is(id)) => {
            // Salespeople live in the settings; without teams we cannot tell.
            let s = cx.settings;
            if !s.teams.is_empty() && s.salesperson(id).is_none() {
                let ids: Vec<&str> = s.teams.values().flatten().map(|p| p.id.as_str()).collect();
                // The model keeps no position for owner ids: point at the file.
                out.push(
                    Diagnostic::new(
                        file,
                        Pos::new(1, 1),
                        format!("owner \"{id}\" is not a salesperson in any team"),
                    )
                    .did_you_mean(id, &ids),
                );
            }
        }
        Condition::Owner(_) | Condition::Tag(_) | Condition::Event { .. } => {}
    }
}

/// The template data of `validate`'s sample render: every built-in field,
/// every declared field with a plausible value, an owner and the workflow.
pub fn sample_context(cx: &CheckContext, workflow: &str) -> Value {
    let s = cx.settings;
    let mut contact = template::sample_contact();
    contact.tags.insert("vip".into());
    for (name, ty) in &s.fields {
        let v = match ty {
            FieldType::String => Value::String(format!("sample {name}")),
            FieldType::Number => Value::from(42),
            FieldType::Timestamp => Value::String("2026-01-01T09:00:00+08:00".into()),
            FieldType::Bool => Value::Bool(true),
        };
        contact.attrs.insert(name.clone(), v);
    }
    let owner = s
        .teams
        .values()
        .flatten()
        .next()
        .cloned()
        .unwrap_or_else(|| Salesperson {
            id: "s01".into(),
            name: None,
            wecom_userid: None,
            email: None,
            region: None,
            capacity: None,
        });
    // Fill what the settings leave out so `{{owner.name}}` checks as present.
    let owner = Salesperson {
        name: owner.name.or(Some("Wang Fang".into())),
        wecom_userid: owner.wecom_userid.or(Some("wangfang".into())),
        email: owner.email.or(Some("wangfang@example.com".into())),
        region: owner.region.or(Some("east".into())),
        ..owner
    };
    contact.owner = Some(owner.id.clone());
    template::render_context(
        &contact,
        Some(&owner.template_value()),
        workflow,
        cx.now,
        s.timezone,
    )
}

/// Template names in `dir` (stems of `*.hbs`), whether or not they compile.
pub fn template_files(dir: &std::path::Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hbs"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect()
}
