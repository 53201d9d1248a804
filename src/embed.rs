//! Embedding: build and run a supervision tree from code, inside your own actix System,
//! with OS services and your own actix actors side by side. No config file needed.
//!
//! ```no_run
//! use std::time::Duration;
//! use warden::embed::{actor_child, service_child, RunningTree};
//! use warden::{ServiceSpec, Strategy, SupervisorSpec};
//!
//! struct Cache;
//! impl actix::Actor for Cache {
//!     type Context = actix::Context<Self>;
//! }
//!
//! actix::System::new().block_on(async {
//!     let (cache, handle) = actor_child("cache", || Cache).unwrap();
//!     let ticker = service_child("ticker", ServiceSpec::new(["sleep", "1000"]).unwrap()).unwrap();
//!     let spec = SupervisorSpec {
//!         strategy: Strategy::OneForOne,
//!         intensity: None,
//!         children: vec![cache, ticker],
//!     };
//!     let tree = RunningTree::start(&spec);
//!     tree.ready(Duration::from_secs(5)).await;
//!     let _cache_addr = handle.wait(Duration::from_secs(1)).await;
//!     tree.shutdown().await;
//! });
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context};
use warden_actors::{ActorFactory, ActorHandle, ServiceFactory, ServiceSpec};
use warden_supervisors::{
    ActorName, ActorPath, ActorTree, ActorView, ChildSpec, ControlError, ControlOp, LifecycleEvent,
    PathError, RootHandle, Supervisor, SupervisorSpec,
};

/// A child that runs `spec` as an OS service (permanent, built-in backoff and intensity;
/// adjust with the `ChildSpec` builder methods).
pub fn service_child(name: &str, spec: ServiceSpec) -> Result<ChildSpec, PathError> {
    Ok(ChildSpec::new(
        ActorName::new(name)?,
        ServiceFactory::new(spec),
    ))
}

/// A child that runs an actor built by `make` (called again on every restart), and the
/// handle that always reaches its current run.
pub fn actor_child<A, F>(name: &str, make: F) -> Result<(ChildSpec, ActorHandle<A>), PathError>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + Send + Sync + 'static,
{
    let (factory, handle) = ActorFactory::new(make, Duration::from_secs(5));
    Ok((ChildSpec::new(ActorName::new(name)?, factory), handle))
}

/// A child that is a supervisor of `spec`'s children.
pub fn supervisor_child(name: &str, spec: SupervisorSpec) -> Result<ChildSpec, PathError> {
    Ok(ChildSpec::supervisor(ActorName::new(name)?, spec))
}

/// A started tree: its registry and its root.
#[derive(Debug)]
pub struct RunningTree {
    tree: Arc<ActorTree>,
    root: RootHandle,
}

impl RunningTree {
    /// Starts `spec` as the root `/` on the current actix arbiter (call it inside a
    /// running `actix::System`).
    pub fn start(spec: &SupervisorSpec) -> Self {
        let tree = Arc::new(ActorTree::new());
        Self::start_in(tree, spec)
    }

    /// Starts `spec` as the root of an existing (empty) registry.
    pub fn start_in(tree: Arc<ActorTree>, spec: &SupervisorSpec) -> Self {
        let root = Supervisor::start_root(tree.clone(), spec);
        Self { tree, root }
    }

    /// The registry: read states, subscribe to events.
    pub fn tree(&self) -> &Arc<ActorTree> {
        &self.tree
    }

    /// Waits (at most `timeout`) until every child has been started in order; `false`
    /// on timeout.
    pub async fn ready(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.root.wait_ready())
            .await
            .is_ok()
    }

    /// The actor at `path` (e.g. `"/app/api"`).
    pub fn get(&self, path: &str) -> Option<ActorView> {
        ActorPath::parse(path).ok().and_then(|p| self.tree.view(&p))
    }

    /// Starts, stops or restarts the actor at `path` and waits for the transition.
    pub async fn control(&self, path: &str, op: ControlOp) -> Result<ActorView, ControlError> {
        let path = ActorPath::parse(path).map_err(|_| ControlError::NotFound(path.to_owned()))?;
        crate::control::control(&self.tree, &path, op).await
    }

    /// Every state change from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<LifecycleEvent> {
        self.tree.subscribe()
    }

    /// Stops every child in reverse order and waits until all are gone.
    pub async fn shutdown(&self) {
        self.root.shutdown().await;
    }

    /// The root supervisor's handle.
    pub fn root(&self) -> &RootHandle {
        &self.root
    }
}
