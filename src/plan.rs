//! Turns a loaded [`Config`] into the supervisor specs that run it.

use nix::sys::signal::Signal;
use std::sync::Arc;

use warden_actors::unit::{launchd::Launchd, systemd::Systemd};
use warden_actors::{
    Cgroups, Handoff, LogSpec, MemoryRegistry, OutboardFactory, OutboardHub, OutboardSpec, Output,
    PoolFactory, PoolHub, PoolSpec, PoolTables, ProcessRecords, ReadyCheck, RunAs, ServiceFactory,
    ServiceSpec, SessionRegistry, TokenSigner, UnitBackend, UnitFactory, WorkerBuilder,
    WorkerTemplate, WorkerTokens,
};
use warden_supervisors::{
    ActorKind, ActorName, ActorPath, BackoffConfig, ChildFactory, ChildSpec, Intensity,
    RestartType, Strategy, SupervisorSpec,
};

use crate::config::{self, ChildConfig, Config, ReadyConfig, ServiceConfig, SupervisorConfig};
use crate::layout::StateLayout;

/// Why a validated config still cannot be run (a value the OS refuses).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlanError {
    path: String,
    message: String,
}

/// What the children of a running warden are wired to: where services record their
/// processes (`None`: nowhere, e.g. for `warden check`), and the hub that routes calls to
/// outboard children.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// The durable process records.
    pub records: Option<Arc<dyn ProcessRecords>>,
    /// The outboard call hub.
    pub hub: Arc<OutboardHub>,
    /// Finds pool managers.
    pub pools: Arc<PoolHub>,
    /// Where pool sessions are kept.
    pub sessions: Arc<dyn SessionRegistry>,
    /// Signs worker tokens (`None`: pools write none).
    pub tokens: Option<Arc<TokenSigner>>,
    /// The pools' worker tables (none: pools persist nothing).
    pub pool_tables: Arc<PoolTables>,
    /// The cgroups services run in (`None`: process groups only).
    pub cgroups: Option<Arc<Cgroups>>,
    /// What a spoke's link serves the hub's verbs with.
    pub spoke_verbs: Arc<crate::hub::spoke::ControllerVerbs>,
    /// Where deploys and give-ups are told (`[[notifier]]`; none by default).
    pub notifiers: warden_actors::notifier::Notifiers,
    /// The key of `POST /webhooks/github` (`[webhooks]`), which a reload re-reads.
    pub webhook_secret: crate::admin::WebhookSecret,
}

impl Default for Wiring {
    fn default() -> Self {
        Self {
            records: None,
            hub: Arc::default(),
            pools: Arc::default(),
            sessions: Arc::new(MemoryRegistry::default()),
            tokens: None,
            pool_tables: Arc::new(PoolTables::none()),
            cgroups: None,
            spoke_verbs: Arc::default(),
            notifiers: warden_actors::notifier::Notifiers::none(),
            webhook_secret: crate::admin::WebhookSecret::default(),
        }
    }
}

/// The root supervisor's spec for `config`.
pub fn root_spec(config: &Config, wiring: &Wiring) -> Result<SupervisorSpec, PlanError> {
    let mut spec = supervisor_spec(config, &config.root, &ActorPath::root(), wiring)?;
    if let Some(spoke) = &config.spoke {
        spec.children.push(link_child(spoke, wiring)?);
    }
    Ok(spec)
}

/// The name of a spoke's link to its hub, a child of the root (`/_hub`).
pub const LINK_NAME: &str = "_hub";

/// `/_hub`, last among the root's children (so an unreachable hub never holds up the
/// start of the tree). It reconnects through the supervisor's backoff for ever: a lost
/// hub is never the link's fault, so no intensity makes it give up; a refusal does.
pub fn link_child(spoke: &config::SpokeConfig, wiring: &Wiring) -> Result<ChildSpec, PlanError> {
    let name = name(LINK_NAME, &ActorPath::root())?;
    let spec = warden_actors::LinkSpec {
        hub: spoke.hub.clone(),
        name: spoke.name.clone(),
        join_token_file: spoke.join_token_file.clone(),
        credential_file: spoke.credential_file.clone(),
        ca_roots: spoke.ca_roots.clone(),
        policy: warden_actors::link::policy::SpokePolicy::new(
            spoke.allow.clone(),
            spoke.paths.clone(),
        ),
        verbs: wiring.spoke_verbs.clone(),
    };
    Ok(ChildSpec::new(name, warden_actors::LinkFactory::new(spec))
        .backoff(BackoffConfig {
            initial: std::time::Duration::from_millis(200),
            max: std::time::Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.5,
        })
        .intensity(Intensity {
            max: u32::MAX,
            within: std::time::Duration::from_millis(1),
        }))
}

