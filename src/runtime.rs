//! `warden up`: the admin API, the tree of a config file, and the signals that stop it.

use std::sync::Arc;

use actix::Actor as _;
use anyhow::Context as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use warden_actors::notifier::Notifiers;
use warden_actors::{Cgroups, ProcessRecords as _};
use warden_supervisors::ActorTree;

use crate::admin::{self, AdminState};
use crate::config::{AdminTransport, CgroupMode, Config, OnExit};
use crate::control::protocol::Request;
use crate::control::{socket, Controller, ControllerConfig, Liveness};
use crate::embed::RunningTree;
use crate::holder::BOUND_FD_ENV;
use crate::layout::StateLayout;
use crate::plan;
use crate::reaper;
use crate::reexec::{self, Handover, Inherited};
use crate::reload::Reloader;
use crate::state::{Recovered, StateLock, StateStore};
use crate::token::{AdminToken, ApiTokens};
use crate::watchdog::Watchdog;

/// Runs the tree of `config` in the foreground until SIGTERM or SIGINT, then stops it
/// gracefully (reverse order, stop timeouts, SIGKILL to process groups) and returns.
/// SIGHUP reloads the config file; SIGUSR1 drains; SIGUSR2 re-executes the binary on disk
/// in place (see [`reexec`]).
pub fn up(config: Config) -> anyhow::Result<()> {
    up_with(config, false)
}

