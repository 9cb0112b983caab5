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
    if let Some(path) = url.strip_prefix("sqlite://")
        && !Path::new(path).exists()
    {
        return Err(Failure::Input(format!(
            "no customer store at {path}: import contacts first (nurture contacts import FILE.csv)"
        )));
    }
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the store {}", crate::store::redact(&url)))?;
    let until = match &args.until {
        None => at,
        Some(u) => crate::timefmt::parse_until(u, at, tz).map_err(Failure::Input)?,
    };
    let mut sim = Simulation::new(
        &store,
        &project,
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
        return explain_contact(&project, &store, &mut planner, id, args.workflow.as_deref()).await;
    }

    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut sink: Box<dyn Sink> = match args.format {
        Format::Jsonl => Box::new(JsonlSink { tz }),
        Format::Csv => Box::new(CsvSink::new()),
        Format::Table => Box::new(TableSink::new(args.limit, tz)),
    };
    // What a contact added through each contact-way code gets now.
    if args.workflow.is_none() {
        let mut previews = Vec::new();
        for way in &project.contact_ways {
            let (_, ids, why) =
                crate::channels::wecom::contact_way::desired(&store, &project, way, at)
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
        project: &project,
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

/// Where planned rows go.
trait Sink {
    fn row(
        &mut self,
        out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    fn entered(&mut self, _workflow: &str) {}
    /// What adds through the contact-way codes get (shown before the rows).
    fn contact_ways(
        &mut self,
        _out: &mut dyn Write,
        _ways: Vec<crate::contact_ways::Preview>,
    ) -> io::Result<()> {
        Ok(())
    }
    /// The contacts whose names the output shows.
    fn named_contacts(&self) -> Vec<String> {
        Vec::new()
    }
    fn set_names(&mut self, _names: std::collections::HashMap<String, String>) {}
    fn finish(
        &mut self,
        _out: &mut dyn Write,
        _wfs: &[crate::workflow::Workflow],
        _header: &Header<'_>,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// One JSON object per line, written as it is decided.
struct JsonlSink {
    tz: Tz,
}

impl Sink for JsonlSink {
    /// One line per code, `"action": "contact_way"`, before the rows.
    fn contact_ways(
        &mut self,
        out: &mut dyn Write,
        ways: Vec<crate::contact_ways::Preview>,
    ) -> io::Result<()> {
        for w in ways {
            let mut v = serde_json::to_value(&w).map_err(io::Error::other)?;
            v["action"] = serde_json::json!("contact_way");
            let mut line = serde_json::to_vec(&v).map_err(io::Error::other)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Ok(())
    }
    fn row(
        &mut self,
        out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        // Serialised first, so a closed pipe is an io::Error (see is_broken_pipe).
        let mut line = serde_json::to_vec(&s.to_json_row(self.tz, when))?;
        line.push(b'\n');
        out.write_all(&line)?;
        Ok(())
    }
}

const CSV_COLUMNS: [&str; 15] = [
    "workflow",
    "contact_id",
    "step",
    "action",
    "channel",
    "to",
    "subject",
    "body",
    "at",
    "salesperson",
    "notify",
    "add",
    "remove",
    "until",
    "reason",
];

struct CsvSink {
    header_written: bool,
}

impl CsvSink {
    fn new() -> Self {
        CsvSink {
            header_written: false,
        }
    }
}

impl Sink for CsvSink {
    fn row(
        &mut self,
        out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(&mut *out);
        if !self.header_written {
            w.write_record(CSV_COLUMNS)?;
            self.header_written = true;
        }
        let r = s.to_json_row(Tz::UTC, when);
        let join = |v: Option<&[String]>| v.map(|v| v.join(";")).unwrap_or_default();
        let at = match &s.action {
            Action::Send { at, tz, .. } => at
                .with_timezone(tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            _ => when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        // Cells a spreadsheet would run as formulas get a leading `'`.
        w.write_record(
            [
                r.workflow,
                r.contact_id,
                r.step,
                r.action,
                r.channel.unwrap_or(""),
                r.to.unwrap_or(""),
                r.subject.unwrap_or(""),
                r.body.unwrap_or(""),
                &at,
                r.salesperson.unwrap_or(""),
                r.notify.unwrap_or(""),
                &join(r.add),
                &join(r.remove),
                r.until.as_deref().unwrap_or(""),
                r.reason.as_deref().unwrap_or(""),
            ]
            .map(|c| crate::csv_safe::cell(c).into_owned()),
        )?;
        w.flush()?;
        Ok(())
    }

    fn finish(
        &mut self,
        out: &mut dyn Write,
        _: &[crate::workflow::Workflow],
        _: &Header<'_>,
    ) -> io::Result<()> {
        if !self.header_written {
            writeln!(out, "{}", CSV_COLUMNS.join(","))?;
        }
        Ok(())
    }
}

/// A summary per workflow, then the first rows.
struct TableSink {
    limit: usize,
    tz: Tz,
    rows: Vec<(PlannedStep, DateTime<Utc>)>,
    per_workflow: BTreeMap<String, Counts>,
    /// The names of the contacts in `rows`, read once the run is over.
    names: std::collections::HashMap<String, String>,
    /// What adds through each contact-way code get.
    ways: Vec<crate::contact_ways::Preview>,
}

#[derive(Default)]
struct Counts {
    entered: u64,
    actions: BTreeMap<String, u64>,
}

impl TableSink {
    fn new(limit: usize, tz: Tz) -> Self {
        TableSink {
            limit,
            tz,
            rows: Vec::new(),
            per_workflow: BTreeMap::new(),
            names: Default::default(),
            ways: Vec::new(),
        }
    }
}

impl Sink for TableSink {
    fn contact_ways(
        &mut self,
        _out: &mut dyn Write,
        ways: Vec<crate::contact_ways::Preview>,
    ) -> io::Result<()> {
        self.ways = ways;
        Ok(())
    }
    fn row(
        &mut self,
        _out: &mut dyn Write,
        s: &PlannedStep,
        when: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let key = match &s.action {
            Action::Skip { reason } => format!("skip {}", reason.code()),
            Action::Exit { reason } => format!("exit {}", reason.code()),
            a => a.name().to_string(),
        };
        *self
            .per_workflow
            .entry(s.workflow.clone())
            .or_default()
            .actions
            .entry(key)
            .or_insert(0) += 1;
        if self.rows.len() < self.limit {
            self.rows.push((s.clone(), when));
        }
        Ok(())
    }

    fn named_contacts(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rows
            .iter()
            .map(|(s, _)| s.contact_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn set_names(&mut self, names: std::collections::HashMap<String, String>) {
        self.names = names;
    }

    fn entered(&mut self, workflow: &str) {
        self.per_workflow
            .entry(workflow.to_string())
            .or_default()
            .entered += 1;
    }

    fn finish(
        &mut self,
        out: &mut dyn Write,
        wfs: &[crate::workflow::Workflow],
        h: &Header<'_>,
    ) -> io::Result<()> {
        let tz = h.tz;
        let show = |t: DateTime<Utc>| {
            t.with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        };
        if h.until > h.at {
            writeln!(
                out,
                "Dry run from {} to {} — nothing was sent or changed.",
                show(h.at),
                show(h.until)
            )?;
            writeln!(
                out,
                "Simulated as the daemon would run it, assuming no new contacts or events arrive.\n"
            )?;
        } else {
            writeln!(
                out,
                "Dry run at {} — nothing was sent or changed.\n",
                show(h.at)
            )?;
        }
        let fit = super::table::terminal_width();
        let mut summary = Table::new(&["WORKFLOW", "TRIGGER", "ENTER", "ACTIONS"])
            .sep(" ")
            .right(&[2]);
        for wf in wfs {
            let counts = self.per_workflow.get(&wf.name);
            let mut actions = counts
                .map(|c| {
                    c.actions
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            // A cron workflow that did not tick in the window shows when it will.
            if wf.enabled
                && wf.trigger.is_ticked()
                && !h.report.ticks_run.iter().any(|(n, _)| *n == wf.name)
                && let Some(next) = next_tick(h.project, wf, h.until)
            {
                if !actions.is_empty() {
                    actions.push(' ');
                }
                actions.push_str(&format!("next tick {}", show(next)));
            }
            let state = if wf.enabled {
                wf.trigger.kind()
            } else {
                "disabled"
            };
            summary.row(vec![
                wf.name.clone(),
                state.to_string(),
                counts.map(|c| c.entered).unwrap_or(0).to_string(),
                if actions.is_empty() {
                    "-".to_string()
                } else {
                    actions
                },
            ]);
        }
        write!(out, "{}", summary.render(fit))?;
        for (name, when, reason) in &h.report.paused {
            if wfs.iter().any(|w| w.name == *name) {
                writeln!(
                    out,
                    "\n{name}: would be PAUSED at {} by the {reason}",
                    show(*when)
                )?;
            }
        }
        if !self.ways.is_empty() {
            writeln!(out, "\nContact-way codes:")?;
            for w in &self.ways {
                writeln!(out, "  {}", w.describe(&h.project.settings))?;
            }
        }
        let total: u64 = self
            .per_workflow
            .values()
            .flat_map(|c| c.actions.values())
            .sum();
        writeln!(out)?;
        if self.rows.is_empty() {
            writeln!(out, "Nothing is due.")?;
            return Ok(());
        }
        writeln!(
            out,
            "First {} of {} actions (--format jsonl or csv for all):",
            self.rows.len(),
            total
        )?;
        let mut rows =
            Table::new(&["WHEN", "WORKFLOW", "CONTACT", "STEP", "ACTION", "DETAIL"]).sep(" ");
        let person = |id: &str| match h
            .project
            .settings
            .salesperson(id)
            .and_then(|s| s.name.as_deref())
        {
            Some(n) => format!("{id} {n}"),
            None => id.to_string(),
        };
        for (s, when) in &self.rows {
            let detail = match &s.action {
                Action::Send {
                    channel,
                    to,
                    body,
                    at,
                    tz,
                    attachments,
                    ..
                } => {
                    let b = super::table::truncate(&body.replace('\n', " "), 48);
                    let mut d = format!(
                        "{channel} → {to} at {}: {b}",
                        at.with_timezone(tz).format("%Y-%m-%d %H:%M:%S %:z")
                    );
                    // Each attachment as `+ link: TITLE (URL)`.
                    for a in attachments {
                        d.push_str(&format!(" + {}", a.summary()));
                    }
                    d
                }
                Action::Assign {
                    salesperson,
                    notify,
                    transfer,
                    ..
                } => {
                    let mut d = match notify {
                        Some(n) => format!("→ {} (notified on {n})", person(salesperson)),
                        None => format!("→ {}", person(salesperson)),
                    };
                    // The WeCom transfer and its verdict, in words.
                    if let Some(t) = transfer {
                        d.push_str(&format!("; {}", t.describe()));
                    }
                    d
                }
                Action::Tag { add, remove, wecom } => {
                    let mut d = format!("+[{}] -[{}]", add.join(", "), remove.join(", "));
                    if !wecom.is_empty() {
                        d.push_str(&format!(" + WeCom corp tags via {}", wecom.join(", ")));
                    }
                    d
                }
                Action::Wait { until } => format!(
                    "until {}",
                    until
                        .with_timezone(&self.tz)
                        .format("%Y-%m-%d %H:%M:%S %:z")
                ),
                Action::Split { arm } => format!("arm {arm}"),
                Action::Webhook {
                    channel,
                    body,
                    store,
                } if !store.is_empty() => format!(
                    "POST {channel}: {body}; would store {} from the answer",
                    store
                        .iter()
                        .map(|(k, p)| format!("{k} ← {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Action::Webhook { channel, body, .. } => format!("POST {channel}: {body}"),
                Action::Set { values } => values
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Action::Notify {
                    salesperson,
                    channel,
                    body,
                } => match body {
                    Ok(_) => format!("→ {salesperson} on {channel} (stays the owner)"),
                    Err(e) => format!("→ {salesperson}: notice not sent: template_error: {e}"),
                },
                Action::WaitEnded { met, why } => {
                    format!("{} ({why})", if *met { "then" } else { "else" })
                }
                Action::Exit { reason } | Action::Skip { reason } => reason.to_string(),
            };
            let contact = match self.names.get(&s.contact_id) {
                Some(n) => format!("{} {n}", s.contact_id),
                None => s.contact_id.clone(),
            };
            rows.row(vec![
                when.with_timezone(&self.tz)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                s.workflow.clone(),
                contact,
                s.step.clone(),
                s.action.name().to_string(),
                detail,
            ]);
        }
        write!(out, "{}", rows.render(fit))?;
        Ok(())
    }
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