fn supervisor_spec(
    config: &Config,
    sup: &SupervisorConfig,
    path: &ActorPath,
    wiring: &Wiring,
) -> Result<SupervisorSpec, PlanError> {
    let mut children = Vec::with_capacity(sup.children.len());
    for child in &sup.children {
        children.push(child_spec(config, child, path, wiring)?);
    }
    Ok(SupervisorSpec {
        strategy: supervisor_settings(sup).0,
        intensity: supervisor_settings(sup).1,
        children,
    })
}

/// The spec of one child (a service, or a supervisor with its subtree) under `parent`.
pub fn child_spec(
    config: &Config,
    child: &ChildConfig,
    parent: &ActorPath,
    wiring: &Wiring,
) -> Result<ChildSpec, PlanError> {
    let layout = StateLayout::new(&config.state_dir);
    match child {
        ChildConfig::Supervisor(inner) => {
            let name = name(&inner.name, parent)?;
            let inner_path = parent.child(&name);
            let spec = supervisor_spec(config, inner, &inner_path, wiring)?;
            Ok(ChildSpec::supervisor(name, spec))
        }
        ChildConfig::Service(service) => service_child(config, &layout, service, parent, wiring),
        ChildConfig::Outboard(outboard) => {
            outboard_child(config, &layout, outboard, parent, wiring)
        }
        ChildConfig::Pool(pool) => pool_child(config, pool, parent, wiring),
    }
}

/// The strategy and intensity of a supervisor entry, as the runtime takes them.
pub fn supervisor_settings(sup: &SupervisorConfig) -> (Strategy, Option<Intensity>) {
    (strategy(sup.strategy), sup.intensity.map(intensity))
}

fn name(text: &str, parent: &ActorPath) -> Result<ActorName, PlanError> {
    ActorName::new(text).map_err(|e| PlanError {
        path: parent.to_string(),
        message: e.to_string(),
    })
}

fn service_child(
    config: &Config,
    layout: &StateLayout,
    service: &ServiceConfig,
    parent: &ActorPath,
    wiring: &Wiring,
) -> Result<ChildSpec, PlanError> {
    let name = name(&service.name, parent)?;
    let path = parent.child(&name);
    let stop_timeout = service.stop.timeout;
    let backend: Arc<dyn UnitBackend> = match &service.backend {
        config::Backend::Process => {
            let spec = service_spec(config, layout, service, &path)?;
            return service_child_with(config, service, parent, service_factory(spec, wiring));
        }
        config::Backend::Systemd { unit, user_mode } => Arc::new(Systemd {
            unit: unit.clone(),
            user_mode: *user_mode,
        }),
        config::Backend::Launchd { label, user_mode } => Arc::new(Launchd {
            label: label.clone(),
            user_mode: *user_mode,
        }),
    };
    service_child_with(
        config,
        service,
        parent,
        UnitFactory::new(backend, stop_timeout),
    )
}

/// The child spec of `service` started by `factory`: its name and restart policy.
fn service_child_with(
    _config: &Config,
    service: &ServiceConfig,
    parent: &ActorPath,
    factory: impl ChildFactory,
) -> Result<ChildSpec, PlanError> {
    let name = name(&service.name, parent)?;
    let restart = &service.restart;
    Ok(ChildSpec::new(name, factory)
        .restart(match restart.policy {
            config::RestartPolicy::Permanent => RestartType::Permanent,
            config::RestartPolicy::Transient => RestartType::Transient,
            config::RestartPolicy::Temporary => RestartType::Temporary,
        })
        .backoff(BackoffConfig {
            initial: restart.backoff.initial,
            max: restart.backoff.max,
            multiplier: restart.backoff.multiplier,
            jitter: restart.backoff.jitter,
        })
        .reset_after(restart.reset_after)
        .intensity(intensity(restart.intensity)))
}

