//! The control actor: carries out every [`Request`], whichever encoding it came in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use warden_supervisors::{ActorKind, ActorPath, ActorState, ActorTree, ControlOp};

use super::protocol::{Failure, FailureKind, Health, Request, Response, MAX_TAIL};
use super::request::control;
use crate::layout::StateLayout;
use crate::metrics;
use crate::reload::Reloader;
use warden_actors::{CallError, OutboardHub, PoolError, PoolHub, TokenSigner};

/// What the controller works on.
#[derive(Debug)]
pub struct ControllerConfig {
    /// The actor tree.
    pub tree: Arc<ActorTree>,
    /// Where logs are.
    pub layout: StateLayout,
    /// Re-reads the config file (`None`: a tree built in code cannot be reloaded).
    pub reloader: Option<Reloader>,
    /// Routes calls to outboard children.
    pub hub: Arc<OutboardHub>,
    /// Finds pool managers.
    pub pools: Arc<PoolHub>,
    /// Verifies worker tokens.
    pub tokens: Option<Arc<TokenSigner>>,
    /// `Some` while warden is passive: activation starts the tree.
    pub activate: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    /// Where `reexec` requests go (`warden up`'s loop); `None`: reexec is not offered.
    pub reexec: Option<tokio::sync::mpsc::UnboundedSender<crate::reexec::Order>>,
    /// Draining and passive, shared with whoever answers `/healthz` and `/readyz`.
    pub liveness: Arc<Liveness>,
    /// The deploys (`None`: a tree built in code has none).
    pub deploys: Option<Arc<warden_actors::Deploys>>,
    /// The notifiers (their counts are in `/metrics`).
    pub notifiers: warden_actors::notifier::Notifiers,
}

/// What liveness and readiness are answered from, without asking the [`Controller`]: two
/// flags the Controller sets (draining, passive) and the shared [`ActorTree`]. `/healthz`
/// and `/readyz` read them on the HTTP worker threads, so they answer even while the
/// supervision thread is busy.
#[derive(Debug, Default)]
pub struct Liveness {
    draining: AtomicBool,
    passive: AtomicBool,
}

impl Liveness {
    /// Flags of a warden that starts passive (waiting for activation) or not.
    pub fn new(passive: bool) -> Self {
        Self {
            draining: AtomicBool::new(false),
            passive: AtomicBool::new(passive),
        }
    }

    /// Whether warden has been asked to drain.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Liveness: ok, or draining.
    pub fn health(&self) -> Health {
        if self.draining() {
            Health::Draining
        } else {
            Health::Ok
        }
    }

    /// Readiness: the answer to [`Request::Ready`] (`ready`, and the actors waited for).
    pub fn ready(&self, tree: &ActorTree) -> Response {
        if self.passive.load(Ordering::Acquire) {
            return Response::Ready {
                ready: false,
                waiting: Vec::new(),
            };
        }
        if self.draining() {
            return Response::Ready {
                ready: false,
                waiting: Vec::new(),
            };
        }
        let waiting = not_ready(tree);
        Response::Ready {
            ready: waiting.is_empty(),
            waiting,
        }
    }

    fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn set_active(&self) {
        self.passive.store(false, Ordering::Release);
    }
}

/// The control actor.
#[derive(Debug)]
pub struct Controller {
    tree: Arc<ActorTree>,
    layout: StateLayout,
    reloader: Option<Reloader>,
    hub: Arc<OutboardHub>,
    pools: Arc<PoolHub>,
    tokens: Option<Arc<TokenSigner>>,
    activate: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    reexec: Option<tokio::sync::mpsc::UnboundedSender<crate::reexec::Order>>,
    liveness: Arc<Liveness>,
    deploys: Option<Arc<warden_actors::Deploys>>,
    notifiers: warden_actors::notifier::Notifiers,
    reloading: bool,
}

impl Controller {
    /// A controller over `config`.
    pub fn new(config: ControllerConfig) -> Self {
        Self {
            tree: config.tree,
            layout: config.layout,
            reloader: config.reloader,
            hub: config.hub,
            pools: config.pools,
            tokens: config.tokens,
            activate: config.activate,
            reexec: config.reexec,
            liveness: config.liveness,
            deploys: config.deploys,
            notifiers: config.notifiers,
            reloading: false,
        }
    }
}

