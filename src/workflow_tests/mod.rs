//! Workflow tests kept beside the workflows (`nurture test`): cases that give
//! contacts, a start time and events at times, and say what should happen —
//! who is sent what and when, who is assigned to whom, what is skipped and
//! why, who converts, which arm of a split a contact takes. Each case runs
//! the project's real workflows through the dry-run's engine on a throwaway
//! store (see [`run`]), so a test checks exactly what the daemon would do.

pub mod compare;
pub mod file;
pub mod run;
pub mod update;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::diagnostics::Diagnostic;
use crate::project::Project;

use compare::{Verdict, closest, compare, expectation_line, in_scope, observed_line};
use file::{Known, TestFile};
use update::CaseResult;

/// The test files under `dir` (`*.yaml` and `*.yml`, sorted), or a file.
pub fn files_in(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every file; the problems of all of them.
pub fn load_all(project: &Project, files: &[PathBuf]) -> (Vec<TestFile>, Vec<Diagnostic>) {
    let known = Known {
        tz: project.settings.timezone,
        workflows: project.workflows.iter().map(|w| w.name.as_str()).collect(),
        root: &project.settings.root,
    };
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for f in files {
        let (t, d) = file::load(f, &known);
        diags.extend(d);
        out.extend(t);
    }
    (out, diags)
}

/// What a run found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub updated_files: usize,
}

/// Runs the cases (those whose name contains `filter`, if given), printing
/// each result and, for a failure, the difference with FILE:LINE:COLUMN of
/// every expectation it concerns. With `update`, writes the observations as
/// the files' new expectations.
pub async fn run_files(
    project: &mut Project,
    files: &[TestFile],
    filter: Option<&str>,
    update: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Tally> {
    let tz = project.settings.timezone;
    let mut tally = Tally::default();
    for tf in files {
        let shown = tf.path.display();
        let mut observed = Vec::new();
        for case in &tf.cases {
            if filter.is_some_and(|f| !case.name.contains(f)) {
                observed.push(None);
                continue;
            }
            let seen = run::run_case(project, case)
                .await
                .map_err(|e| anyhow::anyhow!("{shown}:{}: {e:#}", case.pos.line))?;
            observed.push(Some(seen));
        }
        let mut results: Vec<(usize, Vec<&run::Observed>, Verdict)> = Vec::new();
        for (i, (case, seen)) in tf.cases.iter().zip(&observed).enumerate() {
            let Some(seen) = seen else { continue };
            let scope = in_scope(case, seen);
            let verdict = compare(case, &scope);
            if verdict.passed() {
                tally.passed += 1;
                writeln!(out, "ok    {shown}:{}  {}", case.pos.line, case.name)?;
            } else if update {
                tally.passed += 1;
                writeln!(out, "upd   {shown}:{}  {}", case.pos.line, case.name)?;
            } else {
                tally.failed += 1;
                writeln!(out, "FAIL  {shown}:{}  {}", case.pos.line, case.name)?;
                report(out, tf, case, &scope, &verdict, tz)?;
            }
            results.push((i, scope, verdict));
        }
        if update {
            let changed: Vec<CaseResult<'_>> = results
                .iter()
                .filter(|(_, _, v)| !v.passed())
                .map(|(i, scope, v)| CaseResult {
                    case: &tf.cases[*i],
                    seen: scope.clone(),
                    verdict: v,
                })
                .collect();
            if !changed.is_empty() {
                let text = update::rewrite(&tf.source, &changed, tz);
                std::fs::write(&tf.path, text)
                    .map_err(|e| anyhow::anyhow!("writing {shown}: {e}"))?;
                tally.updated_files += 1;
            }
        }
    }
    Ok(tally)
}

/// A failed case: what was expected and not seen (`-`, at the
/// expectation's place, with the closest observation), and what was seen and
/// not expected (`+`).
fn report(
    out: &mut dyn Write,
    tf: &TestFile,
    case: &file::Case,
    seen: &[&run::Observed],
    v: &Verdict,
    tz: chrono_tz::Tz,
) -> std::io::Result<()> {
    let shown = tf.path.display();
    for i in &v.missing {
        let e = &case.expect[*i];
        writeln!(
            out,
            "  {shown}:{}:{}: expected, not seen:",
            e.pos.line, e.pos.col
        )?;
        writeln!(out, "    - {}", expectation_line(e, tz))?;
        match closest(e, seen, v) {
            Some((o, differ)) => {
                writeln!(out, "    + {}", observed_line(o, tz))?;
                writeln!(
                    out,
                    "      (the closest seen; differs in: {})",
                    differ.join(", ")
                )?;
            }
            None => writeln!(
                out,
                "      (nothing of the kind `{}` was seen)",
                e.kind.name()
            )?,
        }
    }
    if !v.unexpected.is_empty() {
        let at = case.expect_key.unwrap_or(case.pos);
        writeln!(out, "  {shown}:{}:{}: seen, not expected:", at.line, at.col)?;
        for j in &v.unexpected {
            writeln!(out, "    + {}", observed_line(seen[*j], tz))?;
        }
    }
    writeln!(
        out,
        "  hint: `nurture test --update` writes what was seen as the expectations (check the diff before you commit it)"
    )?;
    Ok(())
}
