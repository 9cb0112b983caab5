//! The daemon's background tasks, supervised as one.
//!
//! Every long-running task of `nurture run` (the API, the scheduler, the
//! delivery worker, the WeCom poller and tag sync, the store and file
//! watchers) lives in one [`JoinSet`]. Each is meant to run until the shared
//! shutdown token is cancelled. If one ends before that — an error, a panic,
//! or a plain return — the daemon would otherwise limp on (the API answering
//! 201 while nothing delivers), so the supervisor logs which task died and
//! why, cancels the token so the others finish cleanly, and makes
//! `nurture run` exit non-zero: systemd or Kubernetes then restarts it
//! (Vector's topology and mini-redis's shutdown do the same).
//!
//! `NURTURE_TEST_FAULT=panic:TASK` (or `error:TASK`, `exit:TASK`) makes the
//! named task fail that way as soon as it starts. It exists for the test
//! suite only, which proves with the real binary that a dying task stops the
//! daemon; it is not a setting.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// The test-only fault hook (see the module docs).
pub const FAULT_ENV: &str = "NURTURE_TEST_FAULT";

/// How long the supervisor waits, after cancelling, for the tasks to end
/// (the delivery worker's own grace period is shorter).
const STOP_DEADLINE: Duration = Duration::from_secs(30);

pub struct Supervisor {
    set: JoinSet<Result<()>>,
    names: HashMap<Id, &'static str>,
    shutdown: CancellationToken,
    fault: Option<(Fault, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic,
    Error,
    Exit,
}

fn parse_fault(spec: &str) -> Option<(Fault, String)> {
    let (kind, task) = spec.split_once(':')?;
    let kind = match kind {
        "panic" => Fault::Panic,
        "error" => Fault::Error,
        "exit" => Fault::Exit,
        _ => return None,
    };
    Some((kind, task.to_string()))
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken) -> Supervisor {
        let fault = std::env::var(FAULT_ENV).ok().and_then(|s| parse_fault(&s));
        Supervisor {
            set: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
            fault,
        }
    }

    /// Runs `task` under the name `name` (used in the log when it dies).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let fault = self
            .fault
            .as_ref()
            .filter(|(_, t)| t == name)
            .map(|(f, _)| *f);
        let handle = self.set.spawn(async move {
            match fault {
                Some(Fault::Panic) => panic!("{FAULT_ENV}: injected panic"),
                Some(Fault::Error) => Err(anyhow!("{FAULT_ENV}: injected error")),
                Some(Fault::Exit) => Ok(()),
                None => task.await,
            }
        });
        self.names.insert(handle.id(), name);
    }

    /// Waits until `signal` fires, the shutdown token is cancelled (by
    /// `--until-idle` or the store watcher), or a task ends; then cancels the
    /// token and waits for every task. `Err` names the first task that
    /// failed, or that ended while the daemon was not shutting down.
    pub async fn run(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        let mut failure: Option<anyhow::Error> = None;
        tokio::select! {
            _ = signal => tracing::info!("shutting down: finishing work in flight"),
            _ = self.shutdown.cancelled() => {}
            Some(joined) = self.set.join_next_with_id() => {
                failure = self.judge(joined);
            }
        }
        self.shutdown.cancel();
        let deadline = tokio::time::sleep(STOP_DEADLINE);
        tokio::pin!(deadline);
        loop {
            let joined = tokio::select! {
                j = self.set.join_next_with_id() => match j {
                    Some(j) => j,
                    None => break,
                },
                _ = &mut deadline => {
                    let left: Vec<&str> = self.names.values().copied().collect();
                    tracing::error!(tasks = ?left, "tasks still running {STOP_DEADLINE:?} after shutdown; aborting them");
                    self.set.abort_all();
                    // Drain the aborted tasks; their outcome is the abort.
                    while self.set.join_next().await.is_some() {}
                    failure.get_or_insert_with(|| anyhow!("tasks did not stop in time: {}", left.join(", ")));
                    break;
                }
            };
            if let Some(e) = self.judge(joined) {
                failure.get_or_insert(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// What a task's end means: `Some` error when it failed, or ended
    /// before shutdown. Logs it.
    fn judge(&mut self, joined: Result<(Id, Result<()>), JoinError>) -> Option<anyhow::Error> {
        let stopping = self.shutdown.is_cancelled();
        let (id, outcome) = match joined {
            Ok((id, r)) => (id, r.map_err(|e| format!("{e:#}"))),
            Err(e) => (e.id(), Err(join_error_text(e))),
        };
        let name = self.names.remove(&id).unwrap_or("unknown");
        match outcome {
            Ok(()) if stopping => None,
            Ok(()) => {
                tracing::error!(
                    task = name,
                    "daemon task ended on its own; stopping the daemon"
                );
                Some(anyhow!("the {name} task ended on its own"))
            }
            Err(why) => {
                tracing::error!(task = name, error = %why, "daemon task died; stopping the daemon");
                Some(anyhow!("the {name} task died: {why}"))
            }
        }
    }
}

/// Runs `task` on a thread of its own, on a single-threaded runtime, and
/// resolves to its result (a panic on the thread resumes here, so the
/// supervisor names it as it names a task's panic).
///
/// Why: a task whose work is a chain of hand-offs between its own tasks
/// (the delivery worker: claim loop, pumps, calls, the HTTP client's
/// connections) pays a cross-thread wake-up for most of them on the shared
/// multi-threaded runtime. On one thread they are queue pushes.
pub fn on_own_thread<F>(name: &str, task: F) -> impl Future<Output = Result<()>> + Send + 'static
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(task),
                    Err(e) => Err(anyhow!("cannot start its runtime: {e}")),
                }
            }));
            let _ = tx.send(ran);
        });
    let name = name.to_string();
    async move {
        spawned.map_err(|e| anyhow!("cannot start the {name} thread: {e}"))?;
        match rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(anyhow!("the {name} thread ended without a result")),
        }
    }
}

