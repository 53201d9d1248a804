//! Loading and checking `warden.toml`, the file that describes the supervision tree.
//!
//! [`load`] reads a file and [`parse`] checks its text. Both give a [`Config`]: the tree
//! of supervisors, services, outboard children and pools with every default filled in,
//! every duration parsed and every relative path made absolute against the folder of the
//! config file. A bad file gives a [`ConfigError`] naming the file, the line and the key
//! or entry at fault, so `warden check` and `warden up` can refuse it before anything
//! starts.
//!
//! The keys, defaults and meanings are those of docs/config.md.
//! Two additions: an optional `[logs]` table (`max_bytes`, `keep`) for log rotation,
//! and the names `.` and `..`, which are refused because they would read as path steps.
//! An `[[outboard]]` entry takes every `[[service]]` key, read the same way, plus
//! `heartbeat`, `missed` and `version`; `ready = { ipc = true }` is allowed there only.
//!
//! A `[[pool]]` entry takes the `[[service]]` keys (`name`, `supervisor`, `command`,
//! `cwd`, `env`, `stop`, `restart`, `ready` without `ipc`), read the same way, plus
//! `ports` (required: `"20000-20999"`, or one port as `"20000"` or `20000`), `min`
//! (default 0), `max` (default 4; at least 1, at least `min`, at most the number of
//! ports), `sessions_per_worker` (default 10; at least 1) and `idle_timeout` (default
//! 5m; longer than zero). A pool takes its place among its siblings like any child but
//! cannot be a parent. In its `command`, its `env` values and its `ready.tcp` address,
//! `{port}` and `{worker_id}` stand for the port and id of each worker (see
//! [`expand_placeholders`]); any other `{name}` made of letters, digits and `_` is
//! refused, and other braces are kept as written. A `ready.tcp` address is checked with
//! the first and the last port of the range in place of `{port}`. Services and outboard
//! children have no placeholders: their braces are kept as written.
//!
//! An optional `[cluster]` table holds `redis_url`, which must start with `redis://`;
//! `rediss://` (TLS) is refused here, at `check`, because this build speaks Redis in the
//! clear only. A password in the URL is never shown: errors and logs carry the URL
//! through [`warden_actors::redact_url`].
//!
//! `[admin]` takes `listen`, `token_file`, `read_token_file` (a second token that may
//! only GET), `tls = { cert, key }` (PEM files: the API is HTTPS; both are read and
//! checked here, so a bad file is an error at `check` naming it) and `insecure = true`.
//! A `listen` address that is not loopback is refused unless `tls` or `insecure` is set.
//! A `[[pool]]` entry also takes `rollout`: `"config_only"` (default: a rollout may run
//! only the program the pool's `command` names) or `"any"`.
//!
//! `[[notifier]]` entries (`name`, `kind`, `url_file`, `events`, `timeout`) say where
//! deploys and give-ups are told; see the module `notifier` for their keys. Their URL
//! files are read here, so a missing or loose one is refused at `check`.

mod build;
mod deploy;
mod hub;
mod notifier;
mod raw;

pub use deploy::{read_secret as read_webhook_secret, DeployTarget, WebhooksConfig};
pub(crate) use hub::ca_roots;
pub use hub::{HubConfig, SpokeConfig};
pub use notifier::NotifierConfig;

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A checked configuration: the whole supervision tree and warden's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Absolute path of the config file.
    pub path: PathBuf,
    /// Absolute folder of the config file; relative paths in the file start here.
    pub base_dir: PathBuf,
    /// Absolute state folder (`state_dir`); default `base_dir/.warden`.
    pub state_dir: PathBuf,
    /// The admin HTTP API (`[admin]`).
    pub admin: AdminConfig,
    /// What happens to children when warden goes away (`[runtime]`).
    pub runtime: RuntimeConfig,
    /// Rotation of the children's log files (`[logs]`).
    pub logs: LogsConfig,
    /// The root supervisor: name `""`, path `"/"`, strategy and intensity from `[root]`.
    pub root: SupervisorConfig,
    /// Settings shared by the wardens of a cluster (`[cluster]`).
    pub cluster: ClusterConfig,
    /// This warden accepts spokes (`[hub]` with `enabled = true`).
    pub hub: Option<HubConfig>,
    /// This warden joins a hub (`[spoke]`).
    pub spoke: Option<SpokeConfig>,
    /// Where deploys and actors that gave up are told (`[[notifier]]`), in file order.
    pub notifiers: Vec<NotifierConfig>,
    /// Webhook keys (`[webhooks]`).
    pub webhooks: Option<WebhooksConfig>,
    /// The services with a `deploy`, in file order.
    pub deploys: Vec<DeployTarget>,
    /// warden's own deploy (`[self] deploy`), which ends in a reexec.
    pub self_deploy: Option<warden_actors::DeploySpec>,
}

