//! Operator requests by path: found through the registry, carried out by the parent
//! supervisor, answered once the transition is done. The one implementation behind the
//! HTTP API and the embedding API.

use warden_supervisors::{
    ActorPath, ActorState, ActorTree, ActorView, Control, ControlError, ControlOp,
};

/// Starts, stops or restarts the actor at `path` and waits for the transition (running or
/// settled after a start, stopped after a stop); answers with the actor as it is then.
pub async fn control(
    tree: &ActorTree,
    path: &ActorPath,
    op: ControlOp,
) -> Result<ActorView, ControlError> {
    let not_found = || ControlError::NotFound(path.to_string());
    let Some(parent) = path.parent() else {
        return Err(ControlError::Conflict {
            path: path.to_string(),
            op: op.as_str(),
            state: ActorState::Running,
        });
    };
    let info = tree.get(path).ok_or_else(not_found)?;
    let Some(supervisor) = tree.supervisor(&parent) else {
        return Err(ControlError::Conflict {
            path: path.to_string(),
            op: op.as_str(),
            state: info.state,
        });
    };
    let done = supervisor
        .send(Control {
            name: path.name().to_owned(),
            op,
        })
        .await
        .map_err(|_| not_found())??;
    // A dropped sender means the supervisor went away meanwhile: report what is there.
    let _ = done.await;
    tree.view(path).ok_or_else(not_found)
}
