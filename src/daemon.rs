//! `nurture run`: the long-running daemon.
//!
//! Its tasks share one store and one cancellation token (mini-redis's
//! shutdown pattern): the scheduler (plans and applies), the delivery worker
//! (sends the outbox), the HTTP API, the WeCom poller and tag sync, and the
//! store and file watchers (hot reload). On SIGTERM or Ctrl-C the token is
//! cancelled: the API stops accepting, the scheduler finishes the transaction
//! in hand, the worker lets in-flight sends finish and hands back what it
//! claimed, and the process exits 0. The tasks are supervised as one
//! ([`supervisor`]): if any of them dies, the others are stopped the same way
//! and the process exits non-zero. On SQLite the delivery worker runs on a
//! thread and runtime of its own, the rest on the shared multi-threaded runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::channels::Registry;
use crate::channels::build::Handles;
use crate::engine::scheduler::Scheduler;
use crate::project::Project;
use crate::store::Store;

pub(crate) mod signals;
mod supervisor;
use supervisor::Supervisor;

pub struct DaemonOptions {
    pub config: PathBuf,
    /// Overrides the settings' `listen`.
    pub listen: Option<String>,
    /// Stop once nothing is left to do (or nothing is due now).
    pub until_idle: Option<crate::engine::scheduler::IdleMode>,
    pub delivery: crate::channels::delivery::DeliveryOptions,
    /// `--log-format`: the log channel writes its messages in it.
    pub log_format: crate::logging::LogFormat,
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
    // What the daemon's channels and workers share, owned here (no process
    // globals): the store, the WeCom token caches (one gettoken per app for
    // the sender, the poller, the tag sync and marks; a reload's channels
    // keep them), the log format and the marks worker's wake-up.
    let handles = Handles {
        store: Some(store.clone()),
        log_format: opts.log_format,
        ..Handles::default()
    };
    let registry = crate::config::compile_settings(&settings, &opts.config, &process_env, &handles)
        .map_err(|diags| {
            anyhow::anyhow!(
                diags
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
    // The per-file state starts from the files as they are now (the project
    // was just checked as a whole); a restart keeps the load times recorded
    // for versions that did not change.
    let (project, running) =
        match crate::reload::reload(&opts.config, None, Utc::now(), &mut |_| Vec::new()) {
            Ok(mut r) => {
                if let Ok(before) = store.file_states().await {
                    for f in before {
                        if let (Some(h), Some(at)) = (&f.running_hash, f.loaded_at) {
                            r.running.adopt_loaded_at(Path::new(&f.file), h, at);
                        }
                    }
                }
                let r =
                    crate::reload::reload(&opts.config, Some(&r.running), Utc::now(), &mut |_| {
                        Vec::new()
                    })
                    .unwrap_or(r);
                record_states(&store, &r.files).await;
                (r.project, Some(r.running))
            }
            Err(_) => (project, None),
        };

    // One-click unsubscribe links are verified with the keys of the smtp
    // channels built so far (this registry's, then each reload's).
    let unsubscribe_keys = crate::channels::smtp::token::UnsubscribeKeys::default();
    add_keys(&unsubscribe_keys, &registry);
    let shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let deliver = Arc::new(Notify::new());
    let (project_tx, project_rx) = watch::channel(Arc::new(project));
    let (registry_tx, registry_rx) = watch::channel(Arc::new(registry));

    // The workflows loaded now are active before the API takes a request
    // (see `activate_loaded`).
    let loaded = project_rx.borrow().clone();
    crate::engine::scheduler::activate_loaded(&store, &loaded, Utc::now())
        .await
        .context("activating the workflows")?;

    // SIGINT and SIGTERM stop the daemon cleanly from here on (see `signals`).
    let stop = signals::stop_signal();

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
        project: Some(project_rx.clone()),
        channel_names: Some(Arc::new(move || {
            names_rx
                .borrow()
                .settings
                .channels
                .keys()
                .cloned()
                .collect()
        })),
        unsubscribe_keys: unsubscribe_keys.clone(),
        funnel_read: Default::default(),
    };
    // The WeCom callback asks the tag sync for work through this handle.
    let tag_sync = Arc::new(Notify::new());
    // The WeCom callback reads the current settings (reloads apply).
    let wecom = crate::api::wecom_callback::CallbackState::from_project(
        store.clone(),
        wake.clone(),
        tag_sync.clone(),
        handles.marks_queued.clone(),
        project_rx.clone(),
    );
    let console = crate::console::ConsoleState::new(store.clone(), project_rx.clone());
    let mut tasks = Supervisor::new(shutdown.clone());
    tasks.spawn("api", {
        let shutdown = shutdown.clone();
        async move {
            crate::api::serve_all(listener, api_state, Some(wecom), Some(console), shutdown)
                .await
                .context("the API server failed")
        }
    });
    // The file watchers are in place before the daemon says it listens: an
    // edit made right after that line is reloaded, not missed.
    let files = watch_project_files(&opts.config, &project_rx.borrow());
    // Tests and scripts read this line to find the port when listening on :0.
    tracing::info!(address = %local, "listening");
    println!("listening on {local}");

    // Follows WeCom mass-message tasks and transfers to their outcome.
    tasks.spawn("wecom-poller", {
        let run = crate::channels::wecom::poll::run(
            store.clone(),
            project_rx.clone(),
            handles.wecom_tokens.clone(),
            shutdown.clone(),
        );
        async move {
            run.await;
            Ok(())
        }
    });
    // Mirrors per-contact WeCom tags queued by the callback (edits).
    tasks.spawn("wecom-tag-sync", {
        let run = crate::channels::wecom::contact_tags::run(
            store.clone(),
            project_rx.clone(),
            tag_sync,
            wake.clone(),
            handles.wecom_tokens.clone(),
            handles.marks_queued.clone(),
            shutdown.clone(),
        );
        async move {
            run.await;
            Ok(())
        }
    });
    // Marks corp tags in WeCom for tag steps on contacts mirrored from it.
    tasks.spawn("wecom-tag-marks", {
        let run = crate::channels::wecom::tag_marks::run(
            store.clone(),
            project_rx.clone(),
            handles.wecom_tokens.clone(),
            handles.marks_queued.clone(),
            shutdown.clone(),
        );
        async move {
            run.await;
            Ok(())
        }
    });
    // Messages due now go from the scheduler's commits straight to delivery.
    let (handoff, inbox) = crate::channels::delivery::handoff::DeliveryHandoff::new(
        opts.delivery.worker_id.clone(),
        opts.delivery.lease,
    );
    let scheduler = Scheduler {
        store: store.clone(),
        handoff: Some(handoff.clone()),
        project: project_rx,
        wake: wake.clone(),
        deliver: deliver.clone(),
        marks_queued: handles.marks_queued.clone(),
        shutdown: shutdown.clone(),
        until_idle: opts.until_idle,
        worker: opts.delivery.worker_id.clone(),
        lease: opts.delivery.lease,
    };
    tasks.spawn("scheduler", scheduler.run());
    // On SQLite, delivery runs on a thread of its own
    // (`supervisor::on_own_thread`): its claim loop, lanes, calls and the
    // HTTP client's connections hand work to each other for every message,
    // and on one thread those hand-offs are queue pushes instead of
    // cross-thread wake-ups (delivery alone: 18% less CPU per message, 8%
    // more messages/s; BENCHMARKS.md). Not on PostgreSQL: its pool
    // connections belong to the I/O driver of the runtime that opened them,
    // and a pool of delivery's own was not proven under load (the
    // three-daemon kill test saw a lease lapse once with it).
    let delivery = crate::channels::delivery::run_with(
        store.clone(),
        registry_rx,
        opts.delivery,
        deliver.clone(),
        Some((handoff, inbox)),
        shutdown.clone(),
    );
    if store.dialect() == crate::store::Dialect::Sqlite {
        tasks.spawn(
            "delivery",
            supervisor::on_own_thread("nurture-delivery", delivery),
        );
    } else {
        tasks.spawn("delivery", delivery);
    }
    // Stops the daemon (non-zero) when its store file is deleted or replaced.
    tasks.spawn("store-watch", watch_store(store.clone(), shutdown.clone()));
    tasks.spawn(
        "reload-watcher",
        watch_files(
            files,
            opts.config.clone(),
            running,
            store.clone(),
            Reloaded {
                project: project_tx,
                registry: registry_tx,
                keys: unsubscribe_keys,
                handles,
            },
            wake.clone(),
            shutdown.clone(),
        ),
    );

    let outcome = tasks.run(stop).await;
    store.close().await;
    outcome.context("stopped")?;
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

/// What a reload updates: the running project, the channels, and the
/// unsubscribe keys the API verifies links with.
struct Reloaded {
    project: watch::Sender<Arc<Project>>,
    registry: watch::Sender<Arc<Registry>>,
    keys: crate::channels::smtp::token::UnsubscribeKeys,
    /// The daemon's handles: a reload's channels get the same ones.
    handles: Handles,
}

/// The file watcher on the settings, workflows, templates and segments,
/// with the channel its changes arrive on; `None` (hot reload off, logged)
/// when the system gives no watcher.
type FileWatch = Option<(Watchers, tokio::sync::mpsc::UnboundedReceiver<()>)>;

/// The watchers, kept alive for as long as changes are wanted.
struct Watchers {
    _folders: notify::RecommendedWatcher,
    _settings: Option<notify::PollWatcher>,
}

/// How often the settings file is looked at (see [`watch_project_files`]).
const SETTINGS_POLL: Duration = Duration::from_secs(1);

fn watch_project_files(config: &Path, current: &Project) -> FileWatch {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let config_name = config.file_name().map(|n| n.to_os_string());
    let dirs = [
        current.settings.workflows_dir.clone(),
        current.settings.templates_dir.clone(),
        current.settings.segments_dir.clone(),
    ];
    // Only our files matter: the store's own writes (nurture.db and its WAL)
    // live in the same folder and must not trigger reloads.
    let relevant = move |p: &Path| {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        p.file_name().map(|n| n.to_os_string()) == config_name
            || matches!(ext, "yaml" | "yml" | "hbs")
    };
    let handler = move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(ev.kind, notify::EventKind::Access(_))
            && ev.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; hot reload is off");
            return None;
        }
    };
    // segments/ is optional.
    for d in dirs.iter().filter(|d| d.exists()) {
        if let Err(e) = watcher.watch(d, RecursiveMode::Recursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch folder");
        }
    }
    // The settings file itself (teams, channels, policies) is looked at
    // every second rather than watched through its folder: the store (the
    // quick start's nurture.db and its WAL) usually lives in that folder, and
    // a folder watch woke this process for every page SQLite writes (a few
    // percent of the daemon's CPU under load). Polling the path also follows
    // editors that replace the file rather than write it.
    let settings = notify::PollWatcher::new(
        handler,
        // By content: an edit within the second of the last look keeps the
        // mtime the poller compares.
        notify::Config::default()
            .with_poll_interval(SETTINGS_POLL)
            .with_compare_contents(true),
    )
    .and_then(|mut w| w.watch(config, RecursiveMode::NonRecursive).map(|()| w));
    let settings = match settings {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(file = %config.display(), error = %e, "cannot watch the settings file; its changes need a restart");
            None
        }
    };
    Some((
        Watchers {
            _folders: watcher,
            _settings: settings,
        },
        rx,
    ))
}

