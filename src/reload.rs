//! Per-file reload: what the daemon runs, file by file.
//!
//! Each settings, workflow and template file keeps its last valid version.
//! A reload reads every file again and decides for each one alone:
//!
//! - **Settings** (`nurture.yaml`): a valid edit replaces the running
//!   settings, unless a workflow that keeps running would no longer be valid
//!   with it (a channel or team it uses was removed): then the edit is
//!   rejected, and says which workflow it would break.
//! - **A template** runs its new version when it compiles and renders for the
//!   sample contact of `validate`; otherwise its last valid version keeps
//!   running. A deleted template that a running workflow still sends keeps
//!   its last version too (reported); one nobody uses is dropped.
//! - **A workflow** runs its new version when the file has no problem of its
//!   own and every channel, team and template it refers to exists in the
//!   running set (a template whose file is broken runs its last valid
//!   version; one that never had a valid version rejects the workflow).
//!   Otherwise its last valid version keeps running, or, for a new file,
//!   nothing runs. A deleted workflow file stops its workflow.
//! - **Names are unique.** When two files claim one workflow `name`, the one
//!   that ran it keeps it and the file that introduced the duplicate is
//!   rejected; when neither ran it (a first load, or two new files), the
//!   earlier file name keeps it.
//!
//! A broken edit of one file therefore never holds back valid edits of
//! others. Nothing here touches the store: the daemon records the
//! [`FileReport`]s for `nurture status`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::diagnostics::{Diagnostic, Pos};
use crate::project::Project;
use crate::project_files::{short_hash, workflow_files};
use crate::settings::Settings;
use crate::template::{MAX_TEMPLATE_BYTES, TemplateError, Templates};
use crate::workflow::check::{CheckContext, check_project, template_files};
use crate::workflow::{LoadedWorkflow, StepAction, load_str};

/// One version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// [`short_hash`] of the file's bytes.
    pub hash: String,
    /// When the daemon started running it.
    pub loaded_at: DateTime<Utc>,
}

/// An edit the daemon did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// [`short_hash`] of the rejected bytes (`deleted` for a removed file
    /// that is kept because something still uses it).
    pub hash: String,
    /// When the daemon first saw this edit.
    pub seen_at: DateTime<Utc>,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Clone)]
struct RunningTemplate {
    file: PathBuf,
    source: String,
    version: Version,
}

#[derive(Debug, Clone)]
struct RunningWorkflow {
    loaded: LoadedWorkflow,
    version: Version,
    /// The segments it was resolved with (`crate::segments`): a change of
    /// any segment file loads the workflow again.
    segments_hash: String,
}

/// What runs, file by file: the state a reload starts from.
#[derive(Debug, Clone)]
pub struct Running {
    settings: Settings,
    settings_file: PathBuf,
    settings_version: Version,
    templates: BTreeMap<String, RunningTemplate>,
    workflows: BTreeMap<PathBuf, RunningWorkflow>,
    /// Rejected edits by file, so that one keeps the time it was first seen.
    rejected: HashMap<PathBuf, Rejected>,
    /// `contact_ways/`: the last valid set, and the hash of its files.
    contact_ways: Vec<crate::contact_ways::ContactWay>,
    contact_ways_hash: String,
}

impl Running {
    /// The segments each running workflow was resolved with.
    fn segment_versions(&self) -> BTreeSet<(PathBuf, String)> {
        self.workflows
            .iter()
            .map(|(f, w)| (f.clone(), w.segments_hash.clone()))
            .collect()
    }

    /// Every running version: (file, hash).
    fn versions(&self) -> BTreeSet<(PathBuf, String)> {
        let mut out = BTreeSet::new();
        out.insert((
            self.settings_file.clone(),
            self.settings_version.hash.clone(),
        ));
        out.insert((
            PathBuf::from(crate::contact_ways::DIR),
            self.contact_ways_hash.clone(),
        ));
        for t in self.templates.values() {
            out.insert((t.file.clone(), t.version.hash.clone()));
        }
        for (f, w) in &self.workflows {
            out.insert((f.clone(), w.version.hash.clone()));
        }
        out
    }

