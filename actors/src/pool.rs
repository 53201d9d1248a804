//! The pool child kind: many workers of one app, with sessions routed to them.
//!
//! A pool is a supervisor of its workers (actors of kind `worker` at
//! `<pool path>/<worker id>`, each an OS process on its own port from the pool's range)
//! plus a manager actor that places sessions: on the fullest worker that still has room
//! (so idle workers can be reaped), starting a new worker up to `max` when none has room,
//! refusing past that. A worker with no session for `idle_timeout` is stopped, and leaves
//! the tree, while the pool is above `min`. A rollout starts workers of a new template,
//! marks the old ones draining (no new sessions) and stops each once its sessions are gone
//! or its deadline passes. Sessions are kept in a [`SessionRegistry`].

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use warden_supervisors::{
    ActorKind, ActorName, ActorPath, ActorState, ActorTree, ChildFactory, ChildSpec, ChildUpdate,
    Exit, Intensity, RunningChild, StartContext, Strategy, Supervisor, SupervisorSpec,
    UpdateChildren,
};

/// What a worker runs: the command and environment, before `{port}` and `{worker_id}` are
/// filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTemplate {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// Builds the child spec of one worker: (worker path, template, port) -> spec.
pub type WorkerBuilder =
    Arc<dyn Fn(&ActorPath, &WorkerTemplate, u16) -> Result<ChildSpec, String> + Send + Sync>;

/// Where and how long-lived the signed tokens of a pool's workers are.
#[derive(Clone)]
pub struct WorkerTokens {
    /// Signs them.
    pub signer: Arc<crate::TokenSigner>,
    /// The token file of a worker (its path is in the worker's environment).
    pub file: Arc<dyn Fn(&ActorPath) -> std::path::PathBuf + Send + Sync>,
    /// How long a token is valid; files are rewritten every half of this.
    pub ttl: Duration,
}

impl fmt::Debug for WorkerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A pool's settings.
#[derive(Clone)]
pub struct PoolSpec {
    /// What workers run.
    pub template: WorkerTemplate,
    /// Makes worker specs.
    pub build: WorkerBuilder,
    /// Ports handed to workers.
    pub ports: RangeInclusive<u16>,
    /// Workers kept even when idle.
    pub min: u32,
    /// Workers at most.
    pub max: u32,
    /// Sessions one worker takes.
    pub sessions_per_worker: u32,
    /// A worker with no session this long is stopped (while above `min`).
    pub idle_timeout: Duration,
    /// How long a new worker may take to be running before a session placed on it fails.
    pub start_timeout: Duration,
    /// Signed worker tokens (`None`: none are written).
    pub tokens: Option<WorkerTokens>,
}

impl fmt::Debug for PoolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolSpec")
            .field("template", &self.template)
            .field("ports", &self.ports)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("sessions_per_worker", &self.sessions_per_worker)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// A session placed on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its id.
    pub session_id: String,
    /// The worker's actor path.
    pub worker: ActorPath,
    /// The worker's port.
    pub port: u16,
}

/// Why a session or rollout request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No pool at that path.
    #[error("no pool at {0}")]
    NoPool(String),
    /// No such session in the pool.
    #[error("no session {session} in pool {pool}")]
    NoSession {
        /// The pool.
        pool: String,
        /// The session id.
        session: String,
    },
    /// Every worker is full and the pool is at `max`, or the pool is draining.
    #[error("{0}")]
    Full(String),
    /// The request is invalid; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// A worker could not be started in time.
    #[error("{0}")]
    Unavailable(String),
}

/// Where sessions are kept (in memory by default; shared between wardens through Redis).
pub trait SessionRegistry: Send + Sync + fmt::Debug + 'static {
    /// Records `session` of `pool`.
    fn put(&self, pool: &ActorPath, session: &Session) -> Result<(), String>;
    /// Forgets a session; answers it if it was there.
    fn remove(&self, pool: &ActorPath, session_id: &str) -> Result<Option<Session>, String>;
    /// Every session of `pool`.
    fn list(&self, pool: &ActorPath) -> Result<Vec<Session>, String>;

    /// Whether other wardens share this registry (then their sessions and workers count:
    /// worker numbers and ports are handed out through it, and session counts are read
    /// back from it).
    fn shared(&self) -> bool {
        false
    }

    /// A worker number of `pool` unique among the wardens sharing the registry (`None`:
    /// not shared, or unreachable now: the pool counts on its own).
    fn next_worker(&self, _pool: &ActorPath) -> Option<u64> {
        None
    }

    /// Claims `port` of `pool` for `worker`; `false` when another warden's worker holds
    /// it.
    fn claim_port(&self, _pool: &ActorPath, _port: u16, _worker: &ActorPath) -> bool {
        true
    }

    /// Gives `port` back (only if `worker` holds it).
    fn release_port(&self, _pool: &ActorPath, _port: u16, _worker: &ActorPath) {}

    /// Gives back every port this warden claimed in an earlier run (before a crash).
    fn release_own_ports(&self, _pool: &ActorPath) {}
}

