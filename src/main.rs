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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match warden::config::load(&config) {
            Ok(cfg) => {
                let spec = warden::plan::root_spec(&cfg);
                if let Err(e) = spec {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
                println!(
                    "{}: ok ({} actors)",
                    cfg.path.display(),
                    warden::plan::count_actors(&cfg.root)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Up { config } => {
            let cfg = match warden::config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = warden::plan::root_spec(&cfg) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match warden::runtime::up(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
