//! `nurture test`: run the workflow tests kept beside the workflows.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{CliResult, Failure};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Test files or folders (default: the settings' `tests:` folder, `tests/`).
    pub paths: Vec<PathBuf>,
    /// Only the cases whose name contains this text.
    #[arg(long)]
    pub case: Option<String>,
    /// Write what each failing case observed as its new expectations
    /// (the rest of the file is kept as written). Review the diff.
    #[arg(long)]
    pub update: bool,
}

pub async fn run(config: &Path, args: TestArgs) -> CliResult {
    let mut project = super::load_project(config)?;
    let paths = if args.paths.is_empty() {
        vec![project.settings.tests_dir.clone()]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    for p in &paths {
        let found = crate::workflow_tests::files_in(p).map_err(|e| {
            Failure::Input(format!(
                "{}: {e}\nhint: test cases live in {} (the `tests:` setting), one YAML file per topic",
                p.display(),
                project.settings.tests_dir.display()
            ))
        })?;
        files.extend(found);
    }
    if files.is_empty() {
        return Err(Failure::Input(format!(
            "no test files (*.yaml) in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (tests, diags) = crate::workflow_tests::load_all(&project, &files);
    if !diags.is_empty() {
        crate::project::eprint_report(&diags);
        return Err(Failure::Reported);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let tally = crate::workflow_tests::run_files(
        &mut project,
        &tests,
        args.case.as_deref(),
        args.update,
        &mut out,
    )
    .await?;
    let total = tally.passed + tally.failed;
    let _ = writeln!(
        out,
        "\n{total} case{}: {} passed, {} failed{}",
        if total == 1 { "" } else { "s" },
        tally.passed,
        tally.failed,
        if args.update {
            format!("; {} file(s) updated", tally.updated_files)
        } else {
            String::new()
        }
    );
    if total == 0 {
        return Err(Failure::Input(format!(
            "no case matched --case {:?}",
            args.case.unwrap_or_default()
        )));
    }
    if tally.failed > 0 {
        return Err(Failure::Reported);
    }
    Ok(())
}
