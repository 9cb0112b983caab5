//! `nurture outbox requeue --dead [--channel C] [--since T]`: brings
//! dead-lettered messages back after a provider outage or a settings fix.
//! A running daemon picks them up within a second.
//!
//! Exit codes: 0 done (also when nothing matched); 1 bad arguments (an
//! unknown channel, a time that is not one); 2 the store cannot be written.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};

use super::{CliResult, Failure};
use crate::settings::Settings;
use crate::store::outbox::RequeueFilter;

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// Queue dead-lettered messages again (same message ids, attempts reset).
    #[command(after_help = "Examples:
  nurture outbox requeue --dead
  nurture outbox requeue --dead --channel sms --since 2026-11-30T08:00")]
    Requeue(RequeueArgs),
}

#[derive(Args, Debug)]
pub struct RequeueArgs {
    /// Requeue dead letters (the only kind of message this command moves).
    #[arg(long, required = true)]
    pub dead: bool,
    /// Only messages of this channel.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// Only messages dead-lettered at or after this time: RFC 3339, or a
    /// local time (`2026-11-01T09:00`) in the settings' timezone.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

pub async fn run(config: &Path, cmd: OutboxCommand) -> CliResult {
    let OutboxCommand::Requeue(args) = cmd;
    let settings = Settings::load(config).map_err(|diags| {
        crate::diagnostics::eprint_all(&diags);
        Failure::Reported
    })?;
    if let Some(c) = &args.channel
        && !settings.channels.contains_key(c)
    {
        let known: Vec<&str> = settings.channels.keys().map(String::as_str).collect();
        let hint = crate::diagnostics::did_you_mean(c, known.iter().copied())
            .map(|s| format!("; did you mean {s:?}?"))
            .unwrap_or_default();
        return Err(Failure::Input(format!(
            "--channel {c:?}: no such channel in the settings (channels: {}){hint}",
            known.join(", ")
        )));
    }
    let since = match &args.since {
        Some(s) => Some(
            crate::timefmt::parse_at(s, settings.timezone)
                .map_err(|e| Failure::Input(e.replace("--at", "--since")))?,
        ),
        None => None,
    };
    let url = settings.database_url();
    let filter = RequeueFilter {
        channel: args.channel.clone(),
        since,
    };
    let n = super::store_use::with_store(&url, async |store| {
        Ok(store
            .requeue_dead(&filter, Utc::now())
            .await
            .context("requeueing dead letters")?)
    })
    .await?;
    println!("requeued {n} dead message{}", if n == 1 { "" } else { "s" });
    Ok(())
}
