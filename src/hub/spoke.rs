//! The spoke side's answers to the hub's verbs: carried out by the same [`Controller`]
//! requests the admin API uses, and encoded as the admin API encodes them, so a relayed
//! answer equals the spoke's own. Listings are pruned to the spoke's `[spoke] paths`.

use std::sync::{Arc, OnceLock};

use actix::Addr;
use futures_util::future::LocalBoxFuture;
use warden_actors::link::policy::SpokePolicy;
use warden_actors::link::protocol::{Answer, Body, Verb};
use warden_actors::LocalVerbs;
use warden_supervisors::TreeNode;

use crate::control::protocol::{Request, Response};
use crate::control::Controller;

/// Serves verbs through the controller, once it exists (the tree's spec is built before
/// the controller is started; the link starts after both).
#[derive(Debug, Default)]
pub struct ControllerVerbs {
    controller: OnceLock<Addr<Controller>>,
}

impl ControllerVerbs {
    /// Wires in the controller.
    pub fn set(&self, controller: Addr<Controller>) {
        let _ = self.controller.set(controller);
    }
}

fn json<T: serde::Serialize>(value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => Answer {
            status: 200,
            body_kind: Body::Json,
            body,
        },
        Err(e) => Answer::error(500, &format!("cannot encode: {e}")),
    }
}

/// `node` without the subtrees `policy` hides (ancestors of allowed subtrees stay).
fn prune(mut node: TreeNode, policy: &SpokePolicy) -> TreeNode {
    node.children = node
        .children
        .into_iter()
        .filter(|c| policy.covers(c.info.path.as_str()) || policy.leads_to(c.info.path.as_str()))
        .map(|c| prune(c, policy))
        .collect();
    node
}

impl LocalVerbs for ControllerVerbs {
    fn serve(&self, verb: Verb, policy: &SpokePolicy) -> LocalBoxFuture<'static, Answer> {
        let Some(controller) = self.controller.get().cloned() else {
            return Box::pin(async { Answer::error(503, "the spoke is starting") });
        };
        let policy = policy.clone();
        Box::pin(async move {
            let request = match verb {
                Verb::Tree => Request::Tree,
                Verb::Actors => Request::Status,
                Verb::Actor { path } => Request::Actor { path },
                Verb::Start { path } => Request::Start { path },
                Verb::Stop { path } => Request::Stop { path },
                Verb::Restart { path } => Request::Restart { path },
                Verb::Logs { path, tail } => Request::Logs {
                    path,
                    tail: usize::try_from(tail).unwrap_or(usize::MAX),
                },
            };
            match controller.send(request).await {
                Err(_) => Answer::error(503, "warden is stopping"),
                Ok(Err(failure)) => Answer::error(failure.kind.http_status(), &failure.message),
                Ok(Ok(response)) => match response {
                    Response::Tree(node) => json(&prune(*node, &policy)),
                    Response::Actors(views) => {
                        let views: Vec<_> = views
                            .into_iter()
                            .filter(|v| policy.covers(v.info.path.as_str()))
                            .collect();
                        json(&views)
                    }
                    Response::Actor(view) => json(&view),
                    Response::Logs(bytes) => Answer {
                        status: 200,
                        body_kind: Body::Text,
                        body: bytes,
                    },
                    other => Answer::error(500, &format!("unexpected answer {other:?}")),
                },
            }
        })
    }
}

/// The verbs of a running spoke, to hand to its link.
pub fn verbs() -> Arc<ControllerVerbs> {
    Arc::new(ControllerVerbs::default())
}
