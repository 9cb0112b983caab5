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
use crate::project_files::short_hash;
use crate::settings::Settings;
use crate::workflow::LoadedWorkflow;

mod assemble;
mod check;

use assemble::{assemble, compile};

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

#[cfg(test)]
mod tests;