impl Config {
    /// The deploy lanes: every service with a `deploy` (by path), and warden's own
    /// (`[self] deploy`, key `/`).
    pub fn deploy_lanes(&self) -> Vec<(String, warden_actors::DeploySpec)> {
        let mut lanes: Vec<_> = self
            .deploys
            .iter()
            .map(|d| (d.path.clone(), d.spec.clone()))
            .collect();
        if let Some(spec) = &self.self_deploy {
            lanes.push((warden_actors::deploy::SELF_KEY.to_owned(), spec.clone()));
        }
        lanes
    }
}

/// Settings of the admin HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address to listen on; default `127.0.0.1:7700`.
    pub listen: SocketAddr,
    /// Absolute path of the bearer-token file; default `state_dir/admin.token`.
    pub token_file: PathBuf,
    /// Absolute path of the read-only token file (`read_token_file`): a token that may
    /// only GET. `None` (the default): no such token.
    pub read_token_file: Option<PathBuf>,
    /// Plain HTTP (on a loopback address, or anywhere with `insecure = true`) or HTTPS.
    pub transport: AdminTransport,
}

/// How the admin API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTransport {
    /// Plain HTTP: `listen` is a loopback address, or `insecure = true` says so.
    Http,
    /// HTTPS with the certificate chain and key of `[admin] tls` (checked at load).
    Https(TlsFiles),
}

/// The PEM files of `[admin] tls`, as absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate.
    pub key: PathBuf,
}

/// Settings of warden's own lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Whether children outlive a warden that is killed.
    pub on_exit: OnExit,
    /// Whether each service runs in a cgroup of its own (`cgroup`).
    pub cgroup: CgroupMode,
}

/// Whether services run in cgroups of their own (`[runtime] cgroup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CgroupMode {
    /// `"auto"`: a cgroup per service where a writable cgroup v2 hierarchy exists, process
    /// groups elsewhere (default).
    #[default]
    Auto,
    /// `"off"`: process groups only.
    Off,
}

/// What happens to children when warden itself is killed (`on_exit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnExit {
    /// `"keep"`: children keep running and are adopted by the next warden (default).
    #[default]
    Keep,
    /// `"stop"`: children are stopped with warden.
    Stop,
}

/// Rotation of the log files that hold the children's output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogsConfig {
    /// Size at which a log file is rotated; default 10 MiB; at least 1.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one; default 3; at least 1.
    pub keep: usize,
}

/// Settings shared by the wardens of a cluster (the optional `[cluster]` table). Its
/// `Debug` shows the URL with its password hidden.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ClusterConfig {
    /// The Redis server of the cluster, as written (it may hold a password: show it only
    /// through [`warden_actors::redact_url`]); it starts with `redis://`. `None` (the
    /// default): no cluster.
    pub redis_url: Option<String>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.redis_url.as_deref().map(warden_actors::redact_url);
        f.debug_struct("ClusterConfig")
            .field("redis_url", &shown)
            .finish()
    }
}

/// A supervisor: the root, or a `[[supervisor]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorConfig {
    /// Its name; `""` for the root.
    pub name: String,
    /// Its path, such as `"/app"`; `"/"` for the root.
    pub path: String,
    /// How a failure of one child affects its siblings; default one_for_one.
    pub strategy: Strategy,
    /// Restart limit of this supervisor; `None` (the default) means no limit.
    pub intensity: Option<Intensity>,
    /// Line of its table header in the file (1 for the root).
    pub line: usize,
    /// Its children, in the order of their table headers in the file.
    pub children: Vec<ChildConfig>,
}

