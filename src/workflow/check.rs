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
        if let Err(e) = r {
            let file = cx.settings.templates_dir.join(format!("{name}.hbs"));
            let line = template_error_line(&e).unwrap_or(1);
            let col = column_in(&file, line, &e);
            out.push(render_diag(
                cx,
                Diagnostic::new(
                    file,
                    Pos::new(line, col),
                    format!("template does not render for a sample contact: {e}"),
                ),
                &e,
            ));
        }
    }
    out
}

/// The column (in characters, from 1) of a missing variable on `line` of
/// the template file; 1 when it cannot be told.
fn column_in(file: &std::path::Path, line: u32, e: &TemplateError) -> u32 {
    let TemplateError::MissingVariable { var: Some(var), .. } = e else {
        return 1;
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return 1;
    };
    let Some(l) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return 1;
    };
    match l.find(var.as_str()) {
        Some(i) => l[..i].chars().count() as u32 + 1,
        None => 1,
    }
}

fn template_error_line(e: &TemplateError) -> Option<u32> {
    match e {
        TemplateError::MissingVariable { line, .. } | TemplateError::Render { line, .. } => *line,
        TemplateError::NotFound(_) | TemplateError::TooLong { .. } => None,
    }
}

/// Adds a did-you-mean to a missing `contact.X` variable.
/// Longest value of one Aliyun SMS template variable, in characters
/// (Aliyun refuses longer ones with `isv.PARAM_LENGTH_LIMIT`).
pub const SMS_PARAM_MAX_CHARS: usize = 35;

/// Whether `v` looks like it carries a link (Aliyun refuses links in
/// variables with `isv.PARAM_NOT_SUPPORT_URL`: they belong in the reviewed
/// template text).
pub fn has_url(v: &str) -> bool {
    let l = v.to_lowercase();
    l.contains("://") || l.contains("www.")
}