    /// Takes `at` as the load time of `file`'s running version when its hash
    /// is `hash` (a restarted daemon keeps the times it recorded).
    pub fn adopt_loaded_at(&mut self, file: &Path, hash: &str, at: DateTime<Utc>) {
        let fix = |v: &mut Version| {
            if v.hash == hash {
                v.loaded_at = at;
            }
        };
        if self.settings_file == file {
            fix(&mut self.settings_version);
        }
        for t in self.templates.values_mut().filter(|t| t.file == file) {
            fix(&mut t.version);
        }
        if let Some(w) = self.workflows.get_mut(file) {
            fix(&mut w.version);
        }
    }
}

/// One file as `status` shows it.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub file: PathBuf,
    /// The version running; `None` when no version of the file ever loaded.
    pub running: Option<Version>,
    /// The newer edit that was not taken, with its problems.
    pub rejected: Option<Rejected>,
}

/// The outcome of a (re)load.
pub struct Reload {
    pub running: Running,
    /// What the engine runs now.
    pub project: Project,
    /// Every file looked at: the settings, workflows and templates.
    pub files: Vec<FileReport>,
    /// Files whose new version was taken, and workflow files removed.
    pub loaded: Vec<PathBuf>,
    /// Whether a new settings version was taken.
    pub settings_changed: bool,
    /// Whether anything that runs changed.
    pub changed: bool,
}

impl Reload {
    /// Rejected edits not rejected already in `prev` (the same bytes): what
    /// deserves a log line now.
    pub fn newly_rejected<'a>(&'a self, prev: Option<&'a Running>) -> Vec<&'a FileReport> {
        self.files
            .iter()
            .filter(|f| {
                f.rejected.as_ref().is_some_and(|r| {
                    prev.and_then(|p| p.rejected.get(&f.file))
                        .is_none_or(|old| old.hash != r.hash)
                })
            })
            .collect()
    }
}