/// A child of a supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildConfig {
    /// A nested supervisor (`[[supervisor]]`).
    Supervisor(SupervisorConfig),
    /// A plain OS process (`[[service]]`).
    Service(ServiceConfig),
    /// A child that speaks warden's IPC (`[[outboard]]`).
    Outboard(OutboardConfig),
    /// A pool of app workers (`[[pool]]`).
    Pool(PoolConfig),
}

impl ChildConfig {
    /// The child's name.
    pub fn name(&self) -> &str {
        match self {
            ChildConfig::Supervisor(s) => &s.name,
            ChildConfig::Service(s) => &s.name,
            ChildConfig::Outboard(o) => &o.service.name,
            ChildConfig::Pool(p) => &p.name,
        }
    }

    /// The child's path, such as `"/app/api"`.
    pub fn path(&self) -> &str {
        match self {
            ChildConfig::Supervisor(s) => &s.path,
            ChildConfig::Service(s) => &s.path,
            ChildConfig::Outboard(o) => &o.service.path,
            ChildConfig::Pool(p) => &p.path,
        }
    }

    /// Line of the child's table header in the file.
    pub fn line(&self) -> usize {
        match self {
            ChildConfig::Supervisor(s) => s.line,
            ChildConfig::Service(s) => s.line,
            ChildConfig::Outboard(o) => o.service.line,
            ChildConfig::Pool(p) => p.line,
        }
    }
}

/// A plain OS process (`[[service]]`), or the process part of an `[[outboard]]` child.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Its name.
    pub name: String,
    /// Its path, such as `"/app/api"`.
    pub path: String,
    /// Line of its table header in the file.
    pub line: usize,
    /// Program and arguments; never empty, and the program is never `""`, for the
    /// process backend; empty for a unit of another backend.
    pub command: Vec<String>,
    /// Absolute working folder; default `base_dir`.
    pub cwd: PathBuf,
    /// The user, group and supplementary groups it runs as (`user`, `group`); `None`:
    /// warden's own.
    pub run_as: Option<warden_actors::RunAs>,
    /// Extra environment variables, sorted by name.
    pub env: Vec<(String, String)>,
    /// How the service is stopped.
    pub stop: StopConfig,
    /// How the service is restarted: `[restart]` with this service's overrides.
    pub restart: RestartConfig,
    /// How the service tells it is ready; `None`: running as soon as spawned.
    pub ready: Option<ReadyConfig>,
    /// Who runs it: warden itself, or the host's service manager (`backend`).
    pub backend: Backend,
}

/// Who runs a `[[service]]` (`backend`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// warden spawns `command` (`backend = "process"`, the default).
    #[default]
    Process,
    /// A systemd unit driven over D-Bus (`backend = "systemd"`, `unit`, `user_mode`).
    Systemd {
        /// The unit (`nginx.service`).
        unit: String,
        /// The user's manager on the session bus instead of the system's.
        user_mode: bool,
    },
    /// A launchd job driven through `launchctl` (`backend = "launchd"`, `label`,
    /// `user_mode`).
    Launchd {
        /// The job's label.
        label: String,
        /// The user's domain (`gui/UID`) instead of `system`.
        user_mode: bool,
    },
}

/// A child that speaks warden's IPC (`[[outboard]]`): a service that also answers
/// heartbeats and reports its app version.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboardConfig {
    /// Every `[[service]]` key, read exactly as for a service.
    pub service: ServiceConfig,
    /// How often the child must answer a heartbeat; default 1s; never zero.
    pub heartbeat: Duration,
    /// Heartbeats missed in a row before a restart; default 3; at least 1.
    pub missed: u32,
    /// The app version the child must report; default 1.
    pub version: u32,
}

