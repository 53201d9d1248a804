//! The checking pass: turns the raw structs into a [`Config`], filling in defaults,
//! resolving paths and building the supervisor tree.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use toml::Spanned;
use warden_actors::{RolloutPolicy, RunAs, RunAsError};

use super::raw::{
    Dur, PortsSpec, RawAdmin, RawBackoff, RawFile, RawIntensity, RawOutboard, RawPool, RawReady,
    RawRestart, RawService, RawStop, RawSupervisor, RawTls, SignalSpec,
};
use super::{
    check_command, check_env_var, expand_placeholders, AdminConfig, AdminTransport, Backend,
    BackoffConfig, CgroupMode, ChildConfig, ClusterConfig, Config, ConfigError, Intensity,
    LogsConfig, OnExit, OutboardConfig, PoolConfig, ReadyConfig, RestartConfig, RestartPolicy,
    RuntimeConfig, ServiceConfig, Source, StopConfig, Strategy, SupervisorConfig, TlsFiles,
};

type Result<T> = std::result::Result<T, ConfigError>;

const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
const DEFAULT_MISSED: u32 = 3;
const DEFAULT_VERSION: u32 = 1;
const DEFAULT_POOL_MIN: u32 = 0;
const DEFAULT_POOL_MAX: u32 = 4;
const DEFAULT_SESSIONS_PER_WORKER: u32 = 10;
/// How long a worker token is valid by default.
const DEFAULT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(600);

const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The placeholders a pool fills in for each worker.
const PLACEHOLDERS: [&str; 2] = ["port", "worker_id"];
/// The worker id put in place of `{worker_id}` to check a pool's `ready.tcp` address
/// (workers are named `w1`, `w2`, ...).
const SAMPLE_WORKER_ID: &str = "w1";

pub(super) fn build(src: &Source, file: RawFile) -> Result<Config> {
    let path = std::path::absolute(src.path).map_err(|e| ConfigError {
        path: src.path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot make the path absolute: {e}"),
    })?;
    let path: PathBuf = path.components().collect();
    let base_dir = path.parent().unwrap_or(&path).to_path_buf();

    let state_dir = match &file.state_dir {
        Some(dir) => resolve(src, "", "state_dir", &base_dir, dir)?,
        None => base_dir.join(".warden"),
    };
    let admin = admin(src, file.admin.as_ref(), &base_dir, &state_dir)?;
    let on_exit = match file.runtime.as_ref().and_then(|r| r.on_exit.as_ref()) {
        Some(value) => choose(
            src,
            "[runtime]",
            "on_exit",
            "on_exit value",
            value,
            &[("keep", OnExit::Keep), ("stop", OnExit::Stop)],
        )?,
        None => OnExit::default(),
    };
    let cgroup = match file.runtime.as_ref().and_then(|r| r.cgroup.as_ref()) {
        Some(value) => choose(
            src,
            "[runtime]",
            "cgroup",
            "cgroup value",
            value,
            &[("auto", CgroupMode::Auto), ("off", CgroupMode::Off)],
        )?,
        None => CgroupMode::default(),
    };
    let logs = logs(src, &file)?;
    let cluster = cluster(src, &file)?;
    let hub = super::hub::hub(src, file.hub.as_ref())?;
    let spoke = super::hub::spoke(src, file.spoke.as_ref(), &base_dir, &state_dir)?;
    let notifiers = super::notifier::notifiers(src, &file.notifier, &base_dir)?;

    let root_table = file.root.as_ref();
    let strategy = match root_table.and_then(|r| r.strategy.as_ref()) {
        Some(value) => strategy(src, "[root]", value)?,
        None => Strategy::default(),
    };
    let intensity = match root_table.and_then(|r| r.intensity.as_ref()) {
        Some(value) => Some(intensity(src, "[root]", "intensity", value, None)?),
        None => None,
    };

    let defaults = match &file.restart {
        Some(table) => restart(src, "[restart]", "", table, &RestartConfig::default())?,
        None => RestartConfig::default(),
    };

    let mut nodes = Vec::new();
    for (index, entry) in file.supervisor.iter().enumerate() {
        nodes.push(supervisor(src, index, entry)?);
    }
    let context = ServiceContext {
        base_dir: &base_dir,
        restart: &defaults,
    };
    let mut deploys = Vec::new();
    for (index, entry) in file.service.iter().enumerate() {
        let node = service(
            src,
            Kind::Service,
            index,
            entry.span(),
            entry.get_ref(),
            &context,
        )?;
        if let (Some(raw), ChildConfig::Service(s)) = (&entry.get_ref().deploy, &node.child) {
            let spec = super::deploy::deploy(
                src,
                &node.label,
                raw,
                &base_dir,
                &s.cwd,
                s.env.clone(),
                s.run_as.clone(),
            )?;
            deploys.push(super::DeployTarget {
                path: s.path.clone(),
                line: s.line,
                spec,
            });
        }
        nodes.push(node);
    }
    let webhooks = super::deploy::webhooks(src, file.webhooks.as_ref(), &base_dir)?;
    let self_deploy = match file.warden.as_ref().and_then(|w| w.deploy.as_ref()) {
        Some(raw) => Some(super::deploy::deploy(
            src,
            "[self]",
            raw,
            &base_dir,
            &base_dir,
            Vec::new(),
            None,
        )?),
        None => None,
    };
    for (index, entry) in file.outboard.into_iter().enumerate() {
        nodes.push(outboard(src, index, entry, &context)?);
    }
    for (index, entry) in file.pool.into_iter().enumerate() {
        nodes.push(pool(src, index, entry, &context)?);
    }
    nodes.sort_by_key(|node| node.offset);
    let children = tree(src, nodes)?;

    Ok(Config {
        path,
        base_dir,
        state_dir,
        admin,
        runtime: RuntimeConfig { on_exit, cgroup },
        logs,
        root: SupervisorConfig {
            name: String::new(),
            path: "/".to_string(),
            strategy,
            intensity,
            line: 1,
            children,
        },
        cluster,
        hub,
        spoke,
        notifiers,
        webhooks,
        deploys,
        self_deploy,
    })
}

