//! `nurture schema`: the JSON Schema of a workflow file, for editors.
//!
//! With the YAML language server, put this first in a workflow file:
//! `# yaml-language-server: $schema=./workflow.schema.json`
//! after `nurture schema > workflow.schema.json`.

use clap::Args;

use super::CliResult;

#[derive(Args, Debug)]
pub struct SchemaArgs {}

pub fn run(_args: SchemaArgs) -> CliResult {
    println!("{}", crate::workflow::schema::workflow_schema_json());
    Ok(())
}
