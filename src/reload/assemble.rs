//! Which templates and workflows run with a settings version: each file's
//! new version when it checks alone against what runs, else its last valid
//! version (see the module's rules).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::check::{check_one, check_template, template_paths};
use super::{Running, RunningTemplate, RunningWorkflow, Version};
use crate::diagnostics::{Diagnostic, Pos};
use crate::project_files::{short_hash, workflow_files};
use crate::settings::Settings;
use crate::template::Templates;
use crate::workflow::check::{CheckContext, template_files};
use crate::workflow::{LoadedWorkflow, StepAction, load_str};

/// A file's outcome inside [`assemble`]; the rejected edit as (hash, problems).
pub(super) struct Outcome {
    pub(super) file: PathBuf,
    pub(super) running: Option<Version>,
    pub(super) rejected: Option<(String, Vec<Diagnostic>)>,
}

pub(super) struct Assembled {
    pub(super) templates: BTreeMap<String, RunningTemplate>,
    pub(super) workflows: BTreeMap<PathBuf, RunningWorkflow>,
    pub(super) files: Vec<Outcome>,
    pub(super) loaded: Vec<PathBuf>,
    /// Problems of workflows that keep running, against new settings.
    pub(super) kept_failures: Vec<Diagnostic>,
}

pub(super) fn compile<'a>(
    templates: impl Iterator<Item = (&'a String, &'a RunningTemplate)>,
) -> Templates {
    let mut out = Templates::empty();
    for (name, t) in templates {
        // Valid when it was taken: it compiles again.
        let _ = out.add(name, &t.source);
    }
    out
}