impl Actor for Controller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

fn parse_path(path: &str) -> Result<ActorPath, Failure> {
    let parsed = ActorPath::parse(path)
        .map_err(|e| Failure::new(FailureKind::NotFound, format!("no actor at {path}: {e}")))?;
    if parsed.is_root() {
        return Err(Failure::new(
            FailureKind::NotFound,
            "the root / is not an actor that can be addressed here",
        ));
    }
    Ok(parsed)
}

fn not_found(path: &ActorPath) -> Failure {
    Failure::new(FailureKind::NotFound, format!("no actor at {path}"))
}

/// Whether warden is ready: every child meant to run (a `permanent` child given up on
/// included; one an operator stopped, or a finished `transient`/`temporary` one, not) is
/// running. Answers the actors that are not.
pub(crate) fn not_ready(tree: &ActorTree) -> Vec<ActorPath> {
    tree.descendants(&ActorPath::root())
        .into_iter()
        .filter(|v| {
            v.info.awaited
                && matches!(
                    v.info.state,
                    ActorState::Starting
                        | ActorState::Backoff
                        | ActorState::Stopping
                        | ActorState::Failed
                )
        })
        .map(|v| v.info.path)
        .collect()
}

impl Handler<Request> for Controller {
    type Result = ResponseActFuture<Self, Result<Response, Failure>>;

