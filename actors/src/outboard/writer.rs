//! The writer of one outboard connection: the only task that writes to the child's
//! socket. Frames reach it through a bounded queue, so nobody else ever awaits the
//! socket. Every write has a deadline: each deadline that passes with the frame still
//! unwritten is reported to the link as a stalled write (a missed heartbeat). The frame
//! itself is never cut short (the stream would lose its framing); the writer gives up
//! only when the write fails or when nobody can queue anything any more.

use std::sync::{Arc, Weak};
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use tokio::sync::{mpsc, oneshot};
use warden_supervisors::ipc::SupervisorMessage;
use warden_supervisors::wire::{self, MAX_FRAME};
use warden_supervisors::ActorPath;

use super::hub::LinkShared;
use super::link::Incoming;

/// Frames that may wait for one connection's writer; a caller beyond that waits for room
/// (within its own timeout), a ping or a stop request beyond that is not sent.
const QUEUE: usize = 16;

/// What a frame is for, which decides what the writer does around it.
enum Purpose {
    /// Nothing more to do.
    Plain,
    /// A user call: skipped if its caller stopped waiting before its turn came.
    Call(u64),
    /// Tell the sender once the frame is in the socket.
    Acked(oneshot::Sender<()>),
}

/// One frame to write.
struct Outgoing {
    payload: Vec<u8>,
    purpose: Purpose,
}

/// The sending side of a connection's writer. Cloning it is cheap; the writer ends once
/// every handle is dropped and its queue is written.
#[derive(Clone)]
pub(super) struct FrameWriter {
    queue: mpsc::Sender<Outgoing>,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter").finish_non_exhaustive()
    }
}

/// Where a writer reports to, and what it writes on.
pub(super) struct WriterContext {
    /// The connection's number within its link.
    pub(super) conn: u64,
    /// The connection.
    pub(super) stream: Arc<Stream>,
    /// How long one frame may take to go into the socket before it counts as stalled.
    pub(super) deadline: Duration,
    /// The link's events.
    pub(super) events: mpsc::Sender<Incoming>,
    /// Calls still waiting (a call whose caller gave up is not written).
    pub(super) shared: Weak<LinkShared>,
    /// For logs.
    pub(super) path: ActorPath,
}

impl FrameWriter {
    /// Starts the writer task of a connection on the current arbiter.
    pub(super) fn spawn(cx: WriterContext) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        actix_rt::spawn(write_frames(cx, rx));
        Self { queue }
    }

    /// Queues `message` if there is room right now; `false` if not (the queue is full or
    /// the writer is gone).
    pub(super) fn try_send(&self, message: &SupervisorMessage) -> bool {
        match wire::encode(message) {
            Ok(payload) => self
                .queue
                .try_send(Outgoing {
                    payload,
                    purpose: Purpose::Plain,
                })
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Queues `message` if there is room right now; the receiver resolves once it is in
    /// the socket (and fails if it never will be).
    pub(super) fn try_send_acked(
        &self,
        message: &SupervisorMessage,
    ) -> Option<oneshot::Receiver<()>> {
        let payload = wire::encode(message).ok()?;
        let (written, rx) = oneshot::channel();
        self.queue
            .try_send(Outgoing {
                payload,
                purpose: Purpose::Acked(written),
            })
            .ok()?;
        Some(rx)
    }

    /// Queues the encoded call `id`, waiting for room; `Err` if the writer is gone.
    pub(super) async fn send_call(&self, id: u64, payload: Vec<u8>) -> Result<(), ()> {
        self.queue
            .send(Outgoing {
                payload,
                purpose: Purpose::Call(id),
            })
            .await
            .map_err(|_| ())
    }

    /// Queues `message` as the last frame of this handle (the connection closes once every
    /// handle is gone and the queue is written).
    pub(super) fn finish_with(self, message: &SupervisorMessage) {
        let _ = self.try_send(message);
    }
}

/// Writes queued frames until the queue is closed and empty, or a write fails.
async fn write_frames(cx: WriterContext, mut queue: mpsc::Receiver<Outgoing>) {
    while let Some(Outgoing { payload, purpose }) = queue.recv().await {
        if let Purpose::Call(id) = purpose {
            let wanted = cx.shared.upgrade().is_some_and(|s| s.is_pending(id));
            if !wanted {
                continue;
            }
        }
        let mut writer = &*cx.stream;
        let write = wire::write_frame(&mut writer, &payload, MAX_FRAME);
        tokio::pin!(write);
        loop {
            match tokio::time::timeout(cx.deadline, &mut write).await {
                Ok(Ok(())) => {
                    if let Purpose::Acked(written) = purpose {
                        let _ = written.send(());
                    }
                    break;
                }
                Ok(Err(e)) => {
                    let _ = cx
                        .events
                        .send(Incoming::WriteFailed(cx.conn, e.to_string()))
                        .await;
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        path = %cx.path,
                        deadline = ?cx.deadline,
                        "outboard: a write to the child is past its deadline (the child does not read)"
                    );
                    // Best effort: if the link is that busy, the next deadline reports again.
                    let _ = cx.events.try_send(Incoming::WriteStalled(cx.conn));
                    if queue.is_closed() {
                        tracing::warn!(path = %cx.path, "outboard: giving up a connection nobody writes to any more");
                        return;
                    }
                }
            }
        }
    }
}
