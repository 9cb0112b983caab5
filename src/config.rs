//! The config compiler (Vector's `config::compile`): the one place a project
//! is turned into what runs. It loads and checks the files
//! ([`Project::load_report`]), then builds every channel and resolves the
//! WeCom callback's settings, so `validate`, `run` and the daemon's hot
//! reload accept and refuse exactly the same settings.
//!
//! The checks that need the environment (the secrets `*_env` keys name, the
//! callback's keys) are switchable ([`EnvChecks`]): commands that never send
//! (`dry-run`, `graph`, `report`, ...) load the files only, so a laptop
//! without the production secrets can still preview.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::channels::Registry;
use crate::channels::build::Handles;
use crate::diagnostics::{self, Diagnostic};
use crate::project::{LoadReport, Project};
use crate::settings::Settings;

/// Whether compiling checks what needs the environment.
#[derive(Clone, Copy)]
pub enum EnvChecks<'a> {
    /// Build the channels and resolve the callback, reading variables with
    /// this lookup (the process environment: [`EnvChecks::PROCESS`]).
    Check(&'a dyn Fn(&str) -> Option<String>),
    /// Files only: no channel is built.
    Skip,
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl EnvChecks<'static> {
    /// Checks against the process environment.
    pub const PROCESS: EnvChecks<'static> = EnvChecks::Check(&process_env);
}

/// A project that compiled: its files, and its channels when the
/// environment was checked.
pub struct Compiled {
    pub project: Project,
    pub registry: Option<Registry>,
}

/// Everything [`Project::load_report`] finds, plus (with [`EnvChecks::Check`]
/// and valid settings) the channels' and the callback's problems, in
/// `report.diagnostics`, sorted. What `validate` prints. A store is not
/// needed to check: channels that keep state there get none.
pub fn compile_report(config: &Path, now: DateTime<Utc>, env: EnvChecks<'_>) -> LoadReport {
    let mut report = Project::load_report(config, now);
    if let (Some(settings), EnvChecks::Check(lookup)) = (&report.settings, env)
        && let Err(found) = compile_settings(settings, config, lookup, &Handles::default())
    {
        report.diagnostics.extend(found);
        diagnostics::sort(&mut report.diagnostics);
    }
    report
}

/// The project at `config`, or every problem [`compile_report`] finds.
pub fn compile(
    config: &Path,
    now: DateTime<Utc>,
    env: EnvChecks<'_>,
) -> Result<Compiled, Vec<Diagnostic>> {
    let project = Project::load_report(config, now).into_project()?;
    let registry = match env {
        EnvChecks::Check(lookup) => Some(compile_settings(
            &project.settings,
            config,
            lookup,
            &Handles::default(),
        )?),
        EnvChecks::Skip => None,
    };
    Ok(Compiled { project, registry })
}

/// The settings' channels, built with the owner's `handles` (the daemon's
/// store, token caches and log format), and the WeCom callback's settings resolved;
/// or every problem of both, at its key in the settings file (`config` when
/// the settings have no file). The daemon's start and each reload of the
/// settings call this, as `validate` does through [`compile_report`].
pub fn compile_settings(
    settings: &Settings,
    config: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    handles: &Handles,
) -> Result<Registry, Vec<Diagnostic>> {
    let file = settings
        .file
        .clone()
        .unwrap_or_else(|| config.to_path_buf());
    let mut found = Vec::new();
    let registry = match crate::channels::build::build_registry_full(settings, env, handles) {
        Ok(r) => Some(r),
        Err(errors) => {
            for e in errors {
                let pos = settings
                    .channels
                    .get(&e.channel)
                    .map(|c| c.pos)
                    .unwrap_or_default();
                found.push(Diagnostic::new(file.clone(), pos, e.to_string()));
            }
            None
        }
    };
    found.extend(crate::api::wecom_callback::settings::diagnostics(
        settings, &file, env,
    ));
    match registry {
        Some(r) if found.is_empty() => Ok(r),
        _ => {
            diagnostics::sort(&mut found);
            Err(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(settings: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nurture.yaml"), settings).unwrap();
        dir
    }

    const TWILIO: &str = "timezone: Asia/Shanghai\nchannels:\n  sms:\n    kind: twilio\n    from: \"+15550001\"\n    account_sid_env: SID\n    auth_token_env: TOKEN\n";

    #[test]
    fn environment_checks_are_switchable() {
        let dir = project(TWILIO);
        let config = dir.path().join("nurture.yaml");
        let unset = |_: &str| None;
        let err = compile(&config, Utc::now(), EnvChecks::Check(&unset))
            .err()
            .expect("the variables are unset");
        let text: Vec<String> = err.iter().map(|d| d.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("SID (account_sid_env) is not set")),
            "{text:?}"
        );
        // The problem is at the channel's line in the settings file.
        assert!(
            err.iter().all(|d| d.file == config && d.pos.line == 3),
            "{err:?}"
        );
        let c = compile(&config, Utc::now(), EnvChecks::Skip).expect("files only");
        assert!(c.registry.is_none());
        let set = |n: &str| {
            Some(if n == "SID" {
                "AC0123".into()
            } else {
                "token".into()
            })
        };
        let c = compile(&config, Utc::now(), EnvChecks::Check(&set)).expect("compiles");
        assert!(c.registry.unwrap().channels.contains_key("sms"));
    }

    #[test]
    fn the_report_has_the_callback_problems_too() {
        let dir = project(
            "timezone: Asia/Shanghai\nchannels:\n  wecom:\n    kind: wecom\n    corp_id_env: C\n    secret_env: S\n    agent_id: 1\n    token_env: T\n",
        );
        let config = dir.path().join("nurture.yaml");
        let env = |n: &str| Some(format!("{n}-value"));
        let r = compile_report(&config, Utc::now(), EnvChecks::Check(&env));
        assert!(
            r.diagnostics.iter().any(|d| d
                .to_string()
                .contains("token_env and aes_key_env go together")),
            "{:?}",
            r.diagnostics
        );
        let r = compile_report(&config, Utc::now(), EnvChecks::Skip);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    }
}