    fn handle(&mut self, request: Request, _ctx: &mut Self::Context) -> Self::Result {
        let tree = self.tree.clone();
        let immediate =
            |r: Result<Response, Failure>| -> Self::Result { Box::pin(actix::fut::ready(r)) };
        match request {
            Request::Health => immediate(Ok(Response::Health(self.liveness.health()))),
            Request::Ready => immediate(Ok(self.liveness.ready(&tree))),
            Request::Status => {
                immediate(Ok(Response::Actors(tree.descendants(&ActorPath::root()))))
            }
            Request::Tree => immediate(
                tree.subtree(&ActorPath::root())
                    .map(|t| Response::Tree(Box::new(t)))
                    .ok_or_else(|| {
                        Failure::new(FailureKind::Unavailable, "the tree is not running")
                    }),
            ),
            Request::Actor { path } => immediate(
                parse_path(&path)
                    .and_then(|p| tree.view(&p).ok_or_else(|| not_found(&p)))
                    .map(|v| Response::Actor(Box::new(v))),
            ),
            Request::Start { path } => self.drive(tree, path, ControlOp::Start),
            Request::Stop { path } => self.drive(tree, path, ControlOp::Stop),
            Request::Restart { path } => self.drive(tree, path, ControlOp::Restart),
            Request::Logs { path, tail } => self.logs(&path, tail),
            Request::Drain => {
                if !self.liveness.draining() {
                    tracing::warn!("draining: /healthz answers 503 from now on");
                }
                self.liveness.set_draining();
                self.pools.drain_all();
                immediate(Ok(Response::Draining))
            }
            Request::Metrics => immediate(Ok(Response::Metrics(metrics::render(
                &tree,
                self.liveness.draining(),
                &self.notifiers.counts(),
            )))),
            Request::Call {
                path,
                body,
                timeout_ms,
            } => {
                let hub = self.hub.clone();
                let fut = async move {
                    let path = parse_path(&path)?;
                    if tree.get(&path).is_none() {
                        return Err(not_found(&path));
                    }
                    hub.call(&path, body, Duration::from_millis(timeout_ms))
                        .await
                        .map(Response::Reply)
                        .map_err(|e| {
                            let kind = match e {
                                CallError::NotFound(_) => FailureKind::NotFound,
                                CallError::NotConnected(_) => FailureKind::Unavailable,
                                CallError::Timeout { .. } => FailureKind::Timeout,
                                CallError::Handler(_) => FailureKind::BadRequest,
                            };
                            Failure::new(kind, e.to_string())
                        })
                };
                Box::pin(fut.into_actor(self))
            }
            Request::Activate => immediate(match self.activate.take() {
                Some(tx) => {
                    self.liveness.set_active();
                    let _ = tx.send(());
                    Ok(Response::Activated)
                }
                None => Err(Failure::new(
                    FailureKind::Conflict,
                    "warden is already active",
                )),
            }),
            Request::Reexec => {
                let Some(orders) = self.reexec.clone() else {
                    return immediate(Err(Failure::new(
                        FailureKind::Unavailable,
                        "this warden cannot re-execute itself (embedded, or bound to a holder)",
                    )));
                };
                let fut = async move {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    orders.send(crate::reexec::Order { reply }).map_err(|_| {
                        Failure::new(FailureKind::Unavailable, "warden is stopping")
                    })?;
                    answer
                        .await
                        .map_err(|_| Failure::new(FailureKind::Unavailable, "warden is stopping"))?
                };
                Box::pin(fut.into_actor(self))
            }
            Request::Acquire { pool } => {
                if self.activate.is_some() {
                    return immediate(Err(Failure::new(
                        FailureKind::Unavailable,
                        "warden is passive: POST /api/v1/admin/activate first",
                    )));
                }
                if self.liveness.draining() {
                    return immediate(Err(Failure::new(
                        FailureKind::Unavailable,
                        "warden is draining: pools take no new sessions",
                    )));
                }
                let pools = self.pools.clone();
                let fut = async move {
                    let pool = parse_path(&pool)?;
                    pools
                        .acquire(&pool)
                        .await
                        .map(Response::Session)
                        .map_err(pool_failure)
                };
                Box::pin(fut.into_actor(self))
            }
            Request::Release { pool, session } => {
                let pools = self.pools.clone();
                let fut = async move {
                    let pool = parse_path(&pool)?;
                    pools
                        .release(&pool, &session)
                        .await
                        .map(|()| Response::Released)
                        .map_err(pool_failure)
                };
                Box::pin(fut.into_actor(self))
            }
            Request::Rollout {
                pool,
                command,
                env,
                deadline_ms,
            } => {
                let pools = self.pools.clone();
                let fut = async move {
                    let pool = parse_path(&pool)?;
                    pools
                        .rollout(&pool, command, env, Duration::from_millis(deadline_ms))
                        .await
                        .map(Response::RolledOut)
                        .map_err(pool_failure)
                };
                Box::pin(fut.into_actor(self))
            }
            Request::VerifyToken { pool, token } => self.verify_token(&pool, token),
            Request::Wait { paths, timeout_ms } => {
                let parsed: Result<Vec<ActorPath>, Failure> =
                    paths.iter().map(|p| parse_path(p)).collect();
                let fut = async move {
                    let paths = parsed?;
                    wait_running(&tree, &paths, Duration::from_millis(timeout_ms)).await
                };
                Box::pin(fut.into_actor(self))
            }
            Request::Deploy { path } => {
                let lane = self.deploy_lane(&path);
                let fut = async move {
                    let (deploys, key) = lane?;
                    let record = deploys
                        .request(&key, None, "manual")
                        .map_err(deploy_failure)?;
                    // Accepted means on disk (see `Deploys::durable`).
                    deploys.durable().await;
                    Ok(Response::DeployAccepted(Box::new(record)))
                };
                Box::pin(fut.into_actor(self))
            }
            Request::Deploys { path } => immediate(
                self.deploy_lane(&path)
                    .and_then(|(deploys, key)| deploys.list(&key).map_err(deploy_failure))
                    .map(Response::DeployList),
            ),
            Request::ConfirmDeploy { path, id } => {
                let lane = self.deploy_lane(&path);
                let fut = async move {
                    let (deploys, key) = lane?;
                    let record = deploys.confirm(&key, &id).map_err(deploy_failure)?;
                    deploys.durable().await;
                    Ok(Response::DeployConfirmed(Box::new(record)))
                };
                Box::pin(fut.into_actor(self))
            }
            Request::Reload => {
                if self.reloading {
                    return immediate(Err(Failure::new(
                        FailureKind::Conflict,
                        "a reload is already in progress",
                    )));
                }
                let Some(mut reloader) = self.reloader.take() else {
                    return immediate(Err(Failure::new(
                        FailureKind::Unavailable,
                        "this tree was not built from a config file: nothing to reload",
                    )));
                };
                self.reloading = true;
                let fut = async move {
                    let result = reloader.reload(&tree).await;
                    (reloader, result)
                };
                Box::pin(fut.into_actor(self).map(|(reloader, result), act, _| {
                    if let (Ok(_), Some(deploys)) = (&result, &act.deploys) {
                        // New lanes read their history from disk: off this thread.
                        let (deploys, lanes) = (deploys.clone(), reloader.config().deploy_lanes());
                        tokio::task::spawn_blocking(move || deploys.configure(lanes));
                    }
                    act.reloader = Some(reloader);
                    act.reloading = false;
                    result.map(Response::Reloaded)
                }))
            }
        }
    }
}

