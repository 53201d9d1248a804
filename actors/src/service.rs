//! The service child kind: an OS process in its own process group, and in its own
//! cgroup where warden has a writable cgroup v2 hierarchy (see [`cgroup`]).
//!
//! Each run starts `command` in its own process group ([`launch`]: cloned straight into
//! its cgroup where it can), its stdout and stderr on one pipe drained into the actor's
//! log file. Between fork and exec it gets, only when needed, PDEATHSIG
//! (`die_with_warden`), the open files limit warden was started with when warden raised
//! its own, and (a warden running as root) the child's `user`/`group` ([`run_as`]).
//! Children do not inherit warden's `NOTIFY_SOCKET`, `WATCHDOG_*` or `LISTEN_*` (a
//! notify child gets its own socket), and carry `WARDEN_INSTANCE` (the orphan marker),
//! never a path: what warden hands one child (its token, its outboard socket, its
//! notify socket) is in a folder the child inherits as a descriptor ([`Handoff`]).
//!
//! A stop sends the configured signal to the whole group, then SIGKILL to the group after
//! the timeout; the group also gets SIGKILL once its leader has exited — while the leader
//! is still an unreaped zombie (watched through a pidfd), so the group's number cannot
//! have been reused — so no grandchild outlives its service. If the supervisor goes away
//! without asking, the group is SIGKILLed at once. In a cgroup, each of these SIGKILLs is
//! also a `cgroup.kill`, which reaches descendants that left the group (setsid). Adopted
//! processes (left by an earlier warden) are signalled only through their
//! [`proc::Pinned`] identity (or their cgroup).

pub(crate) mod cgroup;
pub(crate) mod child_env;
pub(crate) mod launch;
pub(crate) mod leader;
pub(crate) mod listener;
pub(crate) mod log;
pub mod proc;
pub(crate) mod ready;
pub(crate) mod records;
pub(crate) mod run_as;
pub mod spawned;

use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;

use tokio::sync::oneshot;
use warden_supervisors::{
    panic_message, ActorKind, ActorPath, ChildFactory, Containment, Exit, RunningChild,
    StartContext, StopMode,
};

use self::cgroup::{Cgroups, RunContainment};
use self::child_env::ChildEnv;
use self::launch::{ChildOutput, Launch, PreExec};
use self::leader::Leader;
use self::log::{LogFile, LogSpec};
use self::ready::{NotifySocket, ReadyCheck};
use self::records::{Adoptable, ProcessRecords, Written};
use self::run_as::RunAs;

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
    /// adopted by the next warden (where `clone3` is refused, the spawn is a full fork).
    pub die_with_warden: bool,
    /// The user, group and supplementary groups the process runs as (`None`: warden's).
    /// A warden running as root sets them between fork and exec; any other warden runs
    /// the child as itself (the config check refused another user).
    pub run_as: Option<RunAs>,
    /// Files handed to this child alone (its tokens), if any.
    pub handoff: Option<Handoff>,
}