/// The in-memory [`SessionRegistry`].
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    sessions: Mutex<HashMap<ActorPath, HashMap<String, Session>>>,
}

impl SessionRegistry for MemoryRegistry {
    fn put(&self, pool: &ActorPath, session: &Session) -> Result<(), String> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(pool.clone())
            .or_default()
            .insert(session.session_id.clone(), session.clone());
        Ok(())
    }

    fn remove(&self, pool: &ActorPath, session_id: &str) -> Result<Option<Session>, String> {
        Ok(self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(pool)
            .and_then(|m| m.remove(session_id)))
    }

    fn list(&self, pool: &ActorPath) -> Result<Vec<Session>, String> {
        Ok(self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pool)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }
}

/// Finds the manager of each running pool.
#[derive(Debug, Default)]
pub struct PoolHub {
    pools: Mutex<HashMap<ActorPath, (u64, Addr<PoolManager>)>>,
}

impl PoolHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn manager(&self, pool: &ActorPath) -> Result<Addr<PoolManager>, PoolError> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pool)
            .map(|(_, a)| a.clone())
            .filter(Addr::connected)
            .ok_or_else(|| PoolError::NoPool(pool.to_string()))
    }

    /// Tells every pool that warden drains: no new sessions, and each worker stops once
    /// its sessions are gone.
    pub fn drain_all(&self) {
        for (_, manager) in self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            manager.do_send(Drain);
        }
    }

    /// Places a new session in `pool`.
    pub async fn acquire(&self, pool: &ActorPath) -> Result<Session, PoolError> {
        let manager = self.manager(pool)?;
        manager
            .send(Acquire)
            .await
            .map_err(|_| PoolError::NoPool(pool.to_string()))?
    }

    /// Releases a session of `pool`.
    pub async fn release(&self, pool: &ActorPath, session_id: &str) -> Result<(), PoolError> {
        let manager = self.manager(pool)?;
        manager
            .send(Release(session_id.to_owned()))
            .await
            .map_err(|_| PoolError::NoPool(pool.to_string()))?
    }

    /// Replaces the workers of `pool` by workers with a new command and/or environment
    /// (what is not given stays); old workers drain for at most `deadline`.
    pub async fn rollout(
        &self,
        pool: &ActorPath,
        command: Option<Vec<String>>,
        env: Option<Vec<(String, String)>>,
        deadline: Duration,
    ) -> Result<RolloutSummary, PoolError> {
        let manager = self.manager(pool)?;
        manager
            .send(Rollout {
                command,
                env,
                deadline,
            })
            .await
            .map_err(|_| PoolError::NoPool(pool.to_string()))?
    }
}

/// What a rollout started and drains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSummary {
    /// New workers.
    pub started: Vec<ActorPath>,
    /// Old workers, stopped once their sessions are gone.
    pub draining: Vec<ActorPath>,
}

/// Starts runs of a pool.
#[derive(Debug)]
pub struct PoolFactory {
    spec: PoolSpec,
    hub: Arc<PoolHub>,
    registry: Arc<dyn SessionRegistry>,
}

impl PoolFactory {
    /// A factory for `spec`, registering its manager in `hub`, keeping sessions in
    /// `registry`.
    pub fn new(spec: PoolSpec, hub: Arc<PoolHub>, registry: Arc<dyn SessionRegistry>) -> Self {
        Self {
            spec,
            hub,
            registry,
        }
    }
}

