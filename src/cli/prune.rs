//! `nurture prune --older-than 90d [--dry-run]`: retention. Deletes finished
//! enrollments, sent, dead and cancelled messages and consumed event-log rows that
//! ended longer ago than the given age, keeping their counts for `status`
//! (see `store::prune` for exactly what goes and what always stays).
//! `--dry-run` prints the counts and deletes nothing.
//!
//! Exit codes: 0 done (also when nothing was old enough); 1 a bad age (not
//! a duration, under a day, or inside the frequency cap's or the blast
//! guard's window, which count recent messages and enrollments); 2 the
//! store cannot be written.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use clap::Args;

use super::{CliResult, Failure};
use crate::duration::Duration;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Delete what ended longer ago than this: 90d, 12w (at least 1d).
    #[arg(long, value_name = "AGE")]
    pub older_than: String,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(config: &Path, args: PruneArgs) -> CliResult {
    let settings = Settings::load(config).map_err(|diags| {
        crate::diagnostics::eprint_all(&diags);
        Failure::Reported
    })?;
    let age: Duration = args
        .older_than
        .parse()
        .map_err(|e| Failure::Input(format!("--older-than {:?}: {e}", args.older_than)))?;
    // The policies count recent history: never prune inside their windows.
    let mut floor = ("a day", Duration::from_secs(86_400));
    if let Some(cap) = &settings.policies.frequency_cap
        && cap.per.secs() > floor.1.secs()
    {
        floor = (
            "the frequency cap's window (policies.frequency_cap.per)",
            cap.per,
        );
    }
    if let Some(g) = &settings.policies.blast_guard
        && g.per.secs() > floor.1.secs()
    {
        floor = ("the blast guard's window (policies.blast_guard.per)", g.per);
    }
    if age.secs() < floor.1.secs() {
        return Err(Failure::Input(format!(
            "--older-than {}: must be at least {} ({}), which counts recent history; \
             hint: --older-than 90d",
            args.older_than, floor.0, floor.1
        )));
    }
    let url = settings.database_url();
    super::store_use::existing_store(&url, "nothing to prune")?;
    let cutoff = Utc::now() - age.to_chrono();
    let pruned = super::store_use::with_store(&url, async |store| {
        Ok(store
            .prune(cutoff, args.dry_run)
            .await
            .context("pruning the store")?)
    })
    .await?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "{verb} {} enrollments, {} messages, {} event-log rows that ended before {}",
        pruned.enrollments(),
        pruned.messages(),
        pruned.log_rows(),
        cutoff
            .with_timezone(&settings.timezone)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for ((workflow, what), n) in &pruned.counts {
        let workflow = if workflow.is_empty() {
            "(event log)"
        } else {
            workflow
        };
        println!("  {workflow:<24} {what:<20} {n}");
    }
    if args.dry_run {
        println!("nothing was deleted (--dry-run)");
    }
    Ok(())
}
