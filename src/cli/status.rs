//! `nurture status`: per workflow, how many contacts are enrolled, active
//! (of which waiting for a later step), done and exited, and how many
//! messages to contacts were sent (notices to salespeople apart), failed
//! (dead-lettered), are still queued, and are deferred by quiet hours until
//! when; then the
//! loaded-or-broken state of each settings, workflow and template file.
//!
//! File states come from the daemon when it has recorded them (table
//! `file_states`, written at each (re)load: a broken file there means the
//! daemon kept running its last valid version); otherwise the files are
//! checked now, as `validate` would.
//!
//! Exit codes: 0 shown (broken files are reported, not an error: `validate`
//! is the command that fails on them); 1 the settings file is broken;
//! 2 the store cannot be read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::json;

use super::table::Table;
use super::{CliResult, Failure};
use crate::project::Project;
use crate::store::status::WorkflowCounts;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// One file's state as shown.
#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    pub file: String,
    /// `loaded` (the file as it is runs) or `broken` (its latest edit was
    /// rejected; the version in `running_version`, if any, keeps running).
    pub state: String,
    /// Problems of the rejected edit, one `FILE:LINE:COLUMN: message` each;
    /// empty when loaded.
    pub diagnostics: Vec<String>,
    /// The version the daemon runs: the first 12 hex digits of the SHA-256
    /// of the file. `null` when no version runs, or when the daemon has not
    /// recorded the files (then they were checked now).
    pub running_version: Option<String>,
    /// When the daemon loaded `running_version`.
    pub loaded_at: Option<String>,
    /// The rejected newer edit (`deleted` for a deleted template still in
    /// use), when `broken`.
    pub rejected_version: Option<String>,
    /// When the daemon first saw the rejected edit.
    pub rejected_at: Option<String>,
}

/// One workflow as shown.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowRow {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `loaded`, `broken`, `disabled`, or `removed` (no file, but rows in the store).
    pub state: String,
    /// When a daemon first loaded it on this store (`None`: not yet; it
    /// acts only on trigger events after this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
    /// Why the blast guard paused it, when it did (`nurture resume` lifts it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    #[serde(flatten)]
    pub counts: WorkflowCounts,
}