impl ChildFactory for PoolFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Pool
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let mut manager = PoolManager {
            path: cx.path.clone(),
            tree: cx.tree.clone(),
            spec: self.spec.clone(),
            template: self.spec.template.clone(),
            registry: self.registry.clone(),
            supervisor: None,
            workers: Vec::new(),
            next_worker: 0,
            reap: None,
            retiring: Vec::new(),
            draining: false,
        };
        self.registry.release_own_ports(&cx.path);
        for _ in 0..self.spec.min {
            manager.new_worker()?;
        }
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None::<Intensity>,
            children: manager.workers.iter().map(|w| w.spec.clone()).collect(),
        };
        let (mut run, supervisor) = Supervisor::start_nested(cx.clone(), &spec);
        manager.supervisor = Some(supervisor);
        let addr = manager.start();
        self.hub
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cx.path.clone(), (cx.generation, addr.clone()));
        let hub = self.hub.clone();
        let exit = run.exit;
        let path = cx.path.clone();
        let generation = cx.generation;
        run.exit = Box::pin(async move {
            let exit: Exit = exit.await;
            addr.do_send(StopManager);
            let mut pools = hub.pools.lock().unwrap_or_else(PoisonError::into_inner);
            if pools.get(&path).is_some_and(|(g, _)| *g == generation) {
                pools.remove(&path);
            }
            exit
        });
        Ok(run)
    }
}

struct Worker {
    id: String,
    path: ActorPath,
    port: u16,
    spec: ChildSpec,
    sessions: u32,
    /// Sessions placed here but not yet in the registry (waiting for the worker to run).
    pending: u32,
    idle_since: Option<Instant>,
    /// `Some(deadline)` once a rollout replaced it: no new sessions.
    draining: Option<Instant>,
}

/// Places sessions on the workers of one pool.
pub(crate) struct PoolManager {
    path: ActorPath,
    tree: Arc<ActorTree>,
    spec: PoolSpec,
    template: WorkerTemplate,
    registry: Arc<dyn SessionRegistry>,
    supervisor: Option<Addr<Supervisor>>,
    workers: Vec<Worker>,
    next_worker: u64,
    reap: Option<SpawnHandle>,
    /// Workers taken out of the list whose process may still be stopping: their ports
    /// are not handed out until they have left the tree.
    retiring: Vec<(ActorPath, u16)>,
    /// warden drains: no new sessions; each worker stops once its sessions are gone.
    draining: bool,
}

impl fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolManager")
            .field("path", &self.path)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Actor for PoolManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.publish();
        if self.registry.shared() {
            ctx.run_interval(Duration::from_secs(1), |act, ctx| act.recount(ctx));
        }
        if let Some(tokens) = &self.spec.tokens {
            for worker in &self.workers {
                write_worker_token(tokens, &worker.path);
            }
            let every = (tokens.ttl / 2).max(Duration::from_millis(500));
            ctx.run_interval(every, |act, _| {
                if let Some(tokens) = &act.spec.tokens {
                    for worker in &act.workers {
                        write_worker_token(tokens, &worker.path);
                    }
                }
            });
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for worker in &self.workers {
            self.forget_token(&worker.path);
            self.registry
                .release_port(&self.path, worker.port, &worker.path);
        }
        for (path, port) in &self.retiring {
            self.registry.release_port(&self.path, *port, path);
        }
    }
}

/// Writes a fresh token for `worker` (errors are logged: the worker keeps its old one).
fn write_worker_token(tokens: &WorkerTokens, worker: &ActorPath) {
    let token = tokens
        .signer
        .sign(worker, std::time::SystemTime::now() + tokens.ttl);
    let file = (tokens.file)(worker);
    if let Err(e) = crate::worker_token::write_token(&file, &token) {
        tracing::warn!(%worker, file = %file.display(), error = %e, "cannot write a worker token");
    }
}

impl PoolManager {
    fn forget_token(&self, worker: &ActorPath) {
        if let Some(tokens) = &self.spec.tokens {
            let _ = std::fs::remove_file((tokens.file)(worker));
        }
    }

    /// The lowest port that neither a worker nor a stopping former worker holds, nor
    /// another warden sharing the registry; claimed for `worker`.
    fn free_port(&mut self, worker: &ActorPath) -> Option<u16> {
        let tree = self.tree.clone();
        let (gone, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|(path, _)| tree.get(path).is_none());
        self.retiring = still;
        for (path, port) in gone {
            self.registry.release_port(&self.path, port, &path);
        }
        let taken = |p: &u16| {
            self.workers.iter().any(|w| w.port == *p)
                || self.retiring.iter().any(|(_, port)| port == p)
        };
        let candidates: Vec<u16> = self.spec.ports.clone().filter(|p| !taken(p)).collect();
        candidates
            .into_iter()
            .find(|p| self.registry.claim_port(&self.path, *p, worker))
    }

