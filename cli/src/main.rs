//! `dam-sync`: operator commands for the DAM → Akeneo connector.

mod input;
mod pim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const PIM_ENV_HELP: &str = "\
PIM connection (environment):
  AKENEO_BASE_URL        the PIM's address, e.g. https://my-pim.cloud.akeneo.com
  AKENEO_CLIENT_ID       client id of the PIM Connection
  AKENEO_CLIENT_SECRET   secret of the PIM Connection
  AKENEO_USERNAME        API username of the PIM Connection
  AKENEO_PASSWORD        API password of the PIM Connection
Optional: AKENEO_MAX_IN_FLIGHT (4), AKENEO_REQUESTS_PER_SECOND (100, 0 = no pacing),
  AKENEO_TIMEOUT_MS (30000), AKENEO_BATCH_MAX_ITEMS (100), AKENEO_BATCH_MAX_BYTES (4194304),
  AKENEO_MAX_ATTEMPTS (8). Logs: RUST_LOG (default warn).";

#[derive(Parser)]
#[command(
    name = "dam-sync",
    version,
    about = "Keeps the Akeneo PIM Asset Manager in sync with a DAM."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Talk to the PIM directly: check the connection, push assets from a file.
    #[command(subcommand, after_help = PIM_ENV_HELP)]
    Pim(PimCommand),
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
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
            ExitCode::from(failure.exit_code)
        }
    }
}
