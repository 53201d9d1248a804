//! warden: an actor-based supervision runtime.
//!
//! Supervisor trees of OS services and actix actors, restarted by OTP strategies with
//! exponential backoff and restart intensity, driven over an admin HTTP API.
//!
//! - Run a tree from a config file: the `warden` binary (`warden up -c warden.toml`),
//!   or [`config::load`] + [`runtime::up`].
//! - Embed a tree in your own actix System: [`embed`].
//! - The contract is written down in the repository: config keys in `docs/config.md`,
//!   routes, fields and states in `docs/api.md`, commands in `docs/cli.md`; the promises
//!   of the supervisor tree are in `SEMANTICS.md`.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod admin;
pub mod admin_tls;
pub mod config;
pub mod control;
pub mod ctl;
pub mod embed;
pub mod heap;
pub mod holder;
pub mod hub;
pub mod instance;
pub mod layout;
pub mod metrics;
pub mod own_log;
pub mod plan;
pub mod priority;
pub mod reaper;
pub mod reexec;
pub mod reload;
pub mod runtime;
pub mod sd_notify;
pub mod state;
pub mod token;
pub mod watchdog;

pub use warden_actors::{ActorHandle, LogSpec, Output, ReadyCheck, ServiceSpec};
pub use warden_supervisors::{
    ActorInfo, ActorKind, ActorName, ActorPath, ActorState, ActorTree, ActorView, BackoffConfig,
    ChildSpec, ControlError, ControlOp, Exit, Intensity, LifecycleEvent, RestartType, Strategy,
    SupervisorSpec,
};
