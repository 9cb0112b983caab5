//! `nurture dry-run`

use std::path::Path;

use clap::Args;

use super::CliResult;

#[derive(Args, Debug)]
pub struct DryRunArgs {}

pub async fn run(_config: &Path, _args: DryRunArgs) -> CliResult {
    Err(super::Failure::Other(anyhow::anyhow!("dry-run: not built yet")))
}
