//! The spokes connected now, keyed by name. Each connection has a generation; the newest
//! connection of a name wins (the older one is told to close), and a connection's
//! cleanup removes its entry only if the generation still matches, so an old
//! connection's late cleanup never drops the reconnect that replaced it.
//! Verbs to a spoke go through a bounded queue and wait for their reply by request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use warden_actors::link::protocol::{Answer, Verb};
use warden_supervisors::Timestamp;

/// How long a relayed verb waits for the spoke's reply (then 504).
pub const VERB_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued for one spoke's socket; past it the hub answers 503 at once, so a
/// slow spoke never grows the hub's memory.
pub const SEND_QUEUE: usize = 64;

/// A request on its way to a spoke.
#[derive(Debug)]
pub struct Outbound {
    /// The request id.
    pub id: u64,
    /// The verb.
    pub verb: Verb,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// One live connection, as the registry holds it.
#[derive(Debug, Clone)]
struct Connection {
    generation: u64,
    queue: mpsc::Sender<Outbound>,
    pending: Pending,
    close: watch::Sender<Option<String>>,
    connected_at: Timestamp,
    version: u32,
}

/// What the connection task holds: its queue's far end, its pending replies, and the
/// signal that tells it to close.
#[derive(Debug)]
pub struct Registered {
    /// This connection's generation.
    pub generation: u64,
    /// Requests to write to the socket.
    pub queue: mpsc::Receiver<Outbound>,
    /// Replies awaited, by id.
    pub pending: PendingReplies,
    /// Becomes `Some(reason)` when the connection must close at once.
    pub close: watch::Receiver<Option<String>>,
}

/// The replies a connection's verbs wait for.
#[derive(Debug, Clone)]
pub struct PendingReplies(Pending);

impl PendingReplies {
    /// Delivers the reply to request `id` (ignored if nobody waits any more).
    pub fn complete(&self, id: u64, answer: Answer) {
        let waiter = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(answer);
        }
    }

    /// Fails every verb in flight (their waiters hear that the spoke went away).
    pub fn fail_all(&self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// A connected spoke as listed.
#[derive(Debug, Clone)]
pub struct Live {
    /// When this connection was accepted.
    pub connected_at: Timestamp,
    /// Its protocol version.
    pub version: u32,
}

/// Why a verb got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Nothing connected under that name (503).
    #[error("spoke not connected")]
    NotConnected,
    /// Its queue is full (503).
    #[error("spoke busy: {SEND_QUEUE} requests already queued")]
    Busy,
    /// The connection ended before the reply (503).
    #[error("the spoke's connection closed before it answered")]
    Dropped,
    /// No reply within [`VERB_TIMEOUT`] (504).
    #[error("the spoke did not answer within {0:?}")]
    Timeout(Duration),
}

/// The connected spokes.
#[derive(Debug, Default)]
pub struct Registry {
    spokes: Mutex<HashMap<String, Connection>>,
    generations: AtomicU64,
    request_ids: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.spokes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection of `name`; an older one is told to close.
    pub fn register(&self, name: &str, version: u32) -> Registered {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (queue_tx, queue_rx) = mpsc::channel(SEND_QUEUE);
        let (close_tx, close_rx) = watch::channel(None);
        let pending = Pending::default();
        let connection = Connection {
            generation,
            queue: queue_tx,
            pending: pending.clone(),
            close: close_tx,
            connected_at: Timestamp::now(),
            version,
        };
        if let Some(old) = self.lock().insert(name.to_owned(), connection) {
            old.close
                .send_replace(Some("replaced by a newer connection of this spoke".into()));
        }
        Registered {
            generation,
            queue: queue_rx,
            pending: PendingReplies(pending),
            close: close_rx,
        }
    }

    /// Removes `name`'s entry if it is still the connection of `generation`.
    pub fn remove(&self, name: &str, generation: u64) {
        let mut spokes = self.lock();
        if spokes.get(name).is_some_and(|c| c.generation == generation) {
            spokes.remove(name);
        }
    }

    /// Closes `name`'s connection at once (revocation), failing its verbs in flight.
    pub fn disconnect(&self, name: &str, reason: &str) -> bool {
        let Some(connection) = self.lock().remove(name) else {
            return false;
        };
        connection.close.send_replace(Some(reason.to_owned()));
        PendingReplies(connection.pending).fail_all();
        true
    }

    /// `name`'s connection, if live.
    pub fn live(&self, name: &str) -> Option<Live> {
        self.lock().get(name).map(|c| Live {
            connected_at: c.connected_at,
            version: c.version,
        })
    }

    /// How many spokes are connected.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Sends `verb` to `name` and waits for the reply.
    pub async fn call(&self, name: &str, verb: Verb) -> Result<Answer, RelayError> {
        let id = self.request_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let (queue, pending) = {
            let spokes = self.lock();
            let connection = spokes.get(name).ok_or(RelayError::NotConnected)?;
            (connection.queue.clone(), connection.pending.clone())
        };
        pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, tx);
        let forget = || {
            pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        };
        if let Err(e) = queue.try_send(Outbound { id, verb }) {
            forget();
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => RelayError::Busy,
                mpsc::error::TrySendError::Closed(_) => RelayError::NotConnected,
            });
        }
        match tokio::time::timeout(VERB_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(RelayError::Dropped),
            Err(_) => {
                forget();
                Err(RelayError::Timeout(VERB_TIMEOUT))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_connections_cleanup_never_removes_its_replacement() {
        let registry = Registry::default();
        let old = registry.register("edge", 1);
        let new = registry.register("edge", 1);
        assert!(
            old.close.borrow().is_some(),
            "the older connection is told to close"
        );
        registry.remove("edge", old.generation);
        assert!(registry.live("edge").is_some());
        registry.remove("edge", new.generation);
        assert!(registry.live("edge").is_none());
    }

    /// A spoke that stops taking requests fills only its own bounded queue: the next
    /// verb is refused at once (503 busy) instead of queueing without bound.
    #[tokio::test]
    async fn a_full_send_queue_refuses_at_once() {
        let registry = std::sync::Arc::new(Registry::default());
        let _held = registry.register("slow", 1);
        let mut waiting = Vec::new();
        for _ in 0..SEND_QUEUE {
            let registry = registry.clone();
            waiting.push(tokio::spawn(async move {
                registry.call("slow", Verb::Tree).await
            }));
        }
        tokio::task::yield_now().await;
        while registry
            .lock()
            .get("slow")
            .is_some_and(|c| c.queue.capacity() > 0)
        {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            registry.call("slow", Verb::Tree).await,
            Err(RelayError::Busy)
        );
        assert!(registry.disconnect("slow", "test"));
        for w in waiting {
            assert_eq!(w.await.unwrap(), Err(RelayError::Dropped));
        }
    }
}
