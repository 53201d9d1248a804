//! The pool child kind: many workers of one app, with sessions routed to them.
//!
//! A pool is a supervisor of its workers (actors of kind `worker` at
//! `<pool path>/<worker id>`, each an OS process on its own port from the pool's range)
//! plus a manager actor that places sessions: on the fullest worker that still has room
//! (so idle workers can be reaped), starting a new worker up to `max` when none has room,
//! refusing past that. A worker with no session for `idle_timeout` is stopped, and leaves
//! the tree, while the pool is above `min`. A rollout starts workers of a new template,
//! marks the old ones draining (no new sessions) and stops each once its sessions are gone
//! or its deadline passes. Sessions are kept in a [`SessionRegistry`], whose calls the
//! manager runs as futures whose results come back to it: no handler and no
//! `ChildFactory::start` waits on Redis (numbers and ports of new workers come from local
//! state, or are claimed through a shared registry asynchronously).
//!
//! The worker table (names, ports, templates, sessions) is persisted in `state_dir` (see
//! [`PoolTables`]); a warden started after a crash rebuilds each pool from it, so the
//! worker services adopt their live processes by path, and the sessions of workers that
//! are gone are released. A `failed` worker is retired (its sessions released) and
//! replaced after a backoff (1 s doubling to 8 s while workers keep failing); it counts
//! toward neither `min` nor `max`. A rollout allocates all its workers first and changes
//! nothing if it cannot.

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;
use actix::{ActorFutureExt, WrapFuture};
use serde::{Deserialize, Serialize};
use warden_supervisors::{
    ActorKind, ActorName, ActorPath, ActorState, ActorTree, ChildFactory, ChildSpec, ChildUpdate,
    Exit, Intensity, RunningChild, StartContext, Strategy, Supervisor, SupervisorSpec,
    UpdateChildren,
};

use crate::service::records::ProcessRecords;

mod registry;
mod table;

pub use registry::{MemoryRegistry, RegistryFuture, SessionRegistry};
pub use table::PoolTables;
use table::{Table, TableWorker};

/// What a worker runs: the command and environment, before `{port}` and `{worker_id}` are
/// filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTemplate {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// Which programs a rollout may run (`[[pool]] rollout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RolloutPolicy {
    /// `"config_only"` (default): only the program the pool's own `command` names (its
    /// arguments and environment may change): the admin token alone cannot make warden
    /// run a program the config file does not name.
    #[default]
    ConfigOnly,
    /// `"any"`: any program.
    Any,
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
    /// Who the workers run as, when another user than warden: their token files belong
    /// to that user (0400), so only they read them.
    pub owner: Option<crate::state_file::FileOwner>,
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
    /// Which programs a rollout may run.
    pub rollout: RolloutPolicy,
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

impl PoolHub {
    /// Verifies a worker token of `pool`: signed by warden, not expired, expiring no later
    /// than the pool's `token_ttl` from now, and naming a worker that is still in the pool
    /// with the same run (a retired worker's token, or one of an earlier worker of the same
    /// name, does not verify). The inner error says why a token is not valid.
    pub async fn verify_token(
        &self,
        pool: &ActorPath,
        token: &str,
    ) -> Result<Result<crate::VerifiedToken, String>, PoolError> {
        let manager = self.manager(pool)?;
        manager
            .send(VerifyToken(token.to_owned()))
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
    tables: Arc<PoolTables>,
    records: Option<Arc<dyn ProcessRecords>>,
    /// The highest worker number this factory's runs handed out (a restarted pool goes on
    /// counting).
    next_worker: Arc<Mutex<u64>>,
}

impl PoolFactory {
    /// A factory for `spec`, registering its manager in `hub`, keeping sessions in
    /// `registry`.
    pub fn new(spec: PoolSpec, hub: Arc<PoolHub>, registry: Arc<dyn SessionRegistry>) -> Self {
        Self {
            spec,
            hub,
            registry,
            tables: Arc::new(PoolTables::none()),
            records: None,
            next_worker: Arc::default(),
        }
    }

