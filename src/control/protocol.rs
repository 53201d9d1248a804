//! The control protocol: what an operator can ask and what warden answers. The
//! compatibility surface of the control socket: bump [`PROTOCOL_VERSION`] on any
//! incompatible change.

use actix::Message;
use serde::{Deserialize, Serialize};
use warden_supervisors::{ActorPath, ActorView, ChildChanges, TreeNode};

/// Version of the control socket protocol; client and server must agree.
pub const PROTOCOL_VERSION: u32 = 1;

/// The most lines a [`Request::Logs`] may ask for, over HTTP and the control socket alike;
/// more is a bad request. The bytes answered are capped too, at
/// [`warden_actors::MAX_TAIL_BYTES`].
pub const MAX_TAIL: usize = 100_000;

/// A control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<Response, Failure>")]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness: ok or draining.
    Health,
    /// Readiness: every child meant to run is running.
    Ready,
    /// Every actor but the root, parents first.
    Status,
    /// The whole tree, nested.
    Tree,
    /// One actor.
    Actor {
        /// Its path.
        path: String,
    },
    /// Start an actor and wait until it settles.
    Start {
        /// Its path.
        path: String,
    },
    /// Stop an actor and wait until it is stopped.
    Stop {
        /// Its path.
        path: String,
    },
    /// Restart an actor and wait until it settles.
    Restart {
        /// Its path.
        path: String,
    },
    /// The last lines of an actor's log.
    Logs {
        /// Its path.
        path: String,
        /// How many lines: at most [`MAX_TAIL`].
        tail: usize,
    },
    /// Re-read the config file and apply the difference.
    Reload,
    /// Stop taking new work: `/healthz` answers 503.
    Drain,
    /// Prometheus text.
    Metrics,
    /// Relay a user call to an outboard child and wait for its reply.
    Call {
        /// The outboard child.
        path: String,
        /// The request, any JSON value.
        body: serde_json::Value,
        /// Give up after this long.
        timeout_ms: u64,
    },
    /// Place a new session in a pool.
    Acquire {
        /// The pool.
        pool: String,
    },
    /// Release a session of a pool.
    Release {
        /// The pool.
        pool: String,
        /// The session id.
        session: String,
    },
    /// Replace a pool's workers by workers with a new command and/or environment.
    Rollout {
        /// The pool.
        pool: String,
        /// The new command (`None`: unchanged).
        command: Option<Vec<String>>,
        /// The new environment (`None`: unchanged).
        env: Option<Vec<(String, String)>>,
        /// How long old workers may keep their sessions.
        deadline_ms: u64,
    },
    /// Start the tree of a passive warden.
    Activate,
    /// Re-execute warden's binary in place, keeping every child (answered once the
    /// binary on disk passed its preflight, just before the exec).
    Reexec,
    /// Check a worker token of a pool.
    VerifyToken {
        /// The pool.
        pool: String,
        /// The token.
        token: String,
    },
    /// Ask for a deploy of a service (`/`: warden's own `[self]` deploy).
    Deploy {
        /// The service's path, or `/`.
        path: String,
    },
    /// The deploys of a service (`/`: warden's own), newest first.
    Deploys {
        /// The service's path, or `/`.
        path: String,
    },
    /// Confirm a deploy that awaits confirmation.
    ConfirmDeploy {
        /// The service's path, or `/`.
        path: String,
        /// The deploy's id.
        id: String,
    },
    /// Wait until every listed actor is `running`.
    Wait {
        /// Their paths.
        paths: Vec<String>,
        /// Give up after this long.
        timeout_ms: u64,
    },
}

/// Liveness of warden itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Serving.
    Ok,
    /// Draining: alive, but not taking new work.
    Draining,
}

