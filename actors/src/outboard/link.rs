//! One run's link to its outboard child: accepts connections on the child's socket, judges
//! each hello, counts heartbeats and drives the stop.
//!
//! Who may connect: the kernel's record of the peer (SO_PEERCRED) must name a process of
//! the child's own process group (and cgroup, when it has one), checked at accept before
//! anything is read; its hello must carry that same pid. At most
//! [`OUTBOARD_MAX_CONNECTIONS`] connections are open at once (the connected one included),
//! each with [`HELLO_WITHIN`] to say hello. The hello is judged "already connected" first:
//! a second hello for a connected child, even with the right token, is refused and never
//! harms the connected one; then the token, the pid, and only then the versions (a
//! mismatch there is fatal for the run). What a child can make warden log is cut short,
//! escaped and rate-limited (`log_budget`).
//!
//! The link loop never awaits socket I/O: each connection has a reader task (which hands
//! messages over through a bounded queue) and a writer task (fed through a bounded queue,
//! see `writer`), and every arm of the loop only updates state and queues frames without
//! waiting. So the child's exit, a stop request and the heartbeat are always seen, however
//! the child treats its socket.
//!
//! Heartbeats: a ping without an answer, and a write that passes its deadline, are each a
//! missed heartbeat; `missed` in a row (the larger of the two counts, both reset by a
//! pong) restart the child. Only a pong carrying the number of a ping warden sent and that
//! was not answered yet counts; it answers that ping and every earlier one. A stop first asks the child over the socket; the signals
//! follow when the request cannot be written within the write deadline, when the child is
//! not connected, or when it has not gone within its stop timeout; then the process's own
//! stop runs (the stop signal to the group, SIGKILL after the stop timeout), as for any
//! service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use warden_supervisors::ipc::{ChildMessage, SupervisorMessage, IPC_PROTOCOL};
use warden_supervisors::wire::{self, FrameError, MAX_FRAME};
use warden_supervisors::{ActorPath, Exit, StopMode};

use super::hub::{Connection, LinkShared};
use super::writer::{FrameWriter, WriterContext};
use super::{CallError, OutboardSpec};
use crate::log_budget::{untrusted, LogBudget};
use crate::peer::{ChildProcesses, PeerCred};

/// Events from connections (readers and writers) that may wait for the link.
const INCOMING_QUEUE: usize = 64;

/// The longest a write to the child may take before it counts as a missed heartbeat
/// (shorter when the heartbeat is).
const MAX_WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// How long a connection may take to say hello.
pub const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// Connections open at once on one child's socket, at most (the connected one, a
/// reconnection, and a few waiting for their hello); one more is refused.
pub const OUTBOARD_MAX_CONNECTIONS: usize = 4;

/// How long warden tries to write a refusal at accept before it just closes.
const REFUSAL_WRITE: Duration = Duration::from_millis(200);

/// The write deadline of a link with this spec.
pub(super) fn write_deadline(spec: &OutboardSpec) -> Duration {
    spec.heartbeat.min(MAX_WRITE_DEADLINE)
}

/// What a connection's reader or writer reports.
pub(super) enum Incoming {
    /// The first frame of a connection, for a verdict.
    Hello {
        conn: u64,
        /// The connecting process, as the kernel recorded it.
        peer_pid: u32,
        writer: FrameWriter,
        hello: Result<ChildMessage, FrameError>,
        accepted: oneshot::Sender<bool>,
    },
    /// A message on an accepted connection.
    Message(u64, ChildMessage),
    /// The connection ended (with the bad frame that ended it, if any).
    Closed(u64, Option<FrameError>),
    /// A write on the connection is past its deadline.
    WriteStalled(u64),
    /// A write on the connection failed: it is unusable.
    WriteFailed(u64, String),
}

