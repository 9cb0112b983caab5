//! `nurture schema`

use clap::Args;

use super::CliResult;

#[derive(Args, Debug)]
pub struct SchemaArgs {}

pub fn run(_args: SchemaArgs) -> CliResult {
    Err(super::Failure::Other(anyhow::anyhow!("schema: not built yet")))
}
