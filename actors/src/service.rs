//! The service child kind: an OS process in its own process group.
//!
//! Each run spawns `command` with `process_group(0)` (no `pre_exec` hook, so the fast
//! posix_spawn path is kept), its stdout and stderr on one pipe drained into the actor's
//! log file. A stop sends the configured signal to the whole group, then SIGKILL to the
//! group after the timeout; the group also gets SIGKILL once its leader has exited, so no
//! grandchild outlives its service. If the supervisor goes away without asking, the group
//! is SIGKILLed at once.

pub(crate) mod log;
pub(crate) mod ready;

use std::hash::{Hash, Hasher};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use warden_supervisors::{
    panic_message, ActorKind, ChildFactory, Exit, RunningChild, StartContext, StopMode,
};

use self::log::{LogFile, LogSpec};
use self::ready::{NotifySocket, ReadyCheck};

/// Where a service's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Into a rotated log file.
    Log(LogSpec),
    /// Inherited from warden.
    Inherit,
    /// Discarded.
    Null,
}

/// How to run one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Program and arguments; never empty.
    command: Vec<String>,
    /// Extra environment variables (warden's own environment is inherited).
    pub env: Vec<(String, String)>,
    /// Working folder (default: warden's).
    pub cwd: Option<PathBuf>,
    /// Signal sent to the process group to stop it.
    pub stop_signal: Signal,
    /// How long after the stop signal the group gets SIGKILL.
    pub stop_timeout: Duration,
    /// When a run counts as running (`None`: at once).
    pub ready: Option<ReadyCheck>,
    /// Where output goes.
    pub output: Output,
}

/// The command of a service was empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command is empty")]
pub struct EmptyCommand;

impl ServiceSpec {
    /// A service running `command` (program first), stopped by SIGTERM with a 5 s timeout,
    /// output discarded, no ready check.
    pub fn new<I, S>(command: I) -> Result<Self, EmptyCommand>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let command: Vec<String> = command.into_iter().map(Into::into).collect();
        if command.first().is_none_or(|p| p.is_empty()) {
            return Err(EmptyCommand);
        }
        Ok(Self {
            command,
            env: Vec::new(),
            cwd: None,
            stop_signal: Signal::SIGTERM,
            stop_timeout: Duration::from_secs(5),
            ready: None,
            output: Output::Null,
        })
    }

    /// Program and arguments.
    pub fn command(&self) -> &[String] {
        &self.command
    }
}

/// Starts runs of a service.
#[derive(Debug)]
pub struct ServiceFactory {
    spec: ServiceSpec,
    log: Option<Arc<LogFile>>,
}

impl ServiceFactory {
    /// A factory for `spec`.
    pub fn new(spec: ServiceSpec) -> Self {
        let log = match &spec.output {
            Output::Log(l) => Some(Arc::new(LogFile::new(l.clone()))),
            _ => None,
        };
        Self { spec, log }
    }

    fn notify_path(&self, cx: &StartContext, dir: &std::path::Path) -> PathBuf {
        let mut h = std::hash::DefaultHasher::new();
        cx.path.as_str().hash(&mut h);
        dir.join(format!("{:016x}-{}.sock", h.finish(), cx.generation))
    }
}

impl ChildFactory for ServiceFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Service
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut pipe_read = None;
        match &spec.output {
            Output::Log(_) => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| format!("cannot create output pipe: {e}"))?;
                let write2 = write
                    .try_clone()
                    .map_err(|e| format!("cannot create output pipe: {e}"))?;
                cmd.stdout(Stdio::from(write)).stderr(Stdio::from(write2));
                pipe_read = Some(read);
            }
            Output::Inherit => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
            Output::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let notify = match &spec.ready {
            Some(ReadyCheck::Notify { socket_dir, .. }) => {
                let path = self.notify_path(&cx, socket_dir);
                let socket = NotifySocket::bind(path.clone())
                    .map_err(|e| format!("cannot bind notify socket {}: {e}", path.display()))?;
                cmd.env("NOTIFY_SOCKET", socket.path());
                Some(socket)
            }
            _ => None,
        };
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", spec.command[0]))?;
        // The write ends of the pipe went to the child with `cmd`; drop ours.
        drop(cmd);
        let pid = child
            .id()
            .ok_or_else(|| "child exited before its pid was read".to_owned())?;
        if let (Some(read), Some(log)) = (pipe_read, &self.log) {
            actix_rt::spawn(log.clone().drain(read));
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = actix_rt::spawn(supervise(
            child,
            pid,
            stop_rx,
            spec.stop_signal,
            spec.stop_timeout,
        ));
        let exit = async move {
            match task.await {
                Ok(exit) => exit,
                Err(e) if e.is_panic() => Exit::Panic(panic_message(&*e.into_panic())),
                Err(_) => Exit::Fatal("service task was cancelled".to_owned()),
            }
        };
        let ready = spec.ready.clone().map(|check| {
            Box::pin(ready::wait(check, notify)) as futures_util::future::LocalBoxFuture<'static, _>
        });
        Ok(RunningChild {
            pid: Some(pid),
            ready,
            exit: Box::pin(exit),
            stop: stop_tx,
        })
    }
}

fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    // ESRCH (the group is already gone) is the expected end.
    let _ = killpg(Pid::from_raw(raw), signal);
}

/// Watches one run until it is over; see the module doc.
async fn supervise(
    mut child: Child,
    pgid: u32,
    stop_rx: oneshot::Receiver<StopMode>,
    signal: Signal,
    timeout: Duration,
) -> Exit {
    let status = tokio::select! {
        status = child.wait() => status,
        request = stop_rx => {
            match request {
                Ok(StopMode::Graceful) => {
                    signal_group(pgid, signal);
                    match tokio::time::timeout(timeout, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            tracing::warn!(pid = pgid, "stop timeout: SIGKILL to the process group");
                            signal_group(pgid, Signal::SIGKILL);
                            child.wait().await
                        }
                    }
                }
                Err(_) => {
                    signal_group(pgid, Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    // Whatever is left of the group (grandchildren) goes with its leader.
    signal_group(pgid, Signal::SIGKILL);
    match status {
        Ok(status) => exit_of(status),
        Err(e) => Exit::Fatal(format!("cannot wait for pid {pgid}: {e}")),
    }
}

fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Fatal(format!("unknown exit status {status}")),
    }
}
