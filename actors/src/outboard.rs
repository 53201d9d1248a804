//! The outboard child kind: a service process that talks back to its supervisor over a
//! local socket with the protocol of `warden_supervisors::ipc`.
//!
//! For each child warden writes a config file (socket path and a random token; mode 0600,
//! written to a temp file then renamed) whose path the child finds in
//! `$WARDEN_OUTBOARD_CONFIG`, and listens on the socket. A connection must start with a
//! `hello` carrying the protocol version, the token (compared in constant time) and the
//! child's app version. Only a process of the child's own process group may connect
//! (SO_PEERCRED), with its own pid in the hello. A wrong token, garbage, a truncated or
//! oversized frame, or a second connection gets an error frame and is closed, logged
//! (rate-limited) with the actor path; the child and every other child carry on. Another protocol or app version is fatal: the
//! child is stopped and `failed`. Heartbeats: warden pings every `heartbeat`; `missed`
//! pings without an answer in a row (or writes to the socket past their deadline) restart
//! the child. A stop first asks the child over the socket and waits its stop timeout
//! before any signal, unless the request cannot even be written in time. When warden
//! restarts and adopts the process, the child reconnects with the same token: no restart.
//!
//! Nothing here waits on the child's socket on anyone's behalf: see `link` (the run's
//! loop), `writer` (the one task per connection that writes, with deadlines) and `hub`
//! (calls, bounded by their timeout).

mod hub;
mod link;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use tokio::sync::oneshot;
use warden_supervisors::ipc::{OutboardConfigFile, IPC_PROTOCOL};
use warden_supervisors::{ActorKind, ChildFactory, Exit, RunningChild, StartContext};

pub use hub::OutboardHub;
pub use link::{HELLO_WITHIN as OUTBOARD_HELLO_WITHIN, OUTBOARD_MAX_CONNECTIONS};

use crate::service::ServiceFactory;
use hub::{LinkShared, Registration};
use link::{Admission, Link, RunInputs};

/// How an outboard child talks to warden (the keys `[[outboard]]` adds to a service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboardSpec {
    /// How often warden pings.
    pub heartbeat: Duration,
    /// Pings without an answer in a row before a restart.
    pub missed: u32,
    /// The app version the child must report.
    pub version: u32,
    /// `Some(timeout)`: the child is `running` once it says ready over IPC.
    pub ready_timeout: Option<Duration>,
    /// The config file handed to the child (its path is in the child's environment).
    pub config_file: PathBuf,
    /// The socket warden listens on for this child.
    pub socket: PathBuf,
    /// How long a stop waits for the child to exit when asked over IPC, before signals.
    pub stop_timeout: Duration,
    /// Who the child runs as, when another user than warden: its config file and socket
    /// belong to that user, so only it reads the token and connects.
    pub owner: Option<crate::state_file::FileOwner>,
}

/// Why a user call did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No running outboard child has that path.
    #[error("no running outboard child at {0}")]
    NotFound(String),
    /// The child is not connected right now.
    #[error("{0} is not connected")]
    NotConnected(String),
    /// No reply in time.
    #[error("{path} did not reply within {waited:?}")]
    Timeout {
        /// The child.
        path: String,
        /// How long warden waited.
        waited: Duration,
    },
    /// The child's handler answered an error.
    #[error("{0}")]
    Handler(String),
}

/// Starts runs of an outboard child: the process through a [`ServiceFactory`], the link
/// through its socket.
#[derive(Debug)]
pub struct OutboardFactory {
    service: ServiceFactory,
    spec: OutboardSpec,
    hub: Arc<OutboardHub>,
    first_start: AtomicBool,
}

impl OutboardFactory {
    /// A factory for the process of `service` (whose environment must carry
    /// `WARDEN_OUTBOARD_CONFIG` = `spec.config_file`) linked as `spec` says.
    pub fn new(service: ServiceFactory, spec: OutboardSpec, hub: Arc<OutboardHub>) -> Self {
        Self {
            service,
            spec,
            hub,
            first_start: AtomicBool::new(true),
        }
    }

