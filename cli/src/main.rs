//! `dam-sync`: the single-process connector (`serve`, `demo`) and the operator commands.

/// `println!` that ends the process quietly (exit 0) when the reader has gone, as in
/// `dam-sync dlq list | head -1`, instead of panicking on the closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

mod config;
mod demo;
mod demo_serve;
mod input;
mod ops;
mod pim;
mod runtime;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

const PIM_ENV_HELP: &str = "\
PIM connection (environment):
  AKENEO_BASE_URL        the PIM's address, e.g. https://my-pim.cloud.akeneo.com
  AKENEO_CLIENT_ID       client id of the PIM Connection
  AKENEO_CLIENT_SECRET   secret of the PIM Connection
  AKENEO_USERNAME        API username of the PIM Connection
  AKENEO_PASSWORD        API password of the PIM Connection
Optional: AKENEO_MAX_IN_FLIGHT (4), AKENEO_REQUESTS_PER_SECOND (100, 0 = no pacing),
  AKENEO_TIMEOUT_MS (30000), AKENEO_BATCH_MAX_ITEMS (100), AKENEO_BATCH_MAX_BYTES (4194304),
  AKENEO_MAX_ATTEMPTS (8). Logs: RUST_LOG (default warn), -v for more.";

const BACKEND_HELP: &str = "\
Backend: the local store with --config FILE (its [store] path) or --store PATH; otherwise
AWS, with QUEUE_URL, DLQ_URL and TABLE_NAME (or --queue-url, --dlq-url, --table) and the usual
AWS settings (AWS_REGION, credentials; AWS_ENDPOINT_URL for an emulator).";

const BACKFILL_HELP: &str = "\
Backend: the local store of the config's [store] path; with --aws, SQS (QUEUE_URL) with the
cursors in DynamoDB (TABLE_NAME) and the usual AWS settings (AWS_REGION, credentials;
AWS_ENDPOINT_URL for an emulator).";

const CONFIG_HELP: &str = "\
The config file (TOML) has [server] listen, [store] path, [pim], [dam], [mapping] path or
inline, [poller] and [consumer]; secrets may be written { env = \"VARIABLE\" }. See
examples/serve.toml.";

#[derive(Parser)]
#[command(
    name = "dam-sync",
    version,
    about = "Keeps the Akeneo PIM Asset Manager in sync with a DAM."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the full error chain (SDK, HTTP) on failure and log at info level.
    #[arg(short, long, global = true)]
    verbose: bool,
}