fn admin(
    src: &Source,
    table: Option<&RawAdmin>,
    base_dir: &Path,
    state_dir: &Path,
) -> Result<AdminConfig> {
    let listen = match table.and_then(|t| t.listen.as_ref()) {
        Some(value) => value.get_ref().parse::<SocketAddr>().map_err(|_| {
            src.error(
                value.span(),
                "[admin]",
                "listen",
                format!(
                    "invalid address {:?}: expected IP:PORT such as \"{DEFAULT_LISTEN}\"",
                    value.get_ref()
                ),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 7700)),
    };
    let token_file = match table.and_then(|t| t.token_file.as_ref()) {
        Some(value) => resolve(src, "[admin]", "token_file", base_dir, value)?,
        None => state_dir.join("admin.token"),
    };
    let read_token_file = match table.and_then(|t| t.read_token_file.as_ref()) {
        Some(value) => {
            let file = resolve(src, "[admin]", "read_token_file", base_dir, value)?;
            if file == token_file {
                let detail = format!(
                    "{} is also the admin token file: the read-only token needs a file of its own",
                    file.display()
                );
                return Err(src.error(value.span(), "[admin]", "read_token_file", detail));
            }
            Some(file)
        }
        None => None,
    };
    let insecure = table.and_then(|t| t.insecure.as_ref());
    let transport = match (table.and_then(|t| t.tls.as_ref()), insecure) {
        (Some(_), Some(flag)) if *flag.get_ref() => {
            let detail = "`insecure = true` asks for plain HTTP, but `tls` is set: keep one";
            return Err(src.error(flag.span(), "[admin]", "insecure", detail));
        }
        (Some(tls), _) => AdminTransport::Https(tls_files(src, base_dir, tls.get_ref())?),
        (None, _) => AdminTransport::Http,
    };
    let plain_on_purpose = insecure.is_some_and(|flag| *flag.get_ref());
    if transport == AdminTransport::Http && !plain_on_purpose && !is_loopback(&listen) {
        let span = table
            .and_then(|t| t.listen.as_ref())
            .map_or(0..0, Spanned::span);
        let detail = format!(
            "{listen} is not a loopback address: the admin token would cross the network in \
             the clear. Set `tls = {{ cert = \"cert.pem\", key = \"key.pem\" }}` for HTTPS, \
             or `insecure = true` to serve plain HTTP there on purpose"
        );
        return Err(src.error(span, "[admin]", "listen", detail));
    }
    Ok(AdminConfig {
        listen,
        token_file,
        read_token_file,
        transport,
    })
}

/// Whether `addr` can only be reached from this host (IPv4-mapped IPv6 included).
fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// The files of `[admin] tls`, read and checked now (a certificate chain and the key that
/// matches it), so that a bad file is refused at `check`, naming it.
fn tls_files(src: &Source, base_dir: &Path, raw: &RawTls) -> Result<TlsFiles> {
    let files = TlsFiles {
        cert: resolve(src, "[admin]", "tls.cert", base_dir, &raw.cert)?,
        key: resolve(src, "[admin]", "tls.key", base_dir, &raw.key)?,
    };
    if let Err(e) = crate::admin_tls::server_config(&files) {
        let (key, span) = match e.file {
            crate::admin_tls::TlsFile::Cert => ("tls.cert", raw.cert.span()),
            crate::admin_tls::TlsFile::Key => ("tls.key", raw.key.span()),
        };
        return Err(src.error(span, "[admin]", key, e));
    }
    Ok(files)
}

fn logs(src: &Source, file: &RawFile) -> Result<LogsConfig> {
    let mut logs = LogsConfig {
        max_bytes: 10 * 1024 * 1024,
        keep: 3,
    };
    let Some(table) = &file.logs else {
        return Ok(logs);
    };
    if let Some(value) = &table.max_bytes {
        logs.max_bytes = *value.get_ref();
        if logs.max_bytes == 0 {
            return Err(src.error(value.span(), "[logs]", "max_bytes", "must be at least 1"));
        }
    }
    if let Some(value) = &table.keep {
        logs.keep = *value.get_ref();
        if logs.keep == 0 {
            return Err(src.error(value.span(), "[logs]", "keep", "must be at least 1"));
        }
    }
    Ok(logs)
}

/// A supervisor, service, outboard child or pool read from its entry, before the tree is
/// built.
struct Node {
    /// Byte offset of the table header: the order of children.
    offset: usize,
    label: String,
    name_span: Range<usize>,
    /// Normalized path of the parent supervisor (`"/"` for the root).
    parent: String,
    parent_key: &'static str,
    parent_span: Range<usize>,
    child: ChildConfig,
}

/// The optional `[cluster]` table.
fn cluster(src: &Source, file: &RawFile) -> Result<ClusterConfig> {
    let Some(value) = file.cluster.as_ref().and_then(|c| c.redis_url.as_ref()) else {
        return Ok(ClusterConfig::default());
    };
    let url = value.get_ref();
    // Shown only with its password hidden: config errors reach logs and HTTP answers.
    let shown = warden_actors::redact_url(url);
    if url.starts_with("rediss://") {
        let detail = format!(
            "{shown:?}: rediss:// (TLS) is not supported by this build; use redis:// to a \
             Redis on this host or a private network, or a TLS tunnel such as stunnel"
        );
        return Err(src.error(value.span(), "[cluster]", "redis_url", detail));
    }
    match url.strip_prefix("redis://") {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Ok(ClusterConfig {
                redis_url: Some(url.clone()),
            })
        }
        _ => {
            let detail = format!(
                "invalid Redis URL {shown:?}: expected redis://[:PASSWORD@]HOST[:PORT][/DB]"
            );
            Err(src.error(value.span(), "[cluster]", "redis_url", detail))
        }
    }
}

