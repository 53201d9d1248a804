//! Where pool sessions are kept: the [`SessionRegistry`] trait and its in-memory
//! implementation. Every call answers a future that the pool manager runs off its
//! handler (its result comes back to the manager), so a slow registry (Redis) never
//! blocks the supervision thread; the in-memory registry answers at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;
use warden_supervisors::ActorPath;

use super::Session;

/// What a registry call answers, later.
pub type RegistryFuture<T> = BoxFuture<'static, T>;

/// A registry answer available now.
pub(crate) fn ready<T: Send + 'static>(value: T) -> RegistryFuture<T> {
    Box::pin(std::future::ready(value))
}

/// Where sessions are kept (in memory by default; shared between wardens through Redis).
/// Every call is bounded in time: a registry that cannot reach its store answers from
/// local state.
pub trait SessionRegistry: Send + Sync + fmt::Debug + 'static {
    /// Records `session` of `pool`.
    fn put(&self, pool: &ActorPath, session: &Session) -> RegistryFuture<Result<(), String>>;
    /// Forgets a session; answers it if it was there.
    fn remove(
        &self,
        pool: &ActorPath,
        session_id: &str,
    ) -> RegistryFuture<Result<Option<Session>, String>>;
    /// Every session of `pool`.
    fn list(&self, pool: &ActorPath) -> RegistryFuture<Result<Vec<Session>, String>>;

    /// Whether other wardens share this registry (then their sessions and workers count:
    /// worker numbers and ports are handed out through it, and session counts are read
    /// back from it).
    fn shared(&self) -> bool {
        false
    }

    /// A worker number of `pool` unique among the wardens sharing the registry (`None`:
    /// not shared, or unreachable now: the pool counts on its own).
    fn next_worker(&self, _pool: &ActorPath) -> RegistryFuture<Option<u64>> {
        ready(None)
    }

    /// Claims `port` of `pool` for `worker`; `false` when another warden's worker holds
    /// it.
    fn claim_port(
        &self,
        _pool: &ActorPath,
        _port: u16,
        _worker: &ActorPath,
    ) -> RegistryFuture<bool> {
        ready(true)
    }

    /// Gives `port` back (only if `worker` holds it); runs in the background.
    fn release_port(&self, _pool: &ActorPath, _port: u16, _worker: &ActorPath) {}

    /// Gives back every port this warden claimed in an earlier run (before a crash) except
    /// those of `keep` (the workers it adopted); runs in the background.
    fn release_own_ports_except(&self, _pool: &ActorPath, _keep: Vec<u16>) {}
}

/// The in-memory [`SessionRegistry`].
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    sessions: Mutex<HashMap<ActorPath, HashMap<String, Session>>>,
}

impl SessionRegistry for MemoryRegistry {
    fn put(&self, pool: &ActorPath, session: &Session) -> RegistryFuture<Result<(), String>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(pool.clone())
            .or_default()
            .insert(session.session_id.clone(), session.clone());
        ready(Ok(()))
    }

    fn remove(
        &self,
        pool: &ActorPath,
        session_id: &str,
    ) -> RegistryFuture<Result<Option<Session>, String>> {
        ready(Ok(self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(pool)
            .and_then(|m| m.remove(session_id))))
    }

    fn list(&self, pool: &ActorPath) -> RegistryFuture<Result<Vec<Session>, String>> {
        ready(Ok(self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pool)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()))
    }
}