    /// Takes worker `i` out of the pool (its supervisor stops it on the next sync).
    fn retire(&mut self, i: usize) -> Worker {
        let worker = self.workers.remove(i);
        self.forget_token(&worker.path);
        self.retiring.push((worker.path.clone(), worker.port));
        worker
    }

    /// Adds a worker to the list (not yet to the supervisor).
    fn new_worker(&mut self) -> Result<usize, String> {
        let number = match self.registry.next_worker(&self.path) {
            Some(n) => n.max(self.next_worker + 1),
            None => self.next_worker + 1,
        };
        self.next_worker = number;
        let id = format!("w{number}");
        let name = ActorName::new(&id).map_err(|e| e.to_string())?;
        let path = self.path.child(&name);
        let port = self
            .free_port(&path)
            .ok_or_else(|| format!("no free port left in {:?}", self.spec.ports))?;
        let spec = (self.spec.build)(&path, &self.template, port)?;
        if let Some(tokens) = &self.spec.tokens {
            write_worker_token(tokens, &path);
        }
        self.workers.push(Worker {
            id,
            path,
            port,
            spec,
            sessions: 0,
            pending: 0,
            idle_since: Some(Instant::now()),
            draining: None,
        });
        Ok(self.workers.len() - 1)
    }

    /// Tells the workers' supervisor the current list.
    fn sync_workers(&self) {
        if let Some(supervisor) = &self.supervisor {
            supervisor.do_send(UpdateChildren {
                strategy: Strategy::OneForOne,
                intensity: None,
                children: self
                    .workers
                    .iter()
                    .map(|w| ChildUpdate {
                        spec: w.spec.clone(),
                        changed: false,
                    })
                    .collect(),
            });
        }
    }

    fn active(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().filter(|w| w.draining.is_none())
    }

    fn publish(&self) {
        let workers: Vec<serde_json::Value> = self
            .workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "worker": w.path,
                    "port": w.port,
                    "sessions": w.sessions,
                    "draining": w.draining.is_some(),
                    "state": self.tree.get(&w.path).map(|i| i.state),
                })
            })
            .collect();
        let sessions: u32 = self.workers.iter().map(|w| w.sessions).sum();
        let capacity = self.active().count() as u32 * self.spec.sessions_per_worker;
        self.tree.set_details(
            &self.path,
            serde_json::json!({
                "sessions": sessions,
                "capacity": capacity,
                "min": self.spec.min,
                "max": self.spec.max,
                "workers": workers,
            }),
        );
    }

    /// Stops idle workers above `min`, and drained workers; schedules the next check.
    fn reap(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.reap.take() {
            ctx.cancel_future(handle);
        }
        let now = Instant::now();
        let mut removed = false;
        // Drained workers: no session left, or past their deadline.
        let (gone, kept): (Vec<Worker>, Vec<Worker>) =
            std::mem::take(&mut self.workers).into_iter().partition(
                |w| matches!(w.draining, Some(deadline) if w.sessions == 0 || now >= deadline),
            );
        self.workers = kept;
        removed |= !gone.is_empty();
        for w in &gone {
            self.forget_token(&w.path);
            self.retiring.push((w.path.clone(), w.port));
        }
        // Idle workers above min, the longest idle first.
        loop {
            let active = self.active().count() as u32;
            if active <= self.spec.min {
                break;
            }
            let idle = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.draining.is_none() && w.sessions == 0)
                .filter_map(|(i, w)| w.idle_since.map(|t| (i, t)))
                .filter(|(_, t)| now.duration_since(*t) >= self.spec.idle_timeout)
                .min_by_key(|(_, t)| *t);
            match idle {
                Some((i, _)) => {
                    tracing::info!(pool = %self.path, worker = %self.workers[i].path, "reaping an idle worker");
                    self.retire(i);
                    removed = true;
                }
                None => break,
            }
        }
        if removed {
            self.sync_workers();
            self.publish();
        }
        // Next check: the earliest idle expiry or drain deadline.
        let active = self.active().count() as u32;
        let next = self
            .workers
            .iter()
            .filter_map(|w| match w.draining {
                Some(deadline) => Some(deadline),
                None if active > self.spec.min && w.sessions == 0 => {
                    w.idle_since.map(|t| t + self.spec.idle_timeout)
                }
                None => None,
            })
            .min();
        if let Some(at) = next {
            let delay = at.saturating_duration_since(now) + Duration::from_millis(1);
            self.reap = Some(ctx.run_later(delay, |act, ctx| act.reap(ctx)));
        }
    }
}