    fn token(&self) -> Result<String, String> {
        // The first run of this warden keeps the token on file: a child adopted from an
        // earlier warden reconnects with it. Every later run gets a fresh one.
        if self.first_start.swap(false, Ordering::SeqCst) {
            let uid = self
                .spec
                .owner
                .map_or_else(crate::state_file::euid, |o| o.uid);
            if let Some(old) =
                crate::state_file::read_secret_of(&self.spec.config_file, 64 * 1024, uid)
                    .ok()
                    .and_then(|text| serde_json::from_str::<OutboardConfigFile>(&text).ok())
            {
                return Ok(old.token);
            }
        }
        crate::random_hex(32).map_err(|e| format!("cannot generate a token: {e}"))
    }

    fn write_config(&self, cx: &StartContext, token: &str) -> std::io::Result<()> {
        // The socket by its name only: the child finds it beside the config file, in the
        // folder it reaches through an inherited descriptor.
        let socket = self
            .spec
            .socket
            .file_name()
            .map_or_else(|| self.spec.socket.clone(), PathBuf::from);
        let config = OutboardConfigFile {
            socket,
            token: token.to_owned(),
            protocol: IPC_PROTOCOL,
            heartbeat_ms: u64::try_from(self.spec.heartbeat.as_millis()).unwrap_or(u64::MAX),
            actor: cx.path.to_string(),
        };
        let bytes = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
        crate::state_file::replace(&self.spec.config_file, &bytes, self.spec.owner, false)
    }

    fn listen(&self) -> std::io::Result<Listener> {
        let path = &self.spec.socket;
        if path.as_os_str().len() >= 108 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "socket path {} is over 107 bytes: use a shorter state_dir",
                    path.display()
                ),
            ));
        }
        let listener = ListenerOptions::new()
            .name(path.as_path().to_fs_name::<GenericFilePath>()?)
            .mode(0o600)
            .try_overwrite(true)
            // Never unlinked by the listener's drop: the path may be a newer run's by then
            // (the link removes it only if it still is this run's file).
            .reclaim_name(false)
            .create_tokio()?;
        if let Some(owner) = self.spec.owner {
            // Only the child's user may connect (lchown: the name is never followed).
            std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))?;
        }
        Ok(listener)
    }
}

impl ChildFactory for OutboardFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Outboard
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let token = self.token()?;
        self.write_config(&cx, &token)
            .map_err(|e| format!("cannot write {}: {e}", self.spec.config_file.display()))?;
        let listener = self
            .listen()
            .map_err(|e| format!("cannot listen on {}: {e}", self.spec.socket.display()))?;
        let socket_file = link::file_identity(&self.spec.socket);
        let inner = match self.service.start(cx.clone()) {
            Ok(inner) => inner,
            Err(e) => {
                if let Some(ours) = socket_file {
                    link::remove_if_same(&self.spec.socket, ours);
                }
                drop(listener);
                return Err(e);
            }
        };
        let shared = Arc::new(LinkShared::default());
        let registration = Registration::new(&self.hub, &cx.path, shared.clone());
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let wants_ipc_ready = self.spec.ready_timeout.is_some() && !inner.adopted;
        let ready = match (self.spec.ready_timeout, inner.adopted) {
            (Some(timeout), false) => Some(Box::pin(async move {
                match tokio::time::timeout(timeout, ready_rx).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err("the link ended before the child said ready".to_owned()),
                    Err(_) => Err(format!("no ready over IPC within {timeout:?}")),
                }
            })
                as futures_util::future::LocalBoxFuture<'static, _>),
            _ => inner.ready,
        };
        let link = Link::new(
            cx.path.clone(),
            self.spec.clone(),
            Admission {
                token,
                child: inner
                    .pid
                    .map(|pid| self.service.processes_of(&cx.path, pid, inner.containment)),
            },
            wants_ipc_ready.then_some(ready_tx),
            shared,
            inner.stop,
            socket_file,
        );
        let inputs = RunInputs {
            listener,
            inner_exit: inner.exit,
            stop_rx,
        };
        let task = actix_rt::spawn(async move {
            let exit = link.run(inputs).await;
            // This run's entry only: a newer run of the same path keeps its own.
            drop(registration);
            exit
        });
        Ok(RunningChild {
            pid: inner.pid,
            ready,
            exit: Box::pin(async move {
                match task.await {
                    Ok(exit) => exit,
                    Err(e) if e.is_panic() => {
                        Exit::Panic(warden_supervisors::panic_message(&*e.into_panic()))
                    }
                    Err(_) => Exit::Fatal("outboard task was cancelled".to_owned()),
                }
            }),
            stop: stop_tx,
            adopted: inner.adopted,
            containment: inner.containment,
        })
    }
}