fn supervisor(src: &Source, index: usize, entry: &Spanned<RawSupervisor>) -> Result<Node> {
    let raw = entry.get_ref();
    let name = name(src, &format!("[[supervisor]] #{}", index + 1), &raw.name)?;
    let label = format!("[[supervisor]] {name:?}");
    let parent = match &raw.parent {
        Some(value) => parent_path(src, &label, "parent", value)?,
        None => "/".to_string(),
    };
    let strategy = match &raw.strategy {
        Some(value) => strategy(src, &label, value)?,
        None => Strategy::default(),
    };
    let intensity = match &raw.intensity {
        Some(value) => Some(intensity(src, &label, "intensity", value, None)?),
        None => None,
    };
    Ok(Node {
        offset: entry.span().start,
        name_span: raw.name.span(),
        parent_key: "parent",
        parent_span: raw.parent.as_ref().map_or(entry.span(), Spanned::span),
        child: ChildConfig::Supervisor(SupervisorConfig {
            path: join(&parent, &name),
            name,
            strategy,
            intensity,
            line: src.line(entry.span().start),
            children: Vec::new(),
        }),
        label,
        parent,
    })
}

/// What every service, outboard child and pool inherits.
struct ServiceContext<'a> {
    base_dir: &'a Path,
    restart: &'a RestartConfig,
}

/// The kind of entry that holds the service keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    Outboard,
    /// A pool, with the first and last of its ports: its `command`, `env` values and
    /// `ready.tcp` address may hold placeholders.
    Pool(u16, u16),
}

impl Kind {
    /// The name of its array of tables.
    fn table(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Outboard => "outboard",
            Kind::Pool(..) => "pool",
        }
    }
}

/// A `[[service]]` entry, or the service keys of an `[[outboard]]` one (`kind`) whose
/// table header spans `span`; the node holds a [`ChildConfig::Service`].
fn service(
    src: &Source,
    kind: Kind,
    index: usize,
    span: Range<usize>,
    raw: &RawService,
    context: &ServiceContext,
) -> Result<Node> {
    let table = kind.table();
    let name = name(src, &format!("[[{table}]] #{}", index + 1), &raw.name)?;
    let label = format!("[[{table}]] {name:?}");
    let parent = match &raw.supervisor {
        Some(value) => parent_path(src, &label, "supervisor", value)?,
        None => "/".to_string(),
    };

    let backend = backend(src, &label, kind, span.clone(), raw)?;
    let placeholders = matches!(kind, Kind::Pool(..));
    let command = match (&raw.command, &backend) {
        (Some(command), Backend::Process) => {
            check_command(command.get_ref(), placeholders)
                .map_err(|detail| src.error(command.span(), &label, "command", detail))?;
            super::anchor_program(command.get_ref(), context.base_dir)
        }
        (None, Backend::Process) => {
            return Err(src.error(span, &label, "command", "is required"));
        }
        (Some(command), _) => {
            return Err(src.error(
                command.span(),
                &label,
                "command",
                "is not allowed with this backend: the host's service manager runs the unit",
            ));
        }
        (None, _) => Vec::new(),
    };

    let cwd = match &raw.cwd {
        Some(value) => resolve(src, &label, "cwd", context.base_dir, value)?,
        None => context.base_dir.to_path_buf(),
    };

    let run_as = run_as(src, &label, raw)?;

    let mut env = Vec::new();
    if let Some(table) = &raw.env {
        for (key, value) in table.get_ref() {
            if let Err(problem) = check_env_var(key, value, placeholders) {
                let key = if key.is_empty() {
                    "env".to_string()
                } else {
                    format!("env.{key}")
                };
                return Err(src.error(table.span(), &label, &key, problem));
            }
            env.push((key.clone(), value.clone()));
        }
    }

    let stop = match &raw.stop {
        Some(value) => stop(src, &label, value.get_ref())?,
        None => StopConfig::default(),
    };
    let restart = match &raw.restart {
        Some(value) => restart(src, &label, "restart", value, context.restart)?,
        None => context.restart.clone(),
    };
    let ready = match &raw.ready {
        Some(value) => Some(ready(src, &label, kind, value)?),
        None => None,
    };

    Ok(Node {
        offset: span.start,
        name_span: raw.name.span(),
        parent_key: "supervisor",
        parent_span: raw.supervisor.as_ref().map_or(span.clone(), Spanned::span),
        child: ChildConfig::Service(ServiceConfig {
            path: join(&parent, &name),
            name,
            line: src.line(span.start),
            command,
            cwd,
            run_as,
            env,
            stop,
            restart,
            ready,
            backend,
        }),
        label,
        parent,
    })
}