/// Reload on every change the watcher reports, file by file (see
/// [`crate::reload`]): a valid edit of a file runs; an invalid one is logged
/// with its diagnostics and recorded for `status`, and that file's last valid
/// version keeps running.
async fn watch_files(
    files: FileWatch,
    config: PathBuf,
    mut running: Option<crate::reload::Running>,
    store: Store,
    to: Reloaded,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<()> {
    let Some((_watcher, mut rx)) = files else {
        // Not a failure of the daemon: it runs on without reloads.
        shutdown.cancelled().await;
        return Ok(());
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            // The watcher's callback holds the sender for as long as `watcher` lives.
            got = rx.recv() => if got.is_none() {
                anyhow::bail!("the file watcher stopped");
            },
        }
        // Debounce: editors write several events per save.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while rx.try_recv().is_ok() {}
        reload(&config, &mut running, &store, &to).await;
        wake.notify_one();
    }
}

async fn reload(
    config: &Path,
    running: &mut Option<crate::reload::Running>,
    store: &Store,
    to: &Reloaded,
) {
    let (project_tx, registry_tx, keys) = (&to.project, &to.registry, &to.keys);
    // A new settings version is taken only if its channels can be built.
    let mut registry = None;
    let outcome = {
        // The compiler `validate` and the start use: channels and callback.
        let mut accept = |s: &crate::settings::Settings| match crate::config::compile_settings(
            s,
            config,
            &process_env,
            &to.handles,
        ) {
            Ok(r) => {
                registry = Some(r);
                Vec::new()
            }
            Err(diags) => diags,
        };
        crate::reload::reload(config, running.as_ref(), Utc::now(), &mut accept)
    };
    let r = match outcome {
        Ok(r) => r,
        Err(diags) => {
            for d in &diags {
                tracing::error!(diagnostic = %d, "reload rejected: no valid settings");
            }
            return;
        }
    };
    for f in r.newly_rejected(running.as_ref()) {
        let Some(rej) = &f.rejected else { continue };
        for d in &rej.diagnostics {
            match &f.running {
                Some(v) => tracing::error!(
                    file = %f.file.display(),
                    running = %v.hash,
                    diagnostic = %d,
                    "reload rejected; the last valid version keeps running"
                ),
                None => tracing::error!(
                    file = %f.file.display(),
                    diagnostic = %d,
                    "reload rejected; no version of this file runs"
                ),
            }
        }
    }
    if r.settings_changed {
        let old = project_tx.borrow().clone();
        if r.project.settings.database_url() != old.settings.database_url() {
            tracing::warn!(
                "the database setting changed: restart the daemon for it to take effect"
            );
        }
        if let Some(reg) = registry {
            add_keys(keys, &reg);
            registry_tx.send_replace(Arc::new(reg));
        }
    }
    record_states(store, &r.files).await;
    if r.changed {
        // Workflows new to this store are active from the moment the daemon
        // takes them, before the API's requests and the scheduler's next pass
        // see them (that pass activates them if this fails).
        if let Err(e) =
            crate::engine::scheduler::activate_loaded(store, &r.project, Utc::now()).await
        {
            tracing::warn!(error = %e, "activating the reloaded workflows failed; the scheduler's next pass does it");
        }
        for f in &r.loaded {
            let hash = r
                .files
                .iter()
                .find(|x| x.file == *f)
                .and_then(|x| x.running.as_ref())
                .map(|v| v.hash.clone());
            match hash {
                Some(h) => tracing::info!(file = %f.display(), version = %h, "file loaded"),
                None => tracing::info!(file = %f.display(), "file removed"),
            }
        }
        tracing::info!(
            workflows = r.project.workflows.len(),
            "reloaded workflows and templates"
        );
        project_tx.send_replace(Arc::new(r.project));
    }
    *running = Some(r.running);
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Lets the API verify the unsubscribe links `registry`'s smtp channels sign.
fn add_keys(keys: &crate::channels::smtp::token::UnsubscribeKeys, registry: &Registry) {
    for (channel, key) in &registry.unsubscribe_keys {
        keys.add(channel, key);
    }
}

/// Tell `nurture status` which version of each file runs, and which edits
/// were rejected.
async fn record_states(store: &Store, files: &[crate::reload::FileReport]) {
    use crate::store::status::FileState;
    let states: Vec<FileState> = files
        .iter()
        .map(|f| FileState {
            state: if f.rejected.is_some() {
                "broken"
            } else {
                "loaded"
            }
            .into(),
            diagnostics: f
                .rejected
                .as_ref()
                .map(|r| {
                    r.diagnostics
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default(),
            running_hash: f.running.as_ref().map(|v| v.hash.clone()),
            loaded_at: f.running.as_ref().map(|v| v.loaded_at),
            rejected_hash: f.rejected.as_ref().map(|r| r.hash.clone()),
            rejected_at: f.rejected.as_ref().map(|r| r.seen_at),
            ..FileState::new(f.file.display().to_string())
        })
        .collect();
    if let Err(e) = store.record_file_states(&states).await {
        tracing::warn!(error = %e, "cannot record file states");
    }
}