/// [`up`], optionally `passive`: the admin API and the control socket answer, but no
/// child is started (no background work) until `POST /api/v1/admin/activate` — for a new
/// warden taking over from an old one that shares its pools' sessions through Redis.
pub fn up_with(config: Config, passive: bool) -> anyhow::Result<()> {
    // A bound holder's connection comes first: a refused client must hear why at once.
    let bound_connection = take_bound_connection()?;
    // What a warden that re-executed itself handed over (the lock first: never free).
    let inherited = Inherited::take().map_err(anyhow::Error::msg)?;
    let (inherited_admin, inherited_control, inherited_watchdog, inherited_lock) = match inherited {
        Some(i) => (Some(i.admin), Some(i.control), i.watchdog, Some(i.lock)),
        None => (None, None, None, None),
    };
    if inherited_lock.is_some() {
        tracing::info!("re-executed in place: adopting the children of this same process");
    }
    let binary = reexec::binary_on_disk().context("cannot find warden's own binary")?;
    let layout = StateLayout::new(&config.state_dir);
    layout.prepare().context("state_dir refused")?;
    raise_open_files_limit();
    let lock = match inherited_lock {
        Some(file) => StateLock::inherit(&config.state_dir, file),
        None => StateLock::acquire(&config.state_dir),
    }
    .map_err(anyhow::Error::msg)?;
    match reaper::start() {
        Ok(role) => tracing::info!(?role, "reaping orphans reparented to warden"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot become a child subreaper: orphans of services go to init")
        }
    }
    let admin_token = AdminToken::load_or_create(&config.admin.token_file)?;
    let read_token = match &config.admin.read_token_file {
        Some(file) => Some(AdminToken::load_or_create(file)?),
        None => None,
    };
    let tokens = ApiTokens::new(admin_token, read_token).map_err(anyhow::Error::msg)?;
    // Read again (the loader checked the files): the files may have changed since.
    let tls = match &config.admin.transport {
        AdminTransport::Https(files) => Some(crate::admin_tls::server_config(files)?),
        AdminTransport::Http => None,
    };
    let (store, recovered) = StateStore::open(&config.state_dir).with_context(|| {
        format!(
            "cannot open the state store in {}",
            config.state_dir.display()
        )
    })?;
    if recovered != Recovered::default() {
        tracing::info!(
            adoptable = recovered.adoptable,
            stale = recovered.stale,
            orphans_killed = recovered.orphans_killed,
            "recovered the state of an earlier warden"
        );
    }
    let store = Arc::new(store);
    let cgroups = containment(&config, store.instance().as_str());
    if let Some(cgroups) = &cgroups {
        let mut paths = Vec::new();
        process_paths(&config.root, &mut paths);
        cgroups.create_ahead(paths);
    }
    let signer = warden_actors::TokenSigner::load_or_create(&layout.token_key())
        .with_context(|| format!("worker token key {}", layout.token_key().display()))?;
    let pool_tables = warden_actors::PoolTables::open(&layout.pool_tables_dir())
        .with_context(|| format!("pool tables in {}", layout.pool_tables_dir().display()))?;
    let mut wiring = plan::Wiring {
        records: Some(store.clone()),
        tokens: Some(Arc::new(signer)),
        pool_tables: Arc::new(pool_tables),
        cgroups: cgroups.clone(),
        ..plan::Wiring::default()
    };
    if let Some(url) = &config.cluster.redis_url {
        let registry = warden_actors::RedisRegistry::connect(url)
            .map_err(anyhow::Error::msg)?
            .with_instance(config.state_dir.to_string_lossy());
        tracing::info!(
            url = registry.url(),
            "pool sessions are shared through Redis"
        );
        wiring.sessions = Arc::new(registry);
    }
    if !config.notifiers.is_empty() {
        let specs = config.notifiers.iter().map(|n| n.spec.clone()).collect();
        wiring.notifiers = Notifiers::start(specs).context("cannot start the notifiers")?;
        tracing::info!(count = config.notifiers.len(), "notifiers ready");
    }
    let notifiers = wiring.notifiers.clone();
    let spec = plan::root_spec(&config, &wiring)?;
    let hub = match &config.hub {
        Some(hub) => Some(Arc::new(
            crate::hub::Hub::open(&config.state_dir, hub.token_ttl)
                .context("cannot open the hub's store")?,
        )),
        None => None,
    };
    // Read again (the loader checked it): the file may have changed since.
    let webhook_secret = match &config.webhooks {
        Some(webhooks) => admin::WebhookSecret::new(Some(
            &crate::config::read_webhook_secret(&webhooks.github_secret_file)
                .map_err(anyhow::Error::msg)?,
        )),
        None => admin::WebhookSecret::default(),
    };
    wiring.webhook_secret = webhook_secret.clone();
    // Signals are taken before anything starts, so none is lost in between.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
        .context("cannot install signal handlers")?;
    let signals_handle = signals.handle();
    // Signals that arrived during a reexec were held (blocked) until the handlers exist.
    reexec::unblock_handled_signals();
    let inherited_watchdog = inherited_watchdog.map(|(pipe, pid)| Watchdog::inherit(pipe, pid));
    let watchdog = match (config.runtime.on_exit, inherited_watchdog) {
        (OnExit::Stop, Some(watchdog)) => Some(watchdog),
        (OnExit::Keep, Some(watchdog)) => {
            watchdog.disarm();
            None
        }
        (OnExit::Stop, None) => {
            let watchdog = Watchdog::start(
                std::path::Path::new("/proc/self/exe"),
                cgroups.as_deref().map(Cgroups::dir),
                &store.marker(),
            )
            .context("cannot start the watchdog of on_exit = \"stop\"")?;
            tracing::info!(
                pid = watchdog.pid(),
                "on_exit = \"stop\": a watchdog kills every service process if warden dies"
            );
            Some(watchdog)
        }
        (OnExit::Keep, None) => None,
    };
    let watchdog_pipe = watchdog
        .as_ref()
        .and_then(|w| w.pipe_fd().map(|fd| (fd, w.pid())));
    let admin_listener = match inherited_admin {
        Some(listener) if same_address(&listener, config.admin.listen) => listener,
        _ => bind_admin(config.admin.listen)
            .with_context(|| format!("admin API: cannot listen on {}", config.admin.listen))?,
    };
    let handover_admin = admin_listener
        .try_clone()
        .context("admin API: cannot keep its socket for a reexec")?;
    let handover_lock = lock
        .file()
        .try_clone()
        .context("cannot keep the state_dir lock for a reexec")?;
    let tree_cgroups = cgroups.clone();
    // This thread runs the supervisors (the System's arbiter): it gets a larger share of
    // the CPU, which nothing it creates inherits.
    match crate::priority::raise_this_thread() {
        Ok(nice) => tracing::info!(
            nice,
            "the supervision thread runs at a raised priority (its children at nice 0)"
        ),
        Err(reason) => tracing::info!(%reason, "the supervision thread runs at warden's priority"),
    }
    let system = actix::System::new();
    let result = system.block_on(async move {
        let (activate_tx, mut activate_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (reexec_tx, mut reexec_rx) = tokio::sync::mpsc::unbounded_channel::<reexec::Order>();
        let (checked_tx, mut checked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let reexec_busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tree = Arc::new(ActorTree::new());
        // Actors that give up are told, from a thread of the notifiers' own.
        notifiers
            .watch_failures(&tree)
            .context("cannot start the notifiers' watch of the tree")?;
        let socket_path = layout.control_socket();
        let liveness = Arc::new(Liveness::new(passive));
        let deploys = warden_actors::Deploys::start(
            tree.clone(),
            &config.state_dir,
            wiring.cgroups.clone(),
            store.marker(),
            config.deploy_lanes(),
        )
            .context("cannot start the deploys")?;
        // Deploys started, succeeded and failed are told, from a thread of the notifiers'.
        notifiers
            .follow_deploys(deploys.subscribe())
            .context("cannot start the notifiers' watch of the deploys")?;
        if bound_connection.is_none() {
            deploys.set_reexec(reexec_hook(reexec_tx.clone()));
        }
        // The reloader keeps the config (to compare a reloaded one with); the rest of
        // this block needs only these two of it, so no second copy of 1,000 services'
        // settings stays resident (~0.5 MiB).
        let (admin_listen, config_path) = (config.admin.listen, config.path.clone());
        let controller = Controller::new(ControllerConfig {
            tree: tree.clone(),
            layout,
            reloader: Some(Reloader::new(config, wiring.clone())),
            hub: wiring.hub.clone(),
            pools: wiring.pools.clone(),
            tokens: wiring.tokens.clone(),
            activate: passive.then(|| activate_tx.clone()),
            // A bound holder ends with its parent: nothing to upgrade in place.
            reexec: bound_connection.is_none().then(|| reexec_tx.clone()),
            liveness: liveness.clone(),
            deploys: Some(deploys.clone()),
            notifiers: notifiers.clone(),
        })
        .start();
        wiring.spoke_verbs.set(controller.clone());
        let handover_control = socket::serve(&socket_path, controller.clone(), inherited_control)
            .with_context(|| format!("control socket: cannot listen on {}", socket_path.display()))?;
        let handover = Handover {
            admin: handover_admin.into(),
            control: handover_control,
            lock: handover_lock.into(),
            watchdog: watchdog_pipe,
        };
        let state = AdminState {
            tree: tree.clone(),
            tokens,
            controller: controller.clone(),
            liveness,
            listing: Arc::default(),
            hub,
            deploys: Some(deploys),
            webhook_secret,
        };
        let https = tls.is_some();
        let (server, bound) = admin::serve(admin_listener, state, tls)
            .with_context(|| format!("admin API: cannot listen on {admin_listen}"))?;
        let server_handle = server.handle();
        actix_rt::spawn(server);
        let scheme = if https { "https" } else { "http" };
        tracing::info!(listen = %bound, scheme, config = %config_path.display(), "admin API listening");
        if !https && !bound.ip().to_canonical().is_loopback() {
            tracing::warn!(listen = %bound, "insecure = true: the admin API is plain HTTP on a non-loopback address; its token crosses the network in the clear");
        }

        let (signal_tx, mut signal_rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("warden-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal_tx.send(signal).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the signal thread")?;

        let (parent_gone_tx, mut parent_gone) = tokio::sync::mpsc::unbounded_channel::<()>();
        if let Some(stream) = bound_connection {
            serve_bound(stream, controller.clone(), parent_gone_tx)?;
        }
        if passive {
            tracing::info!("passive: waiting for POST /api/v1/admin/activate before starting anything");
            tokio::select! {
                Some(()) = activate_rx.recv() => tracing::info!("activated: starting the tree"),
                signal = signal_rx.recv() => {
                    tracing::info!(signal = signal.map(warden_supervisors::signal_name), "stopping (never activated)");
                    server_handle.stop(true).await;
                    let _ = std::fs::remove_file(&socket_path);
                    return anyhow::Ok(());
                }
            }
        }
        let running = RunningTree::start_in(tree.clone(), &spec);
        let mut started = false;
        loop {
            tokio::select! {
                () = running.root().wait_ready(), if !started => {
                    started = true;
                    // Every child has been started and has adopted what it could: what is
                    // left of an earlier warden's processes belongs to nobody.
                    let killed = store.kill_unclaimed();
                    if killed > 0 {
                        tracing::warn!(killed, "killed processes of an earlier warden that no actor claims");
                    }
                    crate::sd_notify::tell("READY=1\nSTATUS=every child of the tree started");
                }
                Some(order) = reexec_rx.recv() => {
                    check_new_binary(order, &binary, &config_path, &reexec_busy, &checked_tx);
                }
                Some(()) = checked_rx.recv() => {
                    // The answer is on its way; what the log threads read is written first
                    // (what they did not read waits in the children's pipes).
                    warden_actors::pause_logs(LOG_FLUSH).await;
                    tracing::info!(binary = %binary.display(), "re-executing in place: every child keeps running");
                    let args = reexec::arguments();
                    // No spawn is in progress while the process image is replaced.
                    let error = warden_actors::spawned::with_locked(|_| {
                        // Every child spawned so far is on disk before the new image
                        // reads the records (none is spawned meanwhile: the lock).
                        if !store.flush(RECORDS_FLUSH) {
                            tracing::warn!("reexec: process records still queued; a child missing from them is killed as an orphan and started again");
                        }
                        reexec::exec(&binary, &args, &handover)
                    });
                    warden_actors::resume_logs();
                    reexec_busy.store(false, std::sync::atomic::Ordering::SeqCst);
                    tracing::error!(binary = %binary.display(), error = %error, "reexec: exec failed; this warden runs on");
                }
                Some(()) = parent_gone.recv() => {
                    tracing::warn!("the process this warden is bound to is gone: stopping the tree");
                    let graceful = tokio::time::timeout(BOUND_STOP, running.shutdown()).await;
                    if graceful.is_err() {
                        kill_every_group(&tree);
                        if let Some(cgroups) = &tree_cgroups {
                            let _ = cgroups.kill_all();
                        }
                    }
                    warden_actors::flush_logs(BOUND_LOG_FLUSH).await;
                    server_handle.stop(false).await;
                    let _ = std::fs::remove_file(&socket_path);
                    return anyhow::Ok(());
                }
                signal = signal_rx.recv() => match signal {
                    Some(SIGHUP) => {
                        tracing::info!("SIGHUP: reloading the config");
                        match controller.send(Request::Reload).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(failure)) => tracing::error!(error = %failure, "reload refused"),
                            Err(_) => tracing::error!("reload: the controller is gone"),
                        }
                    }
                    Some(SIGUSR1) => {
                        let _ = controller.send(Request::Drain).await;
                    }
                    Some(SIGUSR2) => {
                        tracing::info!("SIGUSR2: re-executing the binary on disk");
                        let (reply, answer) = tokio::sync::oneshot::channel();
                        let _ = reexec_tx.send(reexec::Order { reply });
                        actix_rt::spawn(async move {
                            if let Ok(Err(failure)) = answer.await {
                                tracing::error!(error = %failure, "SIGUSR2: reexec refused");
                            }
                        });
                    }
                    other => {
                        tracing::info!(signal = other.map(warden_supervisors::signal_name), "stopping the tree");
                        break;
                    }
                },
                end = running.root().ended() => {
                    // The runtime's tasks (each run's stop-on-drop) may never get to run
                    // again: every process group of the tree is killed here and now.
                    kill_every_group(&tree);
                    warden_actors::flush_logs(LOG_FLUSH).await;
                    server_handle.stop(true).await;
                    anyhow::bail!("the root supervisor ended unexpectedly ({end}); its children were killed");
                }
            }
        }
        crate::sd_notify::tell("STOPPING=1");
        let shutdown = running.shutdown();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(again) = signal_rx.recv() => {
                    if matches!(again, SIGTERM | SIGINT) {
                        tracing::warn!(signal = %warden_supervisors::signal_name(again), "already stopping: children get their stop timeouts, then SIGKILL");
                    }
                }
            }
        }
        // Every child is gone: their last output is in pipes and the log writer's queue.
        warden_actors::flush_logs(LOG_FLUSH).await;
        // Their records' removals are queued on the records thread.
        let records = store.clone();
        let _ = tokio::task::spawn_blocking(move || records.flush(RECORDS_FLUSH)).await;
        // What the notifiers were told before the stop is posted (or given up on) first.
        if !notifiers.flush(NOTIFY_FLUSH).await {
            tracing::warn!("stopping with notifications still queued (their posts did not finish in time)");
        }
        server_handle.stop(true).await;
        let _ = std::fs::remove_file(&socket_path);
        tracing::info!("stopped");
        anyhow::Ok(())
    });
    signals_handle.close();
    // The tree is stopped (or never started): nothing for the watchdog to kill.
    if let Some(watchdog) = watchdog {
        watchdog.disarm();
    }
    if let Some(cgroups) = &cgroups {
        cgroups.remove_empty();
    }
    result
}