/// How to run the process of `service` at `path`.
fn service_spec(
    config: &Config,
    layout: &StateLayout,
    service: &ServiceConfig,
    path: &ActorPath,
) -> Result<ServiceSpec, PlanError> {
    let err = |message: String| PlanError {
        path: path.to_string(),
        message,
    };
    let mut spec =
        ServiceSpec::new(service.command.iter().cloned()).map_err(|e| err(e.to_string()))?;
    spec.env = service.env.clone();
    spec.cwd = Some(service.cwd.clone());
    spec.stop_signal =
        Signal::try_from(service.stop.signal).map_err(|e| err(format!("stop signal: {e}")))?;
    spec.stop_timeout = service.stop.timeout;
    spec.ready = service.ready.as_ref().and_then(|r| match r {
        ReadyConfig::Tcp { addr, timeout } => Some(ReadyCheck::Tcp {
            addr: addr.clone(),
            timeout: *timeout,
        }),
        ReadyConfig::Delay { delay } => Some(ReadyCheck::Delay(*delay)),
        ReadyConfig::Notify { timeout } => Some(ReadyCheck::Notify {
            socket_dir: layout.notify_dir(),
            timeout: *timeout,
        }),
        // Readiness over IPC is the outboard link's, not the process's.
        ReadyConfig::Ipc { .. } => None,
    });
    spec.output = Output::Log(LogSpec {
        path: layout.log_file(path),
        max_bytes: config.logs.max_bytes,
        keep: config.logs.keep,
    });
    spec.die_with_warden = config.runtime.on_exit == config::OnExit::Stop;
    spec.run_as = service.run_as.clone();
    if matches!(spec.ready, Some(ReadyCheck::Notify { .. })) {
        // The notify socket goes in the child's handoff folder.
        hand_off(&mut spec, layout, path, None);
    }
    Ok(spec)
}

/// Gives the child at `path` its handoff folder (see [`Handoff`]), and names `file` of it
/// in the variable `var` of its environment, if given.
fn hand_off(
    spec: &mut ServiceSpec,
    layout: &StateLayout,
    path: &ActorPath,
    named: Option<(&str, &str)>,
) {
    let handoff = spec.handoff.get_or_insert_with(|| Handoff {
        dir: layout.handoff_dir(path),
        env: Vec::new(),
    });
    if let Some((var, file)) = named {
        handoff.env.push((var.to_owned(), file.to_owned()));
    }
}

fn service_factory(spec: ServiceSpec, wiring: &Wiring) -> ServiceFactory {
    let factory = ServiceFactory::new(spec).with_cgroups(wiring.cgroups.clone());
    match &wiring.records {
        Some(records) => factory.with_records(records.clone()),
        None => factory,
    }
}

fn outboard_child(
    config: &Config,
    layout: &StateLayout,
    outboard: &config::OutboardConfig,
    parent: &ActorPath,
    wiring: &Wiring,
) -> Result<ChildSpec, PlanError> {
    let service = &outboard.service;
    let name = name(&service.name, parent)?;
    let path = parent.child(&name);
    let config_file = layout.outboard_config(&path);
    let base = service_child(config, layout, service, parent, wiring)?;
    let spec = OutboardSpec {
        heartbeat: outboard.heartbeat,
        missed: outboard.missed,
        version: outboard.version,
        ready_timeout: match &service.ready {
            Some(ReadyConfig::Ipc { timeout }) => Some(*timeout),
            _ => None,
        },
        config_file,
        socket: layout.outboard_socket(&path),
        stop_timeout: service.stop.timeout,
        owner: service.run_as.as_ref().map(RunAs::file_owner),
    };
    let mut process_spec = service_spec(config, layout, service, &path)?;
    hand_off(
        &mut process_spec,
        layout,
        &path,
        Some((
            warden_supervisors::ipc::CONFIG_ENV,
            crate::layout::OUTBOARD_CONFIG_FILE,
        )),
    );
    let factory = OutboardFactory::new(
        service_factory(process_spec, wiring),
        spec,
        wiring.hub.clone(),
    );
    Ok(ChildSpec {
        factory: Arc::new(factory),
        ..base
    })
}

