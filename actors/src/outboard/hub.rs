//! Routes user calls to the current run of each outboard child, and what a run's link
//! shares with those callers: the writer of its current connection and the calls waiting
//! for a reply.
//!
//! A call never touches the socket: it queues its frame with the connection's writer
//! (waiting for room within its own timeout) and waits for the reply the connection's
//! reader hands over; the whole exchange is bounded by the call's timeout, and no lock is
//! held across an await. Each run registers under a number unique to this hub, not its
//! generation (a slot removed by a reload and a new slot of the same path both start at
//! generation 1), so an old run's cleanup never removes a newer run's entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use warden_supervisors::ipc::SupervisorMessage;
use warden_supervisors::wire::{self, MAX_FRAME};
use warden_supervisors::ActorPath;

use super::writer::FrameWriter;
use super::CallError;

type ReplySender = oneshot::Sender<Result<serde_json::Value, CallError>>;

/// The connection a link talks to its child over.
#[derive(Debug)]
pub(super) struct Connection {
    /// Its number within the link.
    pub(super) id: u64,
    /// Its writer.
    pub(super) writer: FrameWriter,
}

/// What a run's link shares with callers.
#[derive(Default)]
pub(super) struct LinkShared {
    current: Mutex<Option<Connection>>,
    pending: Mutex<HashMap<u64, ReplySender>>,
    next_call: AtomicU64,
}

impl LinkShared {
    /// The writer of the current connection, if the child is connected.
    pub(super) fn writer(&self) -> Option<FrameWriter> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.writer.clone())
    }

    /// The number of the current connection, if the child is connected.
    pub(super) fn connection(&self) -> Option<u64> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.id)
    }

    /// Replaces the current connection, returning the one it replaces.
    pub(super) fn set_current(&self, current: Option<Connection>) -> Option<Connection> {
        std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            current,
        )
    }

    /// Hands `result` to the caller of call `id`, if it still waits.
    pub(super) fn resolve(&self, id: u64, result: Result<serde_json::Value, CallError>) {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }

    /// Whether the caller of call `id` still waits for its reply.
    pub(super) fn is_pending(&self, id: u64) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Fails every waiting call: the connection they went out on is gone.
    pub(super) fn fail_pending(&self, path: &ActorPath) {
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
}

/// Routes user calls to the current run of each outboard child.
#[derive(Default)]
pub struct OutboardHub {
    links: Mutex<HashMap<ActorPath, (u64, Arc<LinkShared>)>>,
    next_registration: AtomicU64,
}

impl std::fmt::Debug for OutboardHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboardHub").finish_non_exhaustive()
    }
}

/// A run's entry in the hub; dropping it removes the entry if it is still this run's.
pub(super) struct Registration {
    hub: Arc<OutboardHub>,
    path: ActorPath,
    id: u64,
}

impl Registration {
    /// Makes `shared` the link calls to `path` go to, replacing any earlier run's.
    pub(super) fn new(hub: &Arc<OutboardHub>, path: &ActorPath, shared: Arc<LinkShared>) -> Self {
        let id = hub.next_registration.fetch_add(1, Ordering::Relaxed) + 1;
        hub.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.clone(), (id, shared));
        Self {
            hub: hub.clone(),
            path: path.clone(),
            id,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut links = self
            .hub
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if links.get(&self.path).is_some_and(|(id, _)| *id == self.id) {
            links.remove(&self.path);
        }
    }
}

impl OutboardHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Relays `body` to the outboard child at `path` and waits at most `timeout` for its
    /// reply, the time its frame waits to be written included.
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
            .map(|(_, shared)| shared.clone());
        let link = link.ok_or_else(|| CallError::NotFound(path.to_string()))?;
        let not_connected = || CallError::NotConnected(path.to_string());
        let writer = link.writer().ok_or_else(not_connected)?;
        let id = link.next_call.fetch_add(1, Ordering::Relaxed) + 1;
        let payload = wire::encode(&SupervisorMessage::Call { id, body })
            .map_err(|e| CallError::Handler(format!("cannot encode the call: {e}")))?;
        if payload.len() > MAX_FRAME {
            return Err(CallError::Handler(format!(
                "the call is {} bytes, over the {MAX_FRAME} a frame may hold",
                payload.len()
            )));
        }
        let (reply, rx) = oneshot::channel();
        link.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, reply);
        let exchange = async {
            let queued = writer.send_call(id, payload).await;
            // Not held while waiting: a writer nobody holds can end.
            drop(writer);
            queued.map_err(|()| not_connected())?;
            rx.await.map_err(|_| not_connected())?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => {
                if result.is_err() {
                    link.forget(id);
                }
                result
            }
            Err(_) => {
                link.forget(id);
                Err(CallError::Timeout {
                    path: path.to_string(),
                    waited: timeout,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_now(hub: &OutboardHub, path: &ActorPath) -> Result<serde_json::Value, CallError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(hub.call(path, serde_json::json!(1), Duration::from_millis(10)))
    }

    /// Finding 4: a reload can run an old and a new run of one path side by side, both at
    /// generation 1. The old run's cleanup must leave the new run's entry alone.
    #[test]
    fn an_old_runs_cleanup_keeps_a_newer_runs_entry() {
        let hub = Arc::new(OutboardHub::new());
        let path = ActorPath::parse("/child").expect("path");
        let old = Registration::new(&hub, &path, Arc::new(LinkShared::default()));
        let new = Registration::new(&hub, &path, Arc::new(LinkShared::default()));
        drop(old);
        // Still routed (to a run that is not connected), not unknown.
        assert_eq!(
            call_now(&hub, &path),
            Err(CallError::NotConnected("/child".to_owned()))
        );
        drop(new);
        assert_eq!(
            call_now(&hub, &path),
            Err(CallError::NotFound("/child".to_owned()))
        );
    }
}