/// The cgroups services run in, per `[runtime] cgroup`; says at start which containment
/// this warden uses.
fn containment(config: &Config, instance: &str) -> Option<Arc<Cgroups>> {
    match config.runtime.cgroup {
        CgroupMode::Off => {
            tracing::info!("containment: process groups ([runtime] cgroup = \"off\")");
            None
        }
        CgroupMode::Auto => match Cgroups::setup(instance) {
            Ok(cgroups) => {
                tracing::info!(cgroup = %cgroups.dir().display(), "containment: a cgroup v2 per service");
                Some(Arc::new(cgroups))
            }
            Err(reason) => {
                tracing::info!(%reason, "containment: process groups (no writable cgroup v2 hierarchy)");
                None
            }
        },
    }
}

/// The paths of the children of `supervisor` (and of its nested supervisors) that warden
/// spawns itself, in file order: those whose cgroups are made ahead of their first start.
fn process_paths(
    supervisor: &crate::config::SupervisorConfig,
    out: &mut Vec<warden_supervisors::ActorPath>,
) {
    use crate::config::{Backend, ChildConfig};
    for child in &supervisor.children {
        let service = match child {
            ChildConfig::Supervisor(nested) => {
                process_paths(nested, out);
                continue;
            }
            ChildConfig::Service(service) => service,
            ChildConfig::Outboard(outboard) => &outboard.service,
            ChildConfig::Pool(_) => continue,
        };
        if matches!(service.backend, Backend::Process) {
            if let Ok(path) = warden_supervisors::ActorPath::parse(&service.path) {
                out.push(path);
            }
        }
    }
}

