//! warden as an out-of-process holder of members:
//!
//! - detached: `warden up --detach` starts warden as a session leader that outlives the
//!   command, and returns once every member is running (or names the member that failed).
//! - bound: [`BoundHolder::spawn`] starts warden as a child of the calling process,
//!   holding one control connection. Client and holder shake hands (protocol version,
//!   then an acknowledgement sent once the holder watches the connection); when the
//!   parent dies, even by SIGKILL, the connection closes and the holder stops its whole
//!   tree and exits within 2 s.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warden_supervisors::wire::{self, MAX_FRAME};
use warden_supervisors::ActorState;

use crate::control::client::Client;
use crate::control::protocol::{
    ClientFrame, Failure, Request, Response, ServerFrame, PROTOCOL_VERSION,
};
use crate::layout::StateLayout;

/// The environment variable that hands a bound holder its connection's fd.
pub const BOUND_FD_ENV: &str = "WARDEN_BOUND_FD";

/// Why a holder could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// Spawning or talking to it failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// warden exited before it was up.
    #[error("warden exited early ({status}); its log says:\n{log}")]
    ExitedEarly {
        /// How it exited.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// A member entered `failed`.
    #[error("member {path} failed: {reason}")]
    MemberFailed {
        /// The member.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not every member was running in time.
    #[error("not every member was running after {waited}: {pending}")]
    Timeout {
        /// How long it waited.
        waited: String,
        /// Who was not running.
        pending: String,
    },
    /// The holder refused the client (e.g. a protocol version mismatch).
    #[error("the holder refused this client: {0}")]
    Refused(String),
    /// The holder answered something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The pid and restart count of every member, to see that nothing changed.
type Snapshot = Vec<(Option<u32>, u64)>;

/// How long every member must stay running, unchanged, before a detached start counts
/// as up.
const SETTLE: Duration = Duration::from_millis(150);

/// Polls the holder at `state_dir` until every member runs, one fails, the holder exits,
/// or `wait` passes.
fn wait_members(
    child: &mut Child,
    state_dir: &Path,
    log: &Path,
    wait: Duration,
) -> Result<(), HolderError> {
    let deadline = Instant::now() + wait;
    let socket = StateLayout::new(state_dir).control_socket();
    let mut client = None;
    let mut pending = String::from("warden not answering yet");
    let mut settled: Option<(Instant, Snapshot)> = None;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Err(HolderError::ExitedEarly {
                status: status.to_string(),
                log: tail_of(log, 20),
            });
        }
        if client.is_none() {
            client = Client::connect_socket(&socket).ok();
        }
        if let Some(c) = client.as_mut() {
            match c.ask(Request::Status) {
                Ok(Ok(Response::Actors(actors))) => {
                    if let Some(failed) = actors.iter().find(|a| a.info.state == ActorState::Failed)
                    {
                        return Err(HolderError::MemberFailed {
                            path: failed.info.path.to_string(),
                            reason: failed
                                .info
                                .failed_reason
                                .clone()
                                .or_else(|| {
                                    failed.info.last_exit.as_ref().map(|e| e.reason.clone())
                                })
                                .unwrap_or_else(|| "unknown".to_owned()),
                        });
                    }
                    let waiting: Vec<String> = actors
                        .iter()
                        .filter(|a| {
                            !matches!(a.info.state, ActorState::Running | ActorState::Exited)
                        })
                        .map(|a| format!("{} is {}", a.info.path, a.info.state))
                        .collect();
                    if waiting.is_empty() {
                        // A member without a ready check is running from its spawn on: only
                        // a snapshot that stays the same (same pids, no restart) for
                        // SETTLE counts, so a member that dies at once is not missed.
                        let snapshot: Snapshot = actors
                            .iter()
                            .map(|a| (a.info.pid, a.info.restarts))
                            .collect();
                        match &settled {
                            Some((since, seen)) if *seen == snapshot => {
                                if since.elapsed() >= SETTLE {
                                    return Ok(());
                                }
                            }
                            _ => settled = Some((Instant::now(), snapshot)),
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    settled = None;
                    pending = waiting.join(", ");
                }
                _ => client = None,
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(HolderError::Timeout {
        waited: humantime::format_duration(wait).to_string(),
        pending,
    })
}

/// `state_dir/warden.log` opened for appending: 0600 in a private state_dir (created 0700,
/// refused when another user owns it or may write it), a planted symbolic link refused.
fn open_warden_log(state_dir: &Path) -> io::Result<std::fs::File> {
    use warden_actors::state_file;
    state_file::ensure_private_dir(state_dir)?;
    state_file::open(&state_dir.join("warden.log"), state_file::Access::Append)
}

/// Starts `warden up -c config` as a session leader that outlives this process, its output
/// in `state_dir/warden.log`; returns its pid once every member is running.
pub fn detach(
    binary: &Path,
    config: &Path,
    state_dir: &Path,
    extra_args: &[String],
    wait: Duration,
) -> Result<u32, HolderError> {
    use std::os::unix::process::CommandExt;
    let log = state_dir.join("warden.log");
    let out = open_warden_log(state_dir)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(binary);
    cmd.args(extra_args)
        .arg("up")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    wait_members(&mut child, state_dir, &log, wait)?;
    Ok(pid)
}

/// A warden holding members for this process; it stops them all when this process dies.
#[derive(Debug)]
pub struct BoundHolder {
    child: Child,
    connection: UnixStream,
    next_id: u64,
}

impl BoundHolder {
    /// Spawns `binary up -c config` bound to this process, and shakes hands. Waits at most
    /// `wait` for the acknowledgement.
    pub fn spawn(binary: &Path, config: &Path, wait: Duration) -> Result<Self, HolderError> {
        Self::spawn_with_protocol(binary, config, wait, PROTOCOL_VERSION)
    }

    /// As [`BoundHolder::spawn`], announcing `protocol` (to test refusals).
    pub fn spawn_with_protocol(
        binary: &Path,
        config: &Path,
        wait: Duration,
        protocol: u32,
    ) -> Result<Self, HolderError> {
        let (mut ours, theirs) = UnixStream::pair()?;
        // The holder's end must survive exec: a duplicate without close-on-exec, dropped
        // here right after the spawn.
        // SAFETY: F_DUPFD returns a new fd or -1.
        let raw = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD, 3) };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: a fresh fd owned by nobody else.
        let inheritable = unsafe { OwnedFd::from_raw_fd(raw) };
        // The holder's own log goes to state_dir/warden.log, like a detached warden's.
        let log = crate::config::locate(config)
            .ok()
            .and_then(|located| open_warden_log(&located.state_dir).ok());
        let mut cmd = Command::new(binary);
        cmd.arg("up")
            .arg("-c")
            .arg(config)
            .env(BOUND_FD_ENV, raw.to_string())
            .stdin(Stdio::null());
        if let Some(log) = log {
            if let Ok(copy) = log.try_clone() {
                cmd.stdout(copy);
            }
            cmd.stderr(log);
        }
        let child = cmd.spawn();
        drop(inheritable);
        drop(theirs);
        let mut child = child?;
        ours.set_read_timeout(Some(wait))?;
        let hello = ClientFrame::Hello {
            protocol,
            client: format!("warden-bound {}", env!("CARGO_PKG_VERSION")),
        };
        let answer = wire::encode(&hello)
            .and_then(|p| wire::write_frame_blocking(&mut ours, &p, MAX_FRAME))
            .and_then(|()| wire::read_frame_blocking(&mut ours, MAX_FRAME));
        let frame: ServerFrame = match answer {
            Ok(Some(payload)) => {
                wire::decode(&payload).map_err(|e| HolderError::Protocol(e.to_string()))?
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(HolderError::ExitedEarly {
                    status,
                    log: "(see state_dir/warden.log)".to_owned(),
                });
            }
        };
        match frame {
            ServerFrame::Welcome { .. } => {
                ours.set_read_timeout(None)?;
                Ok(Self {
                    child,
                    connection: ours,
                    next_id: 1,
                })
            }
            ServerFrame::Error { message } => {
                let _ = child.wait();
                Err(HolderError::Refused(message))
            }
            other => Err(HolderError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    /// The holder's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the holder one control request over the bound connection.
    pub fn ask(&mut self, request: Request) -> Result<Result<Response, Failure>, HolderError> {
        let id = self.next_id;
        self.next_id += 1;
        let payload = wire::encode(&ClientFrame::Request { id, request })
            .map_err(|e| HolderError::Protocol(e.to_string()))?;
        wire::write_frame_blocking(&mut self.connection, &payload, MAX_FRAME)
            .map_err(|e| HolderError::Protocol(e.to_string()))?;
        match wire::read_frame_blocking(&mut self.connection, MAX_FRAME) {
            Ok(Some(payload)) => {
                match wire::decode(&payload).map_err(|e| HolderError::Protocol(e.to_string()))? {
                    ServerFrame::Reply { id: got, result } if got == id => Ok(result),
                    other => Err(HolderError::Protocol(format!("unexpected frame {other:?}"))),
                }
            }
            Ok(None) => Err(HolderError::Protocol(
                "the holder closed the connection".to_owned(),
            )),
            Err(e) => Err(HolderError::Protocol(e.to_string())),
        }
    }

    /// Closes the connection (the holder stops its tree) and waits up to `timeout` for it
    /// to exit.
    pub fn stop(mut self, timeout: Duration) -> io::Result<Option<std::process::ExitStatus>> {
        let _ = self.connection.shutdown(std::net::Shutdown::Both);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The path of this program, to start holders with.
pub fn current_binary() -> io::Result<PathBuf> {
    std::env::current_exe()
}
