//! The library for Rust outboard children of warden.
//!
//! An outboard child is started by warden with `$WARDEN_OUTBOARD_CONFIG` naming a small
//! file (socket path and token). The child connects, says which app version it is, reports
//! ready, answers heartbeats and user calls with a handler, and returns from
//! [`Outboard::serve`] when warden asks it to stop (before any signal is sent). If warden
//! itself restarts, the connection is re-established with the same token and the child
//! keeps running; replies written while warden was away are sent once it is back.
//!
//! Dependencies: only serde, serde_json, thiserror and warden's wire protocol; blocking
//! std sockets, no async runtime.
//!
//! ```no_run
//! use warden_child::Outboard;
//!
//! let mut outboard = Outboard::connect(1).expect("started by warden");
//! outboard.ready().expect("ready");
//! outboard
//!     .serve(|request| Ok(serde_json::json!({ "echo": request })))
//!     .expect("served until warden asked to stop");
//! ```
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warden_supervisors::ipc::{
    ChildMessage, OutboardConfigFile, SupervisorMessage, CONFIG_ENV, IPC_PROTOCOL,
};
use warden_supervisors::wire::{self, FrameError, MAX_FRAME};

/// How long a child keeps trying to reach a warden that went away.
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Why the child cannot talk to warden.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// Not started by warden as an outboard child.
    #[error(
        "${CONFIG_ENV} is not set: this program must be started by warden as an [[outboard]] child"
    )]
    NoConfig,
    /// The config file is unreadable or malformed.
    #[error("outboard config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The socket could not be reached.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// warden refused the child (wrong token, other protocol or app version).
    #[error("refused by warden: {0}")]
    Refused(String),
    /// warden said something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// warden stayed away longer than [`RECONNECT_FOR`].
    #[error("lost warden and could not reconnect within {0:?}")]
    Lost(Duration),
}

/// A connection to the supervising warden.
#[derive(Debug)]
pub struct Outboard {
    config_path: PathBuf,
    config: OutboardConfigFile,
    app_version: u32,
    stream: Option<UnixStream>,
    ready: bool,
    unsent: VecDeque<Vec<u8>>,
}