pub async fn run(config: &Path, args: StatusArgs) -> CliResult {
    let now = Utc::now();
    let report = Project::load_report(config, now);
    let Some(settings) = report.settings.clone() else {
        crate::project::eprint_report(&report.diagnostics);
        return Err(Failure::Reported);
    };
    let root = settings.root.clone();
    let show = |p: &Path| -> String { relative(&root, p) };

    // Counts, when there is a store.
    let url = settings.database_url();
    let no_store = url
        .strip_prefix("sqlite://")
        .is_some_and(|p| !Path::new(p).exists());
    let mut recorded = Vec::new();
    let mut wf_states = std::collections::HashMap::new();
    // `--format json`: each loaded workflow's conversion and funnel, the
    // numbers of `nurture report` (and of /metrics).
    let mut reports: BTreeMap<String, crate::report::Report> = BTreeMap::new();
    let counts = if no_store {
        BTreeMap::new()
    } else {
        super::store_use::with_store(&url, async |store| {
            let counts = store
                .workflow_counts(now)
                .await
                .context("counting enrollments and messages")?;
            recorded = store.file_states().await.context("reading file states")?;
            wf_states = store
                .workflow_states()
                .await
                .context("reading workflow states")?;
            if args.format == StatusFormat::Json {
                for l in &report.workflows {
                    let r = crate::report::build(store, &l.workflow, None)
                        .await
                        .with_context(|| format!("the report of {}", l.workflow.name))?;
                    reports.insert(l.workflow.name.clone(), r);
                }
            }
            Ok(counts)
        })
        .await?
    };

    // File states: the daemon's, else checked now.
    let from_daemon = !recorded.is_empty();
    let recorded_at: Option<DateTime<Utc>> = recorded.iter().map(|f| f.updated_at).max();
    let tz = settings.timezone;
    let time = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let files: Vec<FileRow> = if from_daemon {
        recorded
            .iter()
            .map(|f| FileRow {
                file: show(Path::new(&f.file)),
                state: f.state.clone(),
                diagnostics: f
                    .diagnostics
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect(),
                running_version: f.running_hash.clone(),
                loaded_at: f.loaded_at.map(time),
                rejected_version: f.rejected_hash.clone(),
                rejected_at: f.rejected_at.map(time),
            })
            .collect()
    } else {
        checked_now(&report, &settings.templates_dir, &show)
    };
    let row_of: BTreeMap<&str, &FileRow> = files.iter().map(|f| (f.file.as_str(), f)).collect();

    // Workflows: every one found in the files, and any the store knows of.
    // When two files claim one name, the one the daemon runs is shown.
    let mut rows: Vec<WorkflowRow> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut files_with_workflow: BTreeSet<PathBuf> = BTreeSet::new();
    let mut found: Vec<&crate::workflow::LoadedWorkflow> = report.workflows.iter().collect();
    found.sort_by_key(|lw| {
        row_of
            .get(show(&lw.workflow.file).as_str())
            .is_none_or(|f| f.running_version.is_none())
    });
    for lw in found {
        let w = &lw.workflow;
        files_with_workflow.insert(w.file.clone());
        if !seen.insert(w.name.clone()) {
            continue;
        }
        let file = show(&w.file);
        let state = match row_of.get(file.as_str()) {
            // The daemon runs the last valid version of the file.
            Some(f) if f.state == "broken" && f.running_version.is_some() => "edit_rejected",
            Some(f) if f.state == "broken" => "broken",
            _ if !w.enabled => "disabled",
            Some(f) => f.state.as_str(),
            None => "loaded",
        };
        rows.push(WorkflowRow {
            name: w.name.clone(),
            counts: counts
                .get(&w.name)
                .cloned()
                .unwrap_or_else(|| WorkflowCounts {
                    workflow: w.name.clone(),
                    ..Default::default()
                }),
            file: Some(file),
            state: state.to_string(),
            activated_at: None,
            paused: None,
        });
    }
    // A file that could not be read as a workflow at all: named by its stem.
    for f in &report.workflow_files {
        if files_with_workflow.contains(f) {
            continue;
        }
        let Some(name) = f.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if !seen.insert(name.to_string()) {
            continue;
        }
        rows.push(WorkflowRow {
            name: name.to_string(),
            counts: counts.get(name).cloned().unwrap_or_else(|| WorkflowCounts {
                workflow: name.to_string(),
                ..Default::default()
            }),
            state: match row_of.get(show(f).as_str()) {
                Some(r) if r.running_version.is_some() => "edit_rejected",
                _ => "broken",
            }
            .into(),
            file: Some(show(f)),
            activated_at: None,
            paused: None,
        });
    }
    for (name, c) in &counts {
        if seen.insert(name.clone()) {
            rows.push(WorkflowRow {
                name: name.clone(),
                file: None,
                state: "removed".into(),
                activated_at: None,
                paused: None,
                counts: c.clone(),
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    for r in &mut rows {
        if let Some(st) = wf_states.get(&r.name) {
            r.activated_at = Some(
                st.activated_at
                    .with_timezone(&settings.timezone)
                    .format("%Y-%m-%d %H:%M:%S %:z")
                    .to_string(),
            );
            if let Some((_, reason)) = &st.paused {
                r.paused = Some(reason.clone());
                if r.state == "loaded" {
                    r.state = "paused".into();
                }
            }
        }
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let res = match args.format {
        StatusFormat::Json => {
            let v = json!({
                "workflows": rows,
                "reports": reports,
                "files": files,
                "files_source": if from_daemon { "daemon" } else { "checked_now" },
                "files_recorded_at": recorded_at.map(|t| t.with_timezone(&settings.timezone).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "store": if no_store { None } else { Some(url.clone()) },
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&v).expect("JSON"))
        }
        StatusFormat::Table => write_table(
            &mut out,
            &rows,
            &files,
            from_daemon.then_some(recorded_at).flatten(),
            settings.timezone,
            no_store.then_some(url.as_str()),
        ),
    };
    match res.and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Other(
            anyhow::Error::new(e).context("writing the status"),
        )),
    }
}

/// `p` relative to the project folder when it is inside it. Both are
/// resolved first when they exist, so the daemon's paths (absolute, say)
/// and the ones found now name a file the same way.
fn relative(root: &Path, p: &Path) -> String {
    let root = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let root_abs = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let p_abs = p.canonicalize().unwrap_or_else(|_| {
        if p.is_relative() {
            root_abs.join(p)
        } else {
            p.to_path_buf()
        }
    });
    let rel = p_abs
        .strip_prefix(&root_abs)
        .or_else(|_| p.strip_prefix(root))
        .unwrap_or(p);
    let rel = rel.strip_prefix(".").unwrap_or(rel);
    rel.display().to_string()
}

/// The settings file, every workflow file and every template file, with the
/// problems found now.
fn checked_now(
    report: &crate::project::LoadReport,
    templates_dir: &Path,
    show: &dyn Fn(&Path) -> String,
) -> Vec<FileRow> {
    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &report.diagnostics {
        by_file
            .entry(show(&d.file))
            .or_default()
            .push(d.to_string());
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    if let Some(f) = report.settings.as_ref().and_then(|s| s.file.as_ref()) {
        names.insert(show(f));
    }
    for f in &report.workflow_files {
        names.insert(show(f));
    }
    if let Ok(entries) = std::fs::read_dir(templates_dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "hbs") {
                names.insert(show(&p));
            }
        }
    }
    // Problems in files not listed above (a folder, say) are shown too.
    names.extend(by_file.keys().cloned());
    names
        .into_iter()
        .map(|file| {
            let diagnostics = by_file.remove(&file).unwrap_or_default();
            FileRow {
                state: if diagnostics.is_empty() {
                    "loaded"
                } else {
                    "broken"
                }
                .into(),
                file,
                diagnostics,
                running_version: None,
                loaded_at: None,
                rejected_version: None,
                rejected_at: None,
            }
        })
        .collect()
}

/// What did not go out, per workflow and reason: skipped steps, cancelled
/// messages and dead letters. Nothing is printed when there are none.
fn write_reasons(out: &mut impl Write, rows: &[WorkflowRow]) -> std::io::Result<()> {
    let mut lines: Vec<[String; 4]> = Vec::new();
    for r in rows {
        let c = &r.counts;
        for (what, map) in [
            ("skipped", &c.skipped),
            ("cancelled", &c.cancelled_by_reason),
            ("failed", &c.failed_by_reason),
        ] {
            for (reason, n) in map {
                lines.push([r.name.clone(), what.into(), reason.clone(), n.to_string()]);
            }
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "not sent, by reason (nurture history --contact ID shows each one):"
    )?;
    let mut t = Table::new(&["WORKFLOW", "WHAT", "REASON", "COUNT"])
        .indent("  ")
        .right(&[3])
        .flex(2);
    for l in lines {
        t.row(l.to_vec());
    }
    write!(out, "{}", t.render_for_terminal())?;
    Ok(())
}

fn write_table(
    out: &mut impl Write,
    rows: &[WorkflowRow],
    files: &[FileRow],
    recorded_at: Option<DateTime<Utc>>,
    tz: Tz,
    no_store: Option<&str>,
) -> std::io::Result<()> {
    if let Some(url) = no_store {
        writeln!(out, "no customer store at {url} yet: every count is 0")?;
    }
    let headers = [
        "WORKFLOW", "STATE", "ENROLLED", "ACTIVE", "WAITING", "DONE", "EXITED", "SENT", "NOTICES",
        "FAILED", "QUEUED",
    ];
    let mut table = Table::new(&headers)
        .right(&[2, 3, 4, 5, 6, 7, 8, 9, 10])
        .flex(0);
    for r in rows {
        let c = &r.counts;
        table.row(vec![
            r.name.clone(),
            r.state.clone(),
            c.enrolled.to_string(),
            c.active.to_string(),
            c.waiting.to_string(),
            c.done.to_string(),
            c.exited.to_string(),
            c.sent.to_string(),
            c.notices.to_string(),
            c.failed.to_string(),
            c.queued.to_string(),
        ]);
    }
    if table.is_empty() {
        writeln!(out, "no workflows")?;
    } else {
        write!(out, "{}", table.render_for_terminal())?;
        writeln!(out)?;
        for r in rows {
            match (&r.activated_at, &r.paused) {
                // Switched off in its file: neither "activated" nor "not
                // activated yet" would be true of what the daemon does.
                _ if r.state == "disabled" => writeln!(
                    out,
                    "{}: disabled (`enabled: false` in its file): the daemon does not run it",
                    r.name
                )?,
                (_, Some(reason)) => writeln!(
                    out,
                    "{}: PAUSED by the {reason} (`nurture resume {}`)",
                    r.name, r.name
                )?,
                (Some(t), None) => writeln!(
                    out,
                    "{}: activated {t}: acts on trigger events from then on",
                    r.name
                )?,
                (None, None) if r.file.is_some() => writeln!(
                    out,
                    "{}: not activated yet (the daemon activates it when it first loads it)",
                    r.name
                )?,
                _ => {}
            }
        }
    }
    let show = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    };
    for r in rows {
        let c = &r.counts;
        if let (Some(from), Some(until)) = (c.deferred_from, c.deferred_until) {
            let when = if from == until {
                format!("until {}", show(until))
            } else {
                format!("until between {} and {}", show(from), show(until))
            };
            writeln!(
                out,
                "{}: {} message{} deferred by quiet hours {when}",
                r.name,
                c.deferred,
                if c.deferred == 1 { "" } else { "s" }
            )?;
        }
    }
    write_reasons(out, rows)?;
    writeln!(out)?;
    match recorded_at {
        Some(t) => writeln!(
            out,
            "files (as the daemon loaded them at {}):",
            t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %:z")
        )?,
        None => writeln!(out, "files (checked now; the daemon has not recorded any):")?,
    }
    if files.is_empty() {
        writeln!(out, "  none")?;
    }
    let width = files
        .iter()
        .map(|f| super::table::width(&f.file))
        .max()
        .unwrap_or(0);
    let file = |f: &FileRow| super::table::pad_right(&f.file, width);
    let at = |t: &Option<String>| -> String {
        t.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
            .unwrap_or_else(|| "?".into())
    };
    // A file loaded when the daemon recorded them all (every file, after a
    // start) would repeat the heading's time on each line: only a file
    // loaded at another time (a later reload, a file left as it was) says
    // when.
    let loaded = |t: &Option<String>| -> String {
        let at_heading = t
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .zip(recorded_at)
            .is_some_and(|(t, r)| t.timestamp() == r.timestamp());
        if at_heading {
            String::new()
        } else {
            format!(" (loaded {})", at(t))
        }
    };
    for f in files {
        if recorded_at.is_none() {
            // Checked now: no versions, the first problem on the line.
            match f.diagnostics.first() {
                None => writeln!(out, "  {:<6}  {}", f.state, f.file)?,
                Some(first) => {
                    let more = f.diagnostics.len() - 1;
                    let more = if more > 0 {
                        format!(" (and {more} more; run nurture validate)")
                    } else {
                        String::new()
                    };
                    writeln!(out, "  {:<6}  {}  {first}{more}", f.state, file(f))?
                }
            }
            continue;
        }
        match &f.running_version {
            Some(v) => writeln!(
                out,
                "  {:<6}  {}  running {v}{}",
                f.state,
                file(f),
                loaded(&f.loaded_at)
            )?,
            None => writeln!(out, "  {:<6}  {}  not running", f.state, file(f))?,
        }
        if f.state == "broken" {
            match &f.rejected_version {
                Some(v) => writeln!(
                    out,
                    "          rejected edit {v} (seen {}):",
                    at(&f.rejected_at)
                )?,
                None => writeln!(out, "          rejected edit:")?,
            }
            for d in &f.diagnostics {
                writeln!(out, "            {d}")?;
            }
        }
    }
    if recorded_at.is_some() && files.iter().any(|f| f.state == "broken") {
        writeln!(
            out,
            "a broken file keeps its last valid version running in the daemon (if it had one)"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shown_relative_to_the_project() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("workflows")).unwrap();
        std::fs::write(dir.path().join("workflows/a.yaml"), "").unwrap();
        let root = dir.path();
        assert_eq!(
            relative(root, &root.join("workflows/a.yaml")),
            "workflows/a.yaml"
        );
        assert_eq!(
            relative(root, Path::new("workflows/a.yaml")),
            "workflows/a.yaml"
        );
        assert_eq!(
            relative(root, &root.join("workflows/gone.yaml")),
            "workflows/gone.yaml"
        );
        assert_eq!(
            relative(Path::new("/elsewhere"), Path::new("/x/y.yaml")),
            "/x/y.yaml"
        );
    }
}
