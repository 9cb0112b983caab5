//! `nurture validate [PATH...]` (SPEC §3.1): every problem in every file, on
//! stderr, then `N problems in M files`; exit 1 when there is any problem.

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Args;

use super::{CliResult, Failure};
use crate::config::EnvChecks;
use crate::diagnostics::Diagnostic;
use crate::project::eprint_report;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Workflow (or template) files or folders whose problems to report
    /// (default: everything). The settings and all files are still loaded, so
    /// that cross-file rules (unique names, existing templates) hold.
    pub paths: Vec<PathBuf>,
}

pub async fn run(config: &Path, args: ValidateArgs) -> CliResult {
    let mut wanted = Vec::new();
    for p in &args.paths {
        match p.canonicalize() {
            Ok(c) => wanted.push(c),
            Err(e) => return Err(Failure::Input(format!("{}: {e}", p.display()))),
        }
    }
    // The files, the channels and the callback's settings, checked as the
    // daemon checks them when it starts and on each reload.
    let report = crate::config::compile_report(config, Utc::now(), EnvChecks::PROCESS);
    // A template given: the workflows that send it are checked with it.
    if let Some(settings) = &report.settings {
        let mut users = Vec::new();
        for lw in &report.workflows {
            let wf = &lw.workflow;
            let uses = wf.all_steps().into_iter().any(|st| {
                let name = match &st.action {
                    crate::workflow::StepAction::Send(x) => x.template.value.as_str(),
                    crate::workflow::StepAction::Assign(a) => match &a.notify {
                        Some(n) => n.template_name(),
                        None => return false,
                    },
                    _ => return false,
                };
                settings
                    .templates_dir
                    .join(format!("{name}.hbs"))
                    .canonicalize()
                    .is_ok_and(|t| wanted.contains(&t))
            });
            if uses && let Ok(f) = wf.file.canonicalize() {
                users.push(f);
            }
        }
        wanted.extend(users);
    }
    let settings_file = config.canonicalize().ok();
    let selected = |d: &Diagnostic| -> bool {
        if wanted.is_empty() {
            return true;
        }
        let Ok(f) = d.file.canonicalize() else {
            return true;
        };
        // Problems in the settings concern every file.
        settings_file.as_ref() == Some(&f) || wanted.iter().any(|w| f.starts_with(w))
    };
    let diags: Vec<Diagnostic> = report
        .diagnostics
        .iter()
        .filter(|d| selected(d))
        .cloned()
        .collect();
    // Warnings: printed, not counted as problems.
    let warnings: Vec<Diagnostic> = report
        .warnings
        .iter()
        .filter(|d| selected(d))
        .cloned()
        .collect();
    crate::diagnostics::eprint_all(&warnings);
    if let Some(settings) = &report.settings {
        let file = settings
            .file
            .clone()
            .unwrap_or_else(|| config.to_path_buf());
        for (pos, w) in one_click_warnings(settings) {
            eprintln!("{}:{}:{}: warning: {w}", file.display(), pos.line, pos.col);
        }
    }
    if !diags.is_empty() {
        eprint_report(&diags);
        return Err(Failure::Reported);
    }
    let n_wf = report
        .workflows
        .iter()
        .filter(|w| {
            wanted.is_empty()
                || w.workflow
                    .file
                    .canonicalize()
                    .is_ok_and(|f| wanted.iter().any(|p| f.starts_with(p)))
        })
        .collect::<Vec<_>>();
    let disabled: Vec<&str> = n_wf
        .iter()
        .filter(|w| !w.workflow.enabled)
        .map(|w| w.workflow.name.as_str())
        .collect();
    let (channels, teams) = report
        .settings
        .as_ref()
        .map(|s| (s.channels.len(), s.teams.len()))
        .unwrap_or_default();
    let templates = report.templates.names().count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut line = format!(
        "ok: {}, {}, {}, {}",
        plural(n_wf.len(), "workflow"),
        plural(templates, "template"),
        plural(channels, "channel"),
        plural(teams, "team")
    );
    if !disabled.is_empty() {
        line.push_str(&format!(
            " ({} disabled: {})",
            disabled.len(),
            disabled.join(", ")
        ));
    }
    println!("{line}");
    // The likely case: run from the wrong folder. "ok" alone would read as
    // "your project is fine".
    if report.settings.as_ref().is_some_and(|s| s.file.is_none()) && report.workflows.is_empty() {
        eprintln!(
            "note: there is no {} here and no workflows: these are the built-in defaults \
             (one `console` channel). Run nurture in your project's folder, pass \
             --config PATH, or start a project here with `nurture init`.",
            config.display()
        );
    }
    Ok(())
}

/// RFC 8058 §4: receivers offer one-click unsubscribe only when a DKIM
/// signature covers both List-Unsubscribe and List-Unsubscribe-Post, which
/// the common relays' default header lists do not. Every email an `smtp`
/// channel sends to a contact carries them, so a channel with neither
/// `dkim:` (nurture signs) nor `relay_signs_list_unsubscribe: true` (the
/// operator set the relay up, see docs/operations.md) gets a warning.
pub fn one_click_warnings(
    settings: &crate::settings::Settings,
) -> Vec<(crate::diagnostics::Pos, String)> {
    settings
        .channels
        .values()
        .filter(|c| c.kind == crate::settings::ChannelKind::Smtp)
        .filter(|c| {
            !c.options.contains_key("dkim.domain")
                && c.options
                    .get("relay_signs_list_unsubscribe")
                    .is_none_or(|v| v.value != "true")
        })
        .map(|c| {
            (c.pos, format!(
                "channel \"{}\": no DKIM signature is known to cover List-Unsubscribe and List-Unsubscribe-Post, so receivers will not offer one-click unsubscribe (RFC 8058); set dkim: {{ domain, selector, private_key_env }}, or configure the relay to sign both headers and set relay_signs_list_unsubscribe: true",
                c.name
            ))
        })
        .collect()
}
