//! The checks of one file on its own: a workflow against what runs, a
//! template compiled and rendered for the sample contact.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::diagnostics::{Diagnostic, Pos};
use crate::settings::Settings;
use crate::template::{MAX_TEMPLATE_BYTES, TemplateError, Templates};
use crate::workflow::check::{CheckContext, check_project};
use crate::workflow::{LoadedWorkflow, StepAction};

/// The project checks of one workflow (channels, teams, templates, fields),
/// its own problems only. `new` versions may not use a template that has no
/// valid version (its file exists but never loaded).
pub(super) fn check_one(
    cx: &CheckContext,
    lw: &LoadedWorkflow,
    live: &Templates,
    new: bool,
) -> Vec<Diagnostic> {
    let file = &lw.workflow.file;
    let mut out: Vec<Diagnostic> = check_project(cx, std::slice::from_ref(lw))
        .into_iter()
        .filter(|d| !d.is_warning() && d.file == *file)
        .collect();
    if new {
        for s in lw.workflow.all_steps() {
            if let StepAction::Send(x) = &s.action {
                let t = &x.template;
                if !t.value.is_empty()
                    && !live.contains(&t.value)
                    && cx.template_files.contains(&t.value)
                {
                    let path = cx.settings.templates_dir.join(format!("{}.hbs", t.value));
                    out.push(
                        Diagnostic::new(
                            file,
                            t.pos,
                            format!(
                                "template \"{}\" has no valid version yet ({} is broken)",
                                t.value,
                                path.display()
                            ),
                        )
                        .with_suggestion(format!(
                            "fix {} first: this workflow starts once it loads",
                            path.display()
                        )),
                    );
                }
            }
        }
    }
    crate::diagnostics::sort(&mut out);
    out
}

/// `*.hbs` files of `dir` by template name.
pub(super) fn template_paths(dir: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "hbs"))
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            Some((name, p))
        })
        .collect()
}

/// A template file's text when it compiles and renders for the sample
/// contact of `validate`; else its problems.
pub(super) fn check_template(
    settings: &Settings,
    name: &str,
    path: &Path,
    bytes: Vec<u8>,
    now: DateTime<Utc>,
) -> Result<String, Vec<Diagnostic>> {
    if bytes.len() > MAX_TEMPLATE_BYTES {
        return Err(vec![Diagnostic::new(
            path,
            Pos::new(1, 1),
            format!(
                "template is {} bytes; at most {MAX_TEMPLATE_BYTES} are accepted",
                bytes.len()
            ),
        )]);
    }
    let src = String::from_utf8(bytes).map_err(|e| {
        vec![Diagnostic::new(
            path,
            Pos::new(1, 1),
            format!("template is not UTF-8 text: {e}"),
        )]
    })?;
    let mut t = Templates::empty();
    let problems = t.add(name, &src);
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|(pos, m)| Diagnostic::new(path, pos, m))
            .collect());
    }
    let no_files = BTreeSet::new();
    let cx = CheckContext {
        settings,
        templates: &t,
        template_files: &no_files,
        now,
    };
    if let Err(errors) = crate::workflow::check::render_sample(&cx, name, None, &mut Vec::new()) {
        return Err(errors.iter().map(|e| render_problem(path, e)).collect());
    }
    Ok(src)
}

/// A reloaded template's render error as a diagnostic at its line.
fn render_problem(path: &Path, e: &TemplateError) -> Diagnostic {
    let line = match e {
        TemplateError::MissingVariable { line, .. } | TemplateError::Render { line, .. } => {
            line.unwrap_or(1)
        }
        TemplateError::NotFound(_) | TemplateError::TooLong { .. } => 1,
    };
    let d = Diagnostic::new(
        path,
        Pos::new(line, 1),
        format!("template does not render for a sample contact: {e}"),
    );
    match e {
        TemplateError::MissingVariable { var: Some(var), .. } if var.starts_with("contact.") => d
            .with_suggestion(format!(
                "use {{{{default {var} \"...\"}}}} for a field some contacts lack, or declare it under fields: in nurture.yaml"
            )),
        _ => d,
    }
}
