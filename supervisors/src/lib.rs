//! warden's supervision core: the supervisor actor and what it needs.
//!
//! A tree of [`Supervisor`] actors, each starting its children ([`ChildSpec`]) in order,
//! restarting them by [`Strategy`], [`RestartType`], exponential [`Backoff`] and
//! [`Intensity`], and stopping them in reverse order. Every state change is recorded in the
//! shared [`ActorTree`] and announced on its event bus. Child kinds (OS services, actors,
//! ...) plug in through [`ChildFactory`]; this crate knows nothing of processes, HTTP or
//! config files.
//!
//! Without the default `runtime` feature only the IPC wire protocol ([`wire`], [`ipc`])
//! is built, for outboard children.
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

#[cfg(feature = "runtime")]
mod child;
#[cfg(feature = "runtime")]
mod exit;
pub mod ipc;
#[cfg(feature = "runtime")]
mod path;
#[cfg(feature = "runtime")]
mod policy;
#[cfg(feature = "runtime")]
mod state;
#[cfg(feature = "runtime")]
mod supervisor;
#[cfg(feature = "runtime")]
mod tree;
pub mod wire;

#[cfg(feature = "runtime")]
pub use child::{
    ChildFactory, ChildSpec, PidReport, RunningChild, StartContext, StopMode, DEFAULT_RESET_AFTER,
};
#[cfg(feature = "runtime")]
pub use exit::{signal_name, Exit, LastExit};
#[cfg(feature = "runtime")]
pub use path::{ActorName, ActorPath, PathError};
#[cfg(feature = "runtime")]
pub use policy::{
    Backoff, BackoffConfig, BackoffInfo, Intensity, IntensityWindow, RestartType, Strategy,
};
#[cfg(feature = "runtime")]
pub use state::{ActorKind, ActorState};
#[cfg(feature = "runtime")]
pub use supervisor::{
    panic_message, AddChild, ChildChanges, ChildUpdate, Control, ControlError, ControlOp,
    RemoveChild, RootHandle, Shutdown, Supervisor, SupervisorSpec, UpdateChildren,
};
#[cfg(feature = "runtime")]
pub use tree::{
    ActorInfo, ActorTree, ActorView, Containment, LifecycleEvent, SharedTree, Timestamp, TreeNode,
};