/// A deploy refusal as a failure (404 no such deploy, 409 not now).
fn deploy_failure(e: warden_actors::deploy::DeployError) -> Failure {
    use warden_actors::deploy::DeployError;
    match e {
        DeployError::NotFound(m) => Failure::new(FailureKind::NotFound, m),
        DeployError::Conflict(m) => Failure::new(FailureKind::Conflict, m),
    }
}

impl Controller {
    /// The registry and the lane key of `path`: a service's path, or `/` (or nothing) for
    /// warden's own deploy.
    fn deploy_lane(&self, path: &str) -> Result<(Arc<warden_actors::Deploys>, String), Failure> {
        let deploys = self
            .deploys
            .clone()
            .ok_or_else(|| Failure::new(FailureKind::NotFound, "this warden runs no deploys"))?;
        let key = if path.trim_matches('/').is_empty() {
            warden_actors::deploy::SELF_KEY.to_owned()
        } else {
            parse_path(path)?.to_string()
        };
        Ok((deploys, key))
    }

    fn drive(
        &self,
        tree: Arc<ActorTree>,
        path: String,
        op: ControlOp,
    ) -> ResponseActFuture<Self, Result<Response, Failure>> {
        let fut = async move {
            let path = parse_path(&path)?;
            let view = control(&tree, &path, op).await?;
            Ok(Response::Actor(Box::new(view)))
        };
        Box::pin(fut.into_actor(self))
    }

    /// Checks a worker token of `pool`: here that the pool exists and tokens are signed;
    /// the pool manager checks the token itself and that its worker is still the same.
    fn verify_token(
        &self,
        pool: &str,
        token: String,
    ) -> ResponseActFuture<Self, Result<Response, Failure>> {
        use super::protocol::TokenCheck;
        let checked = parse_path(pool).and_then(|pool| {
            match self.tree.get(&pool) {
                Some(info) if info.kind == ActorKind::Pool => {}
                _ => {
                    return Err(Failure::new(
                        FailureKind::NotFound,
                        format!("no pool at {pool}"),
                    ))
                }
            }
            if self.tokens.is_none() {
                return Err(Failure::new(
                    FailureKind::Unavailable,
                    "this warden signs no worker tokens",
                ));
            }
            Ok(pool)
        });
        let pools = self.pools.clone();
        let fut = async move {
            let pool = checked?;
            let check = match pools
                .verify_token(&pool, &token)
                .await
                .map_err(pool_failure)?
            {
                Ok(verified) => TokenCheck {
                    valid: true,
                    worker: Some(verified.worker),
                    expires_at: Some(warden_supervisors::Timestamp(verified.expires_at)),
                    reason: None,
                },
                Err(reason) => TokenCheck {
                    valid: false,
                    worker: None,
                    expires_at: None,
                    reason: Some(reason),
                },
            };
            Ok(Response::Token(check))
        };
        Box::pin(fut.into_actor(self))
    }

    /// The tail of a process's log: checked here, read on a blocking thread (a tail reads
    /// up to [`warden_actors::MAX_TAIL_BYTES`] from disk; the Controller runs on the
    /// supervision thread).
    fn logs(&self, path: &str, tail: usize) -> ResponseActFuture<Self, Result<Response, Failure>> {
        let file = match self.log_file(path, tail) {
            Ok(file) => file,
            Err(failure) => return Box::pin(actix::fut::ready(Err(failure))),
        };
        if let Some(unit) = self.unit_backend(path) {
            // The host's manager keeps a unit's logs (journalctl): read off this thread,
            // bounded by the backend's deadline.
            let fut = async move {
                match tokio::task::spawn_blocking(move || unit.logs(tail)).await {
                    Ok(Ok(text)) => Ok(Response::Logs(text.into_bytes())),
                    Ok(Err(e)) => Err(Failure::new(FailureKind::Internal, e.to_string())),
                    Err(e) => Err(Failure::new(
                        FailureKind::Internal,
                        format!("reading the unit's logs failed: {e}"),
                    )),
                }
            };
            return Box::pin(fut.into_actor(self));
        }
        let fut = async move {
            let read_file = file.clone();
            match tokio::task::spawn_blocking(move || warden_actors::tail_lines(&read_file, tail))
                .await
            {
                Ok(Ok(bytes)) => Ok(Response::Logs(bytes)),
                Ok(Err(e)) => Err(Failure::new(
                    FailureKind::Internal,
                    format!("cannot read {}: {e}", file.display()),
                )),
                Err(e) => Err(Failure::new(
                    FailureKind::Internal,
                    format!("reading {} failed: {e}", file.display()),
                )),
            }
        };
        Box::pin(fut.into_actor(self))
    }