    /// Persists the worker table in `tables`, and on its first start rebuilds the workers
    /// an earlier warden left there whose processes `records` can adopt.
    pub fn with_tables(
        mut self,
        tables: Arc<PoolTables>,
        records: Option<Arc<dyn ProcessRecords>>,
    ) -> Self {
        self.tables = tables;
        self.records = records;
        self
    }
}

impl ChildFactory for PoolFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Pool
    }

    /// No I/O here: the table was read at warden's start, whether a worker's process can
    /// be adopted is known from the records read then, and new workers are numbered and
    /// given ports from local state (through a shared registry, asynchronously once the
    /// manager runs).
    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let next_worker = *self
            .next_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut manager = PoolManager {
            path: cx.path.clone(),
            tree: cx.tree.clone(),
            spec: self.spec.clone(),
            template: self.spec.template.clone(),
            registry: self.registry.clone(),
            tables: self.tables.clone(),
            supervisor: None,
            workers: Vec::new(),
            next_worker,
            shared_next_worker: self.next_worker.clone(),
            reap: None,
            retiring: Vec::new(),
            draining: false,
            allocating: 0,
            alloc_lock: Arc::new(tokio::sync::Semaphore::new(1)),
            replace_after: None,
            replace_backoff: REPLACE_BACKOFF_MIN,
            recounting: false,
            restored: Vec::new(),
            gone: Vec::new(),
            published_states: Vec::new(),
        };
        if let Some(table) = self.tables.take(&cx.path) {
            manager.rebuild(table, self.records.as_deref());
        }
        if !self.registry.shared() {
            let missing = self.spec.min.saturating_sub(manager.active_count());
            manager.allocate_local(missing, &manager.template.clone())?;
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

/// The first wait before a failed worker is replaced; doubled on each failure in a row.
const REPLACE_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait before a failed worker is replaced.
const REPLACE_BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How often the manager checks for failed workers, tops up to `min` and (shared
/// registry) reads session counts back.
const TICK: Duration = Duration::from_secs(1);

struct Worker {
    id: String,
    path: ActorPath,
    /// Random, new for each worker this pool creates (kept across warden restarts in the
    /// table): its tokens name it, so a token of an earlier worker of the same name never
    /// verifies.
    nonce: String,
    port: u16,
    template: WorkerTemplate,
    spec: ChildSpec,
    sessions: u32,
    /// Sessions placed here but not yet in the registry (waiting for the worker to run).
    pending: u32,
    /// The sessions this warden placed here (persisted in the table).
    held: Vec<Session>,
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
    tables: Arc<PoolTables>,
    supervisor: Option<Addr<Supervisor>>,
    workers: Vec<Worker>,
    next_worker: u64,
    shared_next_worker: Arc<Mutex<u64>>,
    reap: Option<SpawnHandle>,
    /// Workers taken out of the list whose process may still be stopping: their ports
    /// are not handed out until they have left the tree.
    retiring: Vec<(ActorPath, u16)>,
    /// warden drains: no new sessions; each worker stops once its sessions are gone.
    draining: bool,
    /// Workers being allocated through a shared registry (they count toward `max`).
    allocating: u32,
    /// One allocation through the registry at a time (so two never pick the same port).
    alloc_lock: Arc<tokio::sync::Semaphore>,
    /// No failed worker is replaced before this.
    replace_after: Option<Instant>,
    replace_backoff: Duration,
    recounting: bool,
    /// Sessions of adopted workers to put back into a non-shared registry.
    restored: Vec<Session>,
    /// Workers of the table whose process is gone: their sessions are released.
    gone: Vec<ActorPath>,
    /// The worker states last published in the pool's details.
    published_states: Vec<Option<ActorState>>,
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
        self.save_table();
        for session in std::mem::take(&mut self.restored) {
            let put = self.registry.put(&self.path, &session);
            ctx.spawn(put.into_actor(self).map(|_, _, _| ()));
        }
        let keep: Vec<u16> = self.workers.iter().map(|w| w.port).collect();
        self.registry.release_own_ports_except(&self.path, keep);
        self.release_gone_sessions(ctx);
        // Workers taken back from an earlier warden may be idle above min or draining.
        self.reap(ctx);
        self.fill_to_min(ctx);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        if let Some(tokens) = &self.spec.tokens {
            for worker in &self.workers {
                write_worker_token(tokens, &worker.path, &worker.nonce);
            }
            let every = (tokens.ttl / 2).max(Duration::from_millis(500));
            ctx.run_interval(every, |act, _| {
                if let Some(tokens) = &act.spec.tokens {
                    for worker in &act.workers {
                        write_worker_token(tokens, &worker.path, &worker.nonce);
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

/// Writes a fresh token for run `nonce` of `worker` (errors are logged: the worker keeps
/// its old one).
fn write_worker_token(tokens: &WorkerTokens, worker: &ActorPath, nonce: &str) {
    let Some(expires) = std::time::SystemTime::now().checked_add(tokens.ttl) else {
        tracing::warn!(%worker, "token_ttl is too long to be added to the clock: no token written");
        return;
    };
    let token = tokens.signer.sign(worker, nonce, expires);
    let file = (tokens.file)(worker);
    if let Err(e) = crate::worker_token::write_token(&file, &token, tokens.owner) {
        tracing::warn!(%worker, file = %file.display(), error = %e, "cannot write a worker token");
    }
}

/// Numbers and ports for `count` new workers of `pool`, taken through `registry` (worker
/// numbers unique among the wardens sharing it, ports not claimed by another warden's
/// worker), trying `candidates` in order. All or nothing: on failure the ports claimed so
/// far are given back.
async fn claim_workers(
    registry: Arc<dyn SessionRegistry>,
    pool: ActorPath,
    candidates: Vec<u16>,
    mut next: u64,
    count: u32,
) -> Result<Vec<(u64, u16)>, String> {
    let mut claimed: Vec<(u64, u16)> = Vec::new();
    let mut candidates = candidates.into_iter();
    for _ in 0..count {
        let number = match registry.next_worker(&pool).await {
            Some(n) => n.max(next + 1),
            None => next + 1,
        };
        next = number;
        let path = worker_path(&pool, number)?;
        let port = loop {
            match candidates.next() {
                Some(port) if registry.claim_port(&pool, port, &path).await => break Some(port),
                Some(_) => {}
                None => break None,
            }
        };
        match port {
            Some(port) => claimed.push((number, port)),
            None => {
                for (number, port) in claimed {
                    if let Ok(path) = worker_path(&pool, number) {
                        registry.release_port(&pool, port, &path);
                    }
                }
                return Err(format!("no free port left for {count} new workers"));
            }
        }
    }
    Ok(claimed)
}

fn worker_path(pool: &ActorPath, number: u64) -> Result<ActorPath, String> {
    let name = ActorName::new(&format!("w{number}")).map_err(|e| e.to_string())?;
    Ok(pool.child(&name))
}

impl PoolManager {
    fn forget_token(&self, worker: &ActorPath) {
        if let Some(tokens) = &self.spec.tokens {
            let file = (tokens.file)(worker);
            let _ = std::fs::remove_file(&file);
            // The worker's handoff folder, once empty (the worker is gone).
            if let Some(dir) = file.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    /// Rebuilds the workers of an earlier warden's table: those whose process is still
    /// alive (adoptable) come back with their names, ports, templates and sessions (their
    /// services adopt the processes by path); the others are dropped, their sessions
    /// released once the manager runs.
    fn rebuild(&mut self, table: Table, records: Option<&dyn ProcessRecords>) {
        self.next_worker = self.next_worker.max(table.next_worker);
        if table.config_template.as_ref() == Some(&self.spec.template) {
            if let Some(template) = table.template {
                self.template = template;
            }
        }
        let now = Instant::now();
        for w in table.workers {
            let Ok(name) = ActorName::new(&w.id) else {
                continue;
            };
            let path = self.path.child(&name);
            let alive = records.is_some_and(|r| r.is_adoptable(&path));
            let in_range = self.spec.ports.contains(&w.port);
            let spec = (alive && in_range)
                .then(|| (self.spec.build)(&path, &w.template, w.port))
                .and_then(Result::ok);
            let Some(spec) = spec else {
                tracing::info!(pool = %self.path, worker = %path, "a worker of the earlier warden is gone: releasing its sessions");
                self.gone.push(path);
                continue;
            };
            tracing::info!(pool = %self.path, worker = %path, port = w.port, sessions = w.sessions.len(), "taking back a worker of the earlier warden");
            if !self.registry.shared() {
                self.restored.extend(w.sessions.iter().cloned());
            }
            let sessions = w.sessions.len() as u32;
            self.workers.push(Worker {
                id: w.id,
                path,
                // A table of an older warden has none: its tokens are of the old format,
                // which no longer verifies anyway.
                nonce: if w.nonce.is_empty() {
                    random_id()
                } else {
                    w.nonce
                },
                port: w.port,
                template: w.template,
                spec,
                sessions,
                pending: 0,
                held: w.sessions,
                idle_since: (sessions == 0).then_some(now),
                // A draining worker's deadline did not survive: it drains anew, no
                // longer than the idle timeout.
                draining: w
                    .draining
                    .then(|| now.checked_add(self.spec.idle_timeout).unwrap_or(now)),
            });
        }
    }

    /// Releases the sessions (and claims) of the table's workers whose process is gone.
    fn release_gone_sessions(&mut self, ctx: &mut Context<Self>) {
        if self.gone.is_empty() {
            return;
        }
        let gone = std::mem::take(&mut self.gone);
        let registry = self.registry.clone();
        let pool = self.path.clone();
        ctx.spawn(
            async move {
                let Ok(sessions) = registry.list(&pool).await else {
                    return 0;
                };
                let mut released = 0;
                for s in sessions.iter().filter(|s| gone.contains(&s.worker)) {
                    if registry.remove(&pool, &s.session_id).await.is_ok() {
                        released += 1;
                    }
                }
                released
            }
            .into_actor(self)
            .map(|released, act, _| {
                if released > 0 {
                    tracing::info!(pool = %act.path, released, "released the sessions of workers that are gone");
                }
            }),
        );
    }

    /// Ports neither a worker nor a stopping former worker holds, lowest first (and gives
    /// back the claims of former workers that have left the tree).
    fn free_ports(&mut self) -> Vec<u16> {
        let tree = self.tree.clone();
        let (gone, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|(path, _)| tree.get(path).is_none());
        self.retiring = still;
        for (path, port) in gone {
            self.registry.release_port(&self.path, port, &path);
        }
        self.spec
            .ports
            .clone()
            .filter(|p| {
                !self.workers.iter().any(|w| w.port == *p)
                    && !self.retiring.iter().any(|(_, port)| port == p)
            })
            .collect()
    }

    /// Takes worker `i` out of the pool (its supervisor stops it on the next sync).
    fn retire(&mut self, i: usize) -> Worker {
        let worker = self.workers.remove(i);
        self.forget_token(&worker.path);
        self.retiring.push((worker.path.clone(), worker.port));
        worker
    }

    /// Numbers and ports for `count` workers from local state only (a registry that is
    /// not shared has nothing to claim), then the workers, all or none.
    fn allocate_local(
        &mut self,
        count: u32,
        template: &WorkerTemplate,
    ) -> Result<Vec<usize>, String> {
        let free = self.free_ports();
        if (free.len() as u32) < count {
            return Err(format!(
                "no free port left in {:?}: {count} new workers need {count}, {} left",
                self.spec.ports,
                free.len()
            ));
        }
        let claims: Vec<(u64, u16)> = free
            .into_iter()
            .take(count as usize)
            .enumerate()
            .map(|(i, port)| (self.next_worker + 1 + i as u64, port))
            .collect();
        self.commit_workers(claims, template)
    }

    /// Builds the specs of the allocated workers, then adds them all (not yet to the
    /// supervisor), or none if one cannot be built.
    fn commit_workers(
        &mut self,
        claims: Vec<(u64, u16)>,
        template: &WorkerTemplate,
    ) -> Result<Vec<usize>, String> {
        let mut built = Vec::with_capacity(claims.len());
        for (number, port) in &claims {
            let path = worker_path(&self.path, *number)?;
            match (self.spec.build)(&path, template, *port) {
                Ok(spec) => built.push((*number, path, *port, spec)),
                Err(e) => {
                    for (number, port) in &claims {
                        if let Ok(path) = worker_path(&self.path, *number) {
                            self.registry.release_port(&self.path, *port, &path);
                        }
                    }
                    return Err(e);
                }
            }
        }
        let mut added = Vec::with_capacity(built.len());
        for (number, path, port, spec) in built {
            self.next_worker = self.next_worker.max(number);
            let nonce = random_id();
            if let Some(tokens) = &self.spec.tokens {
                write_worker_token(tokens, &path, &nonce);
            }
            self.workers.push(Worker {
                id: format!("w{number}"),
                path,
                nonce,
                port,
                template: template.clone(),
                spec,
                sessions: 0,
                pending: 0,
                held: Vec::new(),
                idle_since: Some(Instant::now()),
                draining: None,
            });
            added.push(self.workers.len() - 1);
        }
        *self
            .shared_next_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.next_worker;
        Ok(added)
    }

    /// Allocates `count` workers running `template` and hands the added workers' indices
    /// (or why they could not be had) to `then`, with nothing changed in between by
    /// another allocation. Through a shared registry the numbers and ports are claimed
    /// asynchronously; otherwise at once.
    fn allocate<T: 'static>(
        &mut self,
        count: u32,
        template: WorkerTemplate,
        then: impl FnOnce(&mut Self, &mut Context<Self>, Result<Vec<usize>, String>) -> T + 'static,
    ) -> LocalBoxActorFuture<Self, T> {
        if !self.registry.shared() {
            let result = self.allocate_local(count, &template);
            return Box::pin(actix::fut::ready(()).map(move |(), act, ctx| then(act, ctx, result)));
        }
        self.allocating += count;
        let permit = self.alloc_lock.clone().acquire_owned();
        Box::pin(permit.into_actor(self).then(move |permit, act, _| {
            let candidates = act.free_ports();
            let claim = claim_workers(
                act.registry.clone(),
                act.path.clone(),
                candidates,
                act.next_worker,
                count,
            );
            claim.into_actor(act).map(move |claims, act, ctx| {
                act.allocating = act.allocating.saturating_sub(count);
                let result = claims.and_then(|claims| act.commit_workers(claims, &template));
                drop(permit);
                then(act, ctx, result)
            })
        }))
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

    fn state_of(&self, worker: &ActorPath) -> Option<ActorState> {
        self.tree.get(worker).map(|i| i.state)
    }

    /// Workers that take sessions: not draining, not failed.
    fn active(&self) -> impl Iterator<Item = &Worker> {
        self.workers
            .iter()
            .filter(|w| w.draining.is_none() && self.state_of(&w.path) != Some(ActorState::Failed))
    }

    /// Active workers and those being allocated: what counts toward `min` and `max`.
    fn active_count(&self) -> u32 {
        self.active().count() as u32 + self.allocating
    }

    /// Persists the worker table (written off this thread); the answer resolves once it
    /// is on disk.
    fn save_table(&self) -> tokio::sync::oneshot::Receiver<()> {
        let table = Table {
            next_worker: self.next_worker,
            template: Some(self.template.clone()),
            config_template: Some(self.spec.template.clone()),
            workers: self
                .workers
                .iter()
                .map(|w| TableWorker {
                    id: w.id.clone(),
                    nonce: w.nonce.clone(),
                    number: w.id.trim_start_matches('w').parse().unwrap_or(0),
                    port: w.port,
                    template: w.template.clone(),
                    draining: w.draining.is_some(),
                    sessions: w.held.clone(),
                })
                .collect(),
        };
        self.tables.save(&self.path, &table)
    }

    fn publish(&mut self) {
        self.published_states = self
            .workers
            .iter()
            .map(|w| self.state_of(&w.path))
            .collect();
        let workers: Vec<serde_json::Value> = self
            .workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "worker": w.path,
                    "port": w.port,
                    "sessions": w.sessions,
                    "draining": w.draining.is_some(),
                    "state": self.state_of(&w.path),
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

    /// Every second: replaces failed workers, tops up to `min`, reads session counts back
    /// from a shared registry.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let states: Vec<Option<ActorState>> = self
            .workers
            .iter()
            .map(|w| self.state_of(&w.path))
            .collect();
        if states != self.published_states {
            self.publish();
        }
        self.retire_failed(ctx);
        self.fill_to_min(ctx);
        if self.registry.shared() {
            self.recount(ctx);
        }
    }

    /// Takes failed workers out of the pool (their sessions are released) and schedules
    /// their replacement after a backoff that doubles while workers keep failing.
    fn retire_failed(&mut self, ctx: &mut Context<Self>) {
        let failed: Vec<usize> = (0..self.workers.len())
            .filter(|i| self.state_of(&self.workers[*i].path) == Some(ActorState::Failed))
            .collect();
        if failed.is_empty() {
            let all_running = self
                .workers
                .iter()
                .all(|w| self.state_of(&w.path) == Some(ActorState::Running));
            if all_running && self.replace_after.is_none_or(|t| Instant::now() >= t) {
                self.replace_backoff = REPLACE_BACKOFF_MIN;
            }
            return;
        }
        let now = Instant::now();
        for i in failed.into_iter().rev() {
            let worker = self.retire(i);
            tracing::warn!(pool = %self.path, worker = %worker.path, sessions = worker.held.len(), backoff = ?self.replace_backoff, "retiring a failed worker: it is replaced after the backoff");
            for session in &worker.held {
                let remove = self.registry.remove(&self.path, &session.session_id);
                ctx.spawn(remove.into_actor(self).map(|_, _, _| ()));
            }
        }
        self.replace_after = now.checked_add(self.replace_backoff);
        self.replace_backoff = (self.replace_backoff * 2).min(REPLACE_BACKOFF_MAX);
        self.sync_workers();
        self.publish();
        self.save_table();
    }

    /// Starts workers up to `min` (unless warden drains or a failed worker's replacement
    /// waits for its backoff).
    fn fill_to_min(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.replace_after.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let missing = self.spec.min.saturating_sub(self.active_count());
        if missing == 0 {
            return;
        }
        let template = self.template.clone();
        let fill = self.allocate(missing, template, |act, _, result| match result {
            Ok(added) => {
                tracing::info!(pool = %act.path, added = added.len(), "starting workers up to min");
                act.sync_workers();
                act.publish();
                act.save_table();
            }
            Err(e) => {
                tracing::warn!(pool = %act.path, error = %e, "cannot start workers up to min")
            }
        });
        ctx.spawn(fill);
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
            self.save_table();
        }
        // Next check: the earliest idle expiry or drain deadline (an idle timeout too
        // long to be added to the clock never expires).
        let active = self.active().count() as u32;
        let next = self
            .workers
            .iter()
            .filter_map(|w| match w.draining {
                Some(deadline) => Some(deadline),
                None if active > self.spec.min && w.sessions == 0 => w
                    .idle_since
                    .and_then(|t| t.checked_add(self.spec.idle_timeout)),
                None => None,
            })
            .min();
        if let Some(at) = next {
            let delay = at.saturating_duration_since(now) + Duration::from_millis(1);
            self.reap = Some(ctx.run_later(delay, |act, ctx| act.reap(ctx)));
        }
    }

    /// Reads the session counts of this pool's workers back from a shared registry:
    /// another warden may have released (or placed) sessions on them.
    fn recount(&mut self, ctx: &mut Context<Self>) {
        if self.recounting {
            return;
        }
        self.recounting = true;
        let list = self.registry.list(&self.path);
        ctx.spawn(list.into_actor(self).map(|listed, act, ctx| {
            act.recounting = false;
            let Ok(sessions) = listed else { return };
            let mut changed = false;
            for worker in &mut act.workers {
                let count = sessions.iter().filter(|s| s.worker == worker.path).count() as u32
                    + worker.pending;
                if count != worker.sessions {
                    changed = true;
                    worker.sessions = count;
                    worker.idle_since = (count == 0).then(Instant::now);
                }
            }
            if changed {
                act.reap(ctx);
                act.publish();
            }
        }));
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
#[rtype(result = "Result<Result<crate::VerifiedToken, String>, PoolError>")]
struct VerifyToken(String);

impl Handler<VerifyToken> for PoolManager {
    type Result = Result<Result<crate::VerifiedToken, String>, PoolError>;

    fn handle(&mut self, msg: VerifyToken, _ctx: &mut Self::Context) -> Self::Result {
        let tokens = self.spec.tokens.as_ref().ok_or_else(|| {
            PoolError::Unavailable(format!("pool {} signs no worker tokens", self.path))
        })?;
        let verified = match tokens
            .signer
            .verify(&msg.0, std::time::SystemTime::now(), tokens.ttl)
        {
            Ok(verified) => verified,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if verified.worker.parent().as_ref() != Some(&self.path) {
            return Ok(Err(format!(
                "the token is for {}, not a worker of {}",
                verified.worker, self.path
            )));
        }
        Ok(
            match self.workers.iter().find(|w| w.path == verified.worker) {
                None => Err(format!(
                    "{} is no longer a worker of {}",
                    verified.worker, self.path
                )),
                Some(w) if w.nonce != verified.nonce => Err(format!(
                    "the token is of an earlier worker named {}",
                    verified.worker
                )),
                Some(_) => Ok(verified),
            },
        )
    }
}

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
        let now = Instant::now();
        let never = now
            .checked_add(Duration::from_secs(365 * 24 * 3600))
            .unwrap_or(now);
        for worker in &mut self.workers {
            worker.draining.get_or_insert(never);
        }
        self.reap(ctx);
        self.publish();
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

impl PoolManager {
    /// The fullest worker with room that can take a session (packing keeps the others
    /// idle, to be reaped).
    fn worker_with_room(&self) -> Option<usize> {
        let spw = self.spec.sessions_per_worker;
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.draining.is_none() && w.sessions < spw)
            // A worker just added has no record yet: it is starting, and takes sessions.
            .filter(|(_, w)| {
                !matches!(
                    self.state_of(&w.path),
                    Some(ActorState::Failed | ActorState::Stopped | ActorState::Stopping)
                )
            })
            .max_by_key(|(_, w)| w.sessions)
            .map(|(i, _)| i)
    }

    /// Reserves a seat on worker `index` now (so concurrent requests see it taken), then
    /// waits for the worker to run and records the session.
    fn place(&mut self, index: usize) -> LocalBoxActorFuture<Self, Result<Session, PoolError>> {
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
        let wait = wait_running(
            self.tree.clone(),
            session.worker.clone(),
            self.spec.start_timeout,
        );
        let registry = self.registry.clone();
        let pool = self.path.clone();
        let recorded = session.clone();
        let put = async move {
            wait.await?;
            registry.put(&pool, &recorded).await
        };
        Box::pin(put.into_actor(self).then(move |put, act, ctx| {
            let worker = act.workers.iter_mut().find(|w| w.id == worker_id);
            let answer = match (put, worker) {
                (Ok(()), Some(w)) => {
                    w.pending = w.pending.saturating_sub(1);
                    w.held.push(session.clone());
                    // Answered once the table holds it: an acknowledged session survives
                    // a warden crash.
                    let written = act.save_table();
                    let answered: LocalBoxActorFuture<Self, Result<Session, PoolError>> = Box::pin(
                        async move {
                            let _ = written.await;
                            Ok(session)
                        }
                        .into_actor(act),
                    );
                    return answered;
                }
                (Ok(()), None) => Ok(session),
                (Err(why), worker) => {
                    if let Some(w) = worker {
                        w.pending = w.pending.saturating_sub(1);
                        w.sessions = w.sessions.saturating_sub(1);
                        if w.sessions == 0 {
                            w.idle_since = Some(Instant::now());
                        }
                    }
                    act.reap(ctx);
                    act.publish();
                    Err(PoolError::Unavailable(why))
                }
            };
            Box::pin(actix::fut::ready(answer))
        }))
    }
}

impl Handler<Acquire> for PoolManager {
    type Result = ResponseActFuture<Self, Result<Session, PoolError>>;

    fn handle(&mut self, _: Acquire, _ctx: &mut Self::Context) -> Self::Result {
        self.acquire(true)
    }
}

impl PoolManager {
    /// Places a session: on the fullest worker with room, else on a new worker (up to
    /// `max`). When workers are being allocated through a shared registry and none has
    /// room, waits for that allocation and tries once more (`may_wait`).
    fn acquire(&mut self, may_wait: bool) -> LocalBoxActorFuture<Self, Result<Session, PoolError>> {
        if self.draining {
            return Box::pin(actix::fut::ready(Err(PoolError::Full(format!(
                "pool {} is draining",
                self.path
            )))));
        }
        if let Some(index) = self.worker_with_room() {
            return self.place(index);
        }
        if may_wait && self.allocating > 0 {
            // The allocation holds the lock until its workers are added.
            let allocated = self.alloc_lock.clone().acquire_owned();
            return Box::pin(allocated.into_actor(self).then(|permit, act, _| {
                drop(permit);
                act.acquire(false)
            }));
        }
        if self.active_count() >= self.spec.max {
            return Box::pin(actix::fut::ready(Err(PoolError::Full(format!(
                "pool {} is full: {} workers (its max) with {} sessions each",
                self.path, self.spec.max, self.spec.sessions_per_worker
            )))));
        }
        let template = self.template.clone();
        if !self.registry.shared() {
            // Local state only: the worker is added and its seat reserved before any other
            // request is handled.
            return match self.allocate_local(1, &template) {
                Ok(added) => {
                    self.sync_workers();
                    self.save_table();
                    match added.first() {
                        Some(index) => self.place(*index),
                        None => Box::pin(actix::fut::ready(Err(PoolError::Unavailable(
                            "no worker was added".to_owned(),
                        )))),
                    }
                }
                Err(e) => Box::pin(actix::fut::ready(Err(PoolError::Unavailable(e)))),
            };
        }
        let added = self.allocate(1, template, |act, _, result| {
            let added = result.map_err(PoolError::Unavailable)?;
            act.sync_workers();
            act.save_table();
            added
                .first()
                .copied()
                .ok_or_else(|| PoolError::Unavailable("no worker was added".to_owned()))
        });
        Box::pin(added.then(|added, act, _| match added {
            Ok(index) => act.place(index),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }))
    }
}

impl Handler<Release> for PoolManager {
    type Result = ResponseActFuture<Self, Result<(), PoolError>>;

    fn handle(&mut self, msg: Release, _ctx: &mut Self::Context) -> Self::Result {
        let remove = self.registry.remove(&self.path, &msg.0);
        let id = msg.0;
        Box::pin(remove.into_actor(self).then(move |removed, act, ctx| {
            let found = removed.map_err(PoolError::Unavailable).and_then(|found| {
                found.ok_or_else(|| PoolError::NoSession {
                    pool: act.path.to_string(),
                    session: id.clone(),
                })
            });
            let session = match found {
                Ok(session) => session,
                Err(e) => {
                    let failed: LocalBoxActorFuture<Self, Result<(), PoolError>> =
                        Box::pin(actix::fut::ready(Err(e)));
                    return failed;
                }
            };
            if let Some(w) = act.workers.iter_mut().find(|w| w.path == session.worker) {
                w.sessions = w.sessions.saturating_sub(1);
                w.held.retain(|s| s.session_id != id);
                if w.sessions == 0 {
                    w.idle_since = Some(Instant::now());
                }
            }
            act.reap(ctx);
            act.publish();
            // Answered once the table no longer holds it: a released session does not
            // come back after a warden crash.
            let written = act.save_table();
            Box::pin(
                async move {
                    let _ = written.await;
                    Ok(())
                }
                .into_actor(act),
            )
        }))
    }
}

impl Handler<Rollout> for PoolManager {
    type Result = ResponseActFuture<Self, Result<RolloutSummary, PoolError>>;

    /// All or nothing: the new workers (numbers, ports, claims) are allocated first; only
    /// then are the old ones marked draining and the template replaced.
    fn handle(&mut self, msg: Rollout, _ctx: &mut Self::Context) -> Self::Result {
        match self.check_rollout(msg) {
            Ok((template, wanted, deadline)) => {
                let rollout = self.allocate(wanted, template.clone(), move |act, ctx, result| {
                    let added = result.map_err(|e| PoolError::Invalid(format!("rollout: {e}")))?;
                    let deadline = Instant::now().checked_add(deadline).ok_or_else(|| {
                        PoolError::Invalid("rollout: deadline is too long".to_owned())
                    });
                    let deadline = match deadline {
                        Ok(d) => d,
                        Err(e) => {
                            // Nothing may change: the workers just added go again.
                            for i in added.into_iter().rev() {
                                let w = act.workers.remove(i);
                                act.registry.release_port(&act.path, w.port, &w.path);
                            }
                            return Err(e);
                        }
                    };
                    let started: Vec<ActorPath> =
                        added.iter().map(|i| act.workers[*i].path.clone()).collect();
                    let mut draining = Vec::new();
                    for w in &mut act.workers {
                        if w.draining.is_none() && !started.contains(&w.path) {
                            w.draining = Some(deadline);
                            draining.push(w.path.clone());
                        }
                    }
                    act.template = template;
                    tracing::info!(pool = %act.path, started = started.len(), draining = draining.len(), "rollout");
                    act.sync_workers();
                    act.reap(ctx);
                    act.publish();
                    act.save_table();
                    Ok(RolloutSummary { started, draining })
                });
                Box::pin(rollout)
            }
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }
    }
}

impl PoolManager {
    /// Validates a rollout: the new template, how many workers it starts, its deadline.
    fn check_rollout(
        &mut self,
        msg: Rollout,
    ) -> Result<(WorkerTemplate, u32, Duration), PoolError> {
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
        let program = &template.command[0];
        let configured = self.spec.template.command.first();
        if self.spec.rollout == RolloutPolicy::ConfigOnly && configured != Some(program) {
            return Err(PoolError::Invalid(format!(
                "rollout: program {program:?} is not the one the config names for {} ({}); \
                 this pool has rollout = \"config_only\" (set rollout = \"any\" to allow others)",
                self.path,
                configured.map_or_else(|| "none".to_owned(), |p| format!("{p:?}")),
            )));
        }
        // Checked on a sample worker before anything changes.
        let sample = self.path.child(
            &ActorName::new("rollout-check").map_err(|e| PoolError::Invalid(e.to_string()))?,
        );
        (self.spec.build)(&sample, &template, *self.spec.ports.start())
            .map_err(|e| PoolError::Invalid(format!("rollout: {e}")))?;
        if Instant::now().checked_add(msg.deadline).is_none() {
            return Err(PoolError::Invalid(
                "rollout: deadline is too long".to_owned(),
            ));
        }
        let old = self.workers.iter().filter(|w| w.draining.is_none()).count() as u32;
        let wanted = old.max(self.spec.min).max(1).min(self.spec.max);
        let free_ports = self.free_ports().len() as u32;
        if free_ports < wanted {
            return Err(PoolError::Invalid(format!(
                "rollout: {wanted} new workers need {wanted} free ports, {free_ports} left in {:?}",
                self.spec.ports
            )));
        }
        Ok((template, wanted, msg.deadline))
    }
}

impl Handler<StopManager> for PoolManager {
    type Result = ();

    fn handle(&mut self, _: StopManager, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
