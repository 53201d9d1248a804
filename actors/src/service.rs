//! The service child kind: an OS process in its own process group, and in its own
//! cgroup where warden has a writable cgroup v2 hierarchy (see [`cgroup`]).
//!
//! Each run spawns `command` with `process_group(0)` (no `pre_exec` hook unless
//! `die_with_warden`, so the fast posix_spawn path is kept), its stdout and stderr on one pipe drained into the actor's
//! log file. A stop sends the configured signal to the whole group, then SIGKILL to the
//! group after the timeout; the group also gets SIGKILL once its leader has exited, so no
//! grandchild outlives its service. If the supervisor goes away without asking, the group
//! is SIGKILLed at once. In a cgroup, each of these SIGKILLs is a `cgroup.kill`, which also
//! reaches descendants that left the group (setsid).

pub(crate) mod cgroup;
pub(crate) mod log;
pub mod proc;
pub(crate) mod ready;
pub(crate) mod records;
pub mod spawned;

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

use self::cgroup::{Cgroups, RunContainment};
use self::log::{LogFile, LogSpec};
use self::ready::{NotifySocket, ReadyCheck};
use self::records::{Adoptable, ProcessRecords};

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
    /// SIGKILL the process when warden dies (even by SIGKILL), instead of leaving it to be
    /// adopted by the next warden. Costs a slower spawn (fork instead of posix_spawn).
    pub die_with_warden: bool,
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
            die_with_warden: false,
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
    records: Option<Arc<dyn ProcessRecords>>,
    kind: ActorKind,
    cgroups: Option<Arc<Cgroups>>,
}

impl ServiceFactory {
    /// A factory for `spec`.
    pub fn new(spec: ServiceSpec) -> Self {
        let log = match &spec.output {
            Output::Log(l) => Some(Arc::new(LogFile::new(l.clone()))),
            _ => None,
        };
        Self {
            spec,
            log,
            records: None,
            kind: ActorKind::Service,
            cgroups: None,
        }
    }

    /// Runs each process in a cgroup of its own below `cgroups` (instead of only its
    /// process group), so that a stop ends every descendant.
    pub fn with_cgroups(mut self, cgroups: Option<Arc<Cgroups>>) -> Self {
        self.cgroups = cgroups;
        self
    }

