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

mod fields;
mod messages;
mod owner;
mod render;

pub use fields::literal_type_problem;
use fields::*;
use messages::*;
pub use messages::{SMS_PARAM_MAX_CHARS, has_url};
use render::*;
pub use render::{render_sample, sample_context};

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
    // `address:` of a channel names the contact field messages go to.
    if let Some(settings_file) = &cx.settings.file {
        const ADDRESS_FIELDS: [&str; 4] = ["phone", "email", "wecom_external_userid", "id"];
        for ch in cx.settings.channels.values() {
            let Some(a) = ch.options.get("address") else {
                continue;
            };
            let declared = cx.settings.fields.get(&a.value);
            if ADDRESS_FIELDS.contains(&a.value.as_str()) || declared == Some(&FieldType::String) {
                continue;
            }
            let known: Vec<String> = ADDRESS_FIELDS
                .iter()
                .map(|f| f.to_string())
                .chain(
                    cx.settings
                        .fields
                        .iter()
                        .filter(|(_, t)| **t == FieldType::String)
                        .map(|(n, _)| n.clone()),
                )
                .collect();
            let why = match declared {
                Some(t) => format!("is a {} field, not an address", t.name()),
                None => "is not a contact field".to_string(),
            };
            let d = Diagnostic::new(
                settings_file,
                a.pos,
                format!("channel \"{}\": address \"{}\" {why}", ch.name, a.value),
            )
            .did_you_mean(&a.value, &known);
            let d = if d.suggestion.is_none() {
                d.with_suggestion(format!(
                    "address names the contact field messages go to: {}",
                    known.join(", ")
                ))
            } else {
                d
            };
            out.push(d);
        }
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
        let mut undeclared = Vec::new();
        let file = cx.settings.templates_dir.join(format!("{name}.hbs"));
        let r = render_sample(cx, &name, None, &mut undeclared);
        for f in undeclared {
            out.push(undeclared_warning(&file, Pos::new(1, 1), &f));
        }
        for e in r.err().unwrap_or_default() {
            let line = template_error_line(&e).unwrap_or(1);
            let col = column_in(&file, line, &e);
            out.push(render_diag(
                cx,
                Diagnostic::new(
                    file.clone(),
                    Pos::new(line, col),
                    format!("template does not render for a sample contact: {e}"),
                ),
                &e,
            ));
        }
    }
    out
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

    if let Trigger::Event { name } = &wf.trigger {
        check_event_name(cx, file, name, out);
    }
    if let Trigger::Date(d) = &wf.trigger
        && d.calendar.is_none()
        && check_field_name(cx, file, &d.field, out)
    {
        match s.fields.get(&d.field.value) {
            Some(FieldType::Date | FieldType::Timestamp) | None => {}
            Some(t) => out.push(
                Diagnostic::new(
                    file,
                    d.field.pos,
                    format!(
                        "the date trigger's field {} is declared {}, not date",
                        d.field.value,
                        t.name()
                    ),
                )
                .with_suggestion(format!("declare it fields: {{ {}: date }}", d.field.value)),
            ),
        }
    }
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
                check_sms_params(cx, wf, send, out);
                check_attachments_channel(cx, wf, send, out);
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
                } else if cx.templates.contains(t) && rendered.insert(t.value.as_str()) {
                    let mut undeclared = Vec::new();
                    let r = render_sample(cx, t, Some(wf), &mut undeclared);
                    for f in undeclared {
                        out.push(undeclared_warning(
                            file,
                            t.pos,
                            &format!("{f}\" in template \"{}", t.value),
                        ));
                    }
                    let errors = r.err().unwrap_or_default();
                    // Said where it is to be fixed: the template's file and line.
                    let hbs = s.templates_dir.join(format!("{}.hbs", t.value));
                    for e in errors {
                        let line = template_error_line(&e).unwrap_or(1);
                        let col = column_in(&hbs, line, &e);
                        out.push(render_diag(
                            cx,
                            Diagnostic::new(
                                hbs.clone(),
                                Pos::new(line, col),
                                format!(
                                    "template \"{}\" does not render for a sample contact of workflow \"{}\" ({}:{}): {e}",
                                    t.value,
                                    wf.name,
                                    file.display(),
                                    t.pos.line
                                ),
                            ),
                            &e,
                        ));
                    }
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
                    check_channel(file, &n.channel, &channels, out);
                    check_notice(cx, file, n, out);
                }
                if let Some(f) = &a.field {
                    check_field_name(cx, file, f, out);
                }
            }
            StepAction::If(i) => check_condition(cx, file, &i.condition, out),
            // The event's name and its where: are checked as an event condition's.
            StepAction::WaitUntil(w) => check_condition(cx, file, w.until.condition(), out),
            StepAction::Split(_) => {}
            StepAction::Webhook(w) => {
                check_channel(file, &w.channel, &channels, out);
                if let Some(ch) = s.channels.get(&w.channel.value)
                    && !matches!(
                        ch.kind,
                        crate::settings::ChannelKind::Webhook | crate::settings::ChannelKind::Log
                    )
                {
                    out.push(
                        Diagnostic::new(
                            file,
                            w.channel.pos,
                            format!(
                                "channel \"{}\" is kind {}; a webhook step posts to a webhook channel",
                                w.channel.value,
                                ch.kind.name()
                            ),
                        )
                        .with_suggestion("add one: channels: { crm_hook: { kind: webhook, url: ..., secret_env: ... } } (kind: log previews it)"),
                    );
                }
            }
            StepAction::Notify(n) => {
                check_channel(file, &n.channel, &channels, out);
                check_notice(cx, file, n, out);
            }
            StepAction::Set(st) => {
                for (k, v) in &st.values {
                    if BUILTIN_FIELDS.contains(&k.value.as_str()) {
                        out.push(
                            Diagnostic::new(
                                file,
                                k.pos,
                                format!(
                                    "set: writes custom attributes; \"{}\" is a built-in field",
                                    k.value
                                ),
                            )
                            .with_suggestion("built-in fields change through the API or an import"),
                        );
                        continue;
                    }
                    if !check_field_name(cx, file, k, out) {
                        continue;
                    }
                    let declared = s.fields.get(&k.value).copied();
                    let ok = match (declared, v) {
                        (Some(t), crate::workflow::SetValue::Literal(x)) => match t {
                            crate::settings::FieldType::Number => x.is_number() || x.is_null(),
                            crate::settings::FieldType::Bool => x.is_boolean() || x.is_null(),
                            crate::settings::FieldType::String => x.is_string() || x.is_null(),
                            crate::settings::FieldType::Timestamp => {
                                x.as_str().is_some_and(|t| {
                                    chrono::DateTime::parse_from_rfc3339(t).is_ok()
                                }) || x.is_null()
                            }
                            crate::settings::FieldType::Date => {
                                x.as_str().is_some_and(|t| {
                                    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok()
                                }) || x.is_null()
                            }
                        },
                        _ => true,
                    };
                    if !ok {
                        out.push(Diagnostic::new(
                            file,
                            k.pos,
                            format!(
                                "{} is declared {} in nurture.yaml; this value is not one",
                                k.value,
                                match declared {
                                    Some(crate::settings::FieldType::Date) => "a date (YYYY-MM-DD)",
                                    Some(crate::settings::FieldType::Number) => "a number",
                                    Some(crate::settings::FieldType::Bool) => "true or false",
                                    Some(crate::settings::FieldType::Timestamp) =>
                                        "a timestamp (RFC 3339)",
                                    _ => "text",
                                }
                            ),
                        ));
                    }
                }
            }
            StepAction::Tag(_) | StepAction::Wait(_) => {}
        }
    }
    out.extend(owner::sends_without_owner(cx, wf, file));
    for c in [&wf.audience, &wf.exit_when].into_iter().flatten() {
        check_condition(cx, file, c, out);
    }
    if let Some(g) = &wf.goal {
        check_condition(cx, file, g.on.condition(), out);
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

/// Where `text` first appears in `file` (for names the model keeps without
/// a position); the start of the file if it cannot be read.
fn find_in_file(file: &std::path::Path, text: &str) -> Pos {
    let Ok(src) = std::fs::read_to_string(file) else {
        return Pos::new(1, 1);
    };
    for (i, line) in src.lines().enumerate() {
        if let Some(at) = line.find(text) {
            let col = line[..at].chars().count() as u32 + 1;
            return Pos::new(i as u32 + 1, col);
        }
    }
    Pos::new(1, 1)
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
