//! The outboard child kind: a service process that talks back to its supervisor over a
//! local socket with the protocol of `warden_supervisors::ipc`.
//!
//! For each child warden writes a config file (socket path and a random token; mode 0600,
//! written to a temp file then renamed) whose path the child finds in
//! `$WARDEN_OUTBOARD_CONFIG`, and listens on the socket. A connection must start with a
//! `hello` carrying the protocol version, the token (compared in constant time) and the
//! child's app version. A wrong token, garbage, a truncated or oversized frame, or a
//! second connection gets an error frame and is closed, logged with the actor path; the
//! child and every other child carry on. Another protocol or app version is fatal: the
//! child is stopped and `failed`. Heartbeats: warden pings every `heartbeat`; `missed`
//! pings without an answer in a row restart the child. A stop first asks the child over
//! the socket and waits its stop timeout before any signal. When warden restarts and adopts
//! the process, the child reconnects with the same token: no restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use warden_supervisors::ipc::{ChildMessage, OutboardConfigFile, SupervisorMessage, IPC_PROTOCOL};
use warden_supervisors::wire::{self, FrameError, MAX_FRAME};
use warden_supervisors::{
    ActorKind, ActorPath, ChildFactory, Exit, RunningChild, StartContext, StopMode,
};

use crate::service::ServiceFactory;

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

type ReplySender = oneshot::Sender<Result<serde_json::Value, CallError>>;

/// What a run's link shares with callers: the current connection and the calls waiting
/// for a reply. A call is written by its caller and its reply handed over by the
/// connection's reader, without a detour through the link task.
#[derive(Default)]
struct LinkShared {
    /// The accepted connection, if any: (connection number, stream).
    current: Mutex<Option<(u64, Arc<Stream>)>>,
    /// Serializes writes of whole frames on the connection.
    write_lock: tokio::sync::Mutex<()>,
    pending: Mutex<HashMap<u64, ReplySender>>,
    next_call: std::sync::atomic::AtomicU64,
}

impl LinkShared {
    fn stream(&self) -> Option<Arc<Stream>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, s)| s.clone())
    }

    fn connection(&self) -> Option<u64> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(c, _)| *c)
    }

    fn set_current(&self, current: Option<(u64, Arc<Stream>)>) -> Option<(u64, Arc<Stream>)> {
        std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            current,
        )
    }

    fn resolve(&self, id: u64, result: Result<serde_json::Value, CallError>) {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }

    fn fail_pending(&self, path: &ActorPath) {
        let drained: Vec<ReplySender> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, tx)| tx)
            .collect();
        for tx in drained {
            let _ = tx.send(Err(CallError::NotConnected(path.to_string())));
        }
    }

    /// Writes one message as a whole frame.
    async fn send(&self, stream: &Stream, message: &SupervisorMessage) -> Result<(), FrameError> {
        let _whole_frame = self.write_lock.lock().await;
        send(stream, message).await
    }
}

/// Routes user calls to the current run of each outboard child.
#[derive(Default)]
pub struct OutboardHub {
    links: Mutex<HashMap<ActorPath, (u64, Arc<LinkShared>)>>,
}

impl std::fmt::Debug for OutboardHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboardHub").finish_non_exhaustive()
    }
}