/// How long a stopping warden waits for its notifiers to post what they were told.
const NOTIFY_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a bound holder whose parent died gives its tree to stop gracefully before
/// SIGKILLing every process group (the whole exit stays within 2 s).
const BOUND_STOP: std::time::Duration = std::time::Duration::from_millis(1500);

/// How long a stopped tree's last output may take to reach the log files (drains reading
/// pipes to their end, then the writer's queue of at most 4 MiB) before warden exits
/// without it.
const LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a reexec or a stopping warden waits for the queued process records.
const RECORDS_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// [`LOG_FLUSH`] for a bound holder, which exits within 2 s of its parent's death.
const BOUND_LOG_FLUSH: std::time::Duration = std::time::Duration::from_millis(300);

/// The admin API's listening socket (bound here rather than by actix, so that it can be
/// handed over to a re-executed warden), with actix's backlog of 2048 pending connections.
fn bind_admin(listen: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd as _;
    let listener = std::net::TcpListener::bind(listen)?;
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 2048) };
    Ok(listener)
}

/// Whether `listener` (handed over by a re-exec) listens where the config says (any port
/// when the config says 0).
fn same_address(listener: &std::net::TcpListener, wanted: std::net::SocketAddr) -> bool {
    listener.local_addr().is_ok_and(|bound| {
        bound.ip() == wanted.ip() && (wanted.port() == 0 || bound.port() == wanted.port())
    })
}

