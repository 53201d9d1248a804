//! What others can ask of a supervisor: operator verbs, a new set of children (a
//! reload), and a shutdown; with their answers.

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Supervisor;
use crate::child::ChildSpec;
use crate::path::ActorPath;
use crate::policy::{Intensity, Strategy};
use crate::state::ActorState;

/// What an operator can ask of an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    /// Start a stopped, exited or failed actor (resets its intensity and backoff).
    Start,
    /// Stop it (cancels a pending restart).
    Stop,
    /// Stop it if it runs, then start it again.
    Restart,
}

impl ControlOp {
    /// The verb as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlOp::Start => "start",
            ControlOp::Stop => "stop",
            ControlOp::Restart => "restart",
        }
    }
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No actor has that path.
    #[error("no actor at {0}")]
    NotFound(String),
    /// The actor's state does not allow the operation now.
    #[error("cannot {op} {path} while it is {state}")]
    Conflict {
        /// The actor.
        path: String,
        /// The refused operation.
        op: &'static str,
        /// Its state.
        state: ActorState,
    },
    /// The supervisor is shutting down or giving up.
    #[error("{0} is shutting down")]
    ShuttingDown(String),
}

/// Asks a supervisor to act on one of its children. The answer is a receiver that fires
/// when the transition is done (stopped, or settled after a start).
#[derive(Debug, Message)]
#[rtype(result = "Result<oneshot::Receiver<()>, ControlError>")]
pub struct Control {
    /// The child's name.
    pub name: String,
    /// What to do.
    pub op: ControlOp,
}

/// Replaces a supervisor's settings and children (a config reload). Children are matched
/// by name: a new name is added and started, a missing name is stopped and removed, a
/// child marked `changed` is restarted with its new spec, and every other child keeps
/// running untouched (its spec is replaced for future restarts). Children take the new
/// order. A removed child that is added back while its old run is still stopping starts
/// again once that run has ended (never two runs of one path).
#[derive(Debug, Message)]
#[rtype(result = "Result<ChildChanges, ControlError>")]
pub struct UpdateChildren {
    /// The new strategy.
    pub strategy: Strategy,
    /// The new intensity.
    pub intensity: Option<Intensity>,
    /// The new children, in order.
    pub children: Vec<ChildUpdate>,
}

/// One child of an [`UpdateChildren`].
#[derive(Debug)]
pub struct ChildUpdate {
    /// Its spec from now on.
    pub spec: ChildSpec,
    /// Whether it changed so that a running child must restart to apply it.
    pub changed: bool,
}

/// What an [`UpdateChildren`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildChanges {
    /// Children added (and started).
    pub added: Vec<ActorPath>,
    /// Children stopped and removed.
    pub removed: Vec<ActorPath>,
    /// Children restarted with a new spec.
    pub changed: Vec<ActorPath>,
}

impl ChildChanges {
    /// Adds another supervisor's changes to these.
    pub fn extend(&mut self, other: ChildChanges) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.changed.extend(other.changed);
    }
}

/// Adds a child to a running supervisor, last in order, and starts it (a deploy while it
/// runs). The answer is the new child's path; a child of that name already there is a
/// conflict. Children of kind [`ActorKind::Deploy`](crate::ActorKind) added this way are
/// kept by an [`UpdateChildren`] that does not name them.
#[derive(Debug, Message)]
#[rtype(result = "Result<ActorPath, ControlError>")]
pub struct AddChild {
    /// Its spec.
    pub spec: ChildSpec,
}

/// Stops a child (if it runs) and removes it from the supervisor and the tree. The answer
/// is a receiver that fires once it has left.
#[derive(Debug, Message)]
#[rtype(result = "Result<oneshot::Receiver<()>, ControlError>")]
pub struct RemoveChild {
    /// The child's name.
    pub name: String,
}

/// Stops every child in reverse order, then the supervisor itself. The answer fires
/// when all are stopped.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Shutdown;

impl Handler<Control> for Supervisor {
    type Result = Result<oneshot::Receiver<()>, ControlError>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!("supervisor", path = %self.path);
        let _enter = span.enter();
        self.control(&msg.name, msg.op, ctx)
    }
}

impl Handler<UpdateChildren> for Supervisor {
    type Result = Result<ChildChanges, ControlError>;

    fn handle(&mut self, msg: UpdateChildren, ctx: &mut Self::Context) -> Self::Result {
        self.update_children(msg, ctx)
    }
}

impl Handler<AddChild> for Supervisor {
    type Result = Result<ActorPath, ControlError>;

    fn handle(&mut self, msg: AddChild, ctx: &mut Self::Context) -> Self::Result {
        self.add_child(msg.spec, ctx)
    }
}

impl Handler<RemoveChild> for Supervisor {
    type Result = Result<oneshot::Receiver<()>, ControlError>;

    fn handle(&mut self, msg: RemoveChild, ctx: &mut Self::Context) -> Self::Result {
        self.remove_child(&msg.name, ctx)
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = MessageResult<Shutdown>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.shutdown_waiters.push(tx);
        self.begin_shutdown(ctx);
        MessageResult(rx)
    }
}