/// Which queue and state store an operator command works on.
#[derive(Args, Debug, Clone)]
pub struct Backend {
    /// Config file of `dam-sync serve`: work on its local store.
    #[arg(long, conflicts_with = "store")]
    pub config: Option<PathBuf>,
    /// The local SQLite store file.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// SQS queue URL (AWS backend).
    #[arg(long, env = "QUEUE_URL", hide_env_values = true)]
    pub queue_url: Option<String>,
    /// SQS dead-letter queue URL (AWS backend).
    #[arg(long, env = "DLQ_URL", hide_env_values = true)]
    pub dlq_url: Option<String>,
    /// DynamoDB state table (AWS backend).
    #[arg(long, env = "TABLE_NAME", hide_env_values = true)]
    pub table: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector in one process: webhook endpoint, consumer and poller, on a local
    /// SQLite store. Stops cleanly on SIGTERM or ctrl-c.
    #[command(after_help = CONFIG_HELP)]
    Serve {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a simulated DAM and PIM, sync N generated assets through signed webhooks (some
    /// dropped on purpose) and the poller, and check that the PIM matches the DAM. Exits 0
    /// only if it does.
    Demo {
        /// Assets to generate.
        #[arg(long, default_value_t = 1000)]
        assets: usize,
        /// Share of webhooks the DAM drops (the poller must catch these).
        #[arg(long, default_value_t = 0.05)]
        drop_rate: f64,
        /// Give up after this many seconds [default: 600, or 10 ms per asset above 60,000].
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// No progress display (a live bar on a terminal, otherwise a line every 2 s).
        #[arg(long)]
        no_progress: bool,
        /// Milliseconds between progress lines when the output is not a terminal.
        #[arg(long, default_value_t = 2000, hide = true)]
        progress_every_ms: u64,
        /// Keep running: start both simulators where the config's [pim] and [dam] point, create
        /// the assets, and serve the config until ctrl-c, to try `check`, `status` and `dlq`.
        #[arg(long)]
        serve: bool,
        /// With --serve: the config to serve.
        #[arg(long, default_value = "examples/serve.toml", requires = "serve")]
        config: PathBuf,
    },
    /// Show the poller cursors, queue depth, dead letters and the last errors.
    #[command(after_help = BACKEND_HELP)]
    Status {
        #[command(flatten)]
        backend: Backend,
    },
    /// List or replay dead-lettered messages.
    #[command(subcommand, after_help = BACKEND_HELP)]
    Dlq(DlqCommand),
    /// Walk the whole DAM and queue every asset (resumable: run it again to continue).
    #[command(after_help = BACKFILL_HELP)]
    Backfill {
        /// The config file (its [dam] and [poller] settings; its store unless AWS is chosen).
        #[arg(long)]
        config: PathBuf,
        /// Queue on SQS (QUEUE_URL) with cursors in DynamoDB (TABLE_NAME) instead of the
        /// local store.
        #[arg(long)]
        aws: bool,
        /// Stop after this many runs of the poller (each at most [poller] max_dam_calls pages).
        #[arg(long, default_value_t = 10_000)]
        max_runs: u32,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Validate the config and mapping, log in to the DAM and the PIM, check the mapping
    /// against the PIM's families, and print what `serve` would do.
    #[command(after_help = CONFIG_HELP)]
    Check {
        /// The config file `dam-sync serve` would run with.
        #[arg(long)]
        config: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Talk to the PIM directly: check the connection, push assets from a file.
    #[command(subcommand, after_help = PIM_ENV_HELP)]
    Pim(PimCommand),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List parked messages with the reason each was parked (nothing is consumed).
    #[command(after_help = BACKEND_HELP)]
    List {
        #[command(flatten)]
        backend: Backend,
        /// Most messages to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the message bodies too.
        #[arg(long)]
        bodies: bool,
    },
    /// Move parked messages back to the main queue: the given ids, or all with --all.
    #[command(
        after_help = BACKEND_HELP,
        group(ArgGroup::new("which").required(true).args(["ids", "all"]))
    )]
    Replay {
        #[command(flatten)]
        backend: Backend,
        /// Id from `dam-sync dlq list` (repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
        /// Replay every parked message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum PimCommand {
    /// Log in to the PIM and list its asset families with their attributes.
    #[command(after_help = PIM_ENV_HELP)]
    Check {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Create or update assets of one family from a JSON array or NDJSON file.
    ///
    /// Each asset is Akeneo's JSON: {"code": "...", "values": {"attr": [{"locale": null,
    /// "channel": null, "data": ...}]}}. The whole file is checked before anything is sent.
    /// Exits 1 if any asset failed, 2 if the file or the settings are wrong.
    #[command(after_help = PIM_ENV_HELP)]
    Upsert {
        /// Asset family code (case sensitive).
        #[arg(long)]
        family: String,
        /// File of assets: a JSON array, or one JSON asset per line. `-` reads standard input.
        file: PathBuf,
        /// Give up after this many seconds; unsent assets are reported as failed.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

/// The log filter when `RUST_LOG` is unset: warnings, without the AWS SDK's credential chain
/// and instance-metadata (IMDS) probes, which warn at length on any machine outside EC2 before
/// the real error (which names the missing credentials);
/// `serve` adds its one line per batch and per poll.
fn default_filter(serve: bool, verbose: bool) -> String {
    let base = if verbose { "info" } else { "warn" };
    let runtime = if serve && !verbose {
        ",dam_sync::runtime=info"
    } else {
        ""
    };
    format!("{base},aws_config::imds=error,aws_config::meta::credentials=error{runtime}")
}

/// Where `say!` lands when stdout fails: a closed pipe ends the command successfully (the
/// reader had what it wanted); anything else is reported.
pub fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {error}");
    std::process::exit(1);
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let serve = matches!(cli.command, Command::Serve { .. });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a redirected log.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(default_filter(serve, cli.verbose))
            }),
        )
        .init();
    let result = match cli.command {
        Command::Serve { config } => runtime::serve(&config).await,
        Command::Demo {
            assets,
            drop_rate,
            timeout_secs,
            no_progress,
            progress_every_ms,
            serve,
            config,
        } => {
            if serve {
                demo_serve::run(&config, assets, drop_rate).await
            } else {
                let progress = match no_progress {
                    true => demo::Progress::Off,
                    false => demo::Progress::Auto(Duration::from_millis(progress_every_ms)),
                };
                demo::run(assets, drop_rate, timeout_secs, progress).await
            }
        }
        Command::Status { backend } => ops::status(&backend).await,
        Command::Dlq(DlqCommand::List {
            backend,
            limit,
            bodies,
        }) => ops::dlq_list(&backend, limit, bodies).await,
        Command::Dlq(DlqCommand::Replay { backend, ids, all }) => {
            ops::dlq_replay(&backend, (!all).then_some(ids)).await
        }
        Command::Backfill {
            config,
            aws,
            max_runs,
            no_progress,
        } => ops::backfill(&config, aws, max_runs, !no_progress).await,
        Command::Check {
            config,
            timeout_secs,
        } => ops::check(&config, timeout_secs).await,
        Command::Pim(PimCommand::Check { timeout_secs }) => pim::check(timeout_secs).await,
        Command::Pim(PimCommand::Upsert {
            family,
            file,
            timeout_secs,
        }) => pim::upsert(&family, &file, timeout_secs).await,
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            match failure.detail {
                Some(detail) if cli.verbose => eprintln!("detail: {detail}"),
                _ => {}
            }
            ExitCode::from(failure.exit_code)
        }
    }
}
