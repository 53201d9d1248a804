//! The actor child kind: an embedder's own actix actor, built anew on every (re)start.
//!
//! A panic in one of the actor's handlers ends only that actor's task; the task's join
//! error is an abnormal exit ([`Exit::Panic`]) that its supervisor restarts by policy.
//! The [`ActorHandle`] always holds the address of the current run.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use warden_supervisors::{
    panic_message, ActorKind, ChildFactory, Exit, RunningChild, StartContext, StopMode,
};

/// The address of the current run of a supervised actor; follows restarts.
pub struct ActorHandle<A: Actor> {
    current: watch::Receiver<Option<Addr<A>>>,
}

impl<A: Actor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
        }
    }
}

impl<A: Actor> fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorHandle")
            .field("running", &self.current.borrow().is_some())
            .finish()
    }
}

impl<A: Actor> ActorHandle<A> {
    /// The current address, if the actor is running now.
    pub fn addr(&self) -> Option<Addr<A>> {
        self.current.borrow().clone().filter(|a| a.connected())
    }

    /// Waits until the actor runs (at most `timeout`) and returns its address.
    pub async fn wait(&self, timeout: Duration) -> Option<Addr<A>> {
        let mut rx = self.current.clone();
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(addr) = rx.borrow_and_update().clone().filter(|a| a.connected()) {
                    return Some(addr);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// Starts runs of an actor of type `A`, built by `make`.
pub struct ActorFactory<A: Actor, F> {
    make: F,
    stop_timeout: Duration,
    current: Arc<watch::Sender<Option<Addr<A>>>>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor, F> fmt::Debug for ActorFactory<A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorFactory")
            .field("actor", &std::any::type_name::<A>())
            .field("stop_timeout", &self.stop_timeout)
            .finish_non_exhaustive()
    }
}

impl<A, F> ActorFactory<A, F>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + Send + Sync + 'static,
{
    /// A factory calling `make` for every run, and the handle that follows the runs. A
    /// stop that the actor does not honour within `stop_timeout` ends its task.
    pub fn new(make: F, stop_timeout: Duration) -> (Self, ActorHandle<A>) {
        let (tx, rx) = watch::channel(None);
        (
            Self {
                make,
                stop_timeout,
                current: Arc::new(tx),
                _actor: PhantomData,
            },
            ActorHandle { current: rx },
        )
    }
}

impl<A, F> ChildFactory for ActorFactory<A, F>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + Send + Sync + 'static,
{
    fn kind(&self) -> ActorKind {
        ActorKind::Actor
    }

    fn start(&self, _cx: StartContext) -> Result<RunningChild, String> {
        let actor = (self.make)();
        let (inner_stop_tx, inner_stop_rx) = oneshot::channel::<()>();
        let mut ctx = Context::new();
        ctx.spawn(
            wrap_future(inner_stop_rx).map(|res, _act: &mut A, ctx: &mut Context<A>| {
                if res.is_ok() {
                    ctx.stop();
                }
            }),
        );
        let fut = ctx.into_future(actor);
        let addr = fut.address();
        let mut join = actix_rt::spawn(fut);
        self.current.send_replace(Some(addr));
        let current = self.current.clone();
        let stop_timeout = self.stop_timeout;
        let (stop_tx, stop_rx) = oneshot::channel::<StopMode>();
        let exit = async move {
            let joined = tokio::select! {
                res = &mut join => res,
                request = stop_rx => {
                    if request.is_ok() {
                        let _ = inner_stop_tx.send(());
                        match tokio::time::timeout(stop_timeout, &mut join).await {
                            Ok(res) => res,
                            Err(_) => { join.abort(); join.await }
                        }
                    } else {
                        join.abort();
                        join.await
                    }
                }
            };
            current.send_replace(None);
            match joined {
                Ok(()) => Exit::Normal,
                Err(e) if e.is_panic() => Exit::Panic(panic_message(&*e.into_panic())),
                Err(_) => Exit::Fatal("actor did not stop within its timeout".to_owned()),
            }
        };
        Ok(RunningChild {
            pid: None,
            ready: None,
            exit: Box::pin(exit),
            stop: stop_tx,
            adopted: false,
            containment: None,
        })
    }
}
