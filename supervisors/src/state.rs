//! The states an actor moves through and the kinds of actor there are.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an actor is in its life (the exact strings of the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    /// Spawned (or about to be, waiting for earlier siblings), ready check not yet passed.
    Starting,
    /// Spawned, and ready if it has a ready check.
    Running,
    /// Waiting to restart.
    Backoff,
    /// Asked to stop, not yet gone.
    Stopping,
    /// Stopped by an operator or by shutdown.
    Stopped,
    /// A transient or temporary child finished and will not be restarted.
    Exited,
    /// Given up on: intensity exceeded, or a fatal error.
    Failed,
}

impl ActorState {
    /// Every state, for exporting one gauge per state.
    pub const ALL: [ActorState; 7] = [
        ActorState::Starting,
        ActorState::Running,
        ActorState::Backoff,
        ActorState::Stopping,
        ActorState::Stopped,
        ActorState::Exited,
        ActorState::Failed,
    ];

    /// The state's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Backoff => "backoff",
            ActorState::Stopping => "stopping",
            ActorState::Stopped => "stopped",
            ActorState::Exited => "exited",
            ActorState::Failed => "failed",
        }
    }
}

impl fmt::Display for ActorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of thing an actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A supervisor of other actors.
    Supervisor,
    /// A plain OS process.
    Service,
    /// An OS process that speaks warden's IPC.
    Outboard,
    /// A pool of app workers.
    Pool,
    /// One worker of a pool.
    Worker,
    /// A member of a holder process.
    Member,
    /// An embedder's own actix actor.
    Actor,
    /// A spoke's connection to its hub (`/_hub`).
    Link,
    /// A deploy of a service while it runs (`<supervisor>/_deploy.<service>`): added to
    /// a running supervisor with [`AddChild`](crate::AddChild), kept across reloads,
    /// removed when it ends.
    Deploy,
}