/// A successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Health`].
    Health(Health),
    /// Answer to [`Request::Ready`]: the actors that keep warden from being ready.
    Ready {
        /// Whether every child meant to run is running.
        ready: bool,
        /// Those that are not.
        waiting: Vec<ActorPath>,
    },
    /// Answer to [`Request::Status`] and [`Request::Wait`].
    Actors(Vec<ActorView>),
    /// Answer to [`Request::Tree`].
    Tree(Box<TreeNode>),
    /// Answer to [`Request::Actor`], start, stop and restart.
    Actor(Box<ActorView>),
    /// Answer to [`Request::Logs`]: the bytes as the child wrote them.
    Logs(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Answer to [`Request::Reload`].
    Reloaded(ChildChanges),
    /// Answer to [`Request::Drain`].
    Draining,
    /// Answer to [`Request::Metrics`].
    Metrics(String),
    /// Answer to [`Request::Call`]: the child's reply.
    Reply(serde_json::Value),
    /// Answer to [`Request::Acquire`].
    Session(warden_actors::Session),
    /// Answer to [`Request::Release`].
    Released,
    /// Answer to [`Request::Rollout`].
    RolledOut(warden_actors::RolloutSummary),
    /// Answer to [`Request::VerifyToken`].
    Token(TokenCheck),
    /// Answer to [`Request::Activate`].
    Activated,
    /// Answer to [`Request::Deploy`]: the deploy as it is now (HTTP 202).
    DeployAccepted(Box<warden_actors::DeployRecord>),
    /// Answer to [`Request::Deploys`], newest first.
    DeployList(Vec<warden_actors::DeployRecord>),
    /// Answer to [`Request::ConfirmDeploy`]: the deploy as it is now.
    DeployConfirmed(Box<warden_actors::DeployRecord>),
    /// Answer to [`Request::Reexec`]: the binary passed its checks and is being executed.
    Reexecuting {
        /// The binary on disk.
        binary: String,
        /// What its `--version` said.
        version: String,
    },
}

/// Whether a worker token is valid, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCheck {
    /// Signed by this warden's key, not expired, and naming a worker of the pool.
    pub valid: bool,
    /// The worker it names, when valid.
    pub worker: Option<warden_supervisors::ActorPath>,
    /// When it expires, when valid.
    pub expires_at: Option<warden_supervisors::Timestamp>,
    /// Why not, when invalid.
    pub reason: Option<String>,
}

/// What kind of failure, which fixes the HTTP status and the CLI exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The request itself is wrong (400).
    BadRequest,
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// No such actor or route (404).
    NotFound,
    /// Not allowed in the actor's current state (409).
    Conflict,
    /// The request is too large (413).
    TooLarge,
    /// Did not happen in time (504).
    Timeout,
    /// warden cannot do it now (503).
    Unavailable,
    /// A fault inside warden (500).
    Internal,
}

impl FailureKind {
    /// The HTTP status for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            FailureKind::BadRequest => 400,
            FailureKind::Unauthorized => 401,
            FailureKind::NotFound => 404,
            FailureKind::Conflict => 409,
            FailureKind::TooLarge => 413,
            FailureKind::Timeout => 504,
            FailureKind::Unavailable => 503,
            FailureKind::Internal => 500,
        }
    }
}

/// A failed request: its kind and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<warden_supervisors::ControlError> for Failure {
    fn from(e: warden_supervisors::ControlError) -> Self {
        use warden_supervisors::ControlError;
        let kind = match e {
            ControlError::NotFound(_) => FailureKind::NotFound,
            ControlError::Conflict { .. } | ControlError::ShuttingDown(_) => FailureKind::Conflict,
        };
        Failure::new(kind, e.to_string())
    }
}

/// A frame from a control socket client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame of every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// Who is asking (free text, for logs).
        client: String,
    },
    /// A request; the reply carries the same `id`.
    Request {
        /// Chosen by the client.
        id: u64,
        /// The request.
        request: Request,
    },
}

/// A frame from the control socket server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `Hello` when the versions agree.
    Welcome {
        /// The server's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// warden's version.
        server: String,
    },
    /// Answer to a request.
    Reply {
        /// The request's id.
        id: u64,
        /// The outcome.
        result: Result<Response, Failure>,
    },
    /// The connection is refused or broken; the server closes it after this frame.
    Error {
        /// Why.
        message: String,
    },
}
