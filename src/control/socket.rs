//! The local control socket (`state_dir/control.sock`, mode 0600): frames of a u32
//! big-endian length and MessagePack, at most 1 MiB each. A connection starts with a
//! `hello` carrying the protocol version; then each request gets a reply with its id. A
//! bad frame (garbage, truncated, oversized) or a version mismatch gets an `error` frame
//! and that connection is closed; warden and every other connection carry on.
//!
//! Who may connect: besides the file mode, the kernel's record of the peer (SO_PEERCRED)
//! must say warden's own uid or root; anyone else is closed at once, unanswered, with one
//! rate-limited log line naming its uid and pid. A connection must say hello within
//! [`HELLO_WITHIN`]; at most [`MAX_CONNECTIONS`] are served at once, and one more gets an
//! error frame and is closed. A frame's buffer grows only as its bytes arrive.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use futures_util::StreamExt as _;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use warden_actors::log_budget::LogBudget;
use warden_actors::peer::PeerCred;
use warden_supervisors::wire::{self, FrameError, MAX_FRAME};

use tokio::io::{AsyncRead, AsyncWrite};

use super::protocol::{ClientFrame, ServerFrame, PROTOCOL_VERSION};
use super::Controller;

/// Control connections served at once, at most; one more is refused with an error frame.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a new connection may take to say hello before it is closed.
pub const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// How long warden tries to write a refusal before it just closes the connection.
const REFUSAL_WRITE: Duration = Duration::from_millis(200);

