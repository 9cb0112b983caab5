//! `nurture graph WORKFLOW --format mermaid|dot|svg`: the workflow's diagram,
//! the one the console draws, for docs and pull requests.

use std::path::Path;

use clap::{Args, ValueEnum};

use super::{CliResult, Failure};
use crate::console::graph;

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// The workflow's name.
    pub workflow: String,
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    pub format: GraphFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
    Svg,
}

pub async fn run(config: &Path, args: GraphArgs) -> CliResult {
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
    let g = graph::graph(wf);
    let text = match args.format {
        GraphFormat::Mermaid => graph::mermaid(&g),
        GraphFormat::Dot => graph::dot(&g),
        GraphFormat::Svg => graph::svg(&g),
    };
    print!("{text}");
    Ok(())
}
