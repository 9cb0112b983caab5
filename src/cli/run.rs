//! `nurture run`: the daemon.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use super::{CliResult, Failure};
use crate::config::EnvChecks;
pub use crate::logging::LogFormat;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Log format: text (default on a terminal) or json.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Address of the HTTP API, overriding the settings' `listen` (port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<String>,
    /// Stop once nothing is left to do: the event log consumed, no active
    /// enrollment, no message waiting. `--until-idle=now` stops once nothing
    /// is due now: waits and sends deferred by quiet hours or retries stay
    /// in the store for the next run. For tests and one-off batch runs.
    #[arg(long, value_name = "WHEN", num_args = 0..=1, default_missing_value = "all")]
    pub until_idle: Option<crate::engine::scheduler::IdleMode>,
    /// How long a message keeps being retried after its first timeout,
    /// connection error, 5xx or 429 before it is dead-lettered (`30m`, `24h`, `3d`).
    #[arg(long, default_value = "24h")]
    pub retry_for: crate::duration::Duration,
    /// Also dead-letter a message after this many attempts (default: no
    /// count limit, only --retry-for).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// First retry delay in milliseconds; it doubles per attempt, with jitter.
    #[arg(long, default_value_t = 1000)]
    pub backoff_ms: u64,
    /// The longest wait between two attempts, in milliseconds.
    #[arg(long, default_value_t = 600_000)]
    pub backoff_max_ms: u64,
    /// How long a claimed message (or due enrollment) stays leased to this
    /// daemon, in milliseconds. After a crash, messages that were in flight
    /// return to the pool once their lease expires (and may then be sent a
    /// second time, with the same idempotency key); so do due enrollments,
    /// for the other daemons sharing the store.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub lease_ms: u64,
}

pub async fn run(config: &Path, args: RunArgs) -> CliResult {
    init_logging(args.log_format);
    // What `validate` checks, refused the same way: the files, the channels
    // and the callback's settings (the daemon builds the channels again with
    // its store).
    let project = crate::config::compile(config, chrono::Utc::now(), EnvChecks::PROCESS)
        .map_err(|diags| {
            crate::project::eprint_report(&diags);
            Failure::Reported
        })?
        .project;
    let delivery = crate::channels::delivery::DeliveryOptions {
        max_attempts: args.max_attempts.unwrap_or(u32::MAX),
        retry_for: Duration::from_secs(u64::try_from(args.retry_for.secs()).unwrap_or(0)),
        backoff_base: Duration::from_millis(args.backoff_ms),
        backoff_max: Duration::from_millis(args.backoff_max_ms.max(args.backoff_ms)),
        lease: Duration::from_millis(args.lease_ms),
        ..Default::default()
    };
    let opts = crate::daemon::DaemonOptions {
        config: config.to_path_buf(),
        listen: args.listen,
        until_idle: args.until_idle,
        delivery,
        log_format: args.log_format,
    };
    crate::daemon::run(project, opts)
        .await
        .map_err(Failure::Other)
}

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("NURTURE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::logging::BoundedStderr {
            json: matches!(format, LogFormat::Json),
        })
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