/// `backend`, `unit`, `label` and `user_mode` of a `[[service]]`: a unit name or label
/// is required by its backend and refused by the others.
fn backend(
    src: &Source,
    label: &str,
    kind: Kind,
    span: Range<usize>,
    raw: &RawService,
) -> Result<Backend> {
    let name = raw
        .backend
        .as_ref()
        .map(|b| (b.get_ref().as_str(), b.span()));
    let user_mode = raw.user_mode.as_ref().is_some_and(|u| *u.get_ref());
    let text = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>> {
        match v {
            Some(v) if v.get_ref().is_empty() || v.get_ref().contains(['\0', '\n']) => {
                Err(src.error(v.span(), label, key, "must be a non-empty name"))
            }
            Some(v) => Ok(Some(v.get_ref().clone())),
            None => Ok(None),
        }
    };
    let unit = text(&raw.unit, "unit")?;
    let job = text(&raw.label, "label")?;
    let backend = match name {
        None | Some(("process", _)) => {
            for (key, value) in [
                ("unit", raw.unit.as_ref().map(Spanned::span)),
                ("label", raw.label.as_ref().map(Spanned::span)),
                ("user_mode", raw.user_mode.as_ref().map(Spanned::span)),
            ] {
                if let Some(at) = value {
                    return Err(src.error(
                        at,
                        label,
                        key,
                        "needs backend = \"systemd\" or \"launchd\"",
                    ));
                }
            }
            return Ok(Backend::Process);
        }
        Some(("systemd", _)) => {
            if let Some(at) = raw.label.as_ref().map(Spanned::span) {
                return Err(src.error(
                    at,
                    label,
                    "label",
                    "is for backend = \"launchd\"; systemd takes `unit`",
                ));
            }
            let unit = unit.ok_or_else(|| {
                src.error(
                    span.clone(),
                    label,
                    "unit",
                    "is required with backend = \"systemd\"",
                )
            })?;
            Backend::Systemd { unit, user_mode }
        }
        Some(("launchd", _)) => {
            if let Some(at) = raw.unit.as_ref().map(Spanned::span) {
                return Err(src.error(
                    at,
                    label,
                    "unit",
                    "is for backend = \"systemd\"; launchd takes `label`",
                ));
            }
            let job = job.ok_or_else(|| {
                src.error(
                    span.clone(),
                    label,
                    "label",
                    "is required with backend = \"launchd\"",
                )
            })?;
            Backend::Launchd {
                label: job,
                user_mode,
            }
        }
        Some((other, at)) => {
            return Err(src.error(
                at,
                label,
                "backend",
                format!("unknown backend {other:?}: expected process, systemd or launchd"),
            ));
        }
    };
    if !matches!(kind, Kind::Service) {
        return Err(src.error(
            span,
            label,
            "backend",
            "only a [[service]] can have another backend",
        ));
    }
    for (key, value) in [
        ("cwd", raw.cwd.as_ref().map(Spanned::span)),
        ("user", raw.user.as_ref().map(Spanned::span)),
        ("group", raw.group.as_ref().map(Spanned::span)),
        ("env", raw.env.as_ref().map(Spanned::span)),
        ("ready", raw.ready.as_ref().map(Spanned::span)),
    ] {
        if let Some(at) = value {
            return Err(src.error(
                at,
                label,
                key,
                "is not allowed with this backend: the unit's own file sets it",
            ));
        }
    }
    Ok(backend)
}

/// `user` and `group` of an entry, looked up in the system's databases: an unknown name,
/// or another user or group than warden's own while warden does not run as root, is
/// refused naming the key.
fn run_as(src: &Source, label: &str, raw: &RawService) -> Result<Option<RunAs>> {
    let user = raw.user.as_ref();
    let group = raw.group.as_ref();
    for (key, value) in [("user", user), ("group", group)] {
        if let Some(value) = value {
            if value.get_ref().is_empty() || value.get_ref().contains('\0') {
                return Err(src.error(value.span(), label, key, "must be a user or group name"));
            }
        }
    }
    let span_of = |e: &RunAsError| match e {
        RunAsError::UnknownGroup(_) => group.map(Spanned::span),
        RunAsError::NotRoot { .. } => user.or(group).map(Spanned::span),
        _ => user.or(group).map(Spanned::span),
    };
    let key_of = |e: &RunAsError| match e {
        RunAsError::UnknownGroup(_) => "group",
        _ if user.is_some() => "user",
        _ => "group",
    };
    let fail = |e: RunAsError| {
        let span = span_of(&e).unwrap_or_default();
        src.error(span, label, key_of(&e), e.to_string())
    };
    let resolved = RunAs::resolve(
        user.map(|u| u.get_ref().as_str()),
        group.map(|g| g.get_ref().as_str()),
    )
    .map_err(fail)?;
    if let Some(run_as) = &resolved {
        let (euid, egid) = warden_actors::effective_ids();
        run_as.allowed_for(euid, egid).map_err(fail)?;
    }
    Ok(resolved)
}

/// A `[[pool]]` entry: its ports, its service keys read as for a `[[service]]` (with
/// placeholders), then its own keys.
fn pool(
    src: &Source,
    index: usize,
    entry: Spanned<RawPool>,
    context: &ServiceContext,
) -> Result<Node> {
    let span = entry.span();
    let (raw, keys) = entry.into_inner().split();
    let label = format!(
        "[[pool]] {:?}",
        name(src, &format!("[[pool]] #{}", index + 1), &raw.name)?
    );
    let ports = ports(src, &label, &keys.ports)?;
    let kind = Kind::Pool(*ports.start(), *ports.end());
    let mut node = service(src, kind, index, span, &raw, context)?;

    let max = match &keys.max {
        Some(value) if *value.get_ref() == 0 => {
            return Err(src.error(value.span(), &label, "max", "must be at least 1"));
        }
        Some(value) => *value.get_ref(),
        None => DEFAULT_POOL_MAX,
    };
    let min = match &keys.min {
        Some(value) if *value.get_ref() > max => {
            let default = if keys.max.is_none() {
                ", the default"
            } else {
                ""
            };
            let detail = format!(
                "min ({}) must not be greater than max ({max}{default})",
                value.get_ref()
            );
            return Err(src.error(value.span(), &label, "min", detail));
        }
        Some(value) => *value.get_ref(),
        None => DEFAULT_POOL_MIN,
    };
    let count = u32::from(ports.end() - ports.start()) + 1;
    if max > count {
        let written = ports_written(keys.ports.get_ref());
        let plural = if count == 1 { "" } else { "s" };
        return Err(match &keys.max {
            Some(value) => {
                let detail = format!(
                    "max ({max}) must not be more than the {count} port{plural} of `ports` ({written})"
                );
                src.error(value.span(), &label, "max", detail)
            }
            None => {
                let detail = format!(
                    "{written} holds {count} port{plural}, fewer than the default max of \
                     {DEFAULT_POOL_MAX} workers: widen the range or set `max` to at most {count}"
                );
                src.error(keys.ports.span(), &label, "ports", detail)
            }
        });
    }
    let sessions_per_worker = match &keys.sessions_per_worker {
        Some(value) if *value.get_ref() == 0 => {
            let detail = "must be at least 1";
            return Err(src.error(value.span(), &label, "sessions_per_worker", detail));
        }
        Some(value) => *value.get_ref(),
        None => DEFAULT_SESSIONS_PER_WORKER,
    };
    let idle_timeout = match &keys.idle_timeout {
        Some(value) if value.get_ref().0.is_zero() => {
            let detail = "must be longer than zero";
            return Err(src.error(value.span(), &label, "idle_timeout", detail));
        }
        Some(value) => value.get_ref().0,
        None => DEFAULT_IDLE_TIMEOUT,
    };
    let token_ttl = match &keys.token_ttl {
        Some(value) if value.get_ref().0 < std::time::Duration::from_secs(1) => {
            let detail = "must be at least 1s";
            return Err(src.error(value.span(), &label, "token_ttl", detail));
        }
        Some(value) => value.get_ref().0,
        None => DEFAULT_TOKEN_TTL,
    };
    let rollout = match &keys.rollout {
        Some(value) => choose(
            src,
            &label,
            "rollout",
            "rollout policy",
            value,
            &[
                ("config_only", RolloutPolicy::ConfigOnly),
                ("any", RolloutPolicy::Any),
            ],
        )?,
        None => RolloutPolicy::default(),
    };

    node.child = match node.child {
        ChildConfig::Service(service) => ChildConfig::Pool(PoolConfig {
            name: service.name,
            path: service.path,
            line: service.line,
            command: service.command,
            cwd: service.cwd,
            run_as: service.run_as,
            env: service.env,
            stop: service.stop,
            restart: service.restart,
            ready: service.ready,
            ports,
            min,
            max,
            sessions_per_worker,
            idle_timeout,
            token_ttl,
            rollout,
        }),
        other => other,
    };
    Ok(node)
}

