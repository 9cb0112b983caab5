//! `nurture console`: the web console alone against the store (no daemon,
//! nothing sent), e.g. on a laptop with a copy of the store.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::{CliResult, Failure};
use crate::console::ConsoleState;
use crate::project::Project;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// Address to listen on (port 0 picks a free one). Default: the settings' `listen`.
    #[arg(long)]
    pub listen: Option<String>,
}

pub async fn run(config: &Path, args: ConsoleArgs) -> CliResult {
    super::run::init_logging(super::run::LogFormat::Text);
    let project = super::load_project(config)?;
    let url = project.settings.database_url();
    super::store_use::existing_store(&url, super::store_use::IMPORT_FIRST)?;
    let listen = args
        .listen
        .unwrap_or_else(|| project.settings.listen.clone());
    super::store_use::with_store(&url, async |store| serve(store, project, &listen).await).await
}

/// The console on `listen` until a signal stops it.
async fn serve(store: &Store, project: Project, listen: &str) -> CliResult {
    let api_token_env = project.settings.api_token_env.clone();
    let console_token_env = project.settings.console_token_env.clone();
    let (_keep, rx) = tokio::sync::watch::channel(Arc::new(project));
    let state = ConsoleState::new(store.clone(), rx);
    // SIGINT and SIGTERM stop the console cleanly from here on.
    let stop = crate::daemon::signals::stop_signal();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    // A console nobody can sign in to is of no use: say which variable to
    // set instead of serving a sign-in page that refuses everyone. (The
    // daemon's console only warns: the daemon has its other work.)
    if state.api_token.is_none() && state.console_token.is_none() {
        let console = console_token_env.map_or_else(
            || "or name a read-only console token's variable with `console_token_env` in nurture.yaml".to_string(),
            |v| format!("or {v} (console_token_env)"),
        );
        return Err(Failure::Input(format!(
            "nobody could sign in to the console: set {api_token_env} (api_token_env) {console}"
        )));
    }
    let local = listener.local_addr().context("reading the address")?;
    // Tests and scripts read this line to find the port when listening on :0.
    println!("console on http://{local}/console/");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        cancel.cancel();
    });
    crate::console::serve(listener, state, shutdown)
        .await
        .context("serving the console")?;
    Ok(())
}
