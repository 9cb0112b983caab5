//! `nurture history --contact ID`: what happened to one contact, in time
//! order — created, tags added and removed, events, enrollments started and
//! ended (with the reason), steps run, and messages queued, sent,
//! dead-lettered or cancelled (a notice to a salesperson said apart from a
//! message to the contact, each with its template and step, a deferral by
//! quiet hours with its time), and unsubscribes. The contact's and the
//! salespeople's names stand beside their ids. Times are shown in the
//! settings' timezone.
//!
//! Exit codes: 0 shown; 1 no such contact (or a broken settings file);
//! 2 the store cannot be read.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono_tz::Tz;
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{CliResult, Failure};
use crate::settings::Settings;
use crate::store::status::HistoryEntry;
use crate::workflow::StepAction;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The contact's id: `nurture history c0000042`.
    #[arg(value_name = "ID", required_unless_present = "contact_flag")]
    pub id: Option<String>,
    /// The same, as an option (`--contact ID`, the form other commands use).
    #[arg(long = "contact", value_name = "ID", conflicts_with = "id")]
    pub contact_flag: Option<String>,
    /// `text`: one readable line per entry; `jsonl`: one JSON object per line.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Text)]
    pub format: HistoryFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    Text,
    Jsonl,
}

impl HistoryArgs {
    /// The contact asked for, whichever way it was given.
    fn contact(&self) -> &str {
        self.id
            .as_deref()
            .or(self.contact_flag.as_deref())
            .unwrap_or_default()
    }
}

pub async fn run(config: &Path, args: HistoryArgs) -> CliResult {
    let settings = Settings::load(config).map_err(|diags| {
        crate::diagnostics::eprint_all(&diags);
        Failure::Reported
    })?;
    let url = settings.database_url();
    if let Some(path) = url.strip_prefix("sqlite://")
        && !Path::new(path).exists()
    {
        return Err(Failure::Input(format!(
            "no contact {:?}: there is no customer store at {path} yet",
            args.contact()
        )));
    }
    let (entries, contact_name) = super::store_use::with_store(&url, async |store| {
        if !store
            .contact_exists(args.contact())
            .await
            .context("reading the store")?
        {
            return Err(Failure::Input(format!(
                "no contact with id {:?} in the store {}",
                args.contact(),
                crate::store::redact(&url)
            )));
        }
        let entries = store
            .contact_history(args.contact())
            .await
            .context("reading the contact's history")?;
        let contact_name = store
            .contact(args.contact())
            .await
            .context("reading the contact")?
            .and_then(|c| c.name)
            .filter(|n| !n.is_empty());
        Ok((entries, contact_name))
    })
    .await?;
    let ctx = Names::new(config, &settings);

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let res = match args.format {
        HistoryFormat::Text => write_text(
            &mut out,
            args.contact(),
            contact_name.as_deref(),
            &entries,
            &ctx,
        ),
        HistoryFormat::Jsonl => write_jsonl(&mut out, args.contact(), &entries, &ctx),
    };
    match res.and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Other(
            anyhow::Error::new(e).context("writing the history"),
        )),
    }
}

fn write_jsonl(
    out: &mut impl Write,
    id: &str,
    entries: &[HistoryEntry],
    ctx: &Names,
) -> std::io::Result<()> {
    let tz = ctx.tz;
    for e in entries {
        let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert(
                "at".into(),
                e.at.with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    .into(),
            );
            m.insert("contact_id".into(), id.into());
            if let Some(t) = e.deferred_until {
                m.insert(
                    "deferred_until".into(),
                    t.with_timezone(&tz)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        .into(),
                );
            }
            // A wait's end, stored in UTC, in the zone of every other time
            // here (as the text format shows it).
            if e.kind == "step"
                && e.action.as_deref() == Some("wait")
                && let Some(t) = e
                    .detail
                    .as_deref()
                    .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            {
                m.insert(
                    "detail".into(),
                    t.with_timezone(&tz)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        .into(),
                );
            }
            if let Some(t) = ctx.template_of(e) {
                m.insert("template".into(), t.into());
            }
            if let Some(sp) = ctx.salesperson_of(e) {
                m.insert("salesperson_name".into(), sp.into());
            }
        }
        writeln!(out, "{v}")?;
    }
    Ok(())
}

