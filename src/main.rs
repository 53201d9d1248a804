//! The `warden` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// warden: supervises a tree of services (see README.md).
///
/// Exit codes: 0 done; 1 warden failed while running (e.g. the admin address is taken);
/// 2 bad usage or a bad config file (nothing was started).
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the tree in the foreground. SIGTERM or SIGINT stop it gracefully (reverse
    /// order, stop timeouts, then SIGKILL to process groups) and exit 0.
    Up {
        /// The config file.
        #[arg(short = 'c', long = "config", default_value = "warden.toml")]
        config: PathBuf,
    },
    /// Validate the config file and start nothing: exit 0 if it is good, 2 naming the
    /// file, line and key of the first problem otherwise.
    Check {
        /// The config file.
        #[arg(short = 'c', long = "config", default_value = "warden.toml")]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

/// Says what went wrong once: a plain `error: ...` line for people, a JSON log line with
/// `--log-format json`.
fn report(format: LogFormat, message: &str) {
    match format {
        LogFormat::Human => eprintln!("error: {message}"),
        LogFormat::Json => tracing::error!(error = message, "warden failed"),
    }
}

/// Loads and plans the config: the checks `check` and `up` share.
fn load(path: &std::path::Path) -> Result<warden::config::Config, String> {
    let config = warden::config::load(path).map_err(|e| e.to_string())?;
    warden::plan::root_spec(&config).map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config_path = match &cli.command {
        Command::Check { config } | Command::Up { config } => config.clone(),
    };
    let config = match load(&config_path) {
        Ok(config) => config,
        Err(message) => {
            report(cli.log_format, &message);
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Check { .. } => {
            println!(
                "{}: ok ({} actors)",
                config.path.display(),
                warden::plan::count_actors(&config.root)
            );
            ExitCode::SUCCESS
        }
        Command::Up { .. } => match warden::runtime::up(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(cli.log_format, &format!("{e:#}"));
                ExitCode::from(1)
            }
        },
    }
}
