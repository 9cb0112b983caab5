//! The command line. One file per command; this one only parses and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod channels;
pub mod console;
pub mod contacts;
pub mod dry_run;
pub mod enroll;
pub mod graph;
pub mod history;
pub mod init;
pub mod outbox;
pub mod prune;
pub mod report;
pub mod run;
pub mod schema;
pub mod segments;
pub mod status;
pub mod store_use;
pub mod table;
pub mod test;
pub mod validate;
pub mod wecom;

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
    /// Start a project: settings with log channels, a workflow, its templates,
    /// sample contacts and a .gitignore for the store.
    #[command(after_help = "Examples:
  nurture init shop-crm && cd shop-crm && nurture validate
  nurture init            # in the current folder, beside what is there (never overwrites)")]
    Init(init::InitArgs),
    /// Check settings, workflows and templates; exit 1 with every problem found.
    #[command(after_help = "Examples:
  nurture validate
  nurture validate workflows/winback-30d.yaml
  nurture validate templates/welcome.hbs")]
    Validate(validate::ValidateArgs),
    /// The daemon: take triggers from the store, run enrollments, deliver messages, serve the API.
    #[command(after_help = "Examples:
  nurture run                       # after export NURTURE_API_TOKEN=$(openssl rand -hex 24)
  nurture run --listen 0.0.0.0:8080 --log-format json
  nurture run --until-idle          # tests and batch jobs: stop when nothing is left")]
    Run(run::RunArgs),
    /// Show what the daemon would do at a time, changing nothing and sending nothing.
    #[command(after_help = "Examples:
  nurture dry-run
  nurture dry-run --until 7d
  nurture dry-run --at 2026-11-01T10:00:00+08:00 --workflow winback-30d
  nurture dry-run --format jsonl > plan.jsonl
  nurture dry-run --explain c0000003")]
    DryRun(dry_run::DryRunArgs),
    /// Check channels: `channels test NAME --to ADDRESS` sends one real message.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  nurture channels test sms --to +8613800000001")]
    Channels(channels::ChannelsCommand),
    /// Load and change contacts.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  nurture contacts import contacts/sample.csv
  nurture contacts add c0009999 --name 周晓明 --tag trial
  nurture contacts event c0009999 purchase --prop amount=299")]
    Contacts(contacts::ContactsCommand),
    /// Print the JSON Schema of a workflow file (for editors).
    #[command(after_help = "Examples:
  nurture schema > schema/workflow.schema.json")]
    Schema(schema::SchemaArgs),
    /// Per workflow: enrolled, active, waiting, done, exited, sent, notices, failed, queued,
    /// deferred by quiet hours; and
    /// the loaded-or-broken state of each file.
    #[command(after_help = "Examples:
  nurture status
  nurture status --format json | jq .workflows")]
    Status(status::StatusArgs),
    /// What happened to one contact, in time order.
    #[command(after_help = "Examples:
  nurture history --contact c0000123
  nurture history --contact c0000123 --format jsonl")]
    History(history::HistoryArgs),
    /// Enroll the contacts already in a workflow's audience, on purpose
    /// (`--existing`; preview first with `--dry-run`).
    #[command(after_help = "Examples:
  nurture enroll welcome-wecom --existing --dry-run
  nurture enroll welcome-wecom --existing")]
    Enroll(enroll::EnrollArgs),
    /// Lift the blast guard's pause of a workflow: its held enrollments run.
    #[command(after_help = "Examples:
  nurture status                # why winback-30d is paused
  nurture resume winback-30d")]
    Resume(enroll::ResumeArgs),
    /// WeCom: `wecom sync-relationships` reads every salesperson's customer relationships; `wecom resigned` finds customers of staff who left.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  nurture wecom sync-relationships")]
    Wecom(wecom::WecomCommand),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  nurture completions bash > /etc/bash_completion.d/nurture
  nurture completions zsh > \"${fpath[1]}/_nurture\"
  nurture completions fish > ~/.config/fish/completions/nurture.fish")]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print a workflow as a diagram: Mermaid, Graphviz dot or SVG.
    #[command(after_help = "Examples:
  nurture graph welcome-wecom
  nurture graph winback-30d --format svg > winback.svg
  nurture graph vip-upgrade --format dot | dot -Tpng > vip.png")]
    Graph(graph::GraphArgs),
    /// A workflow's conversion (per split arm, treated against the holdout, 95%
    /// intervals, lift) and its funnel: per step reached, sent, skipped, converted after.
    #[command(after_help = "Examples:
  nurture report cart-recovery
  nurture report reactivation-ab --since 30d
  nurture report reactivation-ab --format json | jq .lift
  nurture report cart-recovery --format csv > funnel.csv")]
    Report(report::ReportArgs),
    /// Reusable segments (segments/NAME.yaml): count their members now, or list them.
    #[command(
        subcommand,
        after_help = "Examples:
  nurture segments count
  nurture segments count reachable-by-phone
  nurture segments list"
    )]
    Segments(segments::SegmentsCommand),
    /// Serve the read-only web console alone against the store (no daemon).
    #[command(after_help = "Examples:
  nurture console
  nurture console --listen 127.0.0.1:8081")]
    Console(console::ConsoleArgs),
    /// Run the workflow tests (`*.yaml` in the `tests:` folder, `tests/` by default): contacts, events at times, and what
    /// should happen, checked on a throwaway store with the dry-run's engine.
    #[command(after_help = "Examples:
  nurture test
  nurture test workflow-tests/cart-recovery.yaml --case \"buys within a day\"
  nurture test --update          # write what happened as the expectations; review the diff")]
    Test(test::TestArgs),
    /// Act on the outbox: `outbox requeue --dead` brings dead letters back.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  nurture outbox requeue --dead --channel sms
  nurture outbox requeue --dead --since 2026-11-30T08:00")]
    Outbox(outbox::OutboxCommand),
    /// Retention: delete finished enrollments, sent and dead messages and
    /// consumed event-log rows older than an age, keeping their counts.
    #[command(after_help = "Examples:
  nurture prune --older-than 90d --dry-run
  nurture prune --older-than 90d")]
    Prune(prune::PruneArgs),
}

