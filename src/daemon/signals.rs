//! The signals that stop a long-running command (`nurture run`, `nurture
//! console`): SIGINT (Ctrl-C) and SIGTERM (what a service manager sends).
//!
//! They are registered when [`stop_signal`] is called, not when its future is
//! first polled: until a handler is registered, SIGTERM's default action
//! kills the process on the spot, without handing claimed messages back. A
//! command calls it before it prints that it listens, so a supervisor or a
//! script that stops it right after that line gets a clean stop (the suite's
//! `faults::sigterm_stops_every_task_and_exits_zero` once caught the gap).

use std::future::Future;

/// A future that ends at the first SIGINT or SIGTERM received after this call.
pub fn stop_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        for (name, s) in [("SIGINT", &interrupt), ("SIGTERM", &terminate)] {
            if let Err(e) = s {
                tracing::warn!(error = %e, "cannot listen for {name}; it will not stop nurture cleanly");
            }
        }
        async move {
            match (interrupt, terminate) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => {}
                        _ = t.recv() => {}
                    }
                }
                (Ok(mut i), Err(_)) => {
                    i.recv().await;
                }
                (Err(_), Ok(mut t)) => {
                    t.recv().await;
                }
                (Err(_), Err(_)) => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