/// Reloads every file of the project at `config`, starting from `prev`
/// (`None`: the first load). `accept_settings` is asked about a new valid
/// settings version (the daemon builds its channels there) and returns
/// problems that reject it. Fails only when there is no valid settings
/// version at all.
pub fn reload(
    config: &Path,
    prev: Option<&Running>,
    now: DateTime<Utc>,
    accept_settings: &mut dyn FnMut(&Settings) -> Vec<Diagnostic>,
) -> Result<Reload, Vec<Diagnostic>> {
    let bytes = std::fs::read(config).unwrap_or_default();
    let hash = short_hash(&bytes);
    let unchanged = prev.filter(|p| p.settings_version.hash == hash);
    let mut settings_rejected: Option<Vec<Diagnostic>> = None;
    let candidate = match unchanged {
        Some(_) => None,
        None => match Settings::load(config) {
            Ok(s) => {
                let problems = accept_settings(&s);
                if problems.is_empty() {
                    Some(s)
                } else {
                    settings_rejected = Some(problems);
                    None
                }
            }
            Err(d) => {
                settings_rejected = Some(d);
                None
            }
        },
    };
    let mut settings_changed = false;
    let assembled = match (candidate, prev) {
        (Some(s), prev) => {
            let a = assemble(&s, true, prev, now);
            match (a.kept_failures.is_empty(), prev) {
                (true, _) | (false, None) => {
                    settings_changed = true;
                    Some((
                        s,
                        Version {
                            hash: hash.clone(),
                            loaded_at: now,
                        },
                        a,
                    ))
                }
                (false, Some(p)) => {
                    settings_rejected = Some(
                        a.kept_failures
                            .iter()
                            .map(|d| {
                                Diagnostic::new(
                                    config,
                                    Pos::default(),
                                    format!(
                                        "this edit would break a running workflow: {}",
                                        d.headline()
                                    ),
                                )
                            })
                            .collect(),
                    );
                    let a = assemble(&p.settings, false, prev, now);
                    Some((p.settings.clone(), p.settings_version.clone(), a))
                }
            }
        }
        (None, Some(p)) => {
            let a = assemble(&p.settings, false, Some(p), now);
            Some((p.settings.clone(), p.settings_version.clone(), a))
        }
        (None, None) => None,
    };
    let Some((settings, settings_version, a)) = assembled else {
        return Err(settings_rejected.unwrap_or_default());
    };

    let mut files = Vec::new();
    let mut rejected: HashMap<PathBuf, Rejected> = HashMap::new();
    let mut keep_rejected = |file: &Path, r: Option<(String, Vec<Diagnostic>)>| {
        r.map(|(hash, diagnostics)| {
            let seen_at = prev
                .and_then(|p| p.rejected.get(file))
                .filter(|old| old.hash == hash)
                .map_or(now, |old| old.seen_at);
            let r = Rejected {
                hash,
                seen_at,
                diagnostics,
            };
            rejected.insert(file.to_path_buf(), r.clone());
            r
        })
    };
    files.push(FileReport {
        file: config.to_path_buf(),
        running: Some(settings_version.clone()),
        rejected: keep_rejected(config, settings_rejected.map(|d| (hash.clone(), d))),
    });
    for f in a.files {
        let r = keep_rejected(&f.file, f.rejected);
        files.push(FileReport {
            file: f.file,
            running: f.running,
            rejected: r,
        });
    }

    let mut loaded = a.loaded;
    if settings_changed {
        loaded.insert(0, config.to_path_buf());
    }
    let templates = compile(a.templates.iter());
    // Contact ways: the folder as a whole; a broken edit keeps the last
    // valid set (logged; `nurture validate` names the problem).
    let ways_dir = settings.root.join(crate::contact_ways::DIR);
    let mut ways_bytes = Vec::new();
    for f in crate::contact_ways::files(&ways_dir) {
        ways_bytes.extend(f.to_string_lossy().as_bytes());
        ways_bytes.extend(std::fs::read(&f).unwrap_or_default());
    }
    let contact_ways_hash = short_hash(&ways_bytes);
    let contact_ways = match prev.filter(|p| p.contact_ways_hash == contact_ways_hash) {
        Some(p) => p.contact_ways.clone(),
        None => {
            let (ways, mut d) = crate::contact_ways::load_dir(&ways_dir);
            d.extend(crate::contact_ways::check(&ways, &settings, &templates));
            if d.is_empty() {
                ways
            } else {
                for x in &d {
                    tracing::error!(problem = %x.headline(), "contact_ways: edit rejected; the last valid contact ways keep running");
                }
                prev.map(|p| p.contact_ways.clone()).unwrap_or_default()
            }
        }
    };
    let running = Running {
        settings: settings.clone(),
        settings_file: config.to_path_buf(),
        settings_version,
        templates: a.templates,
        workflows: a.workflows,
        rejected,
        contact_ways: contact_ways.clone(),
        contact_ways_hash,
    };
    let changed = prev.is_none_or(|p| {
        p.versions() != running.versions() || p.segment_versions() != running.segment_versions()
    });
    let mut workflows: Vec<crate::workflow::Workflow> = running
        .workflows
        .values()
        .map(|w| w.loaded.workflow.clone())
        .collect();
    workflows.extend(
        contact_ways
            .iter()
            .filter_map(|w| crate::contact_ways::welcome_workflow(w, &settings)),
    );
    let project = Project {
        settings,
        workflows,
        templates,
        contact_ways,
    };
    Ok(Reload {
        running,
        project,
        files,
        loaded,
        settings_changed,
        changed,
    })
}

/// A file's outcome inside [`assemble`]; the rejected edit as (hash, problems).
struct Outcome {
    file: PathBuf,
    running: Option<Version>,
    rejected: Option<(String, Vec<Diagnostic>)>,
}

struct Assembled {
    templates: BTreeMap<String, RunningTemplate>,
    workflows: BTreeMap<PathBuf, RunningWorkflow>,
    files: Vec<Outcome>,
    loaded: Vec<PathBuf>,
    /// Problems of workflows that keep running, against new settings.
    kept_failures: Vec<Diagnostic>,
}

