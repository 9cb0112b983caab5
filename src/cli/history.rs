//! `nurture history --contact ID`: what happened to one contact, in time
//! order — created, tags added and removed, events, enrollments started and
//! ended (with the reason), steps run, and messages queued, sent,
//! dead-lettered or cancelled. Times are shown in the settings' timezone.
//!
//! Exit codes: 0 shown; 1 no such contact (or a broken settings file);
//! 2 the store cannot be read.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono_tz::Tz;
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{CliResult, Failure};
use crate::settings::Settings;
use crate::store::Store;
use crate::store::status::{HistoryEntry, contact_exists, contact_history};

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The contact's id.
    #[arg(long, value_name = "ID")]
    pub contact: String,
    /// `text`: one readable line per entry; `jsonl`: one JSON object per line.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Text)]
    pub format: HistoryFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    Text,
    Jsonl,
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
            args.contact
        )));
    }
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the store {}", crate::store::redact(&url)))?;
    let pool = store.db();
    if !contact_exists(pool, &args.contact)
        .await
        .context("reading the store")?
    {
        store.close().await;
        return Err(Failure::Input(format!(
            "no contact with id {:?} in the store {url}",
            args.contact
        )));
    }
    let entries = contact_history(pool, &args.contact)
        .await
        .context("reading the contact's history")?;
    store.close().await;

    let tz = settings.timezone;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let res = match args.format {
        HistoryFormat::Text => write_text(&mut out, &args.contact, &entries, tz),
        HistoryFormat::Jsonl => write_jsonl(&mut out, &args.contact, &entries, tz),
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
    tz: Tz,
) -> std::io::Result<()> {
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
        }
        writeln!(out, "{v}")?;
    }
    Ok(())
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
pub fn describe(e: &HistoryEntry) -> String {
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
                "{wf}: message queued on {channel} to {} (step {name})",
                e.to.as_deref().unwrap_or("?")
            );
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
            let mut s = match &e.provider_id {
                Some(p) => format!("{wf}: message sent on {channel} (provider id {p})"),
                None => format!("{wf}: message sent on {channel}"),
            };
            if let Some(note) = e.detail.as_deref().filter(|n| !n.is_empty()) {
                s.push_str(&format!(" — {note}"));
            }
            s
        }
        "message_dead" => format!(
            "{wf}: message failed on {channel} after {} attempt{}: {}",
            e.attempts.unwrap_or(0),
            if e.attempts == Some(1) { "" } else { "s" },
            e.detail.as_deref().unwrap_or("no reason recorded")
        ),
        "message_cancelled" => match e.detail.as_deref() {
            Some(r) => format!("{wf}: message on {channel} cancelled ({r})"),
            None => format!("{wf}: message on {channel} cancelled"),
        },
        other => format!("{other} {name}"),
    }
}

fn write_text(
    out: &mut impl Write,
    id: &str,
    entries: &[HistoryEntry],
    tz: Tz,
) -> std::io::Result<()> {
    writeln!(out, "history of contact {id} (times in {tz})")?;
    for e in entries {
        writeln!(
            out,
            "{}  {}",
            e.at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %:z"),
            describe(e)
        )?;
    }
    if entries.is_empty() {
        writeln!(out, "(nothing recorded)")?;
    }
    Ok(())
}
