//! warden's child kinds, plugged into the supervisors of `warden-supervisors`:
//!
//! - [`ServiceFactory`]: an OS process in its own process group, its output in a rotated
//!   log file, stopped by a signal to the group then SIGKILL, with ready checks.
//! - [`ActorFactory`]: an embedder's own actix actor, built anew by a factory on every
//!   (re)start, reachable through an [`ActorHandle`] that follows the restarts.
//! - [`notifier`]: tell chat channels and webhooks about deploys and actors that gave up,
//!   off the supervision thread.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod actor;
pub mod deploy;
pub mod link;
pub mod log_budget;
pub mod notifier;
mod outboard;
pub mod peer;
mod pool;
mod redis_registry;
pub mod sched;
mod secret;
mod service;
pub mod state_file;
pub mod unit;
mod worker_token;

pub use actor::{ActorFactory, ActorHandle};
pub use deploy::{DeployEvent, DeployRecord, DeploySpec, DeployState, Deploys};
pub use link::{LinkFactory, LinkSpec, LocalVerbs};
pub use outboard::{
    CallError, OutboardFactory, OutboardHub, OutboardSpec, OUTBOARD_HELLO_WITHIN,
    OUTBOARD_MAX_CONNECTIONS,
};
pub use pool::{
    MemoryRegistry, PoolError, PoolFactory, PoolHub, PoolSpec, PoolTables, RegistryFuture,
    RolloutPolicy, RolloutSummary, Session, SessionRegistry, WorkerBuilder, WorkerTemplate,
    WorkerTokens,
};
pub use redis_registry::{redact_url, RedisRegistry};
pub use secret::{hex, random_hex, unhex, write_durably};
pub use service::cgroup::{cgroup_of, kill_cgroup, remove_when_empty, CgroupUnavailable, Cgroups};
pub use service::log::{
    flush as flush_logs, pause as pause_logs, resume as resume_logs, tail_lines, LogFile, LogSpec,
    MAX_TAIL_BYTES,
};
pub use service::proc;
pub use service::ready::ReadyCheck;
pub use service::records::{Adoptable, ProcessRecords, Written};
pub use service::run_as::{effective_ids, RunAs, RunAsError};
pub use service::spawned;
pub use service::{Handoff, Output, ServiceFactory, ServiceSpec};
pub use unit::{UnitBackend, UnitFactory};
pub use worker_token::{TokenError, TokenSigner, VerifiedToken};
