//! A project: the settings, every workflow and every template, loaded and
//! checked together. `validate`, `dry-run` and the daemon all start here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::contact_ways::{self, ContactWay};
use crate::diagnostics::{self, Diagnostic};
use crate::project_files::workflow_files;
use crate::settings::Settings;
use crate::template::Templates;
use crate::workflow::check::{CheckContext, check_project, template_files};
use crate::workflow::{LoadedWorkflow, Workflow, load_file};

/// A valid project: nothing in it has a problem.
#[derive(Debug)]
pub struct Project {
    pub settings: Settings,
    /// Every workflow, in file name order, including disabled ones
    /// (`enabled: false`): they are loaded and checked, and the engine skips
    /// them. See [`Project::enabled_workflows`].
    pub workflows: Vec<Workflow>,
    pub templates: Templates,
    /// `contact_ways/NAME.yaml`. A code with `welcome:` also has its
    /// workflow (`contact-way:NAME`) in `workflows`.
    pub contact_ways: Vec<ContactWay>,
}

/// Everything found while loading, valid or not: what `validate` reports.
#[derive(Debug)]
pub struct LoadReport {
    /// `None` when the settings file has problems (then the defaults' folders
    /// were used to find the other files, and cross-file checks were skipped).
    pub settings: Option<Settings>,
    /// Workflows that could be read (possibly with problems).
    pub workflows: Vec<LoadedWorkflow>,
    /// Every `*.yaml`/`*.yml` file in the workflows folder, sorted.
    pub workflow_files: Vec<PathBuf>,
    pub templates: Templates,
    /// `contact_ways/NAME.yaml` files that could be read.
    pub contact_ways: Vec<ContactWay>,
    /// Every problem in every file, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// Warnings (`validate` prints them and still exits 0).
    pub warnings: Vec<Diagnostic>,
}

impl LoadReport {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty() && self.settings.is_some()
    }

    /// The project, when there are no problems.
    pub fn into_project(self) -> Result<Project, Vec<Diagnostic>> {
        match self.settings {
            Some(settings) if self.diagnostics.is_empty() => {
                let mut workflows: Vec<Workflow> =
                    self.workflows.into_iter().map(|l| l.workflow).collect();
                workflows.extend(
                    self.contact_ways
                        .iter()
                        .filter_map(|w| contact_ways::welcome_workflow(w, &settings)),
                );
                Ok(Project {
                    settings,
                    workflows,
                    templates: self.templates,
                    contact_ways: self.contact_ways,
                })
            }
            _ => Err(self.diagnostics),
        }
    }
}

impl Project {
    /// Loads and checks everything `config_path` names, collecting every
    /// problem. `now` is the time of the sample template render.
    pub fn load_report(config_path: &Path, now: DateTime<Utc>) -> LoadReport {
        let mut diags = Vec::new();
        let settings = match Settings::load(config_path) {
            Ok(s) => Some(s),
            Err(d) => {
                diags.extend(d);
                None
            }
        };
        let folders = settings.clone().unwrap_or_else(|| {
            Settings::defaults(
                config_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            )
        });
        let files = match workflow_files(&folders.workflows_dir) {
            Ok(f) => f,
            Err(d) => {
                diags.push(d);
                Vec::new()
            }
        };
        let (segments, d) = crate::segments::load(&folders.segments_dir);
        diags.extend(d);
        let mut workflows = Vec::new();
        for f in &files {
            let (wf, d) = load_file(f);
            diags.extend(d);
            if let Some(mut wf) = wf {
                diags.extend(crate::segments::resolve_workflow(
                    &mut wf.workflow,
                    &segments,
                ));
                workflows.push(wf);
            }
        }
        let (templates, d) = Templates::load(&folders.templates_dir);
        diags.extend(d);
        // Attachment files exist and are what WeCom takes.
        for name in templates.names() {
            let files = templates.attachment_files(name);
            if !files.is_empty() {
                let file = folders.templates_dir.join(format!("{name}.hbs"));
                diags.extend(crate::attachments::check_files(
                    &file,
                    &folders.root,
                    &files,
                ));
            }
        }
        let (ways, d) = contact_ways::load_dir(&folders.root.join(contact_ways::DIR));
        diags.extend(d);
        if let Some(s) = &settings {
            let names = template_files(&s.templates_dir);
            let cx = CheckContext {
                settings: s,
                templates: &templates,
                template_files: &names,
                now,
            };
            diags.extend(check_project(&cx, &workflows));
            diags.extend(contact_ways::check(&ways, s, &templates));
            diags.extend(check_via(&ways, &workflows));
        }
        let (mut warnings, mut diags): (Vec<Diagnostic>, Vec<Diagnostic>) =
            diags.into_iter().partition(Diagnostic::is_warning);
        diagnostics::sort(&mut diags);
        diagnostics::sort(&mut warnings);
        LoadReport {
            settings,
            workflows,
            workflow_files: files,
            templates,
            contact_ways: ways,
            diagnostics: diags,
            warnings,
        }
    }

    /// The project, or every problem found.
    pub fn load_strict(config_path: &Path) -> Result<Project, Vec<Diagnostic>> {
        Project::load_report(config_path, Utc::now()).into_project()
    }

    pub fn enabled_workflows(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.iter().filter(|w| w.enabled)
    }

    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name == name)
    }

    /// Names of every template, for did-you-mean and listings.
    pub fn template_names(&self) -> BTreeSet<String> {
        self.templates.names().map(str::to_string).collect()
    }
}

/// `contact_created: { via: NAME }` must name a contact way.
pub fn check_via(ways: &[ContactWay], workflows: &[LoadedWorkflow]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for l in workflows {
        if let crate::workflow::model::Trigger::ContactCreated { via: Some(v) } =
            &l.workflow.trigger
            && !ways.iter().any(|w| w.name == v.value)
        {
            out.push(
                Diagnostic::new(
                    &l.workflow.file,
                    v.pos,
                    format!(
                        "no contact way \"{}\" (contact_ways/{}.yaml)",
                        v.value, v.value
                    ),
                )
                .did_you_mean(&v.value, ways.iter().map(|w| w.name.as_str())),
            );
        }
    }
    out
}

/// Prints diagnostics to stderr and the closing `N problems in M files` line.
pub fn eprint_report(diags: &[Diagnostic]) {
    diagnostics::eprint_all(diags);
    eprintln!("{}", problems_line(diags));
}

/// `1 problem in 1 file`, `3 problems in 2 files`.
pub fn problems_line(diags: &[Diagnostic]) -> String {
    let n = diags.len();
    let m = diagnostics::file_count(diags);
    format!(
        "{n} problem{} in {m} file{}",
        if n == 1 { "" } else { "s" },
        if m == 1 { "" } else { "s" }
    )
}
