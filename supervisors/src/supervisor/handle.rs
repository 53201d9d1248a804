//! Handles on running supervisors: the root of a tree ([`RootHandle`]) and nested
//! supervisors started as the run of a child (nested supervisors, pools).

use actix::fut::wrap_future;
use actix::prelude::*;
use tokio::sync::oneshot;

use super::{Shutdown, Supervisor, SupervisorSpec};
use crate::child::{ChildFactory, ChildSpec, RunningChild, StartContext, StopMode};
use crate::exit::Exit;
use crate::path::ActorName;
use crate::state::ActorKind;

/// The running root of a tree.
#[derive(Debug)]
pub struct RootHandle {
    /// The root supervisor.
    pub addr: Addr<Supervisor>,
    pub(super) ready: tokio::sync::watch::Receiver<bool>,
    pub(super) ended: tokio::sync::watch::Receiver<Option<Exit>>,
    /// Never sent: dropping this handle drops it, and the root then ends every child at
    /// once, as a nested supervisor does when its parent drops its stop handle.
    pub(super) _stop_on_drop: oneshot::Sender<()>,
}

impl RootHandle {
    /// Waits until the root supervisor has ended (after a shutdown, or by a bug: a panic)
    /// and says how.
    pub async fn ended(&self) -> Exit {
        let mut ended = self.ended.clone();
        let end = match ended.wait_for(Option::is_some).await {
            Ok(end) => end.clone().unwrap_or(Exit::Normal),
            Err(_) => Exit::Normal,
        };
        end
    }

    /// Waits until every child meant to run has been `running` once, in order (a child
    /// that fails its first start keeps this waiting until it has run, or is given up on).
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Stops the whole tree in reverse order and waits until every child is gone.
    pub async fn shutdown(&self) {
        if let Ok(done) = self.addr.send(Shutdown).await {
            let _ = done.await;
        }
    }
}

/// Starts nested supervisors: the child kind behind [`ChildSpec::supervisor`].
#[derive(Debug)]
struct SupervisorFactory {
    spec: SupervisorSpec,
}

impl ChildFactory for SupervisorFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Supervisor
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        Ok(Supervisor::start_nested(cx, &self.spec).0)
    }
}

impl Supervisor {
    /// Starts a supervisor of `spec` as the run of a child at `cx.path`, for child kinds
    /// built on a supervisor (nested supervisors, pools). Returns the run and the
    /// supervisor's address (to change its children).
    pub fn start_nested(
        cx: StartContext,
        spec: &SupervisorSpec,
    ) -> (RunningChild, Addr<Supervisor>) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<StopMode>();
        let mut sup = Supervisor::new(cx.path, cx.tree, spec, false);
        sup.ready_tx = Some(ready_tx);
        sup.exit_tx = Some(exit_tx);
        let mut ctx = Context::new();
        ctx.spawn(
            wrap_future(stop_rx).map(|stop, act: &mut Supervisor, ctx| match stop {
                Ok(StopMode::Graceful | StopMode::Restart) => act.begin_shutdown(ctx),
                // The parent dropped this run's stop handle (it died): end at once.
                Err(_) => act.end_at_once(ctx),
            }),
        );
        let fut = ctx.into_future(sup);
        let addr = fut.address();
        let join = actix_rt::spawn(fut);
        let exit = async move {
            match join.await {
                Ok(()) => exit_rx.await.unwrap_or(Exit::Normal),
                Err(e) if e.is_panic() => Exit::Panic(panic_message(&*e.into_panic())),
                Err(_) => Exit::Fatal("supervisor task was cancelled".to_owned()),
            }
        };
        let run = RunningChild {
            pid: None,
            ready: Some(Box::pin(async move {
                ready_rx
                    .await
                    .map_err(|_| "supervisor ended before its children started".to_owned())
            })),
            exit: Box::pin(exit),
            stop: stop_tx,
            adopted: false,
            containment: None,
        };
        (run, addr)
    }
}

impl ChildSpec {
    /// A nested supervisor child (permanent, with the built-in backoff and intensity).
    pub fn supervisor(name: ActorName, spec: SupervisorSpec) -> Self {
        ChildSpec::new(name, SupervisorFactory { spec })
    }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}