/// A pool of app workers (`[[pool]]`): warden starts from `min` to `max` workers, each
/// with its own port from `ports`, and hands each up to `sessions_per_worker` sessions.
///
/// `command`, the `env` values and a `ready.tcp` address may hold `{port}` and
/// `{worker_id}`, which [`expand_placeholders`] fills in for each worker.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Its name.
    pub name: String,
    /// Its path, such as `"/app/shiny"`; its workers are `<path>/<worker_id>`.
    pub path: String,
    /// Line of its table header in the file.
    pub line: usize,
    /// Program and arguments of each worker, as written; never empty, and the program
    /// is never `""`.
    pub command: Vec<String>,
    /// Absolute working folder of the workers; default `base_dir`.
    pub cwd: PathBuf,
    /// The user, group and supplementary groups its workers run as (`user`, `group`);
    /// `None`: warden's own.
    pub run_as: Option<warden_actors::RunAs>,
    /// Extra environment variables of the workers, sorted by name; values as written.
    pub env: Vec<(String, String)>,
    /// How a worker is stopped.
    pub stop: StopConfig,
    /// How a worker is restarted: `[restart]` with this pool's overrides.
    pub restart: RestartConfig,
    /// How a worker tells it is ready (`tcp`, `delay` or `notify`; a `tcp` address as
    /// written); `None`: running as soon as spawned.
    pub ready: Option<ReadyConfig>,
    /// The ports handed to workers; `start() <= end()`, never port 0.
    pub ports: RangeInclusive<u16>,
    /// Workers kept running even without sessions; default 0; never more than `max`.
    pub min: u32,
    /// Most workers at once; default 4; at least 1 and at most the number of ports.
    pub max: u32,
    /// Sessions one worker takes at most; default 10; at least 1.
    pub sessions_per_worker: u32,
    /// A worker without sessions for this long is reaped, as long as `min` workers
    /// remain; default 5m; never zero.
    pub idle_timeout: Duration,
    /// How long a worker's signed token is valid; it is rewritten every half of this;
    /// default 10m; at least 1s.
    pub token_ttl: Duration,
    /// Which programs a rollout may run (`rollout`); default config_only.
    pub rollout: warden_actors::RolloutPolicy,
}

/// Checks a command as the loader checks every `command`: not empty, the program not
/// `""`, no NUL in any element, and (`placeholders`: a pool's) no placeholder but
/// `{port}` and `{worker_id}`. The same rule for commands given later (a rollout).
pub fn check_command(command: &[String], placeholders: bool) -> Result<(), String> {
    match command.first() {
        None => return Err("must not be empty".to_owned()),
        Some(program) if program.is_empty() => {
            return Err("the program (first element) must not be empty".to_owned())
        }
        Some(_) => {}
    }
    if let Some(at) = command.iter().position(|arg| arg.contains('\0')) {
        return Err(format!("element {} must not contain NUL", at + 1));
    }
    match command
        .iter()
        .find_map(|arg| build::unknown_placeholder(arg))
    {
        Some(found) if placeholders => Err(build::unknown_placeholder_detail(found)),
        _ => Ok(()),
    }
}

/// `command` with a relative program path (one holding a `/`, like `./api` or
/// `bin/worker`) made relative to the config file's folder `base_dir`, as every relative
/// path in the file is; a bare name (`sleep`) stays a `PATH` lookup, an absolute path is
/// kept. Without this, `./api` would be looked up from the child's `cwd`.
pub(crate) fn anchor_program(command: &[String], base_dir: &std::path::Path) -> Vec<String> {
    let mut anchored = command.to_vec();
    if let Some(program) = anchored.first_mut() {
        let path = std::path::Path::new(program.as_str());
        if path.is_relative() && program.contains('/') {
            let joined: std::path::PathBuf = base_dir.join(path).components().collect();
            if let Some(text) = joined.to_str() {
                *program = text.to_owned();
            }
        }
    }
    anchored
}

/// Checks one environment variable as the loader checks every `env` entry: a name that
/// is not empty and holds neither `=` nor NUL, a value without NUL, and (`placeholders`:
/// a pool's) no placeholder but `{port}` and `{worker_id}` in the value. The same rule
/// for variables given later (a rollout).
pub fn check_env_var(name: &str, value: &str, placeholders: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("a variable name must not be empty".to_owned());
    }
    if name.contains(['=', '\0']) {
        return Err("a variable name must not contain `=` or NUL".to_owned());
    }
    if value.contains('\0') {
        return Err("a value must not contain NUL".to_owned());
    }
    match build::unknown_placeholder(value) {
        Some(found) if placeholders => Err(build::unknown_placeholder_detail(found)),
        _ => Ok(()),
    }
}