fn compile<'a>(templates: impl Iterator<Item = (&'a String, &'a RunningTemplate)>) -> Templates {
    let mut out = Templates::empty();
    for (name, t) in templates {
        // Valid when it was taken: it compiles again.
        let _ = out.add(name, &t.source);
    }
    out
}

/// The templates and workflows that run with `settings`.
fn assemble(
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

/// The project checks of one workflow (channels, teams, templates, fields),
/// its own problems only. `new` versions may not use a template that has no
/// valid version (its file exists but never loaded).
fn check_one(
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
fn template_paths(dir: &Path) -> BTreeMap<String, PathBuf> {
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
fn check_template(
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
    if let Err(e) = crate::workflow::check::render_sample(&cx, name, None, &mut Vec::new()) {
        let line = match &e {
            TemplateError::MissingVariable { line, .. } | TemplateError::Render { line, .. } => {
                line.unwrap_or(1)
            }
            TemplateError::NotFound(_) | TemplateError::TooLong { .. } => 1,
        };
        let mut d = Diagnostic::new(
            path,
            Pos::new(line, 1),
            format!("template does not render for a sample contact: {e}"),
        );
        if let TemplateError::MissingVariable { var: Some(var), .. } = &e
            && var.starts_with("contact.")
        {
            d = d.with_suggestion(format!(
                "use {{{{default {var} \"...\"}}}} for a field some contacts lack, or declare it under fields: in nurture.yaml"
            ));
        }
        return Err(vec![d]);
    }
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("workflows")).unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(
            dir.path().join("nurture.yaml"),
            "channels:\n  sms: { kind: log }\n  mail: { kind: log }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("workflows/w.yaml"),
            "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hi }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("templates/hi.hbs"), "Hi {{contact.id}}").unwrap();
        dir
    }

    fn load(dir: &Path, prev: Option<&Running>) -> Reload {
        reload(&dir.join("nurture.yaml"), prev, Utc::now(), &mut |_| {
            Vec::new()
        })
        .unwrap()
    }

    fn report<'a>(r: &'a Reload, suffix: &str) -> &'a FileReport {
        r.files
            .iter()
            .find(|f| f.file.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix}: {:?}", r.files))
    }

    #[test]
    fn settings_that_would_break_a_running_workflow_are_rejected() {
        let dir = project();
        let first = load(dir.path(), None);
        assert_eq!(first.project.workflows.len(), 1);
        // `sms` removed: w keeps running, so the settings edit is rejected.
        std::fs::write(
            dir.path().join("nurture.yaml"),
            "channels:\n  mail: { kind: log }\n",
        )
        .unwrap();
        let r = load(dir.path(), Some(&first.running));
        assert!(!r.settings_changed);
        assert!(r.project.settings.channels.contains_key("sms"));
        let s = report(&r, "nurture.yaml");
        let why = &s.rejected.as_ref().unwrap().diagnostics[0];
        assert!(why.message.contains("w.yaml"), "{why}");
        // A broken settings file keeps the last valid settings too.
        std::fs::write(dir.path().join("nurture.yaml"), "channels: [").unwrap();
        let r = load(dir.path(), Some(&first.running));
        assert!(r.project.settings.channels.contains_key("sms"));
        assert!(report(&r, "nurture.yaml").rejected.is_some());
        assert_eq!(r.project.workflows.len(), 1);
    }

    #[test]
    fn a_deleted_template_still_sent_keeps_running() {
        let dir = project();
        let first = load(dir.path(), None);
        std::fs::remove_file(dir.path().join("templates/hi.hbs")).unwrap();
        let r = load(dir.path(), Some(&first.running));
        assert!(r.project.templates.contains("hi"));
        let t = report(&r, "templates/hi.hbs");
        assert_eq!(t.rejected.as_ref().unwrap().hash, "deleted");
        assert!(t.running.is_some());
        // Once no workflow sends it, it goes.
        std::fs::remove_file(dir.path().join("workflows/w.yaml")).unwrap();
        let r = load(dir.path(), Some(&r.running));
        assert!(!r.project.templates.contains("hi"));
        assert!(r.project.workflows.is_empty());
        assert!(r.changed);
    }
}