/// The config file at `path`, its socket made absolute: a relative one is beside the file
/// (both in the folder warden hands this child, reached as `/proc/self/fd/N/...`).
fn read_config(path: &Path) -> Result<OutboardConfigFile, ChildError> {
    let bytes = std::fs::read(path).map_err(|e| ChildError::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut config: OutboardConfigFile =
        serde_json::from_slice(&bytes).map_err(|e| ChildError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if config.socket.is_relative() {
        let folder = path.parent().unwrap_or(Path::new("."));
        config.socket = folder.join(&config.socket);
    }
    Ok(config)
}

fn frame_error(e: FrameError) -> ChildError {
    ChildError::Protocol(e.to_string())
}

impl Outboard {
    /// Connects to warden using `$WARDEN_OUTBOARD_CONFIG`, announcing `app_version`.
    pub fn connect(app_version: u32) -> Result<Self, ChildError> {
        let path = std::env::var_os(CONFIG_ENV).ok_or(ChildError::NoConfig)?;
        Self::connect_with(Path::new(&path), app_version)
    }

    /// Connects using the config file at `config_path`.
    pub fn connect_with(config_path: &Path, app_version: u32) -> Result<Self, ChildError> {
        let config = read_config(config_path)?;
        let mut outboard = Self {
            config_path: config_path.to_owned(),
            config,
            app_version,
            stream: None,
            ready: false,
            unsent: VecDeque::new(),
        };
        outboard.stream = Some(outboard.handshake()?);
        Ok(outboard)
    }

    /// The actor path warden gave this child.
    pub fn actor(&self) -> &str {
        &self.config.actor
    }

    fn handshake(&self) -> Result<UnixStream, ChildError> {
        let mut stream =
            UnixStream::connect(&self.config.socket).map_err(|source| ChildError::Connect {
                path: self.config.socket.clone(),
                source,
            })?;
        let hello = ChildMessage::Hello {
            protocol: IPC_PROTOCOL,
            token: self.config.token.clone(),
            app_version: self.app_version,
            pid: std::process::id(),
        };
        send_on(&mut stream, &hello)?;
        match receive_on(&mut stream)? {
            Some(SupervisorMessage::Welcome { .. }) => Ok(stream),
            Some(SupervisorMessage::Error { message }) => Err(ChildError::Refused(message)),
            Some(other) => Err(ChildError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
            None => Err(ChildError::Protocol(
                "warden closed the connection during the handshake".to_owned(),
            )),
        }
    }

    /// Tells warden the child is ready (for `ready = { ipc = true }`).
    pub fn ready(&mut self) -> Result<(), ChildError> {
        self.ready = true;
        self.send(&ChildMessage::Ready)
    }

    fn send(&mut self, message: &ChildMessage) -> Result<(), ChildError> {
        let payload = wire::encode(message).map_err(frame_error)?;
        let sent = match self.stream.as_mut() {
            Some(stream) => wire::write_frame_blocking(stream, &payload, MAX_FRAME).is_ok(),
            None => false,
        };
        if !sent {
            // Kept until warden is back.
            self.stream = None;
            self.unsent.push_back(payload);
        }
        Ok(())
    }

    /// Re-establishes the connection after warden went away (same token, re-read from the
    /// config file), re-announces readiness and flushes what could not be sent.
    fn reconnect(&mut self) -> Result<(), ChildError> {
        let deadline = Instant::now() + RECONNECT_FOR;
        loop {
            if let Ok(config) = read_config(&self.config_path) {
                self.config = config;
            }
            match self.handshake() {
                Ok(mut stream) => {
                    if self.ready {
                        let payload = wire::encode(&ChildMessage::Ready).map_err(frame_error)?;
                        wire::write_frame_blocking(&mut stream, &payload, MAX_FRAME)
                            .map_err(frame_error)?;
                    }
                    while let Some(payload) = self.unsent.pop_front() {
                        wire::write_frame_blocking(&mut stream, &payload, MAX_FRAME)
                            .map_err(frame_error)?;
                    }
                    self.stream = Some(stream);
                    return Ok(());
                }
                Err(ChildError::Refused(message)) => return Err(ChildError::Refused(message)),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(_) => return Err(ChildError::Lost(RECONNECT_FOR)),
            }
        }
    }

    /// Answers heartbeats and serves calls with `handler` until warden asks the child to
    /// stop (then returns `Ok`: exit cleanly). Reconnects if warden restarts.
    pub fn serve<F>(mut self, mut handler: F) -> Result<(), ChildError>
    where
        F: FnMut(serde_json::Value) -> Result<serde_json::Value, String>,
    {
        loop {
            let message = match self.stream.as_mut() {
                Some(stream) => receive_on(stream),
                None => Ok(None),
            };
            match message {
                Ok(Some(SupervisorMessage::Ping { seq })) => {
                    self.send(&ChildMessage::Pong { seq })?
                }
                Ok(Some(SupervisorMessage::Call { id, body })) => {
                    let result = handler(body);
                    self.send(&ChildMessage::Reply { id, result })?;
                }
                Ok(Some(SupervisorMessage::Stop)) => return Ok(()),
                Ok(Some(SupervisorMessage::Error { message })) => {
                    return Err(ChildError::Refused(message))
                }
                Ok(Some(SupervisorMessage::Welcome { .. })) => {}
                Ok(None) | Err(_) => {
                    self.stream = None;
                    self.reconnect()?;
                }
            }
        }
    }
}

fn send_on(stream: &mut UnixStream, message: &ChildMessage) -> Result<(), ChildError> {
    let payload = wire::encode(message).map_err(frame_error)?;
    wire::write_frame_blocking(stream, &payload, MAX_FRAME).map_err(frame_error)
}

fn receive_on(stream: &mut UnixStream) -> Result<Option<SupervisorMessage>, ChildError> {
    match wire::read_frame_blocking(stream, MAX_FRAME).map_err(frame_error)? {
        Some(payload) => wire::decode(&payload).map(Some).map_err(frame_error),
        None => Ok(None),
    }
}
