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
        /// Start warden as a session leader that outlives this command (output in
        /// state_dir/warden.log, pid in state_dir/warden.pid); return 0 once every member
        /// is running, 1 naming the member that failed.
        #[arg(long)]
        detach: bool,
        /// Start nothing until `POST /api/v1/admin/activate` (the admin API and control
        /// socket answer meanwhile): for taking over from a running warden.
        #[arg(long, conflicts_with = "detach")]
        passive: bool,
        /// With --detach: how long to wait for every member to run.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "detach")]
        wait: std::time::Duration,
    },
    /// Validate the config file and start nothing: exit 0 if it is good, 2 naming the
    /// file, line and key of the first problem otherwise.
    Check {
        /// The config file.
        #[arg(short = 'c', long = "config", default_value = "warden.toml")]
        config: PathBuf,
    },
    /// Drive a running warden over its control socket (or `--admin URL`).
    /// Exit codes: 0 done, 1 the operation failed (unknown path included), 2 usage or
    /// connection error.
    Ctl(CtlArgs),
    /// A hub's join tokens and spokes: `hub token create NAME [--ttl T]`, `hub token
    /// list`, `hub token revoke ID`, `hub spokes`, `hub revoke NAME`.
    Hub(warden::hub::cli::HubArgs),
    /// Internal: the watchdog of `on_exit = "stop"` (see warden::watchdog); started by
    /// `warden up`, never by hand.
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The warden-<instance> cgroup to kill.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// KEY=VALUE: processes with this environment entry are killed.
        #[arg(long)]
        marker: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct CtlArgs {
    /// The config file of the running warden (for its socket and token).
    #[arg(short = 'c', long = "config", default_value = "warden.toml")]
    config: PathBuf,
    /// Talk to the admin HTTP API at this URL (e.g. http://127.0.0.1:7700, or https://)
    /// instead of the control socket.
    #[arg(long)]
    admin: Option<String>,
    /// Token file for --admin (default: the config's).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print JSON for scripts instead of tables.
    #[arg(long)]
    json: bool,
    /// Drive the spoke NAME through this hub (its admin API: --admin, or the config's).
    #[arg(long)]
    spoke: Option<String>,
    /// PEM file of the CA certificates an https:// --admin must chain to, instead of
    /// the Mozilla roots (or of the config's own [admin] tls.cert).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    verb: CtlVerb,
}