fn join_error_text(e: JoinError) -> String {
    if e.is_cancelled() {
        return "cancelled".into();
    }
    match e.try_into_panic() {
        Ok(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            format!("panicked: {msg}")
        }
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn quiet(shutdown: CancellationToken) -> Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }

    #[tokio::test]
    async fn a_panicking_task_stops_the_others_and_is_named() {
        let token = CancellationToken::new();
        let mut s = Supervisor::new(token.clone());
        s.fault = None;
        s.spawn("scheduler", quiet(token.clone()));
        s.spawn("delivery", async { panic!("boom") });
        let err = s.run(std::future::pending()).await.unwrap_err();
        assert!(token.is_cancelled());
        assert_eq!(err.to_string(), "the delivery task died: panicked: boom");
    }

    #[tokio::test]
    async fn an_early_return_is_a_failure_but_not_during_shutdown() {
        let token = CancellationToken::new();
        let mut s = Supervisor::new(token.clone());
        s.fault = None;
        s.spawn("wecom-poller", async { Ok(()) });
        s.spawn("api", quiet(token.clone()));
        let err = s.run(std::future::pending()).await.unwrap_err();
        assert_eq!(err.to_string(), "the wecom-poller task ended on its own");

        let token = CancellationToken::new();
        let mut s = Supervisor::new(token.clone());
        s.fault = None;
        s.spawn("api", quiet(token.clone()));
        s.spawn("scheduler", quiet(token.clone()));
        s.run(async {}).await.unwrap();
    }

    #[tokio::test]
    async fn an_error_after_cancellation_still_fails_the_run() {
        let token = CancellationToken::new();
        let mut s = Supervisor::new(token.clone());
        s.fault = None;
        let t = token.clone();
        s.spawn("store-watch", async move {
            t.cancel();
            Err(anyhow!("the store file is gone"))
        });
        let err = s.run(std::future::pending()).await.unwrap_err();
        assert!(err.to_string().contains("the store file is gone"), "{err}");
    }

    #[tokio::test]
    async fn a_task_on_its_own_thread_stops_with_the_token_and_its_panic_is_named() {
        let token = CancellationToken::new();
        let mut s = Supervisor::new(token.clone());
        s.fault = None;
        let t = token.clone();
        let caller = std::thread::current().id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.spawn(
            "delivery",
            on_own_thread("test-own", async move {
                let _ = tx.send((
                    std::thread::current().id(),
                    std::thread::current().name().map(str::to_string),
                ));
                // Its own runtime's timers and tasks work.
                tokio::spawn(async {}).await?;
                t.cancelled().await;
                Ok(())
            }),
        );
        let (id, name) = rx.await.unwrap();
        assert_ne!(id, caller);
        assert_eq!(name.as_deref(), Some("test-own"));
        s.run(async {}).await.unwrap();

        let token = CancellationToken::new();
        let mut s = Supervisor::new(token.clone());
        s.fault = None;
        s.spawn("api", quiet(token.clone()));
        s.spawn(
            "delivery",
            on_own_thread("test-own", async { panic!("boom") }),
        );
        let err = s.run(std::future::pending()).await.unwrap_err();
        assert!(token.is_cancelled());
        assert_eq!(err.to_string(), "the delivery task died: panicked: boom");
    }

    #[test]
    fn fault_specs() {
        assert_eq!(
            parse_fault("panic:delivery"),
            Some((Fault::Panic, "delivery".into()))
        );
        assert_eq!(parse_fault("delivery"), None);
        assert_eq!(parse_fault("melt:api"), None);
    }
}
