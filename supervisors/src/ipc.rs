//! The outboard IPC protocol: what warden and an outboard child say to each other over
//! the child's local socket, each message one [`wire`](crate::wire) frame. The
//! compatibility surface of outboard children: bump [`IPC_PROTOCOL`] on any incompatible
//! change.
//!
//! 1. warden writes an [`OutboardConfigFile`] (mode 0600) and passes its path in
//!    [`CONFIG_ENV`]; the child connects to `socket` and sends [`ChildMessage::Hello`]
//!    with the protocol version, the `token` and its own app version.
//! 2. warden answers [`SupervisorMessage::Welcome`], or [`SupervisorMessage::Error`] and
//!    closes (wrong token, other protocol, other app version, a second connection).
//! 3. The child says [`ChildMessage::Ready`] once it is ready; warden sends
//!    [`SupervisorMessage::Ping`] every heartbeat and the child answers
//!    [`ChildMessage::Pong`]; a [`SupervisorMessage::Call`] gets a [`ChildMessage::Reply`]
//!    with the same id; [`SupervisorMessage::Stop`] asks the child to exit cleanly before
//!    any signal is sent.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the outboard protocol.
pub const IPC_PROTOCOL: u32 = 1;

/// The environment variable that holds the path of the child's [`OutboardConfigFile`].
pub const CONFIG_ENV: &str = "WARDEN_OUTBOARD_CONFIG";

/// What an outboard child needs to connect, written by warden as JSON (mode 0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboardConfigFile {
    /// The local socket to connect to; a relative path is relative to the folder of this
    /// file (warden writes `outboard.sock`: the file and the socket sit in the folder the
    /// child reaches through `/proc/self/fd/N`).
    pub socket: PathBuf,
    /// The secret to present in `hello`.
    pub token: String,
    /// warden's [`IPC_PROTOCOL`].
    pub protocol: u32,
    /// How often warden pings, in milliseconds.
    pub heartbeat_ms: u64,
    /// The child's actor path.
    pub actor: String,
}

/// A message from the child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChildMessage {
    /// The first message of a connection.
    Hello {
        /// The child's [`IPC_PROTOCOL`].
        protocol: u32,
        /// The token from the config file.
        token: String,
        /// The child's own application version.
        app_version: u32,
        /// The child's pid.
        pid: u32,
    },
    /// The child is ready.
    Ready,
    /// Answer to a ping.
    Pong {
        /// The ping's number.
        seq: u64,
    },
    /// Answer to a call.
    Reply {
        /// The call's id.
        id: u64,
        /// The handler's answer, or its error.
        result: Result<serde_json::Value, String>,
    },
    /// The child gives up on the connection.
    Error {
        /// Why.
        message: String,
    },
}

/// A message from warden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMessage {
    /// The hello was accepted.
    Welcome {
        /// warden's [`IPC_PROTOCOL`].
        protocol: u32,
    },
    /// Answer with a pong.
    Ping {
        /// Its number.
        seq: u64,
    },
    /// A user call: answer with a reply carrying `id`.
    Call {
        /// Chosen by warden.
        id: u64,
        /// The request.
        body: serde_json::Value,
    },
    /// Exit cleanly now.
    Stop,
    /// The connection is refused or broken; warden closes it after this.
    Error {
        /// Why.
        message: String,
    },
}