/// A send on an `aliyun_sms` channel: Aliyun sends only reviewed, fixed
/// templates with short variables, so the template maps named values into
/// them with `params:` (each rendered for the sample contact: at most
/// [`SMS_PARAM_MAX_CHARS`] characters, no link).
fn check_sms_params(cx: &CheckContext, wf: &Workflow, send: &SendStep, out: &mut Vec<Diagnostic>) {
    let is_aliyun = cx
        .settings
        .channels
        .get(&send.channel.value)
        .is_some_and(|c| c.kind == crate::settings::ChannelKind::AliyunSms);
    let t = &send.template;
    if !is_aliyun || !cx.templates.contains(t) {
        return;
    }
    let file = &wf.file;
    if cx.templates.param_names(t).is_empty() {
        out.push(
            Diagnostic::new(
                file,
                t.pos,
                format!(
                    "template \"{}\" is sent on the aliyun_sms channel \"{}\" but has no params:",
                    t.value, send.channel.value
                ),
            )
            .with_suggestion(
                "Aliyun sends only its reviewed, fixed template text with short variables: map them in the template's front matter, e.g. `params: { name: \"{{contact.name}}\", city: \"{{default contact.city \\\"全国\\\"}}\" }`",
            ),
        );
        return;
    }
    let Ok(r) = render_sample(cx, t, Some(wf), &mut Vec::new()) else {
        // Reported where the template is rendered.
        return;
    };
    for (name, v) in &r.params {
        let n = v.chars().count();
        let problem = if n > SMS_PARAM_MAX_CHARS {
            Some(format!(
                "is {n} characters for a sample contact; Aliyun takes at most {SMS_PARAM_MAX_CHARS} per variable (isv.PARAM_LENGTH_LIMIT)"
            ))
        } else if has_url(v) {
            Some("holds a link; Aliyun refuses links in variables (isv.PARAM_NOT_SUPPORT_URL): put it in the reviewed template text".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            out.push(Diagnostic::new(
                file,
                t.pos,
                format!("template \"{}\": param \"{name}\" {p}", t.value),
            ));
        }
    }
}

/// A template with `attachments:` sent on a channel that is not WeCom (or a
/// `log` channel standing in for it): only
/// WeCom sends them, and dropping them would send something other than what
/// the preview shows (see `crate::attachments`).
fn check_attachments_channel(
    cx: &CheckContext,
    wf: &Workflow,
    send: &SendStep,
    out: &mut Vec<Diagnostic>,
) {
    let Some(ch) = cx.settings.channels.get(&send.channel.value) else {
        return;
    };
    let t = &send.template;
    // A `log` channel may stand in for WeCom (the quick start): it writes
    // the attachments to the log with the text.
    if matches!(
        ch.kind,
        crate::settings::ChannelKind::Wecom | crate::settings::ChannelKind::Log
    ) || cx.templates.attachments_at(t).is_none()
    {
        return;
    }
    out.push(
        Diagnostic::new(
            &wf.file,
            t.pos,
            format!(
                "template \"{}\" has attachments, but channel \"{}\" is {}: only WeCom sends attachments",
                t.value,
                send.channel.value,
                ch.kind.name()
            ),
        )
        .with_suggestion(
            "send this template on a wecom channel, or use a template without attachments: (put a link in the text instead)",
        ),
    );
}

/// The event a workflow's trigger starts its enrollments with, as the
/// sample render sees it, and whether its properties are open (not declared
/// under `events:`: any property may exist). `None` for cron triggers.
fn sample_event(
    cx: &CheckContext,
    wf: Option<&Workflow>,
) -> Option<(crate::contact::TriggerEvent, bool)> {
    let mut e = crate::contact::TriggerEvent {
        name: "sample_event".into(),
        at: cx.now,
        properties: Default::default(),
    };
    let Some(wf) = wf else {
        return Some((e, true));
    };
    match &wf.trigger {
        Trigger::Event { name } => {
            e.name = name.clone();
            match cx.settings.events.get(name) {
                Some(props) => {
                    for (p, ty) in props {
                        e.properties.insert(p.clone(), sample_value(p, *ty));
                    }
                    Some((e, false))
                }
                None => Some((e, true)),
            }
        }
        Trigger::TagAdded { tag } => {
            e.name = "tag_added".into();
            e.properties
                .insert("tag".into(), Value::String(tag.clone()));
            Some((e, false))
        }
        Trigger::ContactCreated { .. } => {
            e.name = "contact_created".into();
            Some((e, false))
        }
        _ => None,
    }
}

fn sample_value(name: &str, ty: FieldType) -> Value {
    match ty {
        FieldType::String => Value::String(format!("sample {name}")),
        FieldType::Number => Value::from(42),
        FieldType::Timestamp => Value::String("2026-01-01T09:00:00+08:00".into()),
        FieldType::Bool => Value::Bool(true),
        FieldType::Date => Value::String("1990-06-15".into()),
    }
}

/// Renders a template for the sample contact, with the event `wf`'s trigger
/// starts (any workflow's, for a template no workflow sends). Properties of
/// an event not declared under `events:` may be anything: each one the
/// template reads is given a sample value.
pub fn render_sample(
    cx: &CheckContext,
    template: &str,
    wf: Option<&Workflow>,
    undeclared: &mut Vec<String>,
) -> Result<template::Rendered, TemplateError> {
    let mut ctx = sample_context(cx, wf.map_or("sample-workflow", |w| w.name.as_str()));
    let event = sample_event(cx, wf);
    let tz = cx.settings.timezone;
    let mut open = false;
    if let (Some((e, o)), Some(m)) = (&event, ctx.as_object_mut()) {
        m.insert("event".into(), e.template_value(tz));
        open = *o;
    }
    for _ in 0..32 {
        match cx.templates.render(template, &ctx) {
            // A custom attribute not declared under `fields:` (and not a
            // near miss of a known name): a warning, rendered with a sample.
            Err(TemplateError::MissingVariable { var: Some(var), .. })
                if var.strip_prefix("contact.").is_some_and(|f| {
                    let f = f.split('.').next().unwrap_or_default();
                    !f.is_empty()
                        && !known_fields(cx.settings).iter().any(|k| k == f)
                        && crate::diagnostics::did_you_mean(f, known_fields(cx.settings)).is_none()
                        && ctx["contact"].get(f).is_none()
                }) =>
            {
                let f = var["contact.".len()..]
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                ctx["contact"][f.as_str()] = Value::String(format!("sample {f}"));
                undeclared.push(f);
            }
            Err(TemplateError::MissingVariable { var: Some(var), .. })
                if open && var.starts_with("event.properties.") =>
            {
                let prop = var["event.properties.".len()..]
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let props = &mut ctx["event"]["properties"];
                if prop.is_empty() || props.get(&prop).is_some() {
                    return cx.templates.render(template, &ctx);
                }
                props[prop.as_str()] = Value::String(format!("sample {prop}"));
            }
            other => return other,
        }
    }
    cx.templates.render(template, &ctx)
}

fn render_diag(cx: &CheckContext, d: Diagnostic, e: &TemplateError) -> Diagnostic {
    if let TemplateError::MissingVariable { var: Some(var), .. } = e
        && let Some(rest) = var.strip_prefix("event.")
    {
        if let Some(prop) = rest.strip_prefix("properties.") {
            let prop = prop.split('.').next().unwrap_or_default();
            let declared: Vec<String> = cx
                .settings
                .events
                .values()
                .flat_map(|p| p.keys().cloned())
                .collect();
            let d = d.did_you_mean(prop, &declared);
            if d.suggestion.is_some() {
                return d;
            }
            return d.with_suggestion(format!(
                "the event's properties are declared under events: in nurture.yaml; use {{{{default {var} \"...\"}}}} for one some events lack"
            ));
        }
        let d = d.did_you_mean(rest, ["name", "at", "properties"]);
        if d.suggestion.is_some() {
            return d;
        }
        return d.with_suggestion(
            "`event` is the event that started the enrollment (event, tag_added and contact_created triggers); a schedule or inactive workflow has none",
        );
    }
    if let TemplateError::MissingVariable { var: Some(var), .. } = e
        && let Some(field) = var.strip_prefix("contact.")
    {
        let known = known_fields(cx.settings);
        let d = d.did_you_mean(field, &known);
        if d.suggestion.is_some() {
            return d;
        }
        return d.with_suggestion(format!(
            "use {{{{default {var} \"...\"}}}} for a field some contacts lack, or declare it under fields: in nurture.yaml; the contact's fields are {}",
            known.iter().map(|k| format!("contact.{k}")).collect::<Vec<_>>().join(", ")
        ));
    }
    if let TemplateError::MissingVariable { var: Some(var), .. } = e {
        let ctx = sample_context(cx, "sample-workflow");
        let mut vars = Vec::new();
        variables(&ctx, "", &mut vars);
        let d = d.did_you_mean(var, &vars);
        if d.suggestion.is_some() {
            return d;
        }
        return d.with_suggestion(format!(
            "the variables are {} (and event.name, event.at, event.properties.* in event-triggered workflows)",
            vars.join(", ")
        ));
    }
    d
}

/// The dotted names of the template data's values (`contact.name`,
/// `owner.name`, `workflow`, ...), two levels deep.
fn variables(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(m) = v {
        for (k, x) in m {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if x.is_object() && !prefix.contains('.') && prefix.is_empty() {
                variables(x, &name, out);
            } else {
                out.push(name);
            }
        }
    }
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
                } else if cx.templates.contains(t)
                    && rendered.insert(t.value.as_str())
                    && let Err(e) = {
                        let mut undeclared = Vec::new();
                        let r = render_sample(cx, t, Some(wf), &mut undeclared);
                        for f in undeclared {
                            out.push(undeclared_warning(
                                file,
                                t.pos,
                                &format!("{f}\" in template \"{}", t.value),
                            ));
                        }
                        r
                    }
                {
                    // Said where it is to be fixed: the template's file and line.
                    let hbs = s.templates_dir.join(format!("{}.hbs", t.value));
                    let line = template_error_line(&e).unwrap_or(1);
                    let col = column_in(&hbs, line, &e);
                    out.push(render_diag(
                        cx,
                        Diagnostic::new(
                            hbs,
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

/// A field name that is neither built in nor declared under `fields:`: a
/// near miss of a known name is an error with "did you mean"; anything else
/// is a custom attribute nobody declared, a warning (a CSV column such as
/// `city` works without a declaration, compared as text).
fn check_field_name(
    cx: &CheckContext,
    file: &std::path::Path,
    f: &Located<String>,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let s = cx.settings;
    if BUILTIN_FIELDS.contains(&f.value.as_str()) || s.fields.contains_key(&f.value) {
        return true;
    }
    let known = known_fields(s);
    let d = Diagnostic::new(file, f.pos, format!("unknown field \"{}\"", f.value))
        .did_you_mean(&f.value, &known);
    if d.suggestion.is_some() {
        out.push(d);
        return false;
    }
    out.push(undeclared_warning(file, f.pos, &f.value));
    true
}

fn undeclared_warning(file: &std::path::Path, pos: Pos, field: &str) -> Diagnostic {
    Diagnostic::warning(
        file,
        pos,
        format!("custom attribute \"{field}\" is not declared under fields: in nurture.yaml"),
    )
    .with_suggestion(format!(
        "it is read as the contacts have it (CSV imports give text); declare its type (fields: {{ {}: string }}) to have it checked",
        field.split('"').next().unwrap_or(field)
    ))
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
            if let Some(d) = template_literal(file, field, test) {
                out.push(d);
                return;
            }
            // A literal of the wrong type for a declared field never matches.
            if let Some(ty) = cx.settings.fields.get(&field.value)
                && let Some(problem) = literal_type_problem(test, *ty)
            {
                out.push(Diagnostic::new(
                    file,
                    field.pos,
                    format!("field \"{}\" {problem}", field.value),
                ));
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
        Condition::Event { name, where_, .. } => {
            check_event_name(cx, file, name, out);
            if let Some(w) = where_ {
                check_property(cx, file, name, w, out);
            }
        }
        // Resolved (or reported) by `crate::segments` when the project loads.
        Condition::Owner(_) | Condition::Tag(_) | Condition::Segment(_) => {}
    }
}

/// An assignment notice's template exists and renders for the sample
/// contact and salesperson.
fn check_notice(cx: &CheckContext, file: &std::path::Path, n: &Notify, out: &mut Vec<Diagnostic>) {
    let name = n.template_name();
    let pos = n.template.as_ref().map_or(n.channel.pos, |t| t.pos);
    if !cx.templates.contains(name) && name != template::NOTICE_TEMPLATE {
        if cx.template_files.contains(name) {
            return; // reported by the loader
        }
        out.push(
            Diagnostic::new(file, pos, format!("no template \"{name}\" for the notice"))
                .did_you_mean(name, cx.template_files),
        );
        return;
    }
    // A notice is one text app message: attachments would not reach the
    // salesperson, and the preview would show what is not sent.
    if let Some(at) = cx.templates.attachments_at(name) {
        out.push(
            Diagnostic::new(
                file,
                pos,
                format!(
                    "notice template \"{name}\" has attachments (templates/{name}.hbs line {}), but a notice to a salesperson is sent as text only",
                    at.line
                ),
            )
            .with_suggestion(
                "use a notice template without attachments: (put the link in its text), or send the attachment to the contact with a send: step",
            ),
        );
    }
    let ctx = sample_context(cx, "sample-workflow");
    let owner = ctx.get("owner").cloned().unwrap_or_default();
    let mut ctx = ctx;
    if let Some(m) = ctx.as_object_mut() {
        m.insert("previous_owner".into(), owner);
    }
    if let Err(e) = cx.templates.render_notice(name, &ctx) {
        out.push(render_diag(
            cx,
            Diagnostic::new(
                file,
                pos,
                format!("notice template \"{name}\" does not render for a sample contact: {e}"),
            ),
            &e,
        ));
    }
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

/// Event names are checked only when the settings declare `events:`.
fn check_event_name(
    cx: &CheckContext,
    file: &std::path::Path,
    name: &str,
    out: &mut Vec<Diagnostic>,
) {
    let events = &cx.settings.events;
    if events.is_empty() || events.contains_key(name) || BUILTIN_EVENTS.contains(&name) {
        return;
    }
    let known: Vec<&str> = events.keys().map(String::as_str).collect();
    let mut d = Diagnostic::new(
        file,
        find_in_file(file, name),
        format!("event \"{name}\" is not declared under events: in nurture.yaml"),
    )
    .did_you_mean(name, &known);
    if d.suggestion.is_none() {
        d = d.with_suggestion(format!(
            "declared events are: {}; add it there if it is new",
            known.join(", ")
        ));
    }
    out.push(d);
}

/// Events nurture itself records, valid whatever `events:` declares.
const BUILTIN_EVENTS: &[&str] = &["wecom_contact_deleted", "wecom_follow_user_deleted"];

/// `where:` on a declared event: the property exists, and a literal compared
/// with it fits its type.
fn check_property(
    cx: &CheckContext,
    file: &std::path::Path,
    event: &str,
    w: &crate::audience::PropertyTest,
    out: &mut Vec<Diagnostic>,
) {
    let Some(props) = cx.settings.events.get(event) else {
        return;
    };
    let Some(ty) = props.get(&w.field.value) else {
        let known: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut d = Diagnostic::new(
            file,
            w.field.pos,
            format!(
                "event \"{event}\" has no property \"{}\" under events: in nurture.yaml",
                w.field.value
            ),
        )
        .did_you_mean(&w.field.value, &known);
        if d.suggestion.is_none() {
            d = d.with_suggestion(if known.is_empty() {
                format!(
                    "declare it: events: {{ {event}: {{ {}: string }} }}",
                    w.field.value
                )
            } else {
                format!("its properties are: {}", known.join(", "))
            });
        }
        out.push(d);
        return;
    };
    if let Some(problem) = literal_type_problem(&w.test, *ty) {
        out.push(Diagnostic::new(
            file,
            w.field.pos,
            format!("property \"{}\" of \"{event}\" {problem}", w.field.value),
        ));
    }
}

/// A literal that looks like a template (`"{{today}}"`): conditions are not
/// rendered, so the field is compared with those very characters.
fn template_literal(
    file: &std::path::Path,
    field: &Located<String>,
    test: &FieldTest,
) -> Option<Diagnostic> {
    use crate::audience::Literal;
    let lits: Vec<&Literal> = match test {
        FieldTest::Equals(l)
        | FieldTest::NotEquals(l)
        | FieldTest::Gt(l)
        | FieldTest::Gte(l)
        | FieldTest::Lt(l)
        | FieldTest::Lte(l) => vec![l],
        FieldTest::In(ls) | FieldTest::NotIn(ls) => ls.iter().collect(),
        _ => vec![],
    };
    let s = lits.into_iter().find_map(|l| match l {
        Literal::Str(s) if s.contains("{{") => Some(s),
        _ => None,
    })?;
    Some(
        Diagnostic::new(
            file,
            field.pos,
            format!(
                "\"{s}\" is compared as written: conditions are not templates, so the test on \"{}\" can never hold as meant",
                field.value
            ),
        )
        .with_suggestion(
            "compare times with older_than / newer_than (e.g. { field: last_active_at, newer_than: 1d } for today's), or a literal value",
        ),
    )
}

/// Why a test cannot hold on a value of type `ty` (a literal of the wrong
/// type, a time test on something else), if it cannot.
pub fn literal_type_problem(test: &FieldTest, ty: FieldType) -> Option<String> {
    use crate::audience::Literal;
    let lits: Vec<&Literal> = match test {
        FieldTest::Equals(l)
        | FieldTest::NotEquals(l)
        | FieldTest::Gt(l)
        | FieldTest::Gte(l)
        | FieldTest::Lt(l)
        | FieldTest::Lte(l) => vec![l],
        FieldTest::In(ls) | FieldTest::NotIn(ls) => ls.iter().collect(),
        FieldTest::OlderThan(_) | FieldTest::NewerThan(_) => {
            return (ty != FieldType::Timestamp).then(|| {
                format!(
                    "is a {}, not a timestamp: older_than/newer_than never hold",
                    ty.name()
                )
            });
        }
        _ => vec![],
    };
    for l in lits {
        let ok = match (ty, l) {
            (FieldType::Number, Literal::Num(_)) => true,
            (FieldType::Number, Literal::Str(s)) => s.trim().parse::<f64>().is_ok(),
            (FieldType::Bool, Literal::Bool(_)) => true,
            (FieldType::Timestamp, Literal::Str(s)) => {
                chrono::DateTime::parse_from_rfc3339(s).is_ok()
            }
            (FieldType::String, _) => true,
            // Dates compare as text, which orders YYYY-MM-DD correctly.
            (FieldType::Date, Literal::Str(s)) => {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
            }
            _ => false,
        };
        if !ok {
            let shown = match l {
                Literal::Str(s) => format!("\"{s}\""),
                Literal::Num(n) => n.to_string(),
                Literal::Bool(b) => b.to_string(),
            };
            let want = match ty {
                FieldType::Number => "a number such as 500",
                FieldType::Bool => "true or false",
                FieldType::Timestamp => "an RFC 3339 time such as \"2026-11-01T09:00:00+08:00\"",
                FieldType::String => "text",
                FieldType::Date => "a date such as \"2026-11-01\"",
            };
            return Some(format!(
                "is a {}, but {shown} is not {want}: the test can never hold",
                ty.name()
            ));
        }
    }
    None
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
            FieldType::Date => Value::String("1990-06-15".into()),
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