/// Reads one connection: its hello (reported for a verdict, with the connection's writer),
/// then, if accepted, every message until it closes.
async fn read_connection(
    conn: u64,
    peer_pid: u32,
    stream: Arc<Stream>,
    writer: FrameWriter,
    to_link: mpsc::Sender<Incoming>,
    shared: Arc<LinkShared>,
    slot: Slot,
) {
    // Given back when this connection ends.
    let _slot = slot;
    let mut reader = &*stream;
    let hello = tokio::time::timeout(HELLO_WITHIN, wire::read_frame(&mut reader, MAX_FRAME)).await;
    let hello = match hello {
        Ok(Ok(Some(payload))) => wire::decode::<ChildMessage>(&payload),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FrameError::Decode(format!(
            "no hello within {HELLO_WITHIN:?}"
        ))),
    };
    let (accepted_tx, accepted_rx) = oneshot::channel();
    let hello = Incoming::Hello {
        conn,
        peer_pid,
        writer,
        hello,
        accepted: accepted_tx,
    };
    if to_link.send(hello).await.is_err() || !accepted_rx.await.unwrap_or(false) {
        return;
    }
    loop {
        let event = match wire::read_frame(&mut reader, MAX_FRAME).await {
            Ok(Some(payload)) => match wire::decode::<ChildMessage>(&payload) {
                Ok(ChildMessage::Reply { id, result }) => {
                    // Straight to the caller, without a detour through the link.
                    if shared.connection() == Some(conn) {
                        shared.resolve(id, result.map_err(CallError::Handler));
                    }
                    continue;
                }
                Ok(message) => Incoming::Message(conn, message),
                Err(e) => Incoming::Closed(conn, Some(e)),
            },
            Ok(None) => Incoming::Closed(conn, None),
            Err(e) => Incoming::Closed(conn, Some(e)),
        };
        let last = matches!(event, Incoming::Closed(..));
        if to_link.send(event).await.is_err() || last {
            return;
        }
    }
}

/// Heartbeats missed in a row: pings without a pong, and writes past their deadline.
#[derive(Debug)]
struct Heartbeat {
    limit: u32,
    /// The number of the last ping sent.
    sent: u64,
    /// The number of the last ping answered (every earlier one counts as answered too).
    answered: u64,
    stalled_writes: u32,
}

impl Heartbeat {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            sent: 0,
            answered: 0,
            stalled_writes: 0,
        }
    }

    /// A new connection: nothing is owed on it yet.
    fn connected(&mut self) {
        self.answered = self.sent;
        self.stalled_writes = 0;
    }

    /// A pong numbered `seq`: `true` (the child reads and writes) if it answers a ping
    /// that was sent and not answered yet; any other number is no heartbeat.
    fn pong(&mut self, seq: u64) -> bool {
        if seq <= self.answered || seq > self.sent {
            return false;
        }
        self.answered = seq;
        self.stalled_writes = 0;
        true
    }

    /// Counts a new ping; returns its number.
    fn ping_sent(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    fn write_stalled(&mut self) {
        self.stalled_writes = self.stalled_writes.saturating_add(1);
    }

    fn missed(&self) -> u64 {
        (self.sent - self.answered).max(u64::from(self.stalled_writes))
    }

    fn given_up(&self) -> bool {
        self.missed() >= u64::from(self.limit)
    }
}

/// One of the [`OUTBOARD_MAX_CONNECTIONS`] connection slots of a link; given back when
/// dropped.
pub(super) struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < OUTBOARD_MAX_CONNECTIONS).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a stop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// Nobody asked.
    No,
    /// The child was asked over its socket: signals if the request is not written by
    /// `write_by` (while unwritten) or the child is not gone by `signal_at`.
    Asked {
        write_by: Instant,
        signal_at: Instant,
    },
    /// The process's own stop runs (signal, then SIGKILL after the stop timeout).
    Signalled,
}

/// Who may connect to a run's socket: a process of the child (`None`: its pid is
/// unknown, so nobody can be checked) that shows the run's token.
pub(super) struct Admission {
    /// The secret the hello must carry.
    pub(super) token: String,
    /// The child's processes.
    pub(super) child: Option<ChildProcesses>,
}

/// One run's link to its child.
pub(super) struct Link {
    pub(super) path: ActorPath,
    pub(super) spec: OutboardSpec,
    admission: Admission,
    pub(super) ready_tx: Option<oneshot::Sender<()>>,
    pub(super) shared: Arc<LinkShared>,
    /// The socket file this run bound (device, inode): removed at the end only if it is
    /// still this one.
    pub(super) socket_file: Option<(u64, u64)>,
    /// The process's own stop; taken when used.
    pub(super) inner_stop: Option<oneshot::Sender<StopMode>>,
    pub(super) verdict: Option<Exit>,
    heartbeat: Heartbeat,
    stopping: Stopping,
    /// Connections open on the socket right now.
    open: Arc<AtomicUsize>,
    /// Refused connections, logged within this budget.
    refusals: LogBudget,
    /// Errors the child reports, logged within this budget.
    reports: LogBudget,
}