/// The templates and workflows that run with `settings`.
pub(super) fn assemble(
    settings: &Settings,
    settings_are_new: bool,
    prev: Option<&Running>,
    now: DateTime<Utc>,
) -> Assembled {
    let mut files = Vec::new();
    let mut loaded = Vec::new();

    // Templates.
    let mut templates: BTreeMap<String, RunningTemplate> = BTreeMap::new();
    let on_disk = template_paths(&settings.templates_dir);
    for (name, path) in &on_disk {
        let old = prev.and_then(|p| p.templates.get(name));
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                if let Some(t) = old {
                    templates.insert(name.clone(), t.clone());
                }
                files.push(Outcome {
                    file: path.clone(),
                    running: old.map(|t| t.version.clone()),
                    rejected: Some((
                        "unreadable".into(),
                        vec![Diagnostic::new(
                            path,
                            Pos::default(),
                            format!("cannot read: {e}"),
                        )],
                    )),
                });
                continue;
            }
        };
        let hash = short_hash(&bytes);
        if let Some(t) = old.filter(|t| t.version.hash == hash && t.file == *path) {
            templates.insert(name.clone(), t.clone());
            files.push(Outcome {
                file: path.clone(),
                running: Some(t.version.clone()),
                rejected: None,
            });
            continue;
        }
        match check_template(settings, name, path, bytes, now) {
            Ok(source) => {
                let version = Version {
                    hash,
                    loaded_at: now,
                };
                templates.insert(
                    name.clone(),
                    RunningTemplate {
                        file: path.clone(),
                        source,
                        version: version.clone(),
                    },
                );
                loaded.push(path.clone());
                files.push(Outcome {
                    file: path.clone(),
                    running: Some(version),
                    rejected: None,
                });
            }
            Err(diags) => {
                if let Some(t) = old {
                    templates.insert(name.clone(), t.clone());
                }
                files.push(Outcome {
                    file: path.clone(),
                    running: old.map(|t| t.version.clone()),
                    rejected: Some((hash, diags)),
                });
            }
        }
    }
    // Deleted: kept only while a running workflow sends them (decided below).
    let deleted: BTreeMap<String, RunningTemplate> = prev
        .map(|p| {
            p.templates
                .iter()
                .filter(|(n, _)| !on_disk.contains_key(*n))
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect()
        })
        .unwrap_or_default();
    // New workflow versions see the templates that have files; versions
    // that keep running may also still use deleted ones.
    let live = compile(templates.iter());
    let all = compile(templates.iter().chain(deleted.iter()));
    let names_on_disk = template_files(&settings.templates_dir);
    let cx_new = CheckContext {
        settings,
        templates: &live,
        template_files: &names_on_disk,
        now,
    };
    let mut all_names = names_on_disk.clone();
    all_names.extend(deleted.keys().cloned());
    let cx_kept = CheckContext {
        settings,
        templates: &all,
        template_files: &all_names,
        now,
    };

    // Workflows: what each file would run, before names are settled.
    struct Entry {
        file: PathBuf,
        hash: String,
        /// A new version with no problem of its own or against the others.
        candidate: Option<LoadedWorkflow>,
        /// The version that ran before.
        fallback: Option<RunningWorkflow>,
        rejected: Option<Vec<Diagnostic>>,
    }
    let mut kept_failures = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    // Segments: every workflow is resolved against the current files; a
    // broken segment file is reported, and workflows that name it are
    // rejected (the version before keeps running).
    let (segments, segment_diags) = crate::segments::load(&settings.segments_dir);
    let mut by_file: BTreeMap<PathBuf, Vec<Diagnostic>> = BTreeMap::new();
    for d in segment_diags {
        by_file.entry(d.file.clone()).or_default().push(d);
    }
    for (file, diags) in by_file {
        files.push(Outcome {
            file,
            running: None,
            rejected: Some((segments.hash.clone(), diags)),
        });
    }
    let wf_files = match workflow_files(&settings.workflows_dir) {
        Ok(f) => f,
        Err(d) => {
            // The folder cannot be read: what ran keeps running.
            files.push(Outcome {
                file: settings.workflows_dir.clone(),
                running: None,
                rejected: Some(("unreadable".into(), vec![d])),
            });
            prev.map(|p| p.workflows.keys().cloned().collect())
                .unwrap_or_default()
        }
    };
    for path in wf_files {
        let old = prev.and_then(|p| p.workflows.get(&path)).cloned();
        let bytes = std::fs::read(&path);
        let hash = bytes.as_deref().map(short_hash).unwrap_or_default();
        if let Some(w) = old
            .as_ref()
            .filter(|w| w.version.hash == hash && w.segments_hash == segments.hash)
        {
            if settings_are_new {
                kept_failures.extend(check_one(&cx_kept, &w.loaded, &live, false));
            }
            entries.push(Entry {
                file: path,
                hash,
                candidate: None,
                fallback: Some(w.clone()),
                rejected: None,
            });
            continue;
        }
        let (lw, mut diags) = match bytes {
            Ok(b) => match String::from_utf8(b) {
                Ok(src) => load_str(&path, &src),
                Err(_) => (
                    None,
                    vec![Diagnostic::new(
                        &path,
                        Pos::new(1, 1),
                        "file is not UTF-8 text",
                    )],
                ),
            },
            Err(e) => (
                None,
                vec![Diagnostic::new(
                    &path,
                    Pos::default(),
                    format!("cannot read the file: {e}"),
                )],
            ),
        };
        let mut lw = lw;
        if let Some(lw) = lw.as_mut() {
            diags.extend(crate::segments::resolve_workflow(
                &mut lw.workflow,
                &segments,
            ));
        }
        if diags.is_empty()
            && let Some(lw) = &lw
        {
            diags = check_one(&cx_new, lw, &live, true);
        }
        if let Some(w) = &old
            && settings_are_new
        {
            kept_failures.extend(check_one(&cx_kept, &w.loaded, &live, false));
        }
        let ok = diags.is_empty() && lw.is_some();
        entries.push(Entry {
            file: path,
            hash,
            candidate: if ok { lw } else { None },
            fallback: old,
            rejected: (!ok).then_some(diags),
        });
    }

    // Names: versions that keep running first, then edits that keep their
    // file's name, then the rest in file name order.
    let mut taken: HashMap<String, PathBuf> = HashMap::new();
    let mut chosen: BTreeMap<PathBuf, RunningWorkflow> = BTreeMap::new();
    let fallback_name = |e: &Entry| e.fallback.as_ref().map(|w| w.loaded.workflow.name.clone());
    let mut order: Vec<usize> = Vec::new();
    order.extend((0..entries.len()).filter(|&i| entries[i].candidate.is_none()));
    order.extend((0..entries.len()).filter(|&i| {
        entries[i]
            .candidate
            .as_ref()
            .is_some_and(|c| Some(c.workflow.name.clone()) == fallback_name(&entries[i]))
    }));
    let rest: Vec<usize> = (0..entries.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    for i in order {
        let e = &mut entries[i];
        if let Some(c) = e.candidate.take() {
            match taken.get(&c.workflow.name) {
                None => {
                    taken.insert(c.workflow.name.clone(), e.file.clone());
                    loaded.push(e.file.clone());
                    chosen.insert(
                        e.file.clone(),
                        RunningWorkflow {
                            loaded: c,
                            version: Version {
                                hash: e.hash.clone(),
                                loaded_at: now,
                            },
                            segments_hash: segments.hash.clone(),
                        },
                    );
                    continue;
                }
                Some(other) => {
                    let d = Diagnostic::new(
                        &e.file,
                        c.name_pos,
                        format!(
                            "workflow name \"{}\" is already used by {}",
                            c.workflow.name,
                            other.display()
                        ),
                    )
                    .with_suggestion(format!(
                        "names must be unique: set name: or rename the file ({} keeps running)",
                        other.display()
                    ));
                    e.rejected = Some(vec![d]);
                }
            }
        }
        if let Some(w) = &e.fallback {
            match taken.get(&w.loaded.workflow.name) {
                None => {
                    taken.insert(w.loaded.workflow.name.clone(), e.file.clone());
                    chosen.insert(e.file.clone(), w.clone());
                }
                Some(other) => {
                    // Only when names moved between files in one edit.
                    let d = Diagnostic::new(
                        &e.file,
                        w.loaded.name_pos,
                        format!(
                            "workflow name \"{}\" is now used by {}: this file's last valid version stops",
                            w.loaded.workflow.name,
                            other.display()
                        ),
                    );
                    e.rejected.get_or_insert_with(Vec::new).push(d);
                }
            }
        }
    }
    // Removed workflow files stop.
    if let Some(p) = prev {
        for f in p.workflows.keys() {
            if !entries.iter().any(|e| e.file == *f) {
                loaded.push(f.clone());
            }
        }
    }
    for e in entries {
        files.push(Outcome {
            running: chosen.get(&e.file).map(|w| w.version.clone()),
            rejected: e.rejected.map(|d| (e.hash.clone(), d)),
            file: e.file,
        });
    }

    // Deleted templates still sent by a running workflow stay.
    let used: BTreeSet<&str> = chosen
        .values()
        .flat_map(|w| w.loaded.workflow.all_steps())
        .filter_map(|s| match &s.action {
            StepAction::Send(x) => Some(x.template.value.as_str()),
            _ => None,
        })
        .collect();
    for (name, t) in deleted {
        if !used.contains(name.as_str()) {
            continue;
        }
        let users: Vec<&str> =
            chosen
                .values()
                .filter(|w| {
                    w.loaded.workflow.all_steps().iter().any(
                        |s| matches!(&s.action, StepAction::Send(x) if x.template.value == name),
                    )
                })
                .map(|w| w.loaded.workflow.name.as_str())
                .collect();
        files.push(Outcome {
            file: t.file.clone(),
            running: Some(t.version.clone()),
            rejected: Some((
                "deleted".into(),
                vec![Diagnostic::new(
                    &t.file,
                    Pos::default(),
                    format!(
                        "the file was deleted, but workflow {} still sends it: its last valid version keeps running",
                        users.join(", ")
                    ),
                )],
            )),
        });
        templates.insert(name, t);
    }
    files.sort_by(|a, b| a.file.cmp(&b.file));
    Assembled {
        templates,
        workflows: chosen,
        files,
        loaded,
        kept_failures,
    }
}