/// How a `[self]` deploy asks for the reexec that ends it: an order to `warden up`'s loop,
/// answered once the new binary passed its preflight.
fn reexec_hook(
    orders: tokio::sync::mpsc::UnboundedSender<reexec::Order>,
) -> warden_actors::deploy::ReexecHook {
    Arc::new(move || {
        let orders = orders.clone();
        Box::pin(async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            orders
                .send(reexec::Order { reply })
                .map_err(|_| "warden is stopping".to_owned())?;
            match answer.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(failure)) => Err(failure.message),
                Err(_) => Err("the reexec was not answered".to_owned()),
            }
        })
    })
}

/// How long warden lets the answer to a reexec request reach its client before the exec
/// closes the connection.
const REEXEC_ANSWER: std::time::Duration = std::time::Duration::from_millis(50);

/// Checks the binary on disk off the supervision thread (one reexec at a time): answers
/// `order` with what failed, or with the version about to run and then tells the loop
/// through `checked` to exec.
fn check_new_binary(
    order: reexec::Order,
    binary: &std::path::Path,
    config: &std::path::Path,
    busy: &Arc<std::sync::atomic::AtomicBool>,
    checked: &tokio::sync::mpsc::UnboundedSender<()>,
) {
    use crate::control::protocol::{Failure, FailureKind, Response};
    use std::sync::atomic::Ordering;
    if busy.swap(true, Ordering::SeqCst) {
        let _ = order.reply.send(Err(Failure::new(
            FailureKind::Conflict,
            "a reexec is already in progress",
        )));
        return;
    }
    let (binary, config) = (binary.to_owned(), config.to_owned());
    let (busy, checked) = (busy.clone(), checked.clone());
    actix_rt::spawn(async move {
        let shown = binary.display().to_string();
        let result = tokio::task::spawn_blocking(move || {
            reexec::preflight(&binary, &config, reexec::PREFLIGHT_DEADLINE)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the preflight check panicked: {e}")));
        match result {
            Ok(version) => {
                tracing::info!(binary = %shown, %version, "reexec: the new binary runs and accepts the config");
                let _ = order.reply.send(Ok(Response::Reexecuting {
                    binary: shown,
                    version,
                }));
                tokio::time::sleep(REEXEC_ANSWER).await;
                let _ = checked.send(());
            }
            Err(reason) => {
                tracing::error!(error = %reason, "reexec refused: the running warden is untouched");
                busy.store(false, Ordering::SeqCst);
                let _ = order.reply.send(Err(Failure::new(
                    FailureKind::Conflict,
                    format!("reexec refused, nothing changed: {reason}"),
                )));
            }
        }
    });
}

/// SIGKILLs the process group of every process in the tree.
fn kill_every_group(tree: &ActorTree) {
    for view in tree.descendants(&warden_supervisors::ActorPath::root()) {
        if let Some(pid) = view.info.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The connection of a bound holder (`WARDEN_BOUND_FD`), after its `hello` was accepted.
fn take_bound_connection() -> anyhow::Result<Option<std::os::unix::net::UnixStream>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use warden_supervisors::wire;
    let Ok(value) = std::env::var(BOUND_FD_ENV) else {
        return Ok(None);
    };
    // Children must not see it.
    std::env::remove_var(BOUND_FD_ENV);
    let raw: i32 = value
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .with_context(|| format!("{BOUND_FD_ENV}={value:?} is not a file descriptor"))?;
    // SAFETY: the spawning parent handed this fd to us; nothing else in this process uses it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: fcntl on the fd we now own.
    unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let hello = wire::read_frame_blocking(&mut stream, wire::MAX_FRAME)
        .context("bound connection: no hello")?
        .context("bound connection closed before hello")?;
    let hello = wire::decode::<crate::control::protocol::ClientFrame>(&hello)
        .context("bound connection: bad hello")?;
    if let Err(reason) = socket::check_hello(&hello) {
        let frame = crate::control::protocol::ServerFrame::Error {
            message: reason.clone(),
        };
        if let Ok(payload) = wire::encode(&frame) {
            let _ = wire::write_frame_blocking(&mut stream, &payload, wire::MAX_FRAME);
        }
        anyhow::bail!("refusing the bound client: {reason}");
    }
    stream.set_read_timeout(None)?;
    Ok(Some(stream))
}

/// Watches the bound connection (serving control requests on it) and acknowledges the
/// handshake once the watch is armed; when it closes, `parent_gone` fires.
fn serve_bound(
    stream: std::os::unix::net::UnixStream,
    controller: actix::Addr<Controller>,
    parent_gone: tokio::sync::mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    stream.set_nonblocking(true)?;
    let mut stream = tokio::net::UnixStream::from_std(stream)?;
    actix_rt::spawn(async move {
        let (mut rx, mut tx) = stream.split();
        if socket::acknowledge(&mut tx).await.is_ok() {
            socket::request_loop(&mut rx, &mut tx, &controller).await;
        }
        let _ = parent_gone.send(());
    });
    Ok(())
}

/// Lifts the soft limit on open files to the hard limit: each child needs a few (its
/// output pipe, its log file, its pidfd). Children get the soft limit warden was started
/// with back (many programs break or slow down with a huge one), at the cost of a
/// `pre_exec` hook (fork instead of posix_spawn) only when this raised it.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            warden_actors::proc::keep_open_files_limit_for_children(soft);
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "cannot raise the open files limit");
            }
        }
    }
}
