//! `nurture dry-run`: what the daemon would do from a time on, printed, not done.
//!
//! It runs the daemon's own passes (`engine::simulate`, over
//! `engine::sources` and `engine::plan`) against the real store, keeping
//! what the daemon would write in memory, and writes nothing to the store.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::{Args, ValueEnum};

use super::table::Table;
use super::{CliResult, Failure};
use crate::engine::plan::{Action, PlannedStep, Planner};
use crate::engine::simulate::{SimOptions, SimReport, Simulation, next_tick};
use crate::engine::sources::Start;
use crate::project::Project;
use crate::store::Store;

mod sink;
mod summary;

use sink::{CsvSink, JsonlSink, Sink};
use summary::TableSink;

#[derive(Args, Debug)]
pub struct DryRunArgs {
    /// Only this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// The time to plan for: RFC 3339 (2026-11-01T09:00:00+08:00), or a local
    /// time in the settings' timezone (2026-11-01T09:00). Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// Simulate forward to this time: a duration after --at (7d, 36h) or a
    /// time like --at. Waits elapse, cron workflows tick at their real times,
    /// quiet hours, frequency caps and assignment counters carry from step to
    /// step. It assumes no new events. Default: --at only.
    #[arg(long, value_name = "DURATION_OR_TIME")]
    pub until: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Tell, for one contact and every workflow, which condition held or failed.
    #[arg(long, value_name = "CONTACT_ID")]
    pub explain: Option<String>,
    /// Also show event-triggered workflows as if their trigger fired at --at
    /// for every contact in their audience (never twice for `entry: once`).
    #[arg(long)]
    pub all_contacts: bool,
    /// Rows shown after the summary by the table format.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    Csv,
}

pub async fn run(config: &Path, args: DryRunArgs) -> CliResult {
    // Quiet by default; NURTURE_LOG=debug shows each scan's SQL.
    let filter = tracing_subscriber::EnvFilter::try_from_env("NURTURE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
    let project = super::load_project(config)?;
    let tz = project.settings.timezone;
    let at = match &args.at {
        Some(s) => crate::timefmt::parse_at(s, tz).map_err(Failure::Input)?,
        None => Utc::now(),
    };
    if let Some(name) = &args.workflow
        && !project.workflows.iter().any(|w| &w.name == name)
    {
        let names: Vec<&str> = project.workflows.iter().map(|w| w.name.as_str()).collect();
        let hint = crate::diagnostics::did_you_mean(name, names.iter().copied())
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        return Err(Failure::Input(format!(
            "no workflow named \"{name}\"{hint}"
        )));
    }
    let url = project.settings.database_url();
    super::store_use::existing_store(&url, super::store_use::IMPORT_FIRST)?;
    let until = match &args.until {
        None => at,
        Some(u) => crate::timefmt::parse_until(u, at, tz).map_err(Failure::Input)?,
    };
    super::store_use::with_store(&url, async |store| {
        preview(store, &project, &args, at, until, tz).await
    })
    .await
}

/// The preview itself, on an open store.
async fn preview(
    store: &Store,
    project: &Project,
    args: &DryRunArgs,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
    tz: Tz,
) -> CliResult {
    let mut sim = Simulation::new(
        store,
        project,
        SimOptions {
            at,
            until,
            all_contacts: args.all_contacts,
        },
    )
    .await
    .context("reading the store")?;
    let mut planner = sim.planner().await.context("reading the store")?;

    if let Some(id) = &args.explain {
        return explain_contact(project, store, &mut planner, id, args.workflow.as_deref()).await;
    }

    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut sink: Box<dyn Sink> = match args.format {
        Format::Jsonl => Box::new(JsonlSink { tz }),
        Format::Csv => Box::new(CsvSink::new(tz)),
        Format::Table => Box::new(TableSink::new(args.limit, tz)),
    };
    // What a contact added through each contact-way code gets now.
    if args.workflow.is_none() {
        let mut previews = Vec::new();
        for way in &project.contact_ways {
            let (_, ids, why) =
                crate::channels::wecom::contact_way::desired(store, project, way, at)
                    .await
                    .context("reading the store")?;
            previews.push(crate::contact_ways::Preview::new(
                way,
                &project.settings,
                ids,
                why,
            ));
        }
        if let Err(e) = sink.contact_ways(&mut out, previews) {
            return match e.kind() {
                io::ErrorKind::BrokenPipe => Ok(()),
                _ => Err(Failure::Other(e.into())),
            };
        }
    }
    let only = args.workflow.clone();
    // Every workflow is simulated (they share teams, caps and contacts);
    // `--workflow` only chooses what is shown.
    let result = sim
        .run(&mut planner, |d, when| {
            if only.as_ref().is_some_and(|o| *o != d.workflow.name) {
                return Ok(());
            }
            for s in &d.plan.steps {
                sink.row(&mut out, s, when)?;
            }
            if let Start::New { .. } = d.start {
                sink.entered(&d.workflow.name);
            }
            Ok(())
        })
        .await;
    let shown: Vec<crate::workflow::Workflow> = project
        .workflows
        .iter()
        .filter(|w| only.as_ref().is_none_or(|o| *o == w.name))
        .cloned()
        .collect();
    if result.is_ok() {
        let mut names = std::collections::HashMap::new();
        for id in sink.named_contacts() {
            if let Some(n) = store
                .contact(&id)
                .await
                .context("reading the store")?
                .and_then(|c| c.name)
                .filter(|n| !n.is_empty())
            {
                names.insert(id, n);
            }
        }
        sink.set_names(names);
    }
    let header = Header {
        at,
        until,
        tz,
        report: &sim.report,
        project,
    };
    let result = result.and_then(|_| sink.finish(&mut out, &shown, &header).map_err(Into::into));
    let result = result.and_then(|_| out.flush().map_err(Into::into));
    match result {
        Ok(()) => Ok(()),
        // `dry-run | head` closes the pipe early: that is not an error.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(Failure::Other(e)),
    }
}

/// What the table's header says besides the rows.
pub struct Header<'a> {
    at: DateTime<Utc>,
    until: DateTime<Utc>,
    tz: Tz,
    report: &'a SimReport,
    project: &'a Project,
}

/// `--until`: a duration after `at`, or a time as `--at` takes it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

async fn explain_contact(
    project: &Project,
    store: &Store,
    planner: &mut Planner<'_>,
    id: &str,
    only: Option<&str>,
) -> CliResult {
    let out = crate::engine::explain_contact::explain_text(project, store, planner, id, only)
        .await?
        .ok_or_else(|| Failure::Input(format!("no contact with id \"{id}\"")))?;
    print!("{out}");
    Ok(())
}