/// Binds the control socket at `path` (replacing a stale file), or serves `inherited` (the
/// listening socket a warden that re-executed itself handed over), on the current actix
/// arbiter until the System stops. Answers a duplicate of the listening socket (closed on
/// exec) to hand over to a re-executed warden.
pub fn serve(
    path: &Path,
    controller: Addr<Controller>,
    inherited: Option<std::os::fd::OwnedFd>,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd as _;
    if path.as_os_str().len() >= 108 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "control socket path {} is {} bytes, over the 107 a unix socket allows: use a shorter state_dir",
                path.display(),
                path.as_os_str().len()
            ),
        ));
    }
    let listener = match inherited {
        Some(fd) => interprocess::local_socket::tokio::Listener::from(
            interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(fd)?,
        ),
        None => ListenerOptions::new()
            .name(path.to_fs_name::<GenericFilePath>()?)
            .mode(0o600)
            .try_overwrite(true)
            .create_tokio()?,
    };
    let handover = match &listener {
        interprocess::local_socket::tokio::Listener::UdSocket(uds) => {
            uds.as_fd().try_clone_to_owned()?
        }
    };
    actix_rt::spawn(async move {
        let open = Rc::new(Cell::new(0usize));
        let mut strangers = LogBudget::default();
        loop {
            match listener.accept().await {
                Ok(conn) => {
                    if !admitted(&conn, &mut strangers) {
                        continue;
                    }
                    match Slot::take(&open) {
                        Some(slot) => {
                            let controller = controller.clone();
                            actix_rt::spawn(async move {
                                serve_connection(conn, controller).await;
                                drop(slot);
                            });
                        }
                        None => {
                            actix_rt::spawn(async move {
                                let mut tx = &conn;
                                refuse_within(
                                    &mut tx,
                                    format!(
                                        "too many connections: at most {MAX_CONNECTIONS} at once"
                                    ),
                                )
                                .await;
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(handover)
}

/// Whether the peer of `conn` may use the control socket: warden's own uid or root. A
/// refused one is logged (within `strangers`' budget) with its uid and pid.
fn admitted(conn: &Stream, strangers: &mut LogBudget) -> bool {
    match PeerCred::of_stream(conn) {
        Ok(peer) if peer.is_warden_or_root() => true,
        Ok(peer) => {
            if let Some(suppressed) = strangers.take() {
                tracing::warn!(
                    uid = peer.uid,
                    pid = peer.pid,
                    suppressed,
                    "control socket: refusing a client of another user"
                );
            }
            false
        }
        Err(e) => {
            if let Some(suppressed) = strangers.take() {
                tracing::warn!(error = %e, suppressed, "control socket: refusing a client whose credentials cannot be read");
            }
            false
        }
    }
}

/// One of the [`MAX_CONNECTIONS`] connection slots; given back when dropped.
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(open: &Rc<Cell<usize>>) -> Option<Self> {
        if open.get() >= MAX_CONNECTIONS {
            return None;
        }
        open.set(open.get() + 1);
        Some(Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Sends an `error` frame if that can be done within [`REFUSAL_WRITE`] (the connection is
/// closed after it either way), without logging: for refusals a client can repeat at will.
async fn refuse_within<W: AsyncWrite + Unpin>(tx: &mut W, message: String) {
    let _ = tokio::time::timeout(REFUSAL_WRITE, send(tx, &ServerFrame::Error { message })).await;
}

async fn send<W: AsyncWrite + Unpin>(tx: &mut W, frame: &ServerFrame) -> Result<(), FrameError> {
    let payload = wire::encode(frame)?;
    wire::write_frame(tx, &payload, MAX_FRAME).await
}

async fn refuse<W: AsyncWrite + Unpin>(tx: &mut W, message: String) {
    tracing::warn!(%message, "control socket: closing a connection");
    let _ = send(tx, &ServerFrame::Error { message }).await;
}

async fn next_frame<R: AsyncRead + Unpin>(rx: &mut R) -> Result<Option<ClientFrame>, FrameError> {
    match wire::read_frame(rx, MAX_FRAME).await? {
        None => Ok(None),
        Some(payload) => wire::decode(&payload).map(Some),
    }
}

async fn serve_connection(conn: Stream, controller: Addr<Controller>) {
    let mut rx = &conn;
    let mut tx = &conn;
    let Ok(hello) = tokio::time::timeout(HELLO_WITHIN, next_frame(&mut rx)).await else {
        refuse_within(&mut tx, format!("no hello within {HELLO_WITHIN:?}")).await;
        return;
    };
    match hello {
        Ok(Some(hello)) => {
            if let Err(reason) = check_hello(&hello) {
                refuse(&mut tx, reason).await;
                return;
            }
            if send(&mut tx, &welcome()).await.is_err() {
                return;
            }
        }
        Ok(None) => return,
        Err(e) => {
            refuse(&mut tx, format!("bad frame: {e}")).await;
            return;
        }
    }
    request_loop(&mut rx, &mut tx, &controller).await;
}

/// Sends the `welcome` frame: the handshake's acknowledgement.
pub(crate) async fn acknowledge<W: AsyncWrite + Unpin>(tx: &mut W) -> Result<(), FrameError> {
    send(tx, &welcome()).await
}

/// The `welcome` frame of this warden.
pub(crate) fn welcome() -> ServerFrame {
    ServerFrame::Welcome {
        protocol: PROTOCOL_VERSION,
        server: format!("warden {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Checks a client's `hello`: `Ok` if it speaks this protocol, else the reason to refuse.
pub(crate) fn check_hello(frame: &ClientFrame) -> Result<(), String> {
    match frame {
        ClientFrame::Hello { protocol, .. } if *protocol == PROTOCOL_VERSION => Ok(()),
        ClientFrame::Hello { protocol, client } => Err(format!(
            "protocol version mismatch: client {client:?} speaks {protocol}, warden speaks {PROTOCOL_VERSION}"
        )),
        ClientFrame::Request { .. } => Err("the first frame must be hello".to_owned()),
    }
}

/// Frames read ahead while a request is in flight (so that the end of the connection is
/// seen at once); past that, reading waits for the request.
const READ_AHEAD: usize = 16;

/// Serves requests after the handshake until the client closes or sends a bad frame.
///
/// Requests are answered one at a time, in order. While one is in flight the connection
/// is still read: later frames wait their turn, but the end of the connection (the client
/// died, or a bound holder's parent) ends the loop at once, dropping the request's answer.
pub(crate) async fn request_loop<R, W>(rx: &mut R, tx: &mut W, controller: &Addr<Controller>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A stream of frames keeps a half-read frame across polls (reading is not cancel-safe).
    let frames = futures_util::stream::unfold(rx, |rx| async move {
        let frame = next_frame(rx).await;
        Some((frame, rx))
    });
    tokio::pin!(frames);
    let mut waiting: VecDeque<Result<ClientFrame, FrameError>> = VecDeque::new();
    let mut bad_frame_seen = false;
    loop {
        let frame = match waiting.pop_front() {
            Some(frame) => frame,
            None => match frames.next().await {
                Some(Ok(Some(frame))) => Ok(frame),
                Some(Err(e)) => Err(e),
                Some(Ok(None)) | None => return,
            },
        };
        match frame {
            Ok(ClientFrame::Request { id, request }) => {
                let answer = controller.send(request);
                tokio::pin!(answer);
                let answered = loop {
                    let read_more = !bad_frame_seen && waiting.len() < READ_AHEAD;
                    tokio::select! {
                        answered = &mut answer => break answered,
                        next = frames.next(), if read_more => match next {
                            Some(Ok(Some(frame))) => waiting.push_back(Ok(frame)),
                            Some(Err(e)) => {
                                bad_frame_seen = true;
                                waiting.push_back(Err(e));
                            }
                            // Nobody is left to answer.
                            Some(Ok(None)) | None => return,
                        },
                    }
                };
                let result = match answered {
                    Ok(result) => result,
                    Err(_) => Err(super::protocol::Failure::new(
                        super::protocol::FailureKind::Unavailable,
                        "warden is stopping",
                    )),
                };
                if send(tx, &ServerFrame::Reply { id, result }).await.is_err() {
                    return;
                }
            }
            Ok(ClientFrame::Hello { .. }) => {
                refuse(tx, "hello was already sent on this connection".to_owned()).await;
                return;
            }
            Err(e) => {
                refuse(tx, format!("bad frame: {e}")).await;
                return;
            }
        }
    }
}