/// The folder of files warden hands to one child (a worker's token, an outboard child's
/// config and socket). The child reaches it only through a descriptor of the folder it
/// inherits: its environment names `/proc/self/fd/N/<file>`, never a path in state_dir.
/// The folder is warden's, searchable (not listable) by the child's group only (0710), and
/// its files belong to the child's user (0400), so no other user — a sibling child of
/// another user included — reads them, while state_dir itself stays 0700.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The folder, in state_dir.
    pub dir: PathBuf,
    /// Environment variables that name a file of the folder: (variable, file name).
    pub env: Vec<(String, String)>,
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
            run_as: None,
            handoff: None,
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

    /// Takes over a live process left by an earlier warden, already pinned and checked
    /// (see [`ProcessRecords::take_adoptable`]): watches it through its pidfd (or /proc
    /// without pidfds), reattaches its output pipe to the log, and stops it like any run.
    /// It cannot fail: a process that is pinned can always be watched (polling /proc when
    /// its pidfd cannot be registered), so a verified record is never left running beside
    /// a fresh instance.
    fn adopt(&self, cx: &StartContext, adoptable: Adoptable) -> RunningChild {
        let pid = adoptable.process.identity().pid;
        if let (Some(log), Some(output)) = (&self.log, &adoptable.output) {
            // Any fd of the process that still points at the recorded pipe (fd 1, or fd 2
            // when stdout was redirected): a pipe nobody drains would block it.
            if let Some(fd) = fd_on(pid, output) {
                match reopen_fd(pid, fd) {
                    Ok(read) => {
                        log.clone().drain(read, true);
                    }
                    Err(e) => {
                        tracing::warn!(path = %cx.path, error = %e, "cannot reattach the output of an adopted process")
                    }
                }
            }
        }
        let containment = RunContainment::of_adopted(self.cgroups.as_deref(), pid, &cx.path);
        let containment_kind = containment.kind();
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = actix_rt::spawn(supervise_adopted(
            adoptable.process,
            containment,
            stop_rx,
            self.spec.stop_signal,
            self.spec.stop_timeout,
            self.records.clone().map(|r| (r, cx.path.clone(), pid)),
        ));
        tracing::info!(path = %cx.path, pid, "adopted a process left by an earlier warden");
        RunningChild {
            pid: Some(pid),
            ready: None,
            exit: Box::pin(join_exit(task)),
            stop: stop_tx,
            adopted: true,
            containment: Some(containment_kind),
        }
    }

    /// The processes of the run of `path` led by `pid`: its process group and, when the
    /// run is contained by a cgroup, that cgroup too (a sibling that joined the group with
    /// setpgid is still not one of them).
    pub(crate) fn processes_of(
        &self,
        path: &ActorPath,
        pid: u32,
        containment: Option<Containment>,
    ) -> crate::peer::ChildProcesses {
        let processes = crate::peer::ChildProcesses::led_by(pid);
        match (&self.cgroups, containment) {
            (Some(cgroups), Some(Containment::Cgroup)) => {
                processes.in_cgroup(cgroups.service_dir(path))
            }
            _ => processes,
        }
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
                return Ok(self.adopt(&cx, adoptable));
            }
        }
        let spec = &self.spec;
        // warden's own environment, less what was handed to warden itself.
        let mut env = ChildEnv::inherited();
        let mut set = |key: &str, value: OsString| env.set(key, value);
        for (key, value) in &spec.env {
            set(key, value.into());
        }
        set("WARDEN_ACTOR", cx.path.as_str().into());
        // The handoff folder, inherited by this child only, at a number fixed in advance
        // (see [`launch::Slots`]).
        let handoff = match &spec.handoff {
            Some(handoff) => {
                let gid = spec.run_as.as_ref().map(|r| r.gid);
                let dir = crate::state_file::handoff_dir(&handoff.dir, gid)
                    .map_err(|e| format!("cannot prepare the files handed to the child: {e}"))?;
                let number = launch::Slots::get()
                    .map_err(|e| format!("cannot hand a folder to the child: {e}"))?
                    .handoff;
                for (key, file) in &handoff.env {
                    set(key, format!("/proc/self/fd/{number}/{file}").into());
                }
                Some((OwnedFd::from(dir), number))
            }
            None => None,
        };
        if let Some(records) = &self.records {
            for (key, value) in records.marker() {
                set(&key, value.into());
            }
        }
        let mut pipe_read = None;
        // A second read end of the output pipe that only the child inherits: if warden
        // dies, the pipe keeps a reader, so the child's writes wait in the pipe (instead
        // of SIGPIPE) until the next warden reattaches.
        let mut keeper = None;
        let mut output_id = None;
        let output = match &spec.output {
            Output::Log(_) => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| format!("cannot create output pipe: {e}"))?;
                if self.records.is_some() {
                    output_id = fd_identity(&read);
                    keeper = read.try_clone().ok();
                }
                pipe_read = Some(read);
                ChildOutput::Pipe(write)
            }
            Output::Inherit => ChildOutput::Inherit,
            Output::Null => ChildOutput::Null,
        };
        let notify = match &spec.ready {
            Some(ReadyCheck::Notify { socket_dir, .. }) => {
                // In the handoff folder when the child has one: it reaches the socket
                // through its inherited descriptor, and only its user may send on it.
                let in_handoff = spec.handoff.as_ref().zip(handoff.as_ref().map(|(_, n)| *n));
                let dir = in_handoff.map_or(socket_dir, |(h, _)| &h.dir);
                let path = self.notify_path(&cx, dir);
                let socket = NotifySocket::bind(path.clone())
                    .map_err(|e| format!("cannot bind notify socket {}: {e}", path.display()))?;
                if let Some(run_as) = &spec.run_as {
                    std::os::unix::fs::lchown(&path, Some(run_as.uid), Some(run_as.gid)).map_err(
                        |e| format!("cannot hand notify socket {}: {e}", path.display()),
                    )?;
                }
                match (in_handoff, path.file_name()) {
                    (Some((_, fd)), Some(name)) => {
                        let mut shown = OsString::from(format!("/proc/self/fd/{fd}/"));
                        shown.push(name);
                        set("NOTIFY_SOCKET", shown);
                    }
                    _ => set("NOTIFY_SOCKET", socket.path().into()),
                }
                Some(socket)
            }
            _ => None,
        };
        // The user the child is switched to before its exec (`None`: it runs as warden).
        let switch_to = spec.run_as.as_ref().filter(|r| r.switches());
        let launch = Launch {
            program: spec.command[0].clone().into(),
            args: spec.command[1..].iter().map(OsString::from).collect(),
            env,
            cwd: spec.cwd.clone(),
            output,
            handoff: handoff.map(|(dir, _)| dir),
            keeper,
            pre_exec: PreExec::new(
                spec.die_with_warden,
                proc::children_open_files_limit(),
                switch_to,
            ),
        };
        let (containment, cgroup) = RunContainment::prepare(self.cgroups.as_deref(), &cx.path);
        // The write end of the pipe, the handoff folder and the keeper go to the child
        // with `launch`, closed by the spawn.
        // The clone runs warden's code until its exec: with a short slice, so that it is
        // not held behind a flood on the CPU (SEMANTICS 87).
        let spawned = crate::sched::spawn_urgently(|| Leader::spawn(launch, cgroup.as_ref()));
        let (child, born) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                containment.discard();
                return Err(format!("{}: {e}", spec.command[0]));
            }
        };
        let pid = child
            .id()
            .ok_or_else(|| "child exited before its pid was read".to_owned())?;
        let containment = containment.enter(cgroup, pid, born);
        // Written on the store's own thread; the run waits for it before it reaps.
        let written = match &self.records {
            Some(records) => {
                // The uid the child runs as, set before its exec (`spawned` returns after
                // that): the record need not read it back from /proc/PID/status.
                let uid = switch_to.map_or_else(|| nix::unistd::getuid().as_raw(), |r| r.uid);
                records.saved(&cx.path, pid, uid, output_id)
            }
            None => Written::done(),
        };
        if let (Some(read), Some(log)) = (pipe_read, &self.log) {
            log.clone().drain(read, self.records.is_some());
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let containment_kind = containment.kind();
        let task = actix_rt::spawn(supervise(
            child,
            pid,
            containment,
            stop_rx,
            (spec.stop_signal, spec.stop_timeout),
            written,
            self.records.clone().map(|r| (r, cx.path.clone(), pid)),
        ));
        let exit = join_exit(task);
        let processes = self.processes_of(&cx.path, pid, Some(containment_kind));
        let ready = spec.ready.clone().map(|check| {
            Box::pin(ready::wait(check, notify, processes))
                as futures_util::future::LocalBoxFuture<'static, _>
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

/// Signals the process group `pgid` of a child of warden's own that is not reaped yet
/// (its leader alive or a zombie), so the group's number cannot belong to anyone else.
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

/// Deletes the record of a process that is gone, off the restart path (queued to the
/// store, after the record itself): a record that outlives its process for a moment is
/// harmless, since a later warden checks the pid's start time before trusting it.
fn forget(record: RecordHandle) {
    if let Some((records, path, pid)) = record {
        records.removed(&path, pid);
    }
}

/// Watches one run until it is over; see the module doc. Nothing reaps the leader (nor
/// waits for its exit, which reaps it without pidfds) before its record is `written`,
/// so the record read the identity of warden's own child, not of a pid reused since.
async fn supervise(
    mut child: Leader,
    pgid: u32,
    containment: RunContainment,
    stop_rx: oneshot::Receiver<StopMode>,
    (signal, timeout): (Signal, Duration),
    mut written: Written,
    record: RecordHandle,
) -> Exit {
    let mut requested = true;
    tokio::select! {
        () = child.exited_and_recorded(&mut written) => requested = false,
        request = stop_rx => {
            match request {
                Ok(StopMode::Graceful | StopMode::Restart) => {
                    signal_group(pgid, signal);
                    let exited = child.exited_and_recorded(&mut written);
                    if tokio::time::timeout(timeout, exited).await.is_err() {
                        tracing::warn!(pid = pgid, "stop timeout: SIGKILL to every process of the service");
                        containment.kill_all(pgid);
                        child.exited_and_recorded(&mut written).await;
                    }
                }
                Err(_) => {
                    containment.kill_all(pgid);
                    child.exited_and_recorded(&mut written).await;
                }
            }
        }
    }
    // Whatever is left of the group (grandchildren) goes with its leader, which is not
    // reaped yet (with pidfds): the group's number is still ours.
    signal_group(pgid, Signal::SIGKILL);
    let status = child.reap().await;
    // Reaped (by us, or by tokio without pidfds): from now on the pid may name an orphan.
    spawned::forget(pgid);
    // Whatever left the group (setsid) but not the cgroup goes too.
    containment.end(requested).await;
    forget(record);
    match status {
        Ok(status) => exit_of(status),
        Err(e) => Exit::Fatal(format!("cannot wait for pid {pgid}: {e}")),
    }
}

pub(crate) fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Fatal(format!("unknown exit status {status}")),
    }
}

/// Watches an adopted process (not warden's child) until it is over. Every signal goes
/// through its pin ([`proc::Pinned`]). Its exit status belongs to its new parent: it is
/// read from /proc while the process is a zombie, which tells a transient child that
/// ended well (not run again) from one that failed or was killed (restarted); when its
/// parent reaped it first, the exit is [`Exit::Lost`], which a transient child reads as
/// normal (never re-run blindly).
async fn supervise_adopted(
    process: proc::Pinned,
    containment: RunContainment,
    stop_rx: oneshot::Receiver<StopMode>,
    signal: Signal,
    timeout: Duration,
    record: RecordHandle,
) -> Exit {
    let pid = process.identity().pid;
    let kill_all = |process: &proc::Pinned| {
        if !containment.kill_cgroup() {
            process.signal_group(libc::SIGKILL);
        }
    };
    let mut requested = true;
    let status = tokio::select! {
        status = process.exited() => {
            requested = false;
            status
        }
        request = stop_rx => {
            if request.is_ok() {
                process.signal_group(signal as i32);
            } else {
                kill_all(&process);
            }
            match tokio::time::timeout(timeout, process.exited()).await {
                Ok(status) => status,
                Err(_) => {
                    tracing::warn!(pid, "stop timeout: SIGKILL to every process of the service");
                    kill_all(&process);
                    process.exited().await
                }
            }
        }
    };
    // Grandchildren go with their leader, while the leader (a zombie until its new parent
    // reaps it) still holds the group's number.
    process.signal_group(libc::SIGKILL);
    containment.end(requested).await;
    forget(record);
    match status {
        Some(status) => exit_of(ExitStatus::from_raw(status)),
        None => Exit::Lost,
    }
}

/// The first fd of `pid` that points at `target` (`pipe:[inode]`), fd 1 and 2 first.
fn fd_on(pid: u32, target: &str) -> Option<u32> {
    if let Some(fd) = [1, 2]
        .into_iter()
        .find(|fd| proc::fd_target(pid, *fd).as_deref() == Some(target))
    {
        return Some(fd);
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|fd| proc::fd_target(pid, *fd).as_deref() == Some(target))
}

/// Opens a new read end of the pipe that is fd `fd` of `pid`.
fn reopen_fd(pid: u32, fd: u32) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/fd/{fd}"))?;
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