    /// Shows the runs as actors of `kind` (e.g. pool workers) instead of `service`.
    pub fn with_kind(mut self, kind: ActorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Records every process in `records` (so a later warden can adopt it), and adopts
    /// what `records` holds for this service on its first start.
    pub fn with_records(mut self, records: Arc<dyn ProcessRecords>) -> Self {
        self.records = Some(records);
        self
    }

    /// Takes over a live process left by an earlier warden: watches it through a pidfd,
    /// reattaches its output pipe to the log, and stops it like any run.
    fn adopt(&self, cx: &StartContext, adoptable: Adoptable) -> std::io::Result<RunningChild> {
        let pidfd = proc::pidfd_open(adoptable.pid)?;
        if let (Some(log), Some(output)) = (&self.log, &adoptable.output) {
            if proc::fd_target(adoptable.pid, 1).as_deref() == Some(output.as_str()) {
                match reopen_output(adoptable.pid) {
                    Ok(fd) => {
                        actix_rt::spawn(log.clone().drain(fd));
                    }
                    Err(e) => {
                        tracing::warn!(path = %cx.path, error = %e, "cannot reattach the output of an adopted process")
                    }
                }
            }
        }
        let containment =
            RunContainment::of_adopted(self.cgroups.as_deref(), adoptable.pid, &cx.path);
        let containment_kind = containment.kind();
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = actix_rt::spawn(supervise_adopted(
            pidfd,
            adoptable.pgid,
            containment,
            stop_rx,
            self.spec.stop_signal,
            self.spec.stop_timeout,
            self.records
                .clone()
                .map(|r| (r, cx.path.clone(), adoptable.pid)),
        ));
        tracing::info!(path = %cx.path, pid = adoptable.pid, "adopted a process left by an earlier warden");
        Ok(RunningChild {
            pid: Some(adoptable.pid),
            ready: None,
            exit: Box::pin(join_exit(task)),
            stop: stop_tx,
            adopted: true,
            containment: Some(containment_kind),
        })
    }

    fn notify_path(&self, cx: &StartContext, dir: &std::path::Path) -> PathBuf {
        let mut h = std::hash::DefaultHasher::new();
        cx.path.as_str().hash(&mut h);
        dir.join(format!("{:016x}-{}.sock", h.finish(), cx.generation))
    }
}

impl ChildFactory for ServiceFactory {
    fn kind(&self) -> ActorKind {
        self.kind
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        if let Some(records) = &self.records {
            if let Some(adoptable) = records.take_adoptable(&cx.path) {
                match self.adopt(&cx, adoptable) {
                    Ok(run) => return Ok(run),
                    Err(e) => {
                        tracing::warn!(path = %cx.path, error = %e, "cannot adopt: starting afresh")
                    }
                }
            }
        }
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        cmd.env("WARDEN_ACTOR", cx.path.as_str());
        if spec.die_with_warden {
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(records) = &self.records {
            cmd.envs(records.marker());
        }
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut pipe_read = None;
        // A second read end of the output pipe that only the child inherits: if warden
        // dies, the pipe keeps a reader, so the child's writes wait in the pipe (instead
        // of SIGPIPE) until the next warden reattaches.
        let mut keeper = None;
        let mut output_id = None;
        match &spec.output {
            Output::Log(_) => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| format!("cannot create output pipe: {e}"))?;
                let write2 = write
                    .try_clone()
                    .map_err(|e| format!("cannot create output pipe: {e}"))?;
                if self.records.is_some() {
                    grow_pipe(&read);
                    output_id = fd_identity(&read);
                    keeper = inheritable_dup(&read);
                }
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
        let (containment, procs) = RunContainment::prepare(self.cgroups.as_deref(), &cx.path);
        let spawned = spawned::register(|| cmd.spawn(), Child::id);
        drop(keeper);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                containment.discard();
                return Err(format!("{}: {e}", spec.command[0]));
            }
        };
        // The write ends of the pipe went to the child with `cmd`; drop ours.
        drop(cmd);
        let pid = child
            .id()
            .ok_or_else(|| "child exited before its pid was read".to_owned())?;
        let containment = containment.enter(procs, pid);
        if let Some(records) = &self.records {
            records.saved(&cx.path, pid, output_id);
        }
        if let (Some(read), Some(log)) = (pipe_read, &self.log) {
            actix_rt::spawn(log.clone().drain(read));
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let containment_kind = containment.kind();
        let task = actix_rt::spawn(supervise(
            child,
            pid,
            containment,
            stop_rx,
            spec.stop_signal,
            spec.stop_timeout,
            self.records.clone().map(|r| (r, cx.path.clone(), pid)),
        ));
        let exit = join_exit(task);
        let ready = spec.ready.clone().map(|check| {
            Box::pin(ready::wait(check, notify)) as futures_util::future::LocalBoxFuture<'static, _>
        });
        Ok(RunningChild {
            pid: Some(pid),
            ready,
            exit: Box::pin(exit),
            stop: stop_tx,
            adopted: false,
            containment: Some(containment_kind),
        })
    }
}

pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    // ESRCH (the group is already gone) is the expected end.
    let _ = killpg(Pid::from_raw(raw), signal);
}

/// The exit of a run's task; a panic in it is an abnormal exit, not a lost one.
async fn join_exit(task: tokio::task::JoinHandle<Exit>) -> Exit {
    match task.await {
        Ok(exit) => exit,
        Err(e) if e.is_panic() => Exit::Panic(panic_message(&*e.into_panic())),
        Err(_) => Exit::Fatal("service task was cancelled".to_owned()),
    }
}

/// Who to tell when a recorded process is gone.
type RecordHandle = Option<(Arc<dyn ProcessRecords>, warden_supervisors::ActorPath, u32)>;

