//! `nurture run`: the long-running daemon.
//!
//! Four tasks share one store and one cancellation token (mini-redis's
//! shutdown pattern): the scheduler (plans and applies), the delivery worker
//! (sends the outbox), the HTTP API, and the file watcher (hot reload). On
//! SIGTERM or Ctrl-C the token is cancelled: the API stops accepting, the
//! scheduler finishes the transaction in hand, the worker lets in-flight sends
//! finish and hands back what it claimed, and the process exits 0.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::channels::Registry;
use crate::engine::scheduler::Scheduler;
use crate::project::Project;
use crate::store::Store;

pub struct DaemonOptions {
    pub config: PathBuf,
    /// Overrides the settings' `listen`.
    pub listen: Option<String>,
    /// Stop once nothing is left to do.
    pub until_idle: bool,
    pub delivery: crate::channels::delivery::DeliveryOptions,
}

pub async fn run(project: Project, opts: DaemonOptions) -> Result<()> {
    let settings = project.settings.clone();
    let url = settings.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the store {}", crate::store::redact(&url)))?;
    // A store that cannot take a write (read-only file or database, full
    // disk) would fail every write ten times a second: refuse to start.
    store
        .check_writable(Utc::now())
        .await
        .context("refusing to start")?;
    let registry =
        crate::channels::build::build_registry_with_store(&settings, &store).map_err(|errs| {
            anyhow::anyhow!(
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
    record_states(&store, &opts.config, &[]).await;

    let shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let deliver = Arc::new(Notify::new());
    let (project_tx, project_rx) = watch::channel(Arc::new(project));
    let (registry_tx, registry_rx) = watch::channel(Arc::new(registry));

    // The HTTP API.
    let listen = opts
        .listen
        .clone()
        .unwrap_or_else(|| settings.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let token = std::env::var(&settings.api_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!(
            env = %settings.api_token_env,
            "the API token variable is not set: every /v1 request will be refused with 401"
        );
    }
    let names_rx = project_rx.clone();
    let api_state = crate::api::ApiState {
        store: store.clone(),
        token,
        wake: wake.clone(),
        channel_names: Some(Arc::new(move || {
            names_rx
                .borrow()
                .settings
                .channels
                .keys()
                .cloned()
                .collect()
        })),
    };
    // The WeCom callback reads the current settings (reloads apply).
    let wecom = crate::api::wecom_callback::CallbackState::from_project(
        store.clone(),
        wake.clone(),
        project_rx.clone(),
    );
    let api = tokio::spawn(crate::api::serve_with_wecom(
        listener,
        api_state,
        Some(wecom),
        shutdown.clone(),
    ));
    // Tests and scripts read this line to find the port when listening on :0.
    tracing::info!(address = %local, "listening");
    println!("listening on {local}");

    // Follows WeCom mass-message tasks and transfers to their outcome.
    let wecom_poller = tokio::spawn(crate::channels::wecom::poll::run(
        store.clone(),
        project_rx.clone(),
        shutdown.clone(),
    ));
    // Mirrors per-contact WeCom tags queued by the callback (edits).
    let wecom_tags = tokio::spawn(crate::channels::wecom::contact_tags::run(
        store.clone(),
        project_rx.clone(),
        wake.clone(),
        shutdown.clone(),
    ));
    let scheduler = Scheduler {
        store: store.clone(),
        project: project_rx,
        wake: wake.clone(),
        deliver: deliver.clone(),
        shutdown: shutdown.clone(),
        until_idle: opts.until_idle,
        worker: opts.delivery.worker_id.clone(),
        lease: opts.delivery.lease,
    };
    let scheduler = tokio::spawn(scheduler.run());
    let worker = tokio::spawn(crate::channels::delivery::run(
        store.clone(),
        registry_rx,
        opts.delivery,
        deliver.clone(),
        shutdown.clone(),
    ));
    // Stops the daemon (non-zero) when its store file is deleted or replaced.
    let store_watch = tokio::spawn(watch_store(store.clone(), shutdown.clone()));
    let watcher = tokio::spawn(watch_files(
        opts.config.clone(),
        store.clone(),
        project_tx,
        registry_tx,
        wake.clone(),
        shutdown.clone(),
    ));

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: finishing work in flight"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    let (s, w, a) = tokio::join!(scheduler, worker, api);
    watcher.abort();
    let _ = wecom_poller.await;
    let _ = wecom_tags.await;
    store_watch.abort();
    let store_lost = store_watch.await.ok().and_then(|r| r.err());
    s.context("the scheduler task panicked")??;
    w.context("the delivery task panicked")?;
    a.context("the API task panicked")?
        .context("the API failed")?;
    store.close().await;
    if let Some(e) = store_lost {
        return Err(e).context("stopped");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often the daemon checks that its SQLite file is still the one it
/// opened.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Returns an error (and cancels `shutdown`) as soon as the store file is
/// gone or replaced: writes after that would be lost at stop, so the daemon
/// stops instead of answering 201 into a deleted file. Ends with `Ok` when
/// the daemon shuts down for another reason.
async fn watch_store(store: Store, shutdown: CancellationToken) -> Result<()> {
    let mut tick = tokio::time::interval(STORE_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = store.check_same_file() {
            tracing::error!(error = %e, "stopping: the store is not the file the daemon opened");
            shutdown.cancel();
            return Err(e.into());
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Watch the settings, workflows and templates; reload on change. A valid
/// edit replaces the running project; an invalid one is logged with its
/// diagnostics and recorded for `status`, and the last valid version keeps
/// running.
async fn watch_files(
    config: PathBuf,
    store: Store,
    project_tx: watch::Sender<Arc<Project>>,
    registry_tx: watch::Sender<Arc<Registry>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let current = project_tx.borrow().clone();
    let config_name = config.file_name().map(|n| n.to_os_string());
    let dirs = [
        current.settings.workflows_dir.clone(),
        current.settings.templates_dir.clone(),
    ];
    // Only our files matter: the store's own writes (nurture.db and its WAL)
    // live in the same folder and must not trigger reloads.
    let relevant = move |p: &Path| {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        p.file_name().map(|n| n.to_os_string()) == config_name
            || matches!(ext, "yaml" | "yml" | "hbs")
    };
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(ev.kind, notify::EventKind::Access(_))
            && ev.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; hot reload is off");
            return;
        }
    };
    let folder = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    for d in dirs.iter() {
        if let Err(e) = watcher.watch(d, RecursiveMode::Recursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch folder");
        }
    }
    // The settings file itself (teams, channels, policies): watch its folder
    // without recursion, since editors replace files rather than write them.
    let _ = watcher.watch(
        if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &folder
        },
        RecursiveMode::NonRecursive,
    );

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = rx.recv() => if got.is_none() { return },
        }
        // Debounce: editors write several events per save.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while rx.try_recv().is_ok() {}
        reload(&config, &store, &project_tx, &registry_tx).await;
        wake.notify_one();
    }
}

async fn reload(
    config: &Path,
    store: &Store,
    project_tx: &watch::Sender<Arc<Project>>,
    registry_tx: &watch::Sender<Arc<Registry>>,
) {
    let report = Project::load_report(config, Utc::now());
    let diags = report.diagnostics.clone();
    match report.into_project() {
        Ok(project) => {
            let old = project_tx.borrow().clone();
            if project.settings.database_url() != old.settings.database_url() {
                tracing::warn!(
                    "the database setting changed: restart the daemon for it to take effect"
                );
            }
            match crate::channels::build::build_registry_with_store(&project.settings, store) {
                Ok(reg) => {
                    registry_tx.send_replace(Arc::new(reg));
                }
                Err(errs) => {
                    for e in errs {
                        tracing::error!(error = %e, "reload rejected: channel settings");
                    }
                    return;
                }
            }
            tracing::info!(
                workflows = project.workflows.len(),
                "reloaded workflows and templates"
            );
            project_tx.send_replace(Arc::new(project));
            record_states(store, config, &[]).await;
        }
        Err(_) => {
            for d in &diags {
                tracing::error!(diagnostic = %d.headline(), "reload rejected; the last valid version keeps running");
            }
            record_states(store, config, &diags).await;
        }
    }
}

/// Tell `nurture status` which files loaded and which are broken.
async fn record_states(store: &Store, config: &Path, diags: &[crate::diagnostics::Diagnostic]) {
    let report = Project::load_report(config, Utc::now());
    let mut files: Vec<PathBuf> = report.workflow_files.clone();
    files.extend(report.templates.names().map(|n| {
        report
            .settings
            .as_ref()
            .map(|s| s.templates_dir.join(format!("{n}.hbs")))
            .unwrap_or_default()
    }));
    let mut states = Vec::new();
    for f in files {
        let mine: Vec<String> = diags
            .iter()
            .filter(|d| d.file == f)
            .map(|d| d.headline())
            .collect();
        let state = if mine.is_empty() { "loaded" } else { "broken" };
        states.push((f.display().to_string(), state.to_string(), mine.join("\n")));
    }
    for d in diags {
        let f = d.file.display().to_string();
        if !states.iter().any(|(s, _, _)| *s == f) {
            states.push((f, "broken".to_string(), d.headline()));
        }
    }
    if let Err(e) =
        crate::store::status::record_file_states(store.db(), store.dialect(), &states).await
    {
        tracing::warn!(error = %e, "cannot record file states");
    }
}