/// `text` (a `command` element, an `env` value or a `ready.tcp` address of a pool) with
/// every `{port}` and `{worker_id}` replaced by the worker's port and id.
///
/// Other braces, which the loader lets through, are kept as written.
pub fn expand_placeholders(text: &str, port: u16, worker_id: &str) -> String {
    text.replace("{port}", &port.to_string())
        .replace("{worker_id}", worker_id)
}

/// How a service is stopped: `signal` to its process group, SIGKILL after `timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct StopConfig {
    /// Signal number; default SIGTERM (15). Written `"TERM"`, `"SIGTERM"` or `15`.
    pub signal: i32,
    /// Time allowed before SIGKILL; default 5s.
    pub timeout: Duration,
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            signal: nix::sys::signal::Signal::SIGTERM as i32,
            timeout: Duration::from_secs(5),
        }
    }
}

/// OTP restart strategy of a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// `"one_for_one"`: restart only the child that failed (default).
    #[default]
    OneForOne,
    /// `"one_for_all"`: restart every child.
    OneForAll,
    /// `"rest_for_one"`: restart the child and those after it in file order.
    RestForOne,
}

/// OTP restart policy of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// `"permanent"`: always restarted (default).
    #[default]
    Permanent,
    /// `"transient"`: restarted only after an abnormal exit (non-zero code or a signal).
    Transient,
    /// `"temporary"`: never restarted.
    Temporary,
}

/// How a child is restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartConfig {
    /// When to restart; default permanent.
    pub policy: RestartPolicy,
    /// Delay before each restart.
    pub backoff: BackoffConfig,
    /// A run this long resets the backoff to `initial`; default 30s.
    pub reset_after: Duration,
    /// Restart limit; default 10 within 60s.
    pub intensity: Intensity,
}

/// The built-in defaults are the runtime's own (`warden_supervisors`), so a config and
/// an embedded tree restart alike.
impl Default for RestartConfig {
    fn default() -> Self {
        let intensity = warden_supervisors::Intensity::DEFAULT;
        RestartConfig {
            policy: RestartPolicy::Permanent,
            backoff: BackoffConfig::default(),
            reset_after: warden_supervisors::DEFAULT_RESET_AFTER,
            intensity: Intensity {
                max: intensity.max,
                within: intensity.within,
            },
        }
    }
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// First delay; default 100ms.
    pub initial: Duration,
    /// Longest delay; default 30s; never less than `initial`.
    pub max: Duration,
    /// Factor from one delay to the next; default 2.0; at least 1.0.
    pub multiplier: f64,
    /// Random share added or taken off each delay; default 0.1; from 0.0 to 1.0.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        let runtime = warden_supervisors::BackoffConfig::default();
        BackoffConfig {
            initial: runtime.initial,
            max: runtime.max,
            multiplier: runtime.multiplier,
            jitter: runtime.jitter,
        }
    }
}

/// Restart intensity: at most `max` restarts within `within`. `max = 0` forbids any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Intensity {
    /// Restarts allowed within the window.
    pub max: u32,
    /// Length of the window; never zero.
    pub within: Duration,
}

/// How a service, outboard child or pool worker tells it is ready (`ready`).
#[derive(Debug, Clone, PartialEq)]
pub enum ReadyConfig {
    /// Ready once `addr` (`host:port`, as written) accepts a TCP connection.
    Tcp {
        /// The address to connect to.
        addr: String,
        /// Time allowed to get ready; default 30s.
        timeout: Duration,
    },
    /// Ready once it has run for `delay`.
    Delay {
        /// How long to wait.
        delay: Duration,
    },
    /// Ready once it sends `READY=1` on `$NOTIFY_SOCKET` (the sd_notify protocol).
    Notify {
        /// Time allowed to get ready; default 30s.
        timeout: Duration,
    },
    /// Ready once it says so over warden's IPC (`ipc = true`; outboard children only).
    Ipc {
        /// Time allowed to get ready; default 30s.
        timeout: Duration,
    },
}

/// Why a config file was refused.
///
/// Shown as one line: `FILE:LINE: MESSAGE`, or `FILE: MESSAGE` when no line applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.location())]
pub struct ConfigError {
    /// The config file, as given to [`load`] or [`parse`].
    pub path: PathBuf,
    /// 1-based line of the offending key, or of the entry when no key is at fault.
    pub line: Option<usize>,
    /// The offending key, dotted inside its entry (`restart.backoff.max`).
    pub key: Option<String>,
    /// What is wrong, naming the entry and the key.
    pub message: String,
}