/// Deletes the record of a process that is gone, off the restart path (on the blocking
/// pool): a record that outlives its process for a moment is harmless, since a later
/// warden checks the pid's start time before trusting it.
fn forget(record: RecordHandle) {
    if let Some((records, path, pid)) = record {
        tokio::task::spawn_blocking(move || records.removed(&path, pid));
    }
}

/// Watches one run until it is over; see the module doc.
async fn supervise(
    mut child: Child,
    pgid: u32,
    containment: RunContainment,
    stop_rx: oneshot::Receiver<StopMode>,
    signal: Signal,
    timeout: Duration,
    record: RecordHandle,
) -> Exit {
    let mut requested = true;
    let status = tokio::select! {
        status = child.wait() => {
            requested = false;
            status
        }
        request = stop_rx => {
            match request {
                Ok(StopMode::Graceful) => {
                    signal_group(pgid, signal);
                    match tokio::time::timeout(timeout, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            tracing::warn!(pid = pgid, "stop timeout: SIGKILL to every process of the service");
                            containment.kill_all(pgid);
                            child.wait().await
                        }
                    }
                }
                Err(_) => {
                    containment.kill_all(pgid);
                    child.wait().await
                }
            }
        }
    };
    // Reaped by tokio: from now on the pid may name an orphan.
    spawned::forget(pgid);
    // Whatever is left of the run (grandchildren) goes with its leader.
    containment.end(pgid, requested).await;
    forget(record);
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

/// Watches an adopted process (not warden's child: no exit status) until it is over.
async fn supervise_adopted(
    pidfd: std::os::fd::OwnedFd,
    pgid: u32,
    containment: RunContainment,
    stop_rx: oneshot::Receiver<StopMode>,
    signal: Signal,
    timeout: Duration,
    record: RecordHandle,
) -> Exit {
    // SAFETY: an OwnedFd keeps its fd open and unchanged while the AsyncFd owns it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    };
    let pidfd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            containment.kill_all(pgid);
            containment.end(pgid, true).await;
            forget(record);
            return Exit::Fatal(format!("cannot watch adopted pid {pgid}: {e}"));
        }
    };
    let mut requested = true;
    tokio::select! {
        _ = proc::wait_exit(&pidfd) => requested = false,
        request = stop_rx => {
            if request.is_ok() {
                signal_group(pgid, signal);
                if tokio::time::timeout(timeout, proc::wait_exit(&pidfd)).await.is_err() {
                    tracing::warn!(pid = pgid, "stop timeout: SIGKILL to every process of the service");
                    containment.kill_all(pgid);
                    let _ = proc::wait_exit(&pidfd).await;
                }
            } else {
                containment.kill_all(pgid);
                let _ = proc::wait_exit(&pidfd).await;
            }
        }
    }
    containment.end(pgid, requested).await;
    forget(record);
    Exit::Lost
}

/// Opens a new read end of the pipe that is fd 1 of `pid`.
fn reopen_output(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/fd/1"))?;
    Ok(file.into())
}

/// `pipe:[inode]` of an fd of ours.
fn fd_identity(fd: &std::os::fd::OwnedFd) -> Option<String> {
    // What readlink(/proc/self/fd/N) says of a pipe, from one fstat (cheaper on the
    // spawn path than a /proc lookup).
    nix::sys::stat::fstat(fd)
        .ok()
        .map(|st| format!("pipe:[{}]", st.st_ino))
}

/// Makes the pipe hold up to 1 MiB (best effort), so a child can write that much while no
/// warden reads.
fn grow_pipe(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a valid fd with an integer argument.
    let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// A duplicate of `fd` without close-on-exec, inherited by the next spawned child only
/// (children are spawned one at a time, and this is dropped right after the spawn).
fn inheritable_dup(fd: &std::os::fd::OwnedFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: F_DUPFD returns a new fd (without FD_CLOEXEC) or -1.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, 3) };
    // SAFETY: a fresh fd owned by nobody else.
    (dup >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) })
}