/// `ports`: `"FIRST-LAST"`, or one port as `"PORT"` or `PORT`; ports from 1 to 65535.
fn ports(src: &Source, label: &str, value: &Spanned<PortsSpec>) -> Result<RangeInclusive<u16>> {
    let written = ports_written(value.get_ref());
    let fail = |why: String| {
        let detail = format!("invalid ports {written}: {why}");
        src.error(value.span(), label, "ports", detail)
    };
    let (first, last, shaped) = match value.get_ref() {
        PortsSpec::Number(n) => (n.to_string(), n.to_string(), true),
        PortsSpec::Text(text) => {
            let (first, last) = text.split_once('-').unwrap_or((text, text));
            let (first, last) = (first.trim(), last.trim());
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let shaped = digits(first) && digits(last);
            (first.to_string(), last.to_string(), shaped)
        }
    };
    if !shaped {
        let why = "expected a range such as \"20000-20999\", or one port such as \"20000\"";
        return Err(fail(why.to_string()));
    }
    let port = |text: &str| text.parse::<u16>().ok().filter(|&p| p != 0);
    let (first, last) = match (port(&first), port(&last)) {
        (Some(first), Some(last)) => (first, last),
        (None, _) => return Err(fail(format!("port {first} is not from 1 to 65535"))),
        (_, None) => return Err(fail(format!("port {last} is not from 1 to 65535"))),
    };
    if first > last {
        let why = format!("the first port ({first}) is greater than the last ({last})");
        return Err(fail(why));
    }
    Ok(first..=last)
}

/// `ports` as the user wrote it, for messages: `"20000-20999"` or `20000`.
fn ports_written(value: &PortsSpec) -> String {
    match value {
        PortsSpec::Text(text) => format!("{text:?}"),
        PortsSpec::Number(n) => n.to_string(),
    }
}

