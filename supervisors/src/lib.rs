//! warden's supervision core: the supervisor actor and what it needs.
//!
//! A tree of [`Supervisor`] actors, each starting its children ([`ChildSpec`]) in order,
//! restarting them by [`Strategy`], [`RestartType`], exponential [`Backoff`] and
//! [`Intensity`], and stopping them in reverse order. Every state change is recorded in the
//! shared [`ActorTree`] and announced on its event bus. Child kinds (OS services, actors,
//! ...) plug in through [`ChildFactory`]; this crate knows nothing of processes, HTTP or
//! config files.
//!
//! ```no_run
//! use std::sync::Arc;
//! use warden_supervisors::{ActorTree, Supervisor, SupervisorSpec};
//!
//! actix::System::new().block_on(async {
//!     let tree = Arc::new(ActorTree::new());
//!     let root = Supervisor::start_root(tree.clone(), &SupervisorSpec::default());
//!     root.shutdown().await;
//! });
//! ```
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod child;
mod exit;
mod path;
mod policy;
mod state;
mod supervisor;
mod tree;
pub mod wire;

pub use child::{ChildFactory, ChildSpec, RunningChild, StartContext, StopMode};
pub use exit::{signal_name, Exit, LastExit};
pub use path::{ActorName, ActorPath, PathError};
pub use policy::{
    Backoff, BackoffConfig, BackoffInfo, Intensity, IntensityWindow, RestartType, Strategy,
};
pub use state::{ActorKind, ActorState};
pub use supervisor::{
    panic_message, ChildChanges, ChildUpdate, Control, ControlError, ControlOp, RootHandle,
    Shutdown, Supervisor, SupervisorSpec, UpdateChildren,
};
pub use tree::{ActorInfo, ActorTree, ActorView, LifecycleEvent, SharedTree, Timestamp, TreeNode};
