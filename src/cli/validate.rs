//! `nurture validate [PATH...]`

use std::path::{Path, PathBuf};

use clap::Args;

use super::CliResult;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Files or folders to check (default: the settings and everything they name).
    pub paths: Vec<PathBuf>,
}

pub async fn run(_config: &Path, _args: ValidateArgs) -> CliResult {
    Err(super::Failure::Other(anyhow::anyhow!("validate: not built yet")))
}