/// The first `{name}` in `text`, `name` made of ASCII letters, digits and `_`, that is
/// not a placeholder a pool knows. Other braces are not placeholders.
pub(super) fn unknown_placeholder(text: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(open) = text[from..].find('{').map(|i| from + i) {
        let after = &text[open + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 && after[len..].starts_with('}') && !PLACEHOLDERS.contains(&&after[..len]) {
            return Some(&text[open..open + len + 2]);
        }
        from = open + 1;
    }
    None
}

pub(super) fn unknown_placeholder_detail(found: &str) -> String {
    format!("unknown placeholder `{found}` (a pool fills in only `{{port}}` and `{{worker_id}}`)")
}

/// An `[[outboard]]` entry: its service keys read as for a `[[service]]`, then its own.
fn outboard(
    src: &Source,
    index: usize,
    entry: Spanned<RawOutboard>,
    context: &ServiceContext,
) -> Result<Node> {
    let span = entry.span();
    let (raw, ipc) = entry.into_inner().split();
    let mut node = service(src, Kind::Outboard, index, span, &raw, context)?;
    let heartbeat = match &ipc.heartbeat {
        Some(value) if value.get_ref().0.is_zero() => {
            let detail = "must be longer than zero";
            return Err(src.error(value.span(), &node.label, "heartbeat", detail));
        }
        Some(value) => value.get_ref().0,
        None => DEFAULT_HEARTBEAT,
    };
    let missed = match &ipc.missed {
        Some(value) if *value.get_ref() == 0 => {
            return Err(src.error(value.span(), &node.label, "missed", "must be at least 1"));
        }
        Some(value) => *value.get_ref(),
        None => DEFAULT_MISSED,
    };
    let version = ipc
        .version
        .as_ref()
        .map_or(DEFAULT_VERSION, |v| *v.get_ref());
    node.child = match node.child {
        ChildConfig::Service(service) => ChildConfig::Outboard(OutboardConfig {
            service,
            heartbeat,
            missed,
            version,
        }),
        other => other,
    };
    Ok(node)
}

fn stop(src: &Source, label: &str, raw: &RawStop) -> Result<StopConfig> {
    let mut stop = StopConfig::default();
    if let Some(value) = &raw.signal {
        let signal = match value.get_ref() {
            SignalSpec::Name(name) => {
                let upper = name.to_ascii_uppercase();
                let full = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                Signal::from_str(&full).ok()
            }
            SignalSpec::Number(n) => i32::try_from(*n)
                .ok()
                .and_then(|n| Signal::try_from(n).ok()),
        };
        let Some(signal) = signal else {
            let written = match value.get_ref() {
                SignalSpec::Name(name) => format!("{name:?}"),
                SignalSpec::Number(n) => n.to_string(),
            };
            return Err(src.error(
                value.span(),
                label,
                "stop.signal",
                format!("unknown signal {written} (write e.g. \"TERM\", \"SIGTERM\" or 15)"),
            ));
        };
        stop.signal = signal as i32;
    }
    if let Some(value) = &raw.timeout {
        stop.timeout = value.get_ref().0;
    }
    Ok(stop)
}

/// `[restart]` (prefix `""`) or a service's `restart` (prefix `"restart"`) over `base`.
fn restart(
    src: &Source,
    label: &str,
    prefix: &str,
    table: &Spanned<RawRestart>,
    base: &RestartConfig,
) -> Result<RestartConfig> {
    let key = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let raw = table.get_ref();
    let mut restart = base.clone();
    if let Some(value) = &raw.policy {
        restart.policy = choose(
            src,
            label,
            &key("policy"),
            "restart policy",
            value,
            &[
                ("permanent", RestartPolicy::Permanent),
                ("transient", RestartPolicy::Transient),
                ("temporary", RestartPolicy::Temporary),
            ],
        )?;
    }
    if let Some(value) = &raw.backoff {
        restart.backoff = backoff(src, label, &key("backoff"), value, &base.backoff)?;
    }
    if let Some(value) = &raw.reset_after {
        restart.reset_after = value.get_ref().0;
    }
    if let Some(value) = &raw.intensity {
        restart.intensity = intensity(src, label, &key("intensity"), value, Some(base.intensity))?;
    }
    Ok(restart)
}

fn backoff(
    src: &Source,
    label: &str,
    key: &str,
    table: &Spanned<RawBackoff>,
    base: &BackoffConfig,
) -> Result<BackoffConfig> {
    let raw = table.get_ref();
    let duration =
        |value: &Option<Spanned<Dur>>, default| value.as_ref().map_or(default, |v| v.get_ref().0);
    let backoff = BackoffConfig {
        initial: duration(&raw.initial, base.initial),
        max: duration(&raw.max, base.max),
        multiplier: raw
            .multiplier
            .as_ref()
            .map_or(base.multiplier, |v| *v.get_ref()),
        jitter: raw.jitter.as_ref().map_or(base.jitter, |v| *v.get_ref()),
    };
    if let Some(value) = &raw.multiplier {
        if !(value.get_ref().is_finite() && *value.get_ref() >= 1.0) {
            let detail = format!("must be a number of at least 1.0, not {}", value.get_ref());
            return Err(src.error(value.span(), label, &format!("{key}.multiplier"), detail));
        }
    }
    if let Some(value) = &raw.jitter {
        if !(0.0..=1.0).contains(value.get_ref()) {
            let detail = format!("must be from 0.0 to 1.0, not {}", value.get_ref());
            return Err(src.error(value.span(), label, &format!("{key}.jitter"), detail));
        }
    }
    if backoff.max < backoff.initial {
        let (span, field) = match (&raw.max, &raw.initial) {
            (Some(max), _) => (max.span(), "max"),
            (None, Some(initial)) => (initial.span(), "initial"),
            (None, None) => (table.span(), "max"),
        };
        let detail = format!(
            "max ({}) must not be less than initial ({})",
            humantime::format_duration(backoff.max),
            humantime::format_duration(backoff.initial)
        );
        return Err(src.error(span, label, &format!("{key}.{field}"), detail));
    }
    Ok(backoff)
}

/// An intensity; fields missing from `table` come from `base`, or are required.
fn intensity(
    src: &Source,
    label: &str,
    key: &str,
    table: &Spanned<RawIntensity>,
    base: Option<Intensity>,
) -> Result<Intensity> {
    let raw = table.get_ref();
    let max = match (&raw.max, base) {
        (Some(value), _) => *value.get_ref(),
        (None, Some(base)) => base.max,
        (None, None) => {
            return Err(src.error(table.span(), label, &format!("{key}.max"), "is required"))
        }
    };
    let within = match (&raw.within, base) {
        (Some(value), _) => {
            if value.get_ref().0.is_zero() {
                let detail = "must be longer than zero";
                return Err(src.error(value.span(), label, &format!("{key}.within"), detail));
            }
            value.get_ref().0
        }
        (None, Some(base)) => base.within,
        (None, None) => {
            return Err(src.error(table.span(), label, &format!("{key}.within"), "is required"))
        }
    };
    Ok(Intensity { max, within })
}

/// A `ready` table; `ipc` is allowed in an `[[outboard]]` entry only.
fn ready(src: &Source, label: &str, kind: Kind, table: &Spanned<RawReady>) -> Result<ReadyConfig> {
    let raw = table.get_ref();
    if let (Some(value), Kind::Service | Kind::Pool(..)) = (&raw.ipc, kind) {
        let detail = format!(
            "`ipc = true` is only for [[outboard]] children, not a [[{}]]",
            kind.table()
        );
        return Err(src.error(value.span(), label, "ready.ipc", detail));
    }
    for (key, flag) in [("ready.notify", &raw.notify), ("ready.ipc", &raw.ipc)] {
        if let Some(value) = flag.as_ref().filter(|v| !*v.get_ref()) {
            let detail = "can only be true (leave `ready` out for no ready check)";
            return Err(src.error(value.span(), label, key, detail));
        }
    }
    let kinds: Vec<&str> = [
        ("tcp", raw.tcp.is_some()),
        ("delay", raw.delay.is_some()),
        ("notify", raw.notify.is_some()),
        ("ipc", raw.ipc.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, set)| set.then_some(kind))
    .collect();
    if kinds.len() != 1 {
        let choices = match kind {
            Kind::Service | Kind::Pool(..) => "`tcp`, `delay` or `notify`",
            Kind::Outboard => "`tcp`, `delay`, `notify` or `ipc`",
        };
        let detail = if kinds.is_empty() {
            format!("needs one of {choices}")
        } else {
            format!(
                "takes only one of {choices}, not `{}`",
                kinds.join("` and `")
            )
        };
        return Err(src.error(table.span(), label, "ready", detail));
    }
    let timeout = raw
        .timeout
        .as_ref()
        .map_or(DEFAULT_READY_TIMEOUT, |v| v.get_ref().0);
    if let Some(value) = raw.timeout.as_ref().filter(|v| v.get_ref().0.is_zero()) {
        let detail = "must be longer than 0 (a check with no time can never pass)";
        return Err(src.error(value.span(), label, "ready.timeout", detail));
    }
    if let Some(addr) = &raw.tcp {
        tcp_address(src, label, kind, addr)?;
        return Ok(ReadyConfig::Tcp {
            addr: addr.get_ref().clone(),
            timeout,
        });
    }
    if let Some(delay) = &raw.delay {
        if let Some(value) = &raw.timeout {
            let detail = "does not apply to a `delay` check";
            return Err(src.error(value.span(), label, "ready.timeout", detail));
        }
        return Ok(ReadyConfig::Delay {
            delay: delay.get_ref().0,
        });
    }
    if raw.ipc.is_some() {
        return Ok(ReadyConfig::Ipc { timeout });
    }
    Ok(ReadyConfig::Notify { timeout })
}

/// Checks a `ready.tcp` address; a pool's with each end of its ports for `{port}`.
fn tcp_address(src: &Source, label: &str, kind: Kind, addr: &Spanned<String>) -> Result<()> {
    let text = addr.get_ref();
    let samples = match kind {
        Kind::Service | Kind::Outboard => vec![text.clone()],
        Kind::Pool(first, last) => {
            if let Some(found) = unknown_placeholder(text) {
                let detail = unknown_placeholder_detail(found);
                return Err(src.error(addr.span(), label, "ready.tcp", detail));
            }
            [first, last]
                .into_iter()
                .map(|port| expand_placeholders(text, port, SAMPLE_WORKER_ID))
                .collect()
        }
    };
    for expanded in samples {
        if !is_host_port(&expanded) {
            let read_as = if expanded == *text {
                String::new()
            } else {
                format!(" (read as {expanded:?})")
            };
            let detail = format!(
                "invalid address {text:?}{read_as}: expected HOST:PORT with a port from 1 to 65535"
            );
            return Err(src.error(addr.span(), label, "ready.tcp", detail));
        }
    }
    Ok(())
}

/// `host:port`, `[v6]:port`; the port from 1 to 65535.
fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| !ip.is_empty())
    } else {
        !host.is_empty() && !host.contains(':') && !host.contains(char::is_whitespace)
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

fn strategy(src: &Source, label: &str, value: &Spanned<String>) -> Result<Strategy> {
    choose(
        src,
        label,
        "strategy",
        "strategy",
        value,
        &[
            ("one_for_one", Strategy::OneForOne),
            ("one_for_all", Strategy::OneForAll),
            ("rest_for_one", Strategy::RestForOne),
        ],
    )
}

/// One of a fixed set of words.
fn choose<T: Copy>(
    src: &Source,
    label: &str,
    key: &str,
    what: &str,
    value: &Spanned<String>,
    choices: &[(&str, T)],
) -> Result<T> {
    if let Some((_, choice)) = choices.iter().find(|(word, _)| word == value.get_ref()) {
        return Ok(*choice);
    }
    let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
    let detail = format!(
        "unknown {what} {:?} (expected one of: {})",
        value.get_ref(),
        words.join(", ")
    );
    Err(src.error(value.span(), label, key, detail))
}

/// Names are `[A-Za-z0-9_.-]+`, and neither `.` nor `..` (the rule of `warden_supervisors::ActorName`).
fn is_valid_name(name: &str) -> bool {
    warden_supervisors::ActorName::new(name).is_ok()
}

fn name(src: &Source, label: &str, value: &Spanned<String>) -> Result<String> {
    let name = value.get_ref();
    if !is_valid_name(name) {
        let detail = format!(
            "invalid name {name:?}: use letters, digits, `_`, `.` and `-` (not `.` or `..` alone)"
        );
        return Err(src.error(value.span(), label, "name", detail));
    }
    if name.starts_with('_') {
        let detail = format!(
            "invalid name {name:?}: names starting with `_` are reserved for warden (`/_hub`)"
        );
        return Err(src.error(value.span(), label, "name", detail));
    }
    Ok(name.clone())
}

/// A supervisor path: `"app/inner"` or `"/app/inner"` means `/app/inner`; `"/"` the root.
fn parent_path(src: &Source, label: &str, key: &str, value: &Spanned<String>) -> Result<String> {
    let text = value.get_ref();
    if text == "/" {
        return Ok("/".to_string());
    }
    let relative = text.strip_prefix('/').unwrap_or(text);
    if relative.is_empty() || !relative.split('/').all(is_valid_name) {
        let detail = format!(
            "invalid supervisor path {text:?}: write names joined by `/`, such as \"app/inner\", or \"/\" for the root"
        );
        return Err(src.error(value.span(), label, key, detail));
    }
    Ok(format!("/{relative}"))
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// A path from the file: relative to the folder of the config file.
fn resolve(
    src: &Source,
    label: &str,
    key: &str,
    base_dir: &Path,
    value: &Spanned<String>,
) -> Result<PathBuf> {
    if value.get_ref().is_empty() {
        return Err(src.error(value.span(), label, key, "must not be empty"));
    }
    // `components` drops the `.` steps, so "." is the folder itself
    Ok(base_dir.join(value.get_ref()).components().collect())
}

/// Checks names and parents, then hangs every node under its parent in file order.
fn tree(src: &Source, nodes: Vec<Node>) -> Result<Vec<ChildConfig>> {
    // path -> (line, the child)
    let mut seen: HashMap<&str, (usize, &ChildConfig)> = HashMap::new();
    for node in &nodes {
        let line = src.line(node.offset);
        if let Some((first, _)) = seen.insert(node.child.path(), (line, &node.child)) {
            let detail = format!(
                "duplicate name {:?}: {} already has a child with this name (line {first})",
                node.child.name(),
                if node.parent == "/" {
                    "the root"
                } else {
                    &node.parent
                }
            );
            return Err(src.error(node.name_span.clone(), &node.label, "name", detail));
        }
    }

    let supervisors: Vec<(&str, &str)> = nodes
        .iter()
        .filter(|node| matches!(node.child, ChildConfig::Supervisor(_)))
        .map(|node| (node.child.name(), node.parent.as_str()))
        .collect();
    let mut folders: HashSet<&str> = seen
        .iter()
        .filter(|(_, (_, child))| matches!(child, ChildConfig::Supervisor(_)))
        .map(|(path, _)| *path)
        .collect();
    folders.insert("/");
    let links = Links {
        supervisors: &supervisors,
        folders: &folders,
    };
    for node in &nodes {
        let parent = node.parent.as_str();
        let detail = match seen.get(parent) {
            _ if parent == "/" => continue,
            Some((_, ChildConfig::Supervisor(_))) => continue,
            Some((_, ChildConfig::Service(_))) => {
                format!("{parent} is a [[service]], not a supervisor")
            }
            Some((_, ChildConfig::Outboard(_))) => {
                format!("{parent} is an [[outboard]], not a supervisor")
            }
            Some((_, ChildConfig::Pool(_))) => {
                format!("{parent} is a [[pool]], not a supervisor")
            }
            None => {
                let first = match node.child {
                    ChildConfig::Supervisor(_) => supervisors
                        .iter()
                        .position(|(name, p)| *name == node.child.name() && *p == parent),
                    ChildConfig::Service(_) | ChildConfig::Outboard(_) | ChildConfig::Pool(_) => {
                        links.parent_of(parent)
                    }
                };
                let is_supervisor = matches!(node.child, ChildConfig::Supervisor(_));
                match first.and_then(|first| links.cycle(first)) {
                    Some((chain, true)) if is_supervisor => format!("cyclic parent: {chain}"),
                    Some((chain, _)) => {
                        format!("unknown supervisor {parent}: the parents form a cycle ({chain})")
                    }
                    None => unknown_parent(&nodes, &folders, parent),
                }
            }
        };
        return Err(src.error(
            node.parent_span.clone(),
            &node.label,
            node.parent_key,
            detail,
        ));
    }

    let mut by_parent: HashMap<String, Vec<ChildConfig>> = HashMap::new();
    for node in nodes {
        by_parent.entry(node.parent).or_default().push(node.child);
    }
    let top = by_parent.remove("/").unwrap_or_default();
    Ok(attach(top, &mut by_parent))
}

/// Splits a path into the path of its folder and its last name: "/a/b" -> ("/a", "b").
fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", last)) => ("/", last),
        Some((folder, last)) => (folder, last),
        None => ("/", path),
    }
}