#[derive(Debug, Subcommand)]
enum CtlVerb {
    /// Every actor: path, kind, state, pid, restarts, and why it is not running.
    Status,
    /// The tree, indented.
    Tree,
    /// Start a stopped, exited or failed actor; waits until it settles.
    Start {
        /// Actor path, e.g. /app/api.
        path: String,
    },
    /// Stop an actor; waits until it is stopped.
    Stop {
        /// Actor path.
        path: String,
    },
    /// Restart an actor; waits until it settles.
    Restart {
        /// Actor path.
        path: String,
    },
    /// The last lines an actor wrote to stdout and stderr.
    Logs {
        /// Actor path.
        path: String,
        /// How many lines.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Write the bytes as logged, even to a terminal (by default control characters
        /// are escaped when stdout is a terminal).
        #[arg(long)]
        raw: bool,
    },
    /// Re-read the config file: start added actors, stop removed ones, restart changed
    /// ones; others keep running.
    Reload,
    /// Drain: /healthz answers 503, no new work is taken.
    Drain,
    /// Re-execute warden's binary on disk in place (after checking that it runs and
    /// accepts the config); every child keeps running and is adopted.
    Reexec,
    /// Deploy a service now (its `deploy` steps, then a restart); `/` deploys warden
    /// itself (`[self] deploy`, then a reexec). Answers once the deploy is taken.
    Deploy {
        /// The service's path, or `/`.
        path: String,
    },
    /// A service's deploys, newest first (`/`: warden's own).
    Deploys {
        /// The service's path, or `/`.
        path: String,
    },
    /// Confirm a deploy that awaits confirmation (`confirm = "15m"`).
    Confirm {
        /// The service's path, or `/`.
        path: String,
        /// The deploy's id (see `deploys`).
        id: String,
    },
    /// Wait until every given actor is running (exit 1 on timeout).
    Wait {
        /// Actor paths.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Give up after this long (e.g. 30s, 2m).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

impl CtlVerb {
    fn request(self) -> warden::control::protocol::Request {
        use warden::control::protocol::Request;
        match self {
            CtlVerb::Status => Request::Status,
            CtlVerb::Tree => Request::Tree,
            CtlVerb::Start { path } => Request::Start { path },
            CtlVerb::Stop { path } => Request::Stop { path },
            CtlVerb::Restart { path } => Request::Restart { path },
            CtlVerb::Logs { path, tail, .. } => Request::Logs { path, tail },
            CtlVerb::Reload => Request::Reload,
            CtlVerb::Drain => Request::Drain,
            CtlVerb::Reexec => Request::Reexec,
            CtlVerb::Deploy { path } => Request::Deploy { path },
            CtlVerb::Deploys { path } => Request::Deploys { path },
            CtlVerb::Confirm { path, id } => Request::ConfirmDeploy { path, id },
            CtlVerb::Wait { paths, timeout } => Request::Wait {
                paths,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    // On a thread of its own behind a bounded queue: a stderr nobody reads must not stop
    // the thread that logs (warden::own_log).
    let stderr = warden::own_log::OwnLog::start();
    match format {
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_writer(stderr))
            .init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(stderr))
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
    warden::plan::root_spec(&config, &warden::plan::Wiring::default())
        .map_err(|e| e.to_string())?;
    Ok(config)
}

/// How long an exiting warden waits for its queued log lines to reach stderr.
const LOG_FLUSH_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    warden::heap::tune();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let code = run(cli);
    warden::own_log::flush(LOG_FLUSH_BOUND);
    code
}

fn run(cli: Cli) -> ExitCode {
    let config_path = match cli.command {
        Command::Check { ref config } | Command::Up { ref config, .. } => config.clone(),
        Command::Ctl(args) => {
            let options = warden::ctl::CtlOptions {
                config: args.config,
                admin: args.admin,
                token_file: args.token_file,
                json: args.json,
                raw: matches!(args.verb, CtlVerb::Logs { raw: true, .. }),
                spoke: args.spoke,
                ca_file: args.ca_file,
            };
            return warden::ctl::run(&options, args.verb.request());
        }
        Command::Watchdog { cgroup, marker } => return warden::watchdog::run(cgroup, &marker),
        Command::Hub(args) => return warden::hub::cli::run(args),
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
        Command::Ctl(_) | Command::Watchdog { .. } | Command::Hub(_) => ExitCode::from(2),
        Command::Up {
            detach: true, wait, ..
        } => {
            let extra = match cli.log_format {
                LogFormat::Human => vec![],
                LogFormat::Json => vec!["--log-format".to_owned(), "json".to_owned()],
            };
            let binary = match warden::holder::current_binary() {
                Ok(b) => b,
                Err(e) => {
                    report(
                        cli.log_format,
                        &format!("cannot find the warden binary: {e}"),
                    );
                    return ExitCode::from(1);
                }
            };
            match warden::holder::detach(&binary, &config.path, &config.state_dir, &extra, wait) {
                Ok(pid) => {
                    println!(
                        "warden running as pid {pid} (log: {})",
                        config.state_dir.join("warden.log").display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report(cli.log_format, &e.to_string());
                    ExitCode::from(1)
                }
            }
        }
        Command::Up { passive, .. } => match warden::runtime::up_with(config, passive) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(cli.log_format, &format!("{e:#}"));
                ExitCode::from(1)
            }
        },
    }
}