    /// The backend of the unit at `path`, for a service the host's manager runs (read from
    /// the `details` its run shows).
    fn unit_backend(&self, path: &str) -> Option<Box<dyn warden_actors::UnitBackend>> {
        let info = self.tree.get(&parse_path(path).ok()?)?;
        let details = info.details?;
        let user_mode = details["user_mode"].as_bool().unwrap_or(false);
        match details["backend"].as_str()? {
            "systemd" => Some(Box::new(warden_actors::unit::systemd::Systemd {
                unit: details["unit"].as_str()?.to_owned(),
                user_mode,
            })),
            "launchd" => Some(Box::new(warden_actors::unit::launchd::Launchd {
                label: details["label"].as_str()?.to_owned(),
                user_mode,
            })),
            _ => None,
        }
    }

    /// The log file of the process at `path`, if `tail` is within [`MAX_TAIL`].
    fn log_file(&self, path: &str, tail: usize) -> Result<std::path::PathBuf, Failure> {
        if tail > MAX_TAIL {
            return Err(Failure::new(
                FailureKind::BadRequest,
                format!("tail must be a whole number from 0 to {MAX_TAIL}, not \"{tail}\""),
            ));
        }
        let path = parse_path(path)?;
        let info = self.tree.get(&path).ok_or_else(|| not_found(&path))?;
        if !matches!(
            info.kind,
            ActorKind::Service | ActorKind::Outboard | ActorKind::Worker
        ) {
            return Err(Failure::new(
                FailureKind::NotFound,
                format!("{path} is not a process and has no log"),
            ));
        }
        Ok(self.layout.log_file(&path))
    }
}

fn pool_failure(e: PoolError) -> Failure {
    let kind = match e {
        PoolError::NoPool(_) | PoolError::NoSession { .. } => FailureKind::NotFound,
        PoolError::Full(_) | PoolError::Unavailable(_) => FailureKind::Unavailable,
        PoolError::Invalid(_) => FailureKind::BadRequest,
    };
    Failure::new(kind, e.to_string())
}

/// Waits until every actor of `paths` is `running`; fails on an unknown path, or on
/// timeout naming those that are not.
async fn wait_running(
    tree: &ActorTree,
    paths: &[ActorPath],
    timeout: Duration,
) -> Result<Response, Failure> {
    let mut events = tree.subscribe();
    let check = || -> Result<Option<Vec<warden_supervisors::ActorView>>, Failure> {
        let mut views = Vec::with_capacity(paths.len());
        for p in paths {
            let view = tree.view(p).ok_or_else(|| not_found(p))?;
            if view.info.state != ActorState::Running {
                return Ok(None);
            }
            views.push(view);
        }
        Ok(Some(views))
    };
    let waited = tokio::time::timeout(timeout, async {
        loop {
            if let Some(views) = check()? {
                return Ok(views);
            }
            // Any state change may be the one we wait for; a lagging receiver rechecks.
            match events.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(Failure::new(FailureKind::Unavailable, "warden is stopping"))
                }
            }
        }
    })
    .await;
    match waited {
        Ok(Ok(views)) => Ok(Response::Actors(views)),
        Ok(Err(failure)) => Err(failure),
        Err(_) => {
            let pending: Vec<String> = paths
                .iter()
                .filter_map(|p| {
                    let state = tree.get(p).map(|i| i.state)?;
                    (state != ActorState::Running).then(|| format!("{p} is {state}"))
                })
                .collect();
            Err(Failure::new(
                FailureKind::Timeout,
                format!(
                    "not running after {}: {}",
                    humantime::format_duration(timeout),
                    pending.join(", ")
                ),
            ))
        }
    }
}