impl OutboardHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn register(&self, path: &ActorPath, generation: u64, tx: Arc<LinkShared>) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.clone(), (generation, tx));
    }

    fn unregister(&self, path: &ActorPath, generation: u64) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if links.get(path).is_some_and(|(g, _)| *g == generation) {
            links.remove(path);
        }
    }

    /// Relays `body` to the outboard child at `path` and waits at most `timeout` for its
    /// reply.
    pub async fn call(
        &self,
        path: &ActorPath,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let link = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .map(|(_, tx)| tx.clone());
        let link = link.ok_or_else(|| CallError::NotFound(path.to_string()))?;
        let not_connected = || CallError::NotConnected(path.to_string());
        let stream = link.stream().ok_or_else(not_connected)?;
        let id = link
            .next_call
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (reply, rx) = oneshot::channel();
        link.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, reply);
        let forget = || {
            link.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        };
        if link
            .send(&stream, &SupervisorMessage::Call { id, body })
            .await
            .is_err()
        {
            forget();
            return Err(not_connected());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(not_connected()),
            Err(_) => {
                forget();
                Err(CallError::Timeout {
                    path: path.to_string(),
                    waited: timeout,
                })
            }
        }
    }
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
            if let Some(old) = std::fs::read(&self.spec.config_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<OutboardConfigFile>(&b).ok())
            {
                return Ok(old.token);
            }
        }
        crate::random_hex(32).map_err(|e| format!("cannot generate a token: {e}"))
    }

    fn write_config(&self, cx: &StartContext, token: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let file = &self.spec.config_file;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let config = OutboardConfigFile {
            socket: self.spec.socket.clone(),
            token: token.to_owned(),
            protocol: IPC_PROTOCOL,
            heartbeat_ms: u64::try_from(self.spec.heartbeat.as_millis()).unwrap_or(u64::MAX),
            actor: cx.path.to_string(),
        };
        let tmp = file.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(&serde_json::to_vec(&config).map_err(std::io::Error::other)?)?;
        drop(out);
        std::fs::rename(&tmp, file)
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
        ListenerOptions::new()
            .name(path.as_path().to_fs_name::<GenericFilePath>()?)
            .mode(0o600)
            .try_overwrite(true)
            .create_tokio()
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
        let inner = self.service.start(cx.clone())?;
        let shared = Arc::new(LinkShared::default());
        self.hub.register(&cx.path, cx.generation, shared.clone());
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
        let link = Link {
            path: cx.path.clone(),
            spec: self.spec.clone(),
            token,
            ready_tx: wants_ipc_ready.then_some(ready_tx),
        };
        let hub = self.hub.clone();
        let generation = cx.generation;
        let path = cx.path.clone();
        let task = actix_rt::spawn(async move {
            let exit = link
                .run(listener, inner.exit, inner.stop, shared, stop_rx)
                .await;
            hub.unregister(&path, generation);
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

/// What the reader of one connection reports.
enum Incoming {
    Hello {
        conn: u64,
        stream: Arc<Stream>,
        hello: Result<ChildMessage, FrameError>,
        accepted: oneshot::Sender<bool>,
    },
    Message(u64, ChildMessage),
    Closed(u64, Option<FrameError>),
}

/// Reads one connection: its hello (reported for a verdict), then, if accepted, every
/// message until it closes.
async fn read_connection(
    conn: u64,
    stream: Arc<Stream>,
    to_link: mpsc::UnboundedSender<Incoming>,
    shared: Arc<LinkShared>,
) {
    let mut reader = &*stream;
    let hello = tokio::time::timeout(
        Duration::from_secs(5),
        wire::read_frame(&mut reader, MAX_FRAME),
    )
    .await;
    let hello = match hello {
        Ok(Ok(Some(payload))) => wire::decode::<ChildMessage>(&payload),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FrameError::Decode("no hello within 5 s".to_owned())),
    };
    let (accepted_tx, accepted_rx) = oneshot::channel();
    if to_link
        .send(Incoming::Hello {
            conn,
            stream: stream.clone(),
            hello,
            accepted: accepted_tx,
        })
        .is_err()
    {
        return;
    }
    if !accepted_rx.await.unwrap_or(false) {
        return;
    }
    loop {
        match wire::read_frame(&mut reader, MAX_FRAME).await {
            Ok(Some(payload)) => match wire::decode::<ChildMessage>(&payload) {
                Ok(ChildMessage::Reply { id, result }) => {
                    if shared.connection() == Some(conn) {
                        shared.resolve(id, result.map_err(CallError::Handler));
                    }
                }
                Ok(message) => {
                    if to_link.send(Incoming::Message(conn, message)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = to_link.send(Incoming::Closed(conn, Some(e)));
                    return;
                }
            },
            Ok(None) => {
                let _ = to_link.send(Incoming::Closed(conn, None));
                return;
            }
            Err(e) => {
                let _ = to_link.send(Incoming::Closed(conn, Some(e)));
                return;
            }
        }
    }
}

async fn send(stream: &Stream, message: &SupervisorMessage) -> Result<(), FrameError> {
    let payload = wire::encode(message)?;
    let mut writer = stream;
    wire::write_frame(&mut writer, &payload, MAX_FRAME).await
}

/// One run's link to its child.
struct Link {
    path: ActorPath,
    spec: OutboardSpec,
    token: String,
    ready_tx: Option<oneshot::Sender<()>>,
}

impl Link {
    async fn refuse(&self, shared: &LinkShared, stream: &Stream, why: String) {
        tracing::warn!(path = %self.path, reason = %why, "outboard: refusing a connection");
        let _ = shared
            .send(stream, &SupervisorMessage::Error { message: why })
            .await;
    }

    /// Serves the link until the process is gone; returns how the run ended.
    async fn run(
        mut self,
        listener: Listener,
        mut inner_exit: futures_util::future::LocalBoxFuture<'static, Exit>,
        inner_stop: oneshot::Sender<StopMode>,
        shared: Arc<LinkShared>,
        stop_rx: oneshot::Receiver<StopMode>,
    ) -> Exit {
        let (to_link, mut incoming) = mpsc::unbounded_channel();
        let mut inner_stop = Some(inner_stop);
        let mut stop_rx = Some(stop_rx);
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let mut verdict: Option<Exit> = None;
        let mut next_conn = 0u64;
        let mut seq = 0u64;
        let mut outstanding = 0u32;
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.spec.heartbeat,
            self.spec.heartbeat,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let exit = loop {
            tokio::select! {
                exit = &mut inner_exit => break exit,
                accepted = listener.accept() => match accepted {
                    Ok(stream) => {
                        next_conn += 1;
                        actix_rt::spawn(read_connection(next_conn, Arc::new(stream), to_link.clone(), shared.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.path, error = %e, "outboard: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(event) = incoming.recv() => match event {
                    Incoming::Hello { conn, stream, hello, accepted } => {
                        let verdict_now = self.judge(hello, shared.connection().is_some());
                        match verdict_now {
                            Ok(()) => {
                                if shared.send(&stream, &SupervisorMessage::Welcome { protocol: IPC_PROTOCOL }).await.is_ok() {
                                    tracing::info!(path = %self.path, "outboard: child connected");
                                    outstanding = 0;
                                    shared.set_current(Some((conn, stream)));
                                    let _ = accepted.send(true);
                                }
                            }
                            Err((why, fatal)) => {
                                self.refuse(&shared, &stream, why.clone()).await;
                                let _ = accepted.send(false);
                                if fatal && verdict.is_none() {
                                    verdict = Some(Exit::Refused(why));
                                    if let Some(stop) = inner_stop.take() {
                                        let _ = stop.send(StopMode::Graceful);
                                    }
                                }
                            }
                        }
                    }
                    Incoming::Message(conn, message) if shared.connection() == Some(conn) => {
                        match message {
                            ChildMessage::Ready => {
                                if let Some(tx) = self.ready_tx.take() {
                                    let _ = tx.send(());
                                }
                            }
                            ChildMessage::Pong { .. } => outstanding = 0,
                            ChildMessage::Reply { id, result } => {
                                shared.resolve(id, result.map_err(CallError::Handler));
                            }
                            ChildMessage::Error { message } => {
                                tracing::warn!(path = %self.path, %message, "outboard: the child reported an error");
                            }
                            ChildMessage::Hello { .. } => {
                                if let Some((_, stream)) = shared.set_current(None) {
                                    self.refuse(&shared, &stream, "hello was already sent on this connection".to_owned()).await;
                                }
                                shared.fail_pending(&self.path);
                            }
                        }
                    }
                    Incoming::Message(..) => {}
                    Incoming::Closed(conn, error) => {
                        if shared.connection() == Some(conn) {
                            if let Some((_, stream)) = shared.set_current(None) {
                                match error {
                                    Some(e) => self.refuse(&shared, &stream, format!("bad frame: {e}")).await,
                                    None => tracing::info!(path = %self.path, "outboard: child disconnected"),
                                }
                            }
                            shared.fail_pending(&self.path);
                        }
                    }
                },
                _ = ping.tick() => {
                    if outstanding >= self.spec.missed && verdict.is_none() {
                        let why = format!(
                            "missed {} heartbeats in a row (one every {:?})",
                            self.spec.missed, self.spec.heartbeat
                        );
                        tracing::warn!(path = %self.path, reason = %why, "outboard: restarting an unresponsive child");
                        verdict = Some(Exit::Fatal(why));
                        if let Some(stop) = inner_stop.take() {
                            let _ = stop.send(StopMode::Graceful);
                        }
                    } else if verdict.is_none() {
                        seq += 1;
                        outstanding += 1;
                        if let Some(stream) = shared.stream() {
                            let _ = shared.send(&stream, &SupervisorMessage::Ping { seq }).await;
                        }
                    }
                }
                request = async { stop_rx.as_mut().expect("guarded").await }, if stop_rx.is_some() => {
                    stop_rx = None;
                    match (request, shared.stream()) {
                        (Ok(_), Some(stream)) => {
                            // Ask first; signals only if the child does not go in time.
                            let _ = shared.send(&stream, &SupervisorMessage::Stop).await;
                            stop_deadline = Some(tokio::time::Instant::now() + self.spec.stop_timeout);
                        }
                        (Ok(mode), None) => {
                            if let Some(stop) = inner_stop.take() {
                                let _ = stop.send(mode);
                            }
                        }
                        (Err(_), _) => {
                            // The supervisor is gone: the process goes at once.
                            drop(inner_stop.take());
                        }
                    }
                }
                () = async { tokio::time::sleep_until(stop_deadline.expect("guarded")).await }, if stop_deadline.is_some() => {
                    stop_deadline = None;
                    tracing::warn!(path = %self.path, "outboard: the child did not stop when asked: signalling it");
                    if let Some(stop) = inner_stop.take() {
                        let _ = stop.send(StopMode::Graceful);
                    }
                }
            }
        };
        let _ = std::fs::remove_file(&self.spec.socket);
        if let Some((_, stream)) = shared.set_current(None) {
            let _ = shared
                .send(
                    &stream,
                    &SupervisorMessage::Error {
                        message: "the child's run is over".to_owned(),
                    },
                )
                .await;
        }
        shared.fail_pending(&self.path);
        verdict.unwrap_or(exit)
    }

    /// Accepts a hello, or says why not and whether that is fatal for the child.
    fn judge(
        &self,
        hello: Result<ChildMessage, FrameError>,
        connected: bool,
    ) -> Result<(), (String, bool)> {
        let hello = hello.map_err(|e| (format!("bad hello: {e}"), false))?;
        let ChildMessage::Hello {
            protocol,
            token,
            app_version,
            ..
        } = hello
        else {
            return Err(("the first message must be hello".to_owned(), false));
        };
        if !bool::from(token.as_bytes().ct_eq(self.token.as_bytes())) {
            return Err(("wrong token".to_owned(), false));
        }
        if protocol != IPC_PROTOCOL {
            return Err((
                format!("the child speaks IPC protocol {protocol}, warden speaks {IPC_PROTOCOL}"),
                true,
            ));
        }
        if app_version != self.spec.version {
            return Err((
                format!(
                    "the child reports app version {app_version}, the config wants {}",
                    self.spec.version
                ),
                true,
            ));
        }
        if connected {
            return Err(("the child is already connected".to_owned(), false));
        }
        Ok(())
    }
}