/// The parts of a run the link loop waits on.
pub(super) struct RunInputs {
    pub(super) listener: Listener,
    pub(super) inner_exit: futures_util::future::LocalBoxFuture<'static, Exit>,
    pub(super) stop_rx: oneshot::Receiver<StopMode>,
}

impl Link {
    pub(super) fn new(
        path: ActorPath,
        spec: OutboardSpec,
        admission: Admission,
        ready_tx: Option<oneshot::Sender<()>>,
        shared: Arc<LinkShared>,
        inner_stop: oneshot::Sender<StopMode>,
        socket_file: Option<(u64, u64)>,
    ) -> Self {
        let heartbeat = Heartbeat::new(spec.missed);
        Self {
            path,
            spec,
            admission,
            ready_tx,
            shared,
            socket_file,
            inner_stop: Some(inner_stop),
            verdict: None,
            heartbeat,
            stopping: Stopping::No,
            open: Arc::default(),
            refusals: LogBudget::default(),
            reports: LogBudget::default(),
        }
    }

    /// Serves the link until the process is gone; returns how the run ended.
    pub(super) async fn run(mut self, inputs: RunInputs) -> Exit {
        let RunInputs {
            listener,
            mut inner_exit,
            stop_rx,
        } = inputs;
        let (to_link, mut incoming) = mpsc::channel(INCOMING_QUEUE);
        let mut stop_rx = Some(stop_rx);
        let mut stop_written: Option<oneshot::Receiver<()>> = None;
        let mut accept_paused_until: Option<Instant> = None;
        let mut next_conn = 0u64;
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.spec.heartbeat, self.spec.heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let exit = loop {
            let wake = [
                accept_paused_until,
                self.stop_deadline(stop_written.is_some()),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                exit = &mut inner_exit => break exit,
                accepted = listener.accept(), if accept_paused_until.is_none() => match accepted {
                    Ok(stream) => {
                        next_conn += 1;
                        self.on_accept(next_conn, stream, &to_link);
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.path, error = %e, "outboard: accept failed");
                        accept_paused_until = Some(Instant::now() + Duration::from_millis(50));
                    }
                },
                Some(event) = incoming.recv() => self.on_event(event),
                _ = ping.tick() => self.on_tick(),
                request = async { stop_rx.as_mut().expect("guarded").await }, if stop_rx.is_some() => {
                    stop_rx = None;
                    stop_written = self.on_stop_request(request);
                }
                written = async { stop_written.as_mut().expect("guarded").await }, if stop_written.is_some() => {
                    stop_written = None;
                    if written.is_err() {
                        self.signal("the stop request was not delivered: the connection is gone");
                    }
                }
                () = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {
                    let now = Instant::now();
                    if accept_paused_until.is_some_and(|t| t <= now) {
                        accept_paused_until = None;
                    }
                    self.on_stop_timer(now, stop_written.is_some());
                }
            }
        };
        // While the listener is open its socket file cannot be mistaken for a newer one.
        self.end();
        drop(listener);
        self.verdict.take().unwrap_or(exit)
    }

    /// A new connection: served if its peer is one of the child's processes and a slot is
    /// free, else refused at once (before anything is read).
    fn on_accept(&mut self, conn: u64, stream: Stream, to_link: &mpsc::Sender<Incoming>) {
        let peer = match PeerCred::of_stream(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                return self
                    .refuse_at_accept(stream, format!("cannot read the peer's credentials: {e}"))
            }
        };
        let Some(child) = &self.admission.child else {
            return self.refuse_at_accept(stream, "the child's pid is unknown".to_owned());
        };
        if let Err(e) = child.check(peer.pid) {
            let why = format!("refused: the connecting process (uid {}): {e}", peer.uid);
            return self.refuse_at_accept(stream, why);
        }
        match Slot::take(&self.open) {
            Some(slot) => self.serve_connection(conn, peer.pid, stream, to_link, slot),
            None => self.refuse_at_accept(
                stream,
                format!("too many connections: at most {OUTBOARD_MAX_CONNECTIONS} at once"),
            ),
        }
    }

    /// Refuses a connection before reading it: an error frame if it can be written within
    /// [`REFUSAL_WRITE`], then close; logged within the refusals' budget.
    fn refuse_at_accept(&mut self, stream: Stream, why: String) {
        if let Some(suppressed) = self.refusals.take() {
            tracing::warn!(path = %self.path, reason = %why, suppressed, "outboard: refusing a connection");
        }
        actix_rt::spawn(async move {
            if let Ok(payload) = wire::encode(&SupervisorMessage::Error { message: why }) {
                let mut writer = &stream;
                let write = wire::write_frame(&mut writer, &payload, MAX_FRAME);
                let _ = tokio::time::timeout(REFUSAL_WRITE, write).await;
            }
        });
    }

    /// Starts the writer and the reader of a new connection.
    fn serve_connection(
        &self,
        conn: u64,
        peer_pid: u32,
        stream: Stream,
        to_link: &mpsc::Sender<Incoming>,
        slot: Slot,
    ) {
        let stream = Arc::new(stream);
        let writer = FrameWriter::spawn(WriterContext {
            conn,
            stream: stream.clone(),
            deadline: write_deadline(&self.spec),
            events: to_link.clone(),
            shared: Arc::downgrade(&self.shared),
            path: self.path.clone(),
        });
        actix_rt::spawn(read_connection(
            conn,
            peer_pid,
            stream,
            writer,
            to_link.clone(),
            self.shared.clone(),
            slot,
        ));
    }

    /// Cleans up after the process is gone: the socket file (if still this run's), the
    /// connection (told the run is over) and the calls still waiting.
    fn end(&mut self) {
        if let Some(ours) = self.socket_file {
            remove_if_same(&self.spec.socket, ours);
        }
        if let Some(connection) = self.shared.set_current(None) {
            connection.writer.finish_with(&SupervisorMessage::Error {
                message: "the child's run is over".to_owned(),
            });
        }
        self.shared.fail_pending(&self.path);
    }

    /// Hands the stop over to the process (signal, then SIGKILL after the stop timeout).
    fn signal(&mut self, why: &str) {
        if let Some(stop) = self.inner_stop.take() {
            tracing::warn!(path = %self.path, reason = why, "outboard: signalling the child");
            let _ = stop.send(StopMode::Graceful);
        }
        self.stopping = Stopping::Signalled;
    }

    /// Ends the run for good reason `why` (it becomes the run's exit).
    fn give_up(&mut self, why: String) {
        if self.verdict.is_none() && self.inner_stop.is_some() {
            self.verdict = Some(Exit::Fatal(why.clone()));
            self.signal(&why);
        }
    }

    fn stop_deadline(&self, unwritten: bool) -> Option<Instant> {
        match self.stopping {
            Stopping::Asked {
                write_by,
                signal_at,
            } if unwritten => Some(write_by.min(signal_at)),
            Stopping::Asked { signal_at, .. } => Some(signal_at),
            _ => None,
        }
    }

    fn on_stop_timer(&mut self, now: Instant, unwritten: bool) {
        if let Stopping::Asked {
            write_by,
            signal_at,
        } = self.stopping
        {
            if now >= signal_at {
                self.signal("the child did not stop within its stop timeout when asked");
            } else if unwritten && now >= write_by {
                self.signal("the stop request could not be written: the child does not read");
            }
        }
    }

    /// A stop request from the supervisor; returns the receiver that says when the
    /// request to the child is written, if one was queued.
    fn on_stop_request(
        &mut self,
        request: Result<StopMode, oneshot::error::RecvError>,
    ) -> Option<oneshot::Receiver<()>> {
        if request.is_err() {
            // The supervisor is gone: the process goes at once.
            drop(self.inner_stop.take());
            self.stopping = Stopping::Signalled;
            return None;
        }
        // Already signalled: nothing more to ask.
        self.inner_stop.as_ref()?;
        let asked = self
            .shared
            .writer()
            .and_then(|w| w.try_send_acked(&SupervisorMessage::Stop));
        match asked {
            Some(written) => {
                let now = Instant::now();
                self.stopping = Stopping::Asked {
                    write_by: now + write_deadline(&self.spec),
                    signal_at: now + self.spec.stop_timeout,
                };
                Some(written)
            }
            None => {
                self.signal("the child cannot be asked to stop over its socket");
                None
            }
        }
    }

    fn on_tick(&mut self) {
        // While a stop runs, its own deadlines apply.
        if self.stopping != Stopping::No {
            return;
        }
        if self.heartbeat.given_up() {
            self.give_up(self.unresponsive());
            return;
        }
        let seq = self.heartbeat.ping_sent();
        if let Some(writer) = self.shared.writer() {
            // A full queue means the child does not read: the ping counts as missed.
            let _ = writer.try_send(&SupervisorMessage::Ping { seq });
        }
    }

    fn unresponsive(&self) -> String {
        format!(
            "missed {} heartbeats in a row (one every {:?}; a write counts as missed after {:?})",
            self.heartbeat.missed(),
            self.spec.heartbeat,
            write_deadline(&self.spec)
        )
    }

    /// Refuses a connection that was read (its reason may quote what the peer sent, so it
    /// is logged cut short and escaped, within the refusals' budget).
    fn refuse(&mut self, writer: FrameWriter, why: String) {
        if let Some(suppressed) = self.refusals.take() {
            tracing::warn!(path = %self.path, reason = %untrusted(&why), suppressed, "outboard: refusing a connection");
        }
        writer.finish_with(&SupervisorMessage::Error { message: why });
    }

    fn on_event(&mut self, event: Incoming) {
        match event {
            Incoming::Hello {
                conn,
                peer_pid,
                writer,
                hello,
                accepted,
            } => match self.judge(hello, self.shared.connection().is_some(), peer_pid) {
                Ok(()) => {
                    let welcomed = writer.try_send(&SupervisorMessage::Welcome {
                        protocol: IPC_PROTOCOL,
                    });
                    if welcomed {
                        tracing::info!(path = %self.path, pid = peer_pid, "outboard: child connected");
                        self.heartbeat.connected();
                        self.shared
                            .set_current(Some(Connection { id: conn, writer }));
                    }
                    let _ = accepted.send(welcomed);
                }
                Err((why, fatal)) => {
                    self.refuse(writer, why.clone());
                    let _ = accepted.send(false);
                    if fatal && self.verdict.is_none() {
                        self.verdict = Some(Exit::Refused(why.clone()));
                        self.signal(&why);
                    }
                }
            },
            Incoming::Message(conn, message) if self.shared.connection() == Some(conn) => {
                self.on_message(message)
            }
            Incoming::Message(..) => {}
            Incoming::Closed(conn, error) => {
                if self.shared.connection() == Some(conn) {
                    if let Some(connection) = self.shared.set_current(None) {
                        match error {
                            Some(e) => self.refuse(connection.writer, format!("bad frame: {e}")),
                            None => {
                                tracing::info!(path = %self.path, "outboard: child disconnected")
                            }
                        }
                    }
                    self.shared.fail_pending(&self.path);
                }
            }
            Incoming::WriteStalled(conn) => {
                if self.shared.connection() == Some(conn) {
                    self.heartbeat.write_stalled();
                    if self.stopping == Stopping::No && self.heartbeat.given_up() {
                        self.give_up(self.unresponsive());
                    }
                }
            }
            Incoming::WriteFailed(conn, error) => {
                if self.shared.connection() == Some(conn) {
                    tracing::info!(path = %self.path, %error, "outboard: cannot write to the child: disconnected");
                    self.shared.set_current(None);
                    self.shared.fail_pending(&self.path);
                }
            }
        }
    }

    fn on_message(&mut self, message: ChildMessage) {
        match message {
            ChildMessage::Ready => {
                if let Some(tx) = self.ready_tx.take() {
                    let _ = tx.send(());
                }
            }
            ChildMessage::Pong { seq } => {
                if !self.heartbeat.pong(seq) {
                    if let Some(suppressed) = self.reports.take() {
                        tracing::warn!(path = %self.path, seq, last_ping = self.heartbeat.sent, suppressed, "outboard: a pong for no outstanding ping is no heartbeat");
                    }
                }
            }
            ChildMessage::Reply { id, result } => {
                self.shared.resolve(id, result.map_err(CallError::Handler));
            }
            ChildMessage::Error { message } => {
                if let Some(suppressed) = self.reports.take() {
                    tracing::warn!(path = %self.path, message = %untrusted(&message), suppressed, "outboard: the child reported an error");
                }
            }
            ChildMessage::Hello { .. } => {
                if let Some(connection) = self.shared.set_current(None) {
                    self.refuse(
                        connection.writer,
                        "hello was already sent on this connection".to_owned(),
                    );
                }
                self.shared.fail_pending(&self.path);
            }
        }
    }

    /// Accepts a hello from the process `peer_pid`, or says why not and whether that is
    /// fatal for the child. "Already connected" comes first: whatever a second hello says,
    /// it never harms the connected child.
    fn judge(
        &self,
        hello: Result<ChildMessage, FrameError>,
        connected: bool,
        peer_pid: u32,
    ) -> Result<(), (String, bool)> {
        let hello = hello.map_err(|e| (format!("bad hello: {e}"), false))?;
        let ChildMessage::Hello {
            protocol,
            token,
            app_version,
            pid,
        } = hello
        else {
            return Err(("the first message must be hello".to_owned(), false));
        };
        if connected {
            return Err(("the child is already connected".to_owned(), false));
        }
        if !bool::from(token.as_bytes().ct_eq(self.admission.token.as_bytes())) {
            return Err(("wrong token".to_owned(), false));
        }
        if pid != peer_pid {
            return Err((
                format!("the hello names pid {pid}, but the connection is pid {peer_pid}'s"),
                false,
            ));
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
        Ok(())
    }
}