#[derive(Debug, Message)]
#[rtype(result = "Result<Session, PoolError>")]
struct Acquire;

#[derive(Debug, Message)]
#[rtype(result = "Result<(), PoolError>")]
struct Release(String);

#[derive(Debug, Message)]
#[rtype(result = "Result<RolloutSummary, PoolError>")]
struct Rollout {
    command: Option<Vec<String>>,
    env: Option<Vec<(String, String)>>,
    deadline: Duration,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct StopManager;

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Drain;

impl Handler<Drain> for PoolManager {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        if self.draining {
            return;
        }
        tracing::info!(pool = %self.path, "draining: each worker stops once its sessions are gone");
        self.draining = true;
        // No deadline: a draining warden waits for its own workers' sessions.
        let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        for worker in &mut self.workers {
            worker.draining.get_or_insert(never);
        }
        self.reap(ctx);
        self.publish();
    }
}

impl PoolManager {
    /// Reads the session counts of this pool's workers back from a shared registry:
    /// another warden may have released (or placed) sessions on them.
    fn recount(&mut self, ctx: &mut Context<Self>) {
        let Ok(sessions) = self.registry.list(&self.path) else {
            return;
        };
        let mut changed = false;
        for worker in &mut self.workers {
            let count =
                sessions.iter().filter(|s| s.worker == worker.path).count() as u32 + worker.pending;
            if count != worker.sessions {
                changed = true;
                worker.sessions = count;
                worker.idle_since = (count == 0).then(Instant::now);
            }
        }
        if changed {
            self.reap(ctx);
            self.publish();
        }
    }
}

fn random_id() -> String {
    crate::random_hex(16).unwrap_or_else(|_| {
        // The OS random source failing is exceptional; ids must still be unique.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        crate::hex(&nanos.to_le_bytes())
    })
}

/// Waits until the actor at `path` is running (or fails, or `timeout` passes).
async fn wait_running(
    tree: Arc<ActorTree>,
    path: ActorPath,
    timeout: Duration,
) -> Result<(), String> {
    let mut events = tree.subscribe();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            match tree.get(&path).map(|i| i.state) {
                Some(ActorState::Running) => return Ok(()),
                Some(ActorState::Failed) => return Err(format!("worker {path} failed to start")),
                // None: just added, the supervisor has not taken it yet.
                _ => {}
            }
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                return Err("warden is stopping".to_owned());
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| Err(format!("worker {path} was not running within {timeout:?}")))
}

impl Handler<Acquire> for PoolManager {
    type Result = ResponseActFuture<Self, Result<Session, PoolError>>;

    fn handle(&mut self, _: Acquire, ctx: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Box::pin(actix::fut::ready(Err(PoolError::Full(format!(
                "pool {} is draining",
                self.path
            )))));
        }
        let spw = self.spec.sessions_per_worker;
        // The fullest worker with room: packing keeps the others idle, to be reaped.
        let chosen = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.draining.is_none() && w.sessions < spw)
            // A worker just added has no record yet: it is starting, and takes sessions.
            .filter(|(_, w)| {
                !matches!(
                    self.tree.get(&w.path).map(|i| i.state),
                    Some(ActorState::Failed | ActorState::Stopped | ActorState::Stopping)
                )
            })
            .max_by_key(|(_, w)| w.sessions)
            .map(|(i, _)| i);
        let index = match chosen {
            Some(i) => i,
            None if (self.active().count() as u32) < self.spec.max => match self.new_worker() {
                Ok(i) => {
                    self.sync_workers();
                    i
                }
                Err(e) => return Box::pin(actix::fut::ready(Err(PoolError::Unavailable(e)))),
            },
            None => {
                return Box::pin(actix::fut::ready(Err(PoolError::Full(format!(
                    "pool {} is full: {} workers (its max) with {} sessions each",
                    self.path, self.spec.max, spw
                )))))
            }
        };
        // Reserved now, so concurrent requests see the seat as taken.
        let worker = &mut self.workers[index];
        worker.sessions += 1;
        worker.pending += 1;
        worker.idle_since = None;
        let session = Session {
            session_id: random_id(),
            worker: worker.path.clone(),
            port: worker.port,
        };
        let worker_id = worker.id.clone();
        self.publish();
        let _ = ctx;
        let wait = wait_running(
            self.tree.clone(),
            session.worker.clone(),
            self.spec.start_timeout,
        );
        Box::pin(wait.into_actor(self).map(move |ready, act, ctx| {
            let put = ready.and_then(|()| act.registry.put(&act.path, &session));
            if let Some(w) = act.workers.iter_mut().find(|w| w.id == worker_id) {
                w.pending = w.pending.saturating_sub(1);
            }
            match put {
                Ok(()) => Ok(session),
                Err(why) => {
                    if let Some(w) = act.workers.iter_mut().find(|w| w.id == worker_id) {
                        w.sessions = w.sessions.saturating_sub(1);
                        if w.sessions == 0 {
                            w.idle_since = Some(Instant::now());
                        }
                    }
                    act.reap(ctx);
                    act.publish();
                    Err(PoolError::Unavailable(why))
                }
            }
        }))
    }
}

