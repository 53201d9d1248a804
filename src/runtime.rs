//! `warden up`: the admin API, the tree of a config file, and the signals that stop it.

use std::sync::Arc;

use actix::Actor as _;
use anyhow::Context as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use warden_supervisors::ActorTree;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::control::protocol::Request;
use crate::control::{socket, Controller, ControllerConfig};
use crate::embed::RunningTree;
use crate::layout::StateLayout;
use crate::plan;
use crate::reload::Reloader;
use crate::state::{Recovered, StateLock, StateStore};
use crate::token::AdminToken;

/// Runs the tree of `config` in the foreground until SIGTERM or SIGINT, then stops it
/// gracefully (reverse order, stop timeouts, SIGKILL to process groups) and returns.
/// SIGHUP reloads the config file; SIGUSR1 drains.
pub fn up(config: Config) -> anyhow::Result<()> {
    let layout = StateLayout::new(&config.state_dir);
    std::fs::create_dir_all(layout.logs_dir())
        .with_context(|| format!("cannot create state_dir {}", layout.root().display()))?;
    raise_open_files_limit();
    let _lock = StateLock::acquire(&config.state_dir).map_err(anyhow::Error::msg)?;
    let token = AdminToken::load_or_create(&config.admin.token_file)?;
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
    let records: plan::Records = Some(Arc::new(store));
    let spec = plan::root_spec(&config, &records)?;
    // Signals are taken before anything starts, so none is lost in between.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    let signals_handle = signals.handle();
    let system = actix::System::new();
    let result = system.block_on(async move {
        let tree = Arc::new(ActorTree::new());
        let socket_path = layout.control_socket();
        let controller = Controller::new(ControllerConfig {
            tree: tree.clone(),
            layout,
            reloader: Some(Reloader::new(config.clone(), records.clone())),
        })
        .start();
        socket::serve(&socket_path, controller.clone())
            .with_context(|| format!("control socket: cannot listen on {}", socket_path.display()))?;
        let state = AdminState {
            tree: tree.clone(),
            token,
            controller: controller.clone(),
        };
        let (server, bound) = admin::serve(config.admin.listen, state)
            .with_context(|| format!("admin API: cannot listen on {}", config.admin.listen))?;
        let server_handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(listen = %bound, config = %config.path.display(), "admin API listening");

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

        let running = RunningTree::start_in(tree, &spec);
        loop {
            tokio::select! {
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
                    other => {
                        tracing::info!(signal = other.map(warden_supervisors::signal_name), "stopping the tree");
                        break;
                    }
                },
                end = running.root().ended() => {
                    server_handle.stop(true).await;
                    anyhow::bail!("the root supervisor ended unexpectedly ({end}); its children were killed");
                }
            }
        }
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
        server_handle.stop(true).await;
        let _ = std::fs::remove_file(&socket_path);
        tracing::info!("stopped");
        anyhow::Ok(())
    });
    signals_handle.close();
    result
}

/// Lifts the soft limit on open files to the hard limit: each child needs a few (its
/// output pipe, its log file, its pidfd).
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "cannot raise the open files limit");
            }
        }
    }
}
