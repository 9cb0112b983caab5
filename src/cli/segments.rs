//! `nurture segments count [NAME]`: how many contacts are in each segment
//! (or one) now, and `nurture segments list`.

use std::path::Path;

use chrono::Utc;
use clap::Subcommand;
use futures::StreamExt;

use super::{CliResult, Failure};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum SegmentsCommand {
    /// Count the contacts in every segment, or in NAME.
    #[command(after_help = "Examples:
  nurture segments count
  nurture segments count reachable-by-phone")]
    Count {
        /// A segment's name (its file is segments/NAME.yaml).
        name: Option<String>,
    },
    /// The segments, with their descriptions and files.
    #[command(after_help = "Examples:
  nurture segments list")]
    List,
}

pub async fn run(config: &Path, cmd: SegmentsCommand) -> CliResult {
    let project = super::load_project(config)?;
    let (segs, diags) = crate::segments::load(&project.settings.segments_dir);
    if !diags.is_empty() {
        crate::project::eprint_report(&diags);
        return Err(Failure::Reported);
    }
    match cmd {
        SegmentsCommand::List | SegmentsCommand::Count { name: None }
            if segs.by_name.is_empty() =>
        {
            // Not an error (a project need not have any), but said.
            eprintln!(
                "no segments: a segment is a file {}/NAME.yaml with a condition: (see docs/workflows.md)",
                project.settings.segments_dir.display()
            );
            Ok(())
        }
        SegmentsCommand::List => {
            for s in segs.by_name.values() {
                println!(
                    "{}\t{}\t{}",
                    s.name,
                    s.description.as_deref().unwrap_or(""),
                    s.file.display()
                );
            }
            Ok(())
        }
        SegmentsCommand::Count { name } => {
            let names: Vec<String> = match name {
                Some(n) if segs.by_name.contains_key(&n) => vec![n],
                Some(n) => {
                    let hint = crate::diagnostics::did_you_mean(&n, segs.by_name.keys())
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_default();
                    return Err(Failure::Input(format!("no segment \"{n}\"{hint}")));
                }
                None => segs.by_name.keys().cloned().collect(),
            };
            let url = project.settings.database_url();
            let now = Utc::now();
            super::store_use::with_store(&url, async |store| {
                for n in names {
                    let cond = &segs.resolved[&n];
                    let count = count(store, cond, now).await?;
                    println!("{n}\t{count}");
                }
                Ok(())
            })
            .await
        }
    }
}

/// Members now: in SQL where SQL decides exactly, else the contacts SQL
/// narrows to, decided in Rust with their events.
pub async fn count(
    store: &Store,
    cond: &crate::audience::Condition,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<u64> {
    let sql = crate::store::scans::condition(cond, now, store.dialect())?;
    // SQLite decides a condition without event `where:` exactly in SQL; on
    // PostgreSQL the SQL is a prefilter (a superset), decided in Rust.
    if store.dialect() == crate::store::Dialect::Sqlite && !cond.has_event_where() {
        return Ok(store.count_matching(&sql.text, &sql.binds).await? as u64);
    }
    let mut names = Vec::new();
    cond.event_names(&mut names);
    let mut stream = store.scan_contacts(&sql.text, &sql.binds);
    let mut chunk = Vec::new();
    let mut n = 0u64;
    loop {
        let next = stream.next().await;
        let done = next.is_none();
        if let Some(c) = next {
            chunk.push(c?);
        }
        if chunk.len() >= 500 || (done && !chunk.is_empty()) {
            let ids: Vec<String> = chunk
                .iter()
                .map(|c: &crate::contact::Contact| c.id.clone())
                .collect();
            let mut events = store.events_of(&ids, &names).await?;
            for mut c in chunk.drain(..) {
                c.events = events.remove(&c.id).unwrap_or_default();
                if crate::audience::eval::holds(cond, &c, now) {
                    n += 1;
                }
            }
        }
        if done {
            return Ok(n);
        }
    }
}
