//! `nurture report WORKFLOW [--since D] [--format table|json|csv]`: the
//! workflow's conversion (per arm, treatment against holdout, with 95%
//! intervals and the lift) and its funnel step by step. See `crate::report`.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, ValueEnum};

use super::{CliResult, Failure};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The workflow's name.
    pub workflow: String,
    /// Only enrollments started in the last D (30d, 12h) or since a time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

pub async fn run(config: &Path, args: ReportArgs) -> CliResult {
    let project = super::load_project(config)?;
    let Some(wf) = project.workflows.iter().find(|w| w.name == args.workflow) else {
        let hint = crate::diagnostics::did_you_mean(
            &args.workflow,
            project.workflows.iter().map(|w| w.name.as_str()),
        )
        .map(|s| format!("; did you mean \"{s}\"?"))
        .unwrap_or_default();
        return Err(Failure::Input(format!(
            "no workflow named \"{}\"{hint}",
            args.workflow
        )));
    };
    let since = match args.since.as_deref() {
        None => None,
        Some(s) => match s.parse::<crate::duration::Duration>() {
            Ok(d) => Some(Utc::now() - d.to_chrono()),
            Err(_) => match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => {
                    return Err(Failure::Input(format!(
                        "--since {s}: a duration (30d, 12h) or a time (2026-11-01T00:00:00+08:00)"
                    )));
                }
            },
        },
    };
    let url = project.settings.database_url();
    let report = super::store_use::with_store(&url, async |store| {
        Ok(crate::report::build(store, wf, since)
            .await
            .context("reading the workflow's enrollments")?)
    })
    .await?;
    match args.format {
        ReportFormat::Table => print!("{}", report.table()),
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serialises")
        ),
        ReportFormat::Csv => print!("{}", report.csv()),
    }
    Ok(())
}