impl ConfigError {
    /// 1-based line of the offending key or entry, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The offending key, dotted inside its entry, when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn location(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path)
}

/// Where a running warden of the config at `path` keeps its state and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Absolute `state_dir`.
    pub state_dir: PathBuf,
    /// Absolute admin token file.
    pub token_file: PathBuf,
    /// `[admin] listen` (default 127.0.0.1:7700), or why it is not an address: an error
    /// only for the clients that use it (the control socket does not).
    pub admin_listen: Result<SocketAddr, ConfigError>,
    /// Absolute `[admin] tls.cert` when the admin API is HTTPS: the certificate clients
    /// on this host trust when they talk to this listener (a self-signed one works).
    pub admin_cert: Option<PathBuf>,
}

/// Reads only `state_dir` and `[admin] token_file`, `listen` and `tls.cert` of the file
/// at `path`, so that clients can find a running warden even while its file holds an
/// edit that does not pass [`load`] (e.g. before a reload is refused).
pub fn locate(path: &Path) -> Result<Located, ConfigError> {
    let fail = |message: String| ConfigError {
        path: path.to_path_buf(),
        line: None,
        key: None,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(format!("invalid TOML: {}", e.message())))?;
    let absolute = std::path::absolute(path)
        .map_err(|e| fail(format!("cannot make the path absolute: {e}")))?;
    let base_dir = absolute.parent().unwrap_or(&absolute).to_path_buf();
    let state_dir: PathBuf = match table.get("state_dir").and_then(|v| v.as_str()) {
        Some(dir) => base_dir.join(dir).components().collect(),
        None => base_dir.join(".warden"),
    };
    let admin = table.get("admin");
    let admin_str = |key: &str| admin.and_then(|a| a.get(key)).and_then(|v| v.as_str());
    let token_file = match admin_str("token_file") {
        Some(file) => base_dir.join(file).components().collect(),
        None => state_dir.join("admin.token"),
    };
    let admin_listen = match admin_str("listen") {
        Some(listen) => listen.parse().map_err(|_| {
            fail(format!(
                "[admin]: key `listen`: invalid address {listen:?}: expected IP:PORT such as \"127.0.0.1:7700\""
            ))
        }),
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 7700))),
    };
    let admin_cert = admin
        .and_then(|a| a.get("tls"))
        .and_then(|tls| tls.get("cert"))
        .and_then(|v| v.as_str())
        .map(|cert| base_dir.join(cert).components().collect());
    Ok(Located {
        state_dir,
        token_file,
        admin_listen,
        admin_cert,
    })
}

/// Checks `text`, the content of the config file at `path`.
///
/// `path` names the file in errors, and its folder is where relative paths start.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let source = Source::new(text, path);
    let file = raw::read(text).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: e.span.map(|span| source.line(span.start)),
        key: e.key,
        message: e.message,
    })?;
    build::build(&source, file)
}

/// The text being checked, to turn byte offsets into lines and build errors.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
    /// The offset of every `\n` of `text`, in order: a line is a binary search, not a
    /// count from the start (which made a file of 1,000 services quadratic: ~80 ms).
    newlines: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(text: &'a str, path: &'a Path) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        Self {
            text,
            path,
            newlines,
        }
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        // The newlines before `end`.
        1 + self.newlines.partition_point(|&i| i < end)
    }

    /// An error about `key` of the entry `label` (`[[service]] "api"`; `""` at the top).
    fn error(
        &self,
        span: Range<usize>,
        label: &str,
        key: &str,
        detail: impl fmt::Display,
    ) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: Some(self.line(span.start)),
            key: Some(key.to_string()),
            message: keyed_message(label, key, detail),
        }
    }
}

/// `[[service]] "api": key `command`: DETAIL`, leaving out the parts that are empty.
fn keyed_message(label: &str, key: &str, detail: impl fmt::Display) -> String {
    let mut message = String::new();
    if !label.is_empty() {
        message.push_str(label);
        message.push_str(": ");
    }
    if !key.is_empty() {
        message.push_str(&format!("key `{key}`: "));
    }
    message.push_str(&detail.to_string());
    message
}