/// The (device, inode) of the file at `path`, without following a symlink.
pub(super) fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Removes `path` only if it still is the file `ours` (a newer run may have bound its own
/// socket there since). Call it while the socket that made `ours` is still open: that
/// keeps the inode, so its number cannot have been reused by the newer file.
pub(super) fn remove_if_same(path: &std::path::Path, ours: (u64, u64)) {
    if file_identity(path) == Some(ours) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 4: an old run must not unlink the socket a newer run bound at the same path.
    #[test]
    fn the_socket_file_is_removed_only_while_it_is_this_runs() {
        let dir = std::env::temp_dir().join(format!("warden-link-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("child.sock");
        std::fs::write(&path, b"old").expect("old file");
        let old = file_identity(&path).expect("identity");
        // As the old run's bound listener does, keeps the old inode (and its number) alive.
        let _pinned = std::fs::File::open(&path).expect("open old");
        // A newer run replaces the file (a listener with try_overwrite unlinks and binds).
        std::fs::remove_file(&path).expect("unlink");
        std::fs::write(&path, b"new").expect("new file");
        remove_if_same(&path, old);
        assert_eq!(std::fs::read(&path).expect("still there"), b"new");
        let new = file_identity(&path).expect("identity");
        remove_if_same(&path, new);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn heartbeat_misses_are_the_larger_of_unanswered_pings_and_stalled_writes() {
        let mut heartbeat = Heartbeat::new(3);
        heartbeat.ping_sent();
        heartbeat.write_stalled();
        heartbeat.ping_sent();
        assert_eq!(heartbeat.missed(), 2);
        assert!(!heartbeat.given_up());
        heartbeat.write_stalled();
        heartbeat.write_stalled();
        assert!(heartbeat.given_up());
        assert!(heartbeat.pong(2));
        assert_eq!(heartbeat.missed(), 0);
    }

    /// Finding 5/6: only a pong for a ping sent and not yet answered is a heartbeat.
    #[test]
    fn a_pong_counts_only_for_an_outstanding_ping() {
        let mut heartbeat = Heartbeat::new(2);
        assert!(!heartbeat.pong(0), "no ping sent yet");
        let first = heartbeat.ping_sent();
        let second = heartbeat.ping_sent();
        assert!(!heartbeat.pong(second + 1), "a ping never sent");
        assert!(!heartbeat.pong(0), "a replayed zero");
        assert!(heartbeat.given_up());
        // A late answer to the first ping answers it only.
        assert!(heartbeat.pong(first));
        assert_eq!(heartbeat.missed(), 1);
        assert!(!heartbeat.pong(first), "answered already");
        assert!(heartbeat.pong(second));
        assert_eq!(heartbeat.missed(), 0);
    }
}