/// Parent links by name, to explain a parent path that does not exist: a supervisor
/// and the sibling it names as its parent, inside a folder that does exist.
struct Links<'a> {
    /// (name, parent path) of every supervisor.
    supervisors: &'a [(&'a str, &'a str)],
    /// Paths of every supervisor, and "/".
    folders: &'a HashSet<&'a str>,
}

impl Links<'_> {
    /// The supervisor `path` would name if it were declared beside `path`'s last step:
    /// the one with that name whose own parent lies in the same, existing, folder.
    fn parent_of(&self, path: &str) -> Option<usize> {
        let (folder, last) = split(path);
        if !self.folders.contains(folder) {
            return None;
        }
        self.supervisors
            .iter()
            .position(|(name, parent)| *name == last && split(parent).0 == folder)
    }

    /// Follows parents by name from `first`; when they loop, the loop (`"a -> b -> a"`)
    /// and whether `first` is part of it.
    fn cycle(&self, first: usize) -> Option<(String, bool)> {
        let mut chain = vec![first];
        let mut current = first;
        loop {
            let next = self.parent_of(self.supervisors.get(current)?.1)?;
            if let Some(start) = chain.iter().position(|&i| i == next) {
                let names: Vec<&str> = chain[start..]
                    .iter()
                    .chain(std::iter::once(&next))
                    .filter_map(|&i| self.supervisors.get(i).map(|s| s.0))
                    .collect();
                return Some((names.join(" -> "), start == 0));
            }
            chain.push(next);
            current = next;
        }
    }
}

/// Says `parent` does not exist, with a hint when a well-placed supervisor has its name.
fn unknown_parent(nodes: &[Node], folders: &HashSet<&str>, parent: &str) -> String {
    let (_, last) = split(parent);
    let hint = nodes.iter().find_map(|node| match &node.child {
        ChildConfig::Supervisor(s) if s.name == last && folders.contains(node.parent.as_str()) => {
            Some(s.path.as_str())
        }
        _ => None,
    });
    match hint {
        Some(path) => format!(
            "unknown supervisor {parent} (did you mean {:?}?)",
            path.trim_start_matches('/')
        ),
        None => format!("unknown supervisor {parent}: no [[supervisor]] has this path"),
    }
}

fn attach(
    children: Vec<ChildConfig>,
    by_parent: &mut HashMap<String, Vec<ChildConfig>>,
) -> Vec<ChildConfig> {
    children
        .into_iter()
        .map(|child| match child {
            ChildConfig::Supervisor(mut supervisor) => {
                let own = by_parent.remove(&supervisor.path).unwrap_or_default();
                supervisor.children = attach(own, by_parent);
                ChildConfig::Supervisor(supervisor)
            }
            leaf => leaf,
        })
        .collect()
}