/// Refuses to create a store by accident: with no settings file and no
/// SQLite store where the settings would put one (and no NURTURE_DATABASE),
/// a command that would write is run in the wrong folder.
pub fn refuse_accidental_store(
    config: &std::path::Path,
    settings: &crate::settings::Settings,
) -> Result<(), Failure> {
    if settings.file.is_some() || std::env::var_os("NURTURE_DATABASE").is_some() {
        return Ok(());
    }
    let url = settings.database_url();
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    if path.starts_with(':') || std::path::Path::new(path).exists() {
        return Ok(());
    }
    Err(Failure::Input(format!(
        "no {} here and no customer store ({path}): not creating one by accident.\n\
         hint: cd into your project, give --config path/to/nurture.yaml, or start one with `nurture init`",
        config.display()
    )))
}

/// The project at `config`, or its problems printed to stderr (with a
/// count) and [`Failure::Reported`].
pub fn load_project(config: &std::path::Path) -> Result<crate::project::Project, Failure> {
    crate::project::Project::load_strict(config).map_err(|diags| {
        crate::project::eprint_report(&diags);
        Failure::Reported
    })
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A mistyped command line is the user's input: exit 1, as the
            // docs promise (clap's own exit is 2, our "anything else").
            // `--help` and `--version` print to stdout and succeed.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    if !matches!(cli.command, Command::Run(_)) {
        // `nurture history ... | head` ends quietly, as other Unix tools do,
        // instead of failing with "Broken pipe". (The daemon keeps Rust's
        // default: it writes to sockets, never to a pipe a reader may close.)
        // SAFETY: set once at start, before any thread is spawned.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::Completions { shell } = &cli.command {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        clap_complete::generate(*shell, &mut cmd, "nurture", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
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
    // The commands that open (so create) the store for writing or serving.
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Contacts(_)
            | Command::Channels(_)
            | Command::Enroll(_)
            | Command::Resume(_)
            | Command::Wecom(_)
            | Command::Console(_)
    ) && let Ok(settings) = crate::settings::Settings::load(&cli.config)
    {
        refuse_accidental_store(&cli.config, &settings)?;
    }
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Validate(args) => validate::run(&cli.config, args).await,
        Command::Run(args) => run::run(&cli.config, args).await,
        Command::DryRun(args) => dry_run::run(&cli.config, args).await,
        Command::Contacts(cmd) => contacts::run(&cli.config, cmd).await,
        Command::Channels(cmd) => channels::run(&cli.config, cmd).await,
        Command::Schema(args) => schema::run(args),
        Command::Status(args) => status::run(&cli.config, args).await,
        Command::History(args) => history::run(&cli.config, args).await,
        Command::Enroll(args) => enroll::enroll(&cli.config, args).await,
        Command::Resume(args) => enroll::resume(&cli.config, args).await,
        Command::Wecom(cmd) => wecom::run(&cli.config, cmd).await,
        Command::Completions { .. } => Ok(()),
        Command::Graph(args) => graph::run(&cli.config, args).await,
        Command::Report(args) => report::run(&cli.config, args).await,
        Command::Segments(cmd) => segments::run(&cli.config, cmd).await,
        Command::Console(args) => console::run(&cli.config, args).await,
        Command::Outbox(cmd) => outbox::run(&cli.config, cmd).await,
        Command::Test(args) => test::run(&cli.config, args).await,
        Command::Prune(args) => prune::run(&cli.config, args).await,
    }
}

/// Keeps clap's `Args` import in use for command files that need it.
#[allow(dead_code)]
fn _args_marker<T: Args>() {}