/// A pool: its workers are built from the pool's entry with `{port}` and `{worker_id}`
/// filled in (also given as `PORT` and `WARDEN_WORKER_ID`).
fn pool_child(
    config: &Config,
    pool: &config::PoolConfig,
    parent: &ActorPath,
    wiring: &Wiring,
) -> Result<ChildSpec, PlanError> {
    let name = name(&pool.name, parent)?;
    let entry = pool.clone();
    let owner = config.clone();
    let records = wiring.clone();
    let build: WorkerBuilder = Arc::new(
        move |worker: &ActorPath, template: &WorkerTemplate, port: u16| {
            // A template given later (a rollout) is held to the loader's own rules.
            config::check_command(&template.command, true).map_err(|e| format!("command: {e}"))?;
            for (name, value) in &template.env {
                config::check_env_var(name, value, true)
                    .map_err(|e| format!("env variable {name:?}: {e}"))?;
            }
            let id = worker.name();
            let fill = |text: &str| config::expand_placeholders(text, port, id);
            let mut env: Vec<(String, String)> = template
                .env
                .iter()
                .map(|(k, v)| (k.clone(), fill(v)))
                .collect();
            env.push(("PORT".to_owned(), port.to_string()));
            env.push(("WARDEN_WORKER_ID".to_owned(), id.to_owned()));

            let service = ServiceConfig {
                name: id.to_owned(),
                path: worker.to_string(),
                line: entry.line,
                command: template.command.iter().map(|c| fill(c)).collect(),
                cwd: entry.cwd.clone(),
                run_as: entry.run_as.clone(),
                env,
                stop: entry.stop.clone(),
                restart: entry.restart.clone(),
                ready: entry.ready.clone().map(|ready| match ready {
                    ReadyConfig::Tcp { addr, timeout } => ReadyConfig::Tcp {
                        addr: fill(&addr),
                        timeout,
                    },
                    other => other,
                }),
                backend: config::Backend::Process,
            };
            let layout = StateLayout::new(&owner.state_dir);
            let mut spec =
                service_spec(&owner, &layout, &service, worker).map_err(|e| e.to_string())?;
            if records.tokens.is_some() {
                hand_off(
                    &mut spec,
                    &layout,
                    worker,
                    Some(("WARDEN_WORKER_TOKEN_FILE", crate::layout::WORKER_TOKEN_FILE)),
                );
            }
            let parent = worker.parent().unwrap_or_else(ActorPath::root);
            let child = service_child_with(
                &owner,
                &service,
                &parent,
                service_factory(spec, &records).with_kind(ActorKind::Worker),
            )
            .map_err(|e| e.to_string())?;
            Ok(child)
        },
    );
    let start_timeout = match &pool.ready {
        Some(
            ReadyConfig::Tcp { timeout, .. }
            | ReadyConfig::Notify { timeout }
            | ReadyConfig::Ipc { timeout },
        ) => timeout.saturating_add(std::time::Duration::from_secs(5)),
        Some(ReadyConfig::Delay { delay }) => {
            delay.saturating_add(std::time::Duration::from_secs(5))
        }
        None => std::time::Duration::from_secs(30),
    };
    let spec = PoolSpec {
        template: WorkerTemplate {
            command: pool.command.clone(),
            env: pool.env.clone(),
        },
        build,
        ports: pool.ports.clone(),
        min: pool.min,
        max: pool.max,
        sessions_per_worker: pool.sessions_per_worker,
        idle_timeout: pool.idle_timeout,
        start_timeout,
        tokens: wiring.tokens.clone().map(|signer| {
            let layout = StateLayout::new(&config.state_dir);
            WorkerTokens {
                signer,
                file: Arc::new(move |worker: &ActorPath| layout.worker_token(worker)),
                ttl: pool.token_ttl,
                owner: pool.run_as.as_ref().map(RunAs::file_owner),
            }
        }),
        rollout: pool.rollout,
    };
    Ok(ChildSpec::new(
        name,
        PoolFactory::new(spec, wiring.pools.clone(), wiring.sessions.clone())
            .with_tables(wiring.pool_tables.clone(), wiring.records.clone()),
    ))
}

fn strategy(s: config::Strategy) -> Strategy {
    match s {
        config::Strategy::OneForOne => Strategy::OneForOne,
        config::Strategy::OneForAll => Strategy::OneForAll,
        config::Strategy::RestForOne => Strategy::RestForOne,
    }
}

fn intensity(i: config::Intensity) -> Intensity {
    Intensity {
        max: i.max,
        within: i.within,
    }
}

/// Counts the actors below the root.
pub fn count_actors(sup: &SupervisorConfig) -> usize {
    sup.children
        .iter()
        .map(|c| match c {
            ChildConfig::Supervisor(s) => 1 + count_actors(s),
            ChildConfig::Service(_) | ChildConfig::Outboard(_) | ChildConfig::Pool(_) => 1,
        })
        .sum()
}
