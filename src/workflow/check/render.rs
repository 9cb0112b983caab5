//! Every template renders for a sample contact: the sample values, the sample
//! event and the diagnostics that point into the template file.

use super::*;

/// The column (in characters, from 1) of a missing variable on `line` of
/// the template file; 1 when it cannot be told.
pub(super) fn column_in(file: &std::path::Path, line: u32, e: &TemplateError) -> u32 {
    // The missing variable, or the unknown helper's name.
    let var = match e {
        TemplateError::MissingVariable { var: Some(var), .. } => var.as_str(),
        TemplateError::Render { message, .. } => match message.strip_prefix("Helper not found ") {
            Some(name) => name.trim(),
            None => return 1,
        },
        _ => return 1,
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return 1;
    };
    let Some(l) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return 1;
    };
    match l.find(var) {
        Some(i) => l[..i].chars().count() as u32 + 1,
        None => 1,
    }
}

pub(super) fn template_error_line(e: &TemplateError) -> Option<u32> {
    match e {
        TemplateError::MissingVariable { line, .. } | TemplateError::Render { line, .. } => *line,
        TemplateError::NotFound(_) | TemplateError::TooLong { .. } => None,
    }
}

/// The event a workflow's trigger starts its enrollments with, as the
/// sample render sees it, and whether its properties are open (not declared
/// under `events:`: any property may exist). `None` for cron triggers.
pub(super) fn sample_event(
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

pub(super) fn sample_value(name: &str, ty: FieldType) -> Value {
    match ty {
        FieldType::String => Value::String(format!("sample {name}")),
        FieldType::Number => Value::from(42),
        FieldType::Timestamp => Value::String("2026-01-01T09:00:00+08:00".into()),
        FieldType::Bool => Value::Bool(true),
        FieldType::Date => Value::String("1990-06-15".into()),
    }
}

/// The most missing variables reported for one template.
const MAX_MISSING: usize = 20;

/// Renders a template for the sample contact, with the event `wf`'s trigger
/// starts (any workflow's, for a template no workflow sends). Properties of
/// an event not declared under `events:` may be anything: each one the
/// template reads is given a sample value.
///
/// Every missing variable is reported, not only the first: each is given a
/// sample value and the template rendered again, so a marketer fixes them
/// all in one pass (at most [`MAX_MISSING`]; an error of another kind ends
/// the list).
pub fn render_sample(
    cx: &CheckContext,
    template: &str,
    wf: Option<&Workflow>,
    undeclared: &mut Vec<String>,
) -> Result<template::Rendered, Vec<TemplateError>> {
    let mut ctx = sample_render_context(cx, wf);
    let mut errors: Vec<TemplateError> = Vec::new();
    loop {
        match render_sample_in(cx, template, wf, &mut ctx, undeclared) {
            Ok(r) if errors.is_empty() => return Ok(r),
            Ok(_) => return Err(errors),
            // Filling it changed nothing (a variable inside a block,
            // read relative to the block's value): said once, then stop.
            Err(e) if errors.contains(&e) => return Err(errors),
            Err(e) => {
                let filled = match &e {
                    TemplateError::MissingVariable { var: Some(var), .. }
                        if errors.len() < MAX_MISSING =>
                    {
                        fill(&mut ctx, var)
                    }
                    _ => false,
                };
                errors.push(e);
                if !filled {
                    return Err(errors);
                }
            }
        }
    }
}

/// Sets the variable at dotted `path` in `ctx` to a sample string, making
/// the objects on the way; false when it cannot be set (a step through a
/// value that is not an object, an index, or a value already there: the
/// error would only repeat).
fn fill(ctx: &mut Value, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| {
        p.is_empty() || p.starts_with('[') || p.starts_with('@') || p.parse::<usize>().is_ok()
    }) {
        return false;
    }
    let mut at = ctx;
    for (i, p) in parts.iter().enumerate() {
        let Some(m) = at.as_object_mut() else {
            return false;
        };
        if i + 1 == parts.len() {
            if m.contains_key(*p) {
                return false;
            }
            m.insert((*p).to_string(), Value::String(format!("sample {p}")));
            return true;
        }
        at = m
            .entry((*p).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    false
}

/// The sample contact's context, with the event `wf`'s trigger starts.
pub(super) fn sample_render_context(cx: &CheckContext, wf: Option<&Workflow>) -> Value {
    let mut ctx = sample_context(cx, wf.map_or("sample-workflow", |w| w.name.as_str()));
    if let (Some((e, _)), Some(m)) = (sample_event(cx, wf), ctx.as_object_mut()) {
        m.insert("event".into(), e.template_value(cx.settings.timezone));
    }
    ctx
}

/// One render of `template` over `ctx`, giving undeclared contact fields
/// and open event properties their sample values as it goes.
pub(super) fn render_sample_in(
    cx: &CheckContext,
    template: &str,
    wf: Option<&Workflow>,
    ctx: &mut Value,
    undeclared: &mut Vec<String>,
) -> Result<template::Rendered, TemplateError> {
    let open = sample_event(cx, wf).is_some_and(|(_, open)| open);
    for _ in 0..32 {
        match cx.templates.render(template, ctx) {
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
                    return cx.templates.render(template, ctx);
                }
                props[prop.as_str()] = Value::String(format!("sample {prop}"));
            }
            other => return other,
        }
    }
    cx.templates.render(template, ctx)
}

pub(super) fn render_diag(cx: &CheckContext, d: Diagnostic, e: &TemplateError) -> Diagnostic {
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
    if let TemplateError::Render { message, .. } = e
        && let Some(name) = message.strip_prefix("Helper not found ")
    {
        let helpers = crate::template::HELPERS;
        let d = d.did_you_mean(name.trim(), helpers);
        if d.suggestion.is_some() {
            return d;
        }
        return d.with_suggestion(format!("the helpers are {}", helpers.join(", ")));
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
pub(super) fn variables(v: &Value, prefix: &str, out: &mut Vec<String>) {
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