/// What the lines name besides the store's rows: salespeople's names (from
/// the settings) and the template each step sends (from the workflows as
/// they are now; a step since removed shows none).
pub struct Names {
    pub tz: Tz,
    salespeople: HashMap<String, String>,
    templates: HashMap<(String, String), String>,
}

impl Names {
    pub fn new(config: &Path, settings: &Settings) -> Names {
        let salespeople = settings
            .teams
            .values()
            .flatten()
            .filter_map(|s| Some((s.id.clone(), s.name.clone()?)))
            .collect();
        let mut templates = HashMap::new();
        let report = crate::project::Project::load_report(config, chrono::Utc::now());
        for lw in &report.workflows {
            let wf = &lw.workflow;
            for step in wf.all_steps() {
                match &step.action {
                    StepAction::Send(send) => {
                        templates.insert(
                            (wf.name.clone(), step.id.clone()),
                            send.template.value.clone(),
                        );
                    }
                    StepAction::Assign(a) => {
                        if let Some(n) = &a.notify {
                            templates.insert(
                                (wf.name.clone(), step.id.clone()),
                                n.template_name().to_string(),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        Names {
            tz: settings.timezone,
            salespeople,
            templates,
        }
    }

    /// The template of a message entry.
    fn template_of(&self, e: &HistoryEntry) -> Option<&str> {
        if !e.kind.starts_with("message_") {
            return None;
        }
        self.templates
            .get(&(e.workflow.clone()?, e.name.clone()?))
            .map(String::as_str)
    }

    /// The salesperson an assign step chose, by name.
    fn salesperson_of(&self, e: &HistoryEntry) -> Option<&str> {
        if e.kind != "step" || e.action.as_deref() != Some("assign") {
            return None;
        }
        self.salespeople
            .get(e.detail.as_deref()?)
            .map(String::as_str)
    }

    fn person(&self, id: &str) -> String {
        match self.salespeople.get(id) {
            Some(n) => format!("{id} {n}"),
            None => id.to_string(),
        }
    }

    fn time(&self, t: chrono::DateTime<chrono::Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }
}

/// The first line of `s`, at most `n` characters, with `…` when cut.
fn snippet(s: &str, n: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(n).collect();
    if line.chars().count() > n || s.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

/// One readable line (without the time) for an entry.
pub fn describe(e: &HistoryEntry, ctx: &Names) -> String {
    let wf = e.workflow.as_deref().unwrap_or("?");
    let name = e.name.as_deref().unwrap_or("");
    let channel = e.channel.as_deref().unwrap_or("?");
    match e.kind {
        "contact_created" => "contact created".into(),
        "tag_added" => format!("tag added: {name}"),
        "tag_removed" => format!("tag removed: {name}"),
        "event" => match &e.properties {
            Some(p) => format!("event {name} {p}"),
            None => format!("event {name}"),
        },
        "enrollment_started" => format!(
            "{wf}: enrolled ({})",
            e.detail.as_deref().unwrap_or("entry ?")
        ),
        "enrollment_ended" => {
            let status = e.status.as_deref().unwrap_or("ended");
            match e.detail.as_deref() {
                Some(r) if !r.is_empty() => format!("{wf}: {status} ({r})"),
                _ => format!("{wf}: {status}"),
            }
        }
        // Nothing happened at this step, and why: said plainly.
        "step" if e.action.as_deref() == Some("skip") => format!(
            "{wf}: step {name} skipped ({})",
            e.detail.as_deref().unwrap_or("no reason recorded")
        ),
        "step" if e.action.as_deref() == Some("assign") => format!(
            "{wf}: step {name} assign → {}",
            ctx.person(e.detail.as_deref().unwrap_or("?"))
        ),
        "unsubscribed" => {
            let what = match &e.channel {
                Some(ch) => format!("unsubscribed from {ch}"),
                None => "unsubscribed from every channel".to_string(),
            };
            match &e.detail {
                Some(d) => format!("{what} ({d})"),
                None => what,
            }
        }
        // A wait's end is stored as UTC (RFC 3339): shown in the zone the
        // header names, as every other time here.
        "step" if e.action.as_deref() == Some("wait") => {
            match e
                .detail
                .as_deref()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            {
                Some(t) => format!(
                    "{wf}: step {name} wait until {}",
                    ctx.time(t.with_timezone(&chrono::Utc))
                ),
                None => match e.detail.as_deref().filter(|d| !d.is_empty()) {
                    Some(d) => format!("{wf}: step {name} wait: {d}"),
                    None => format!("{wf}: step {name} wait"),
                },
            }
        }
        "step" => {
            let mut s = format!("{wf}: step {name} {}", e.action.as_deref().unwrap_or("?"));
            if let Some(d) = e.detail.as_deref().filter(|d| !d.is_empty()) {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        "message_queued" => {
            let mut s = format!(
                "{wf}: {} queued on {channel} to {} ({})",
                what(e),
                e.to.as_deref().unwrap_or("?"),
                which(e, ctx)
            );
            // A transfer waits for a takeover, not quiet hours (its body
            // says which).
            match e.deferred_until {
                Some(t) if e.transfer => s.push_str(&format!(" — deferred until {}", ctx.time(t))),
                Some(t) => s.push_str(&format!(" — deferred by quiet hours until {}", ctx.time(t))),
                None => {}
            }
            if let Some(subj) = &e.subject {
                s.push_str(&format!(" subject {:?}", snippet(subj, 60)));
            }
            if let Some(body) = &e.body {
                s.push_str(&format!(": {:?}", snippet(body, 60)));
            }
            if let Some(st) = &e.status {
                s.push_str(&format!(
                    " — now {st}, {} attempt{}",
                    e.attempts.unwrap_or(0),
                    if e.attempts == Some(1) { "" } else { "s" }
                ));
                if let Some(err) = &e.detail {
                    s.push_str(&format!(", last error: {err}"));
                }
            }
            s
        }
        "message_sent" => {
            let mut s = format!(
                "{wf}: {} sent on {channel} to {} ({})",
                what(e),
                e.to.as_deref().unwrap_or("?"),
                which(e, ctx)
            );
            if let Some(p) = &e.provider_id {
                s.push_str(&format!(", provider id {p}"));
            }
            if let Some(note) = e.detail.as_deref().filter(|n| !n.is_empty()) {
                s.push_str(&format!(" — {note}"));
            }
            s
        }
        "message_dead" => format!(
            "{wf}: {} ({}) failed on {channel} after {} attempt{}: {}",
            what(e),
            which(e, ctx),
            e.attempts.unwrap_or(0),
            if e.attempts == Some(1) { "" } else { "s" },
            e.detail.as_deref().unwrap_or("no reason recorded")
        ),
        "message_cancelled" => match e.detail.as_deref() {
            Some(r) => format!(
                "{wf}: {} ({}) on {channel} cancelled: {r}",
                what(e),
                which(e, ctx)
            ),
            None => format!(
                "{wf}: {} ({}) on {channel} cancelled",
                what(e),
                which(e, ctx)
            ),
        },
        other => format!("{other} {name}"),
    }
}

/// A message to the contact, or a notice to a salesperson.
fn what(e: &HistoryEntry) -> &'static str {
    if e.notice {
        "notice to the salesperson"
    } else if e.transfer {
        "WeCom transfer"
    } else {
        "message"
    }
}

/// Which message: its template (as the workflow says now) and step.
fn which(e: &HistoryEntry, ctx: &Names) -> String {
    let step = e.name.as_deref().unwrap_or("?");
    match ctx.template_of(e) {
        Some(t) => format!("template {t}, step {step}"),
        None => format!("step {step}"),
    }
}

fn write_text(
    out: &mut impl Write,
    id: &str,
    name: Option<&str>,
    entries: &[HistoryEntry],
    ctx: &Names,
) -> std::io::Result<()> {
    let tz = ctx.tz;
    let who = match name {
        Some(n) => format!("{id} {n}"),
        None => id.to_string(),
    };
    writeln!(out, "history of contact {who} (times in {tz})")?;
    // Each entry on one line, cut to the terminal's width when there is one.
    let fit = super::table::terminal_width();
    for e in entries {
        let line = format!(
            "{}  {}",
            e.at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %:z"),
            describe(e, ctx).replace(['\n', '\r'], " ")
        );
        match fit {
            Some(w) => writeln!(out, "{}", super::table::truncate(&line, w))?,
            None => writeln!(out, "{line}")?,
        }
    }
    if entries.is_empty() {
        writeln!(out, "(nothing recorded)")?;
    }
    Ok(())
}