impl Handler<Release> for PoolManager {
    type Result = Result<(), PoolError>;

    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) -> Self::Result {
        let session = self
            .registry
            .remove(&self.path, &msg.0)
            .map_err(PoolError::Unavailable)?
            .ok_or_else(|| PoolError::NoSession {
                pool: self.path.to_string(),
                session: msg.0.clone(),
            })?;
        if let Some(w) = self.workers.iter_mut().find(|w| w.path == session.worker) {
            w.sessions = w.sessions.saturating_sub(1);
            if w.sessions == 0 {
                w.idle_since = Some(Instant::now());
            }
        }
        self.reap(ctx);
        self.publish();
        Ok(())
    }
}

impl Handler<Rollout> for PoolManager {
    type Result = Result<RolloutSummary, PoolError>;

    fn handle(&mut self, msg: Rollout, ctx: &mut Self::Context) -> Self::Result {
        if msg.command.is_none() && msg.env.is_none() {
            return Err(PoolError::Invalid(
                "rollout: give a new command, env or both".to_owned(),
            ));
        }
        let template = WorkerTemplate {
            command: msg.command.unwrap_or_else(|| self.template.command.clone()),
            env: msg.env.unwrap_or_else(|| self.template.env.clone()),
        };
        if template.command.first().is_none_or(|p| p.is_empty()) {
            return Err(PoolError::Invalid(
                "rollout: command must be a non-empty array".to_owned(),
            ));
        }
        // Checked on a sample worker before anything changes.
        let sample = self.path.child(
            &ActorName::new("rollout-check").map_err(|e| PoolError::Invalid(e.to_string()))?,
        );
        (self.spec.build)(&sample, &template, *self.spec.ports.start())
            .map_err(|e| PoolError::Invalid(format!("rollout: {e}")))?;
        let old: Vec<usize> = (0..self.workers.len())
            .filter(|i| self.workers[*i].draining.is_none())
            .collect();
        let wanted = (old.len() as u32)
            .max(self.spec.min)
            .max(1)
            .min(self.spec.max);
        let free_ports = self
            .spec
            .ports
            .clone()
            .filter(|p| {
                !self.workers.iter().any(|w| w.port == *p)
                    && !self.retiring.iter().any(|(_, port)| port == p)
            })
            .count() as u32;
        if free_ports < wanted {
            return Err(PoolError::Invalid(format!(
                "rollout: {wanted} new workers need {wanted} free ports, {free_ports} left in {:?}",
                self.spec.ports
            )));
        }
        let deadline = Instant::now() + msg.deadline;
        let mut draining = Vec::new();
        for i in old {
            self.workers[i].draining = Some(deadline);
            draining.push(self.workers[i].path.clone());
        }
        self.template = template;
        let mut started = Vec::new();
        for _ in 0..wanted {
            let i = self.new_worker().map_err(PoolError::Unavailable)?;
            started.push(self.workers[i].path.clone());
        }
        tracing::info!(pool = %self.path, started = started.len(), draining = draining.len(), "rollout");
        self.sync_workers();
        self.reap(ctx);
        self.publish();
        Ok(RolloutSummary { started, draining })
    }
}

impl Handler<StopManager> for PoolManager {
    type Result = ();

    fn handle(&mut self, _: StopManager, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
