//! The command line. One file per command; this one only parses and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod channels;
pub mod contacts;
pub mod dry_run;
pub mod history;
pub mod outbox;
pub mod run;
pub mod schema;
pub mod status;
pub mod validate;

#[derive(Parser, Debug)]
#[command(
    name = "nurture",
    version,
    about = "Marketing automation workflows kept as files in Git"
)]
pub struct Cli {
    /// The settings file; its folder is where `workflows/` and `templates/` are looked for.
    #[arg(long, global = true, default_value = "nurture.yaml")]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check settings, workflows and templates; exit 1 with every problem found.
    Validate(validate::ValidateArgs),
    /// The daemon: take triggers from the store, run enrollments, deliver messages, serve the API.
    Run(run::RunArgs),
    /// Show what the daemon would do at a time, changing nothing and sending nothing.
    DryRun(dry_run::DryRunArgs),
    /// Check channels: `channels test NAME --to ADDRESS` sends one real message.
    #[command(subcommand)]
    Channels(channels::ChannelsCommand),
    /// Load and change contacts.
    #[command(subcommand)]
    Contacts(contacts::ContactsCommand),
    /// Print the JSON Schema of a workflow file (for editors).
    Schema(schema::SchemaArgs),
    /// Per workflow: enrolled, active, waiting, done, exited, sent, failed, queued; and
    /// the loaded-or-broken state of each file.
    Status(status::StatusArgs),
    /// What happened to one contact, in time order.
    History(history::HistoryArgs),
    /// Act on the outbox: `outbox requeue --dead` brings dead letters back.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
}

/// How a command failed, which decides the exit code (SPEC §3).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The user's input is wrong; the message says where and why. Exit 1.
    #[error("{0}")]
    Input(String),
    /// Diagnostics were already printed. Exit 1.
    #[error("problems were reported")]
    Reported,
    /// Anything else. Exit 2.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(_) | Failure::Reported => 1,
            Failure::Other(_) => 2,
        }
    }
}

pub type CliResult = Result<(), Failure>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    match cli.command {
        Command::Validate(args) => validate::run(&cli.config, args).await,
        Command::Run(args) => run::run(&cli.config, args).await,
        Command::DryRun(args) => dry_run::run(&cli.config, args).await,
        Command::Contacts(cmd) => contacts::run(&cli.config, cmd).await,
        Command::Channels(cmd) => channels::run(&cli.config, cmd).await,
        Command::Schema(args) => schema::run(args),
        Command::Status(args) => status::run(&cli.config, args).await,
        Command::History(args) => history::run(&cli.config, args).await,
        Command::Outbox(cmd) => outbox::run(&cli.config, cmd).await,
    }
}

/// Keeps clap's `Args` import in use for command files that need it.
#[allow(dead_code)]
fn _args_marker<T: Args>() {}
