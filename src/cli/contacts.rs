//! `nurture contacts import|add|tag|event|unsubscribe`

use std::path::Path;

use clap::Subcommand;

use super::CliResult;

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Upsert contacts from a CSV file.
    Import { file: std::path::PathBuf },
}

pub async fn run(_config: &Path, _cmd: ContactsCommand) -> CliResult {
    Err(super::Failure::Other(anyhow::anyhow!("contacts: not built yet")))
}
