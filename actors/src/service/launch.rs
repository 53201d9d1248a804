//! How the leader of a service run is started: one `clone3` of warden's own where the
//! kernel allows it, `std::process::Command` (posix_spawn, or a full fork when there is
//! work between fork and exec) elsewhere.
//!
//! The `clone3` spawn is what glibc's posix_spawn does (`CLONE_VM | CLONE_VFORK`: the
//! child runs on a stack of its own inside warden's memory and the spawning thread waits
//! until it has exec'd), plus what posix_spawn cannot do:
//! - the child is born in its service's cgroup (`CLONE_INTO_CGROUP`). Moving it after the
//!   spawn (a write to `cgroup.procs`) takes the kernel's cgroup-wide write lock, which
//!   waits for an RCU grace period: 5-35 ms measured on this machine at a quiet restart
//!   (docs/benchmarks.md), on the supervision thread; and the leader could fork outside
//!   its cgroup until it was moved;
//! - its pidfd comes with it (`CLONE_PIDFD`, no `pidfd_open`);
//! - the work between fork and exec ([`PreExec`]: the user switch, PDEATHSIG, the open
//!   files limit) costs nothing extra, where std falls back to a full fork for it;
//! - the child's stack is mapped once, not per spawn.
//!
//! Between clone and exec the child shares warden's memory: it runs only
//! async-signal-safe code on data prepared before the clone, every signal stays blocked
//! until its handler is reset to the default, and credentials change through raw
//! syscalls (glibc's `setuid` would broadcast the change to warden's own threads). An
//! error before exec is written where warden reads it after the clone (the memory is
//! shared) and the child exits 127 at once: the spawn fails as std's would, with the
//! same error.
//!
//! Where `clone3` is refused (kernels before 5.3, seccomp filters that deny it, other
//! architectures than x86_64) the first refusal is logged and every later spawn uses
//! `Command`; where only `CLONE_INTO_CGROUP` is refused (kernels before 5.7, a cgroup
//! that has controllers of its own), the child is cloned outside and moved, as before.

use std::ffi::{c_char, c_int, c_uint, c_void, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::child_env::{ChildEnv, ExecEnv};
use super::run_as::RunAs;
use crate::sched::ChildSched;

/// The leader of a run, before it is started.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The program as configured (a name is looked up in the child's `PATH`).
    pub program: OsString,
    /// Its arguments, the program's own name not included.
    pub args: Vec<OsString>,
    /// The child's environment.
    pub env: ChildEnv,
    /// Its working folder (default: warden's).
    pub cwd: Option<PathBuf>,
    /// Where its stdout and stderr go; stdin is always `/dev/null`.
    pub output: ChildOutput,
    /// A folder handed to this child alone, at fd [`Slots::handoff`] in the child.
    pub handoff: Option<OwnedFd>,
    /// A second read end of the output pipe, at fd [`Slots::keeper`] in the child (the
    /// pipe keeps a reader while no warden runs).
    pub keeper: Option<OwnedFd>,
    /// The work between fork and exec.
    pub pre_exec: PreExec,
}

/// Where a child's stdout and stderr go.
#[derive(Debug)]
pub(crate) enum ChildOutput {
    /// Both into this (the write end of its output pipe).
    Pipe(OwnedFd),
    /// warden's own.
    Inherit,
    /// `/dev/null`.
    Null,
}

/// The work between fork and exec, done in this order: the switch to another identity
/// (supplementary groups, then gid, then uid, after which nothing can regain root),
/// PDEATHSIG (after the switch, which would clear it), the open files limit.
#[derive(Debug, Clone, Default)]
pub(crate) struct PreExec {
    /// (supplementary groups, gid, uid) to switch to.
    identity: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    /// SIGKILL the child when the thread that spawned it (warden's) dies.
    die_with_warden: bool,
    /// The soft RLIMIT_NOFILE to set (capped by the hard limit).
    nofile: Option<libc::rlim_t>,
    /// The nice value and slice to take first (a child spawned urgently, by std).
    sched: Option<ChildSched>,
}

impl PreExec {
    /// `nofile`: the soft open files limit warden was started with, when warden has
    /// raised its own since (a child must not inherit the raised one: `select()` breaks
    /// above 1024 fds, and programs that close every fd up to the limit slow down).
    /// `run_as`: the identity a root warden switches the child to.
    pub(crate) fn new(
        die_with_warden: bool,
        nofile: Option<libc::rlim_t>,
        run_as: Option<&RunAs>,
    ) -> Self {
        Self {
            identity: run_as.map(|r| (r.groups.clone(), r.gid, r.uid)),
            die_with_warden,
            nofile,
            sched: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.identity.is_none()
            && !self.die_with_warden
            && self.nofile.is_none()
            && self.sched.is_none()
    }

    /// Sets this work as `cmd`'s `pre_exec` hook, only when there is some: the hook makes
    /// std fork instead of posix_spawn.
    pub(crate) fn set_on(&self, cmd: &mut Command) {
        if self.is_empty() {
            return;
        }
        let work = self.clone();
        // SAFETY: `apply` makes raw syscalls only and allocates nothing (its data was
        // prepared before the fork).
        unsafe {
            cmd.pre_exec(move || work.apply().map_err(io::Error::from_raw_os_error));
        }
    }

    /// Does the work, in a child between fork (or clone) and exec: raw syscalls only, so
    /// it is async-signal-safe and changes the credentials of this task alone. Answers
    /// the errno of the first failure.
    fn apply(&self) -> Result<(), c_int> {
        let check = |r: libc::c_long| if r < 0 { Err(errno()) } else { Ok(()) };
        // SAFETY: each is a raw syscall with plain integers or a pointer to memory that
        // outlives it.
        unsafe {
            // First, while the child may still change anything (before a user switch).
            if let Some(sched) = self.sched {
                sched.apply_before_exec()?;
            }
            if let Some((groups, gid, uid)) = &self.identity {
                check(libc::syscall(
                    libc::SYS_setgroups,
                    groups.len(),
                    groups.as_ptr(),
                ))?;
                check(libc::syscall(libc::SYS_setgid, *gid))?;
                check(libc::syscall(libc::SYS_setuid, *uid))?;
            }
            if self.die_with_warden {
                check(libc::syscall(
                    libc::SYS_prctl,
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                ))?;
            }
            if let Some(soft) = self.nofile {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                let null = std::ptr::null::<libc::rlimit>();
                check(libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    libc::RLIMIT_NOFILE,
                    null,
                    &mut limit,
                ))?;
                limit.rlim_cur = soft.min(limit.rlim_max);
                check(libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    libc::RLIMIT_NOFILE,
                    &limit,
                    std::ptr::null_mut::<libc::rlimit>(),
                ))?;
            }
        }
        Ok(())
    }
}

/// Four descriptors warden reserves at low numbers (each `/dev/null` between spawns),
/// where a spawn places what its child inherits: the child then needs only warden's
/// lowest descriptors. A cloned child shares warden's descriptor table until its first
/// step, which copies the numbers up to the highest slot alone (`close_range` with
/// `CLOSE_RANGE_UNSHARE`), then closes those among them that are not slots (a descriptor
/// left open for warden by its own parent is not the child's): with 1,000 services
/// warden holds about 2,000 descriptors, which a plain clone copies and the child's exec
/// then closes one by one (11% of all CPU in a fan-out of 1,000: docs/benchmarks.md). The numbers are fixed for warden's life, so an
/// environment can name them before the spawn (`/proc/self/fd/N/...`).
#[derive(Debug)]
pub(crate) struct Slots {
    /// Always `/dev/null`: the child's stdin (and discarded output).
    pub null: c_int,
    /// The write end of the child's output pipe, during its spawn.
    out: c_int,
    /// The handoff folder, during a spawn (inheritable).
    pub handoff: c_int,
    /// The keeper of the output pipe, during a spawn (inheritable).
    keeper: c_int,
}

impl Slots {
    /// The slots, reserved on first use.
    pub(crate) fn get() -> io::Result<&'static Slots> {
        static SLOTS: OnceLock<Slots> = OnceLock::new();
        static RESERVING: Mutex<()> = Mutex::new(());
        if let Some(slots) = SLOTS.get() {
            return Ok(slots);
        }
        // One reservation at a time (a caller outside the spawn lock may come first): the
        // slots are the lowest free numbers, not interleaved with another reservation's.
        let _reserving = RESERVING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slots) = SLOTS.get() {
            return Ok(slots);
        }
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        let reserve = || -> io::Result<c_int> {
            // SAFETY: a new fd (close-on-exec) at the lowest free number from 3, or -1.
            let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(fd)
        };
        let slots = Slots {
            null: reserve()?,
            out: reserve()?,
            handoff: reserve()?,
            keeper: reserve()?,
        };
        Ok(SLOTS.get_or_init(|| slots))
    }

    /// The slots in ascending order: what a cloned child keeps of warden's descriptors.
    fn sorted(&self) -> [c_int; 4] {
        let mut slots = [self.null, self.out, self.handoff, self.keeper];
        slots.sort_unstable();
        slots
    }

    /// Puts `fd` at `slot` (inheritable unless `cloexec`).
    fn place(slot: c_int, fd: &OwnedFd, cloexec: bool) -> io::Result<()> {
        let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
        // SAFETY: dup3 onto a slot of warden's own, under the spawn lock.
        if unsafe { libc::dup3(fd.as_raw_fd(), slot, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What one spawn placed in the slots; back to `/dev/null` when dropped (the parent keeps
/// no copy of the pipe's write end, or its reader would never see the end).
struct Placed {
    slots: &'static Slots,
    used: [bool; 3],
}

impl Drop for Placed {
    fn drop(&mut self) {
        let null = self.slots.null;
        for (used, slot) in
            self.used
                .iter()
                .zip([self.slots.out, self.slots.handoff, self.slots.keeper])
        {
            if *used {
                // SAFETY: as in `Slots::place`.
                unsafe { libc::dup3(null, slot, libc::O_CLOEXEC) };
            }
        }
    }
}

/// Whether `close_range(CLOSE_RANGE_UNSHARE)` works here (Linux 5.9+, not denied by
/// seccomp): a cloned child shares warden's descriptor table only when it can leave it.
fn close_range_unshares() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        // An empty range far above any descriptor: closes nothing, answers whether the
        // call exists (its CLOSE_RANGE_UNSHARE came with it, in 5.9). Never with that flag
        // here: it would give this thread a descriptor table of its own.
        let fd = c_int::MAX as libc::c_uint;
        // SAFETY: close_range of a range holding no descriptor.
        unsafe { libc::syscall(libc::SYS_close_range, fd, fd, 0) == 0 }
    })
}

const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// Where a new leader lives once spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Born {
    /// In the run's cgroup (cloned into it).
    InCgroup,
    /// Where warden is: the run moves it.
    Outside,
}

/// A leader started by [`Launch::clone3`].
#[derive(Debug)]
pub(crate) struct Cloned {
    pub pid: u32,
    /// Its pidfd, from the clone itself.
    pub pidfd: OwnedFd,
    /// Where it was born.
    pub born: Born,
}

/// Why [`Launch::clone3`] did not start the child.
#[derive(Debug)]
pub(crate) enum CloneRefused {
    /// The kernel (or a seccomp filter) refused `clone3` itself (said in the log once), or
    /// this architecture has no clone of warden's own: use [`Launch::command`].
    Unavailable,
    /// The program could not be run (not found, not executable, a failed user switch):
    /// the spawn fails.
    Run(io::Error),
}

/// Whether `clone3` was refused once: every later spawn uses `Command`.
static CLONE3_REFUSED: AtomicBool = AtomicBool::new(false);
/// Whether a refusal of `CLONE_INTO_CGROUP` was logged.
static INTO_CGROUP_REFUSED: AtomicBool = AtomicBool::new(false);
/// Whether `CLONE_CLEAR_SIGHAND` was refused (before Linux 5.5): the child then resets
/// warden's signal handlers one by one.
static CLEAR_SIGHAND_REFUSED: AtomicBool = AtomicBool::new(false);

impl Launch {
    /// Starts the child with `clone3`, in the cgroup of the open folder `cgroup` when
    /// given (falling back to outside it, see [`Cloned::in_cgroup`], when the kernel
    /// refuses). The caller holds the spawn lock ([`super::spawned::register`]).
    pub(crate) fn clone3(&self, cgroup: Option<BorrowedFd<'_>>) -> Result<Cloned, CloneRefused> {
        if CLONE3_REFUSED.load(Ordering::Relaxed) {
            return Err(CloneRefused::Unavailable);
        }
        let slots = Slots::get().map_err(CloneRefused::Run)?;
        let prepared = self.prepare(slots).map_err(CloneRefused::Run)?;
        let _placed = self.place(slots).map_err(CloneRefused::Run)?;
        let mut cgroup = cgroup;
        let mut clear_handlers = !CLEAR_SIGHAND_REFUSED.load(Ordering::Relaxed);
        loop {
            let e = match prepared.clone3(cgroup, clear_handlers) {
                Ok(cloned) => return Ok(cloned),
                Err(Clone3Error::Run(e)) => return Err(CloneRefused::Run(e)),
                // Out of processes or memory, or interrupted: says nothing of clone3.
                Err(Clone3Error::Clone(e)) if transient(&e) => return Err(CloneRefused::Run(e)),
                Err(Clone3Error::Clone(e)) => e,
            };
            // Refused with the cgroup (EBUSY: it has controllers of its own; EINVAL:
            // before Linux 5.7; EACCES...): outside it, then moved.
            if cgroup.is_some() {
                if !INTO_CGROUP_REFUSED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the kernel refused to start a child in its cgroup (CLONE_INTO_CGROUP, Linux 5.7+): children are moved into their cgroups after the spawn");
                }
                cgroup = None;
                continue;
            }
            // Before Linux 5.5: the child resets the handlers itself.
            if clear_handlers && e.raw_os_error() == Some(libc::EINVAL) {
                CLEAR_SIGHAND_REFUSED.store(true, Ordering::Relaxed);
                clear_handlers = false;
                continue;
            }
            if !CLONE3_REFUSED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "clone3 is not available (Linux 5.3+, x86_64, not denied by seccomp): children are started with posix_spawn and moved into their cgroups after the spawn");
            }
            return Err(CloneRefused::Unavailable);
        }
    }

    /// Places what the child inherits in the [`Slots`], until the returned guard drops.
    /// Under the spawn lock, right before the spawn.
    fn place(&self, slots: &'static Slots) -> io::Result<Placed> {
        let mut placed = Placed {
            slots,
            used: [false; 3],
        };
        if let ChildOutput::Pipe(write) = &self.output {
            Slots::place(slots.out, write, true)?;
            placed.used[0] = true;
        }
        if let Some(dir) = &self.handoff {
            Slots::place(slots.handoff, dir, false)?;
            placed.used[1] = true;
        }
        if let Some(keeper) = &self.keeper {
            Slots::place(slots.keeper, keeper, false)?;
            placed.used[2] = true;
        }
        Ok(placed)
    }

    /// Spawns [`Launch::command`] with std, what the child inherits placed first.
    pub(crate) fn spawn_std(self) -> io::Result<std::process::Child> {
        let slots = Slots::get()?;
        let _placed = self.place(slots)?;
        let child = self.command().spawn()?;
        // It could not give itself the default slice before its exec, as a clone does.
        crate::sched::settle_child(child.id());
        Ok(child)
    }

    /// Spawns [`Launch::command`] with tokio (reaped by tokio, without pidfds), what the
    /// child inherits placed first.
    pub(crate) fn spawn_tokio(self) -> io::Result<tokio::process::Child> {
        let slots = Slots::get()?;
        let _placed = self.place(slots)?;
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.kill_on_drop(false);
        let child = cmd.spawn()?;
        // As in `spawn_std`.
        if let Some(pid) = child.id() {
            crate::sched::settle_child(pid);
        }
        Ok(child)
    }

    /// The same child as a `Command` (stdout and stderr set, stdin `/dev/null`, its own
    /// process group); what it inherits besides must be placed ([`Launch::place`]).
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.vars())
            .stdin(Stdio::null())
            .process_group(0);
        match &self.output {
            ChildOutput::Pipe(write) => match (write.try_clone(), write.try_clone()) {
                (Ok(out), Ok(err)) => {
                    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
                }
                _ => {
                    cmd.stdout(Stdio::null()).stderr(Stdio::null());
                }
            },
            ChildOutput::Inherit => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
            ChildOutput::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let mut pre_exec = self.pre_exec.clone();
        // Spawned urgently, std's child must take its own nice value and slice as a
        // cloned one does (with the hook, std forks instead of using posix_spawn).
        pre_exec.sched = ChildSched::for_this_thread();
        pre_exec.set_on(&mut cmd);
        cmd
    }

    /// Everything the child reads, built before the clone (the child allocates nothing).
    fn prepare(&self, slots: &Slots) -> io::Result<Prepared<'_>> {
        let paths = candidates(&self.program, self.env.get(OsStr::new("PATH")))?;
        let c = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument or environment entry holds a NUL byte",
                )
            })
        };
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(c(&self.program)?);
        for arg in &self.args {
            argv.push(c(arg)?);
        }
        let env = self.env.for_exec()?;
        let cwd = self.cwd.as_deref().map(|d| c(d.as_os_str())).transpose()?;
        let null = slots.null;
        let out = match &self.output {
            ChildOutput::Pipe(_) => slots.out,
            ChildOutput::Inherit => -1,
            ChildOutput::Null => null,
        };
        // The child keeps the slots alone of warden's descriptors (see [`Slots`]).
        let keep = close_range_unshares().then(|| slots.sorted());
        Ok(Prepared {
            paths,
            argv,
            env,
            cwd,
            stdio: [null, out, out],
            keep,
            pre_exec: &self.pre_exec,
        })
    }
}

/// A failure of the clone that says nothing about `clone3` itself (out of processes,
/// memory, or interrupted): this spawn fails, the next one tries again.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EINTR)
    )
}

/// The files the child tries to exec, in order: `program` itself when it holds a `/`,
/// else `<dir>/<program>` for each folder of `path` (the child's `PATH`; glibc's default
/// without one). The child tries them as execvp does, with its own credentials (a folder
/// that only root may search is skipped by a child that runs as another user).
fn candidates(program: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    let bytes = program.as_bytes();
    let nul = || io::Error::new(io::ErrorKind::InvalidInput, "the program holds a NUL byte");
    if bytes.contains(&b'/') {
        return Ok(vec![CString::new(bytes).map_err(|_| nul())?]);
    }
    let search = path.map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
    search
        .split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            let mut candidate = Vec::with_capacity(dir.len() + bytes.len() + 1);
            candidate.extend_from_slice(dir);
            candidate.push(b'/');
            candidate.extend_from_slice(bytes);
            CString::new(candidate).map_err(|_| nul())
        })
        .collect()
}

/// The child's whole input, in warden's memory.
struct Prepared<'a> {
    paths: Vec<CString>,
    argv: Vec<CString>,
    env: ExecEnv,
    cwd: Option<CString>,
    /// What becomes fd 0, 1 and 2 (-1: warden's own stays).
    stdio: [c_int; 3],
    /// The child shares warden's descriptor table and keeps a copy of these slots (in
    /// ascending order) alone, besides 0-2; `None`: it gets a copy of the whole table.
    keep: Option<[c_int; 4]>,
    pre_exec: &'a PreExec,
}

/// Why one `clone3` failed.
enum Clone3Error {
    /// The clone itself was refused.
    Clone(io::Error),
    /// The child could not exec (it was reaped).
    Run(io::Error),
}

/// What the cloned child reads (and writes `error` into): on the spawning thread's
/// stack, shared with the child.
#[repr(C)]
struct ChildSetup<'a> {
    /// The files to try to exec, null-terminated.
    paths: *const *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    stdio: [c_int; 3],
    keep: Option<[c_int; 4]>,
    /// The kernel has reset every handled signal to its default (`CLONE_CLEAR_SIGHAND`).
    handlers_cleared: bool,
    /// Spawned urgently: the nice value and slice to take before the exec.
    sched: Option<ChildSched>,
    pre_exec: &'a PreExec,
    /// The errno of the step that failed; 0 while all went well (the child then exec'd).
    error: c_int,
}

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_VM: u64 = 0x100;
const CLONE_FILES: u64 = 0x400;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

impl Prepared<'_> {
    /// `clear_handlers`: the kernel resets warden's signal handlers in the child
    /// (`CLONE_CLEAR_SIGHAND`), instead of the child, one sigaction per signal.
    fn clone3(
        &self,
        cgroup: Option<BorrowedFd<'_>>,
        clear_handlers: bool,
    ) -> Result<Cloned, Clone3Error> {
        let nul_terminated = |strings: &[CString]| -> Vec<*const c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let paths = nul_terminated(&self.paths);
        let argv = nul_terminated(&self.argv);
        let mut envp = Vec::with_capacity(self.env.len() + 1);
        envp.extend(self.env.entries().map(|e| e.as_ptr()));
        envp.push(std::ptr::null());
        let mut setup = ChildSetup {
            paths: paths.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            cwd: self.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdio: self.stdio,
            keep: self.keep,
            handlers_cleared: clear_handlers,
            sched: ChildSched::for_this_thread(),
            pre_exec: self.pre_exec,
            error: 0,
        };
        let stack = child_stack().map_err(Clone3Error::Clone)?;
        let stack = stack.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pidfd: c_int = -1;
        let mut flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
        if self.keep.is_some() {
            flags |= CLONE_FILES;
        }
        if clear_handlers {
            flags |= CLONE_CLEAR_SIGHAND;
        }
        let mut cgroup_fd = 0;
        if let Some(dir) = cgroup {
            flags |= CLONE_INTO_CGROUP;
            cgroup_fd = dir.as_raw_fd() as u64;
        }
        let mut args = CloneArgs {
            flags,
            pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.base as u64,
            stack_size: stack.len as u64,
            cgroup: cgroup_fd,
            ..CloneArgs::default()
        };
        // No signal handler of warden's may run in the child (it shares warden's
        // memory): everything is blocked across the clone, the child unblocks once it has
        // reset the handlers.
        let all: u64 = !0;
        let mut before: u64 = 0;
        // SAFETY: rt_sigprocmask with two 8-byte sets.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all,
                &mut before,
                8,
            )
        };
        // SAFETY: `args` describes a stack that nothing else uses (its lock is held) and
        // the child runs `child_main` on it with `setup`, which outlives the clone (the
        // parent waits until the child has exec'd or exited: CLONE_VFORK).
        let ret = unsafe {
            raw_clone3(
                &mut args,
                std::mem::size_of::<CloneArgs>(),
                std::ptr::addr_of_mut!(setup).cast(),
            )
        };
        let clone_error = (ret < 0).then(|| io::Error::from_raw_os_error(-ret as c_int));
        // SAFETY: as above.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &before,
                std::ptr::null_mut::<u64>(),
                8,
            )
        };
        drop(stack);
        if let Some(e) = clone_error {
            return Err(Clone3Error::Clone(e));
        }
        let pid =
            u32::try_from(ret).map_err(|_| Clone3Error::Clone(io::Error::other("bad pid")))?;
        // SAFETY: the kernel wrote a fresh pidfd (CLONE_PIDFD) that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // SAFETY: the child wrote it (or not) before it exec'd or exited; it is done.
        let error = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(setup.error)) };
        if error != 0 {
            // Our child, exiting with 127: reaped here (the spawn lock keeps the orphan
            // reaper away from it).
            let mut status = 0;
            // SAFETY: waitpid on our own unreaped child.
            unsafe { libc::waitpid(ret as libc::pid_t, &mut status, 0) };
            return Err(Clone3Error::Run(io::Error::from_raw_os_error(error)));
        }
        Ok(Cloned {
            pid,
            pidfd,
            born: if cgroup.is_some() {
                Born::InCgroup
            } else {
                Born::Outside
            },
        })
    }
}

/// The stack the cloned child runs on until it execs: one for the process, used under
/// its lock (one spawn at a time), with a guard page below it.
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: a mapping of warden's own, touched only by the child of the spawn holding the
// lock.
unsafe impl Send for ChildStack {}

const STACK_LEN: usize = 64 * 1024;
const GUARD: usize = 4096;

fn child_stack() -> io::Result<&'static Mutex<ChildStack>> {
    static STACK: OnceLock<Mutex<ChildStack>> = OnceLock::new();
    if let Some(stack) = STACK.get() {
        return Ok(stack);
    }
    // SAFETY: a fresh anonymous mapping; its lowest page becomes the guard.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK_LEN + GUARD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first page of the mapping just made.
    if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let stack = ChildStack {
        // SAFETY: within the mapping.
        base: unsafe { base.cast::<u8>().add(GUARD).cast() },
        len: STACK_LEN,
    };
    // A racing first spawn cannot happen (the spawn lock is held); if it did, the
    // loser's mapping would only leak.
    Ok(STACK.get_or_init(|| Mutex::new(stack)))
}

/// `clone3`; the child calls [`child_main`] with `setup` on the stack in `args` and never
/// returns. Answers the child's pid, or `-errno`.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(args: *mut CloneArgs, size: usize, setup: *mut c_void) -> libc::c_long {
    let ret: libc::c_long;
    let child: extern "C" fn(*mut c_void) -> ! = child_main;
    // SAFETY: the caller's contract. In the child (rax 0) the kernel has switched to the
    // new stack (16-byte aligned, so `call` leaves it as the ABI wants at entry); r12 and
    // r13 survive the syscall. The parent only gets rax (rcx and r11 are clobbered).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args,
            in("rsi") size,
            in("r12") setup,
            in("r13") child,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3(_: *mut CloneArgs, _: usize, _: *mut c_void) -> libc::c_long {
    -libc::c_long::from(libc::ENOSYS)
}

fn errno() -> c_int {
    // SAFETY: the calling thread's errno (in the child: the spawning thread's, which is
    // suspended until the child execs).
    unsafe { *libc::__errno_location() }
}

/// The cloned child, on its own stack in warden's memory, every signal blocked: resets
/// the signal handlers, then does what std's spawn does (own process group, fds 0-2,
/// working folder), then [`PreExec`], unblocks signals and execs. On a failure it writes
/// the errno into `setup.error` and exits 127.
extern "C" fn child_main(setup: *mut c_void) -> ! {
    let setup = setup.cast::<ChildSetup<'_>>();
    // SAFETY: `setup` points at the parent's ChildSetup, alive until this child execs or
    // exits; only async-signal-safe calls follow.
    unsafe {
        let error = child_steps(&*setup).err().unwrap_or(libc::ENOEXEC);
        std::ptr::write_volatile(std::ptr::addr_of_mut!((*setup).error), error);
        libc::_exit(127)
    }
}

/// The steps of [`child_main`]; returns only on a failure.
unsafe fn child_steps(setup: &ChildSetup<'_>) -> Result<(), c_int> {
    // SAFETY: the caller's contract; each call is async-signal-safe.
    unsafe {
        if let Some(slots) = setup.keep {
            // First of all, a descriptor table of its own: until then it is warden's. It
            // copies warden's descriptors up to the highest slot only.
            let close = |first: c_int, last: c_uint, flags: c_uint| {
                libc::syscall(libc::SYS_close_range, first as c_uint, last, flags)
            };
            if close(slots[3] + 1, c_uint::MAX, CLOSE_RANGE_UNSHARE) != 0 {
                return Err(errno());
            }
            // Below it, what is not a slot: warden's own descriptors (close-on-exec
            // anyway) and any that whoever started warden left open for it.
            let mut first = 3;
            for slot in slots {
                if slot > first && close(first, (slot - 1) as c_uint, 0) != 0 {
                    return Err(errno());
                }
                first = first.max(slot + 1);
            }
        }
        // A handler of warden's must never run here; ignored signals stay ignored (as
        // with std), except SIGPIPE, which Rust ignores for itself. The kernel has reset
        // the handlers already where it can (one flag instead of ~120 sigactions).
        if setup.handlers_cleared {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut());
        } else {
            reset_handlers();
        }
        if libc::setpgid(0, 0) != 0 {
            return Err(errno());
        }
        // A source among fds 0-2 (warden started with one of them closed) is moved up
        // first, so no dup2 below overwrites a source still to be read.
        let mut stdio = setup.stdio;
        for fd in &mut stdio {
            if (0..3).contains(fd) {
                *fd = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if *fd < 0 {
                    return Err(errno());
                }
            }
        }
        for (target, fd) in (0..).zip(stdio) {
            if fd >= 0 && libc::dup2(fd, target) < 0 {
                return Err(errno());
            }
        }
        if !setup.cwd.is_null() && libc::chdir(setup.cwd) != 0 {
            return Err(errno());
        }
        // The spawning thread's nice value and the short slice it ran warden's code with
        // are not the program's: its own now, while the child is still warden's (a user
        // switch follows).
        if let Some(sched) = setup.sched {
            sched.apply_before_exec()?;
        }
        setup.pre_exec.apply()?;
        let none: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none,
            std::ptr::null_mut::<u64>(),
            8,
        );
        // As execvp: a file that is not there (or not searchable, or not executable by
        // this child) is skipped; the first other failure is the answer.
        let mut answer = libc::ENOENT;
        let mut path = setup.paths;
        while !(*path).is_null() {
            libc::execve(*path, setup.argv, setup.envp);
            match errno() {
                libc::EACCES => answer = libc::EACCES,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                other => return Err(other),
            }
            path = path.add(1);
        }
        Err(answer)
    }
}

/// Resets every handled signal, and SIGPIPE, to its default, one sigaction at a time
/// (where the kernel cannot: `CLONE_CLEAR_SIGHAND` came with Linux 5.5).
unsafe fn reset_handlers() {
    // SAFETY: the caller's contract (the cloned child); sigaction is async-signal-safe.
    unsafe {
        for signal in 1..=64 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if handled || (signal == libc::SIGPIPE && old.sa_sigaction == libc::SIG_IGN) {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// `sh -c SCRIPT` with `env` only, its output into a fresh pipe (the read end
    /// answered).
    fn launch(script: &str, env: &[(&str, &str)], cwd: Option<&str>) -> (Launch, std::fs::File) {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let launch = Launch {
            program: "sh".into(),
            args: vec!["-c".into(), script.into(), "zero".into(), "one two".into()],
            env: {
                let mut only = ChildEnv::default();
                for (name, value) in env {
                    only.set(*name, *value);
                }
                only
            },
            cwd: cwd.map(PathBuf::from),
            output: ChildOutput::Pipe(write),
            handoff: None,
            keeper: None,
            pre_exec: PreExec::default(),
        };
        (launch, std::fs::File::from(read))
    }

    /// Clones `launch` (registered, as warden does) and answers its pid, reaped.
    fn run_cloned(launch: &Launch) -> Result<i32, CloneRefused> {
        let cloned = crate::spawned::register(
            || Ok(launch.clone3(None)),
            |r| r.as_ref().ok().map(|c| c.pid),
        )
        .expect("register")?;
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(cloned.pid as libc::pid_t, &mut status, 0) };
        crate::spawned::forget(cloned.pid);
        Ok(libc::WEXITSTATUS(status))
    }

    fn output_of(launch: Launch, read: &mut std::fs::File) -> String {
        match run_cloned(&launch) {
            Ok(_) => {}
            Err(CloneRefused::Unavailable) => panic!("clone3 is refused here"),
            Err(CloneRefused::Run(e)) => panic!("spawn failed: {e}"),
        }
        drop(launch);
        let mut out = String::new();
        read.read_to_string(&mut out).expect("read");
        out
    }

    const SCRIPT: &str = "echo \"$0|$1|$FOO|$(pwd)|$PATH\"; echo err >&2";

    #[test]
    fn a_cloned_child_gets_what_std_would_give_it() {
        let env = [("FOO", "bar baz"), ("PATH", "/usr/bin:/bin")];
        let (cloned, mut read) = launch(SCRIPT, &env, Some("/tmp"));
        let cloned_out = output_of(cloned, &mut read);
        let (by_std, mut read) = launch(SCRIPT, &env, Some("/tmp"));
        let mut child =
            crate::spawned::register(|| by_std.spawn_std(), |c| Some(c.id())).expect("std spawn");
        let _ = child.wait();
        let mut std_out = String::new();
        read.read_to_string(&mut std_out).expect("read");
        assert_eq!(cloned_out, "zero|one two|bar baz|/tmp|/usr/bin:/bin\nerr\n");
        assert_eq!(cloned_out, std_out);
    }

    /// A cloned child shares warden's descriptor table until its first step: it must
    /// leave warden's 0-2 alone, keep nothing of warden's but what it inherits (in the
    /// slots), and reach its handoff folder at the number its environment names.
    #[test]
    fn a_cloned_child_gets_its_own_descriptors_and_leaves_warden_s_alone() {
        let ours = || -> Vec<Option<PathBuf>> {
            (0..3)
                .map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
                .collect()
        };
        let before = ours();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), "secret\n").expect("write");
        let slots = Slots::get().expect("slots");
        let script = "ls /proc/self/fd; echo --; cat /proc/self/fd/$H/token";
        let handoff = slots.handoff.to_string();
        let (mut launch, mut read) = launch(script, &[("H", &handoff)], None);
        let folder = std::fs::File::open(dir.path()).expect("open the folder");
        launch.handoff = Some(folder.into());
        launch.keeper = Some(read.try_clone().expect("dup").into());
        let out = output_of(launch, &mut read);
        assert_eq!(ours(), before, "warden's fds 0-2 changed");
        let (fds, token) = out.split_once("--\n").expect("two parts");
        assert_eq!(token, "secret\n");
        let fds: Vec<c_int> = fds.lines().filter_map(|l| l.parse().ok()).collect();
        let expected = [0, 1, 2, slots.handoff, slots.keeper];
        let others: Vec<&c_int> = fds.iter().filter(|fd| !expected.contains(fd)).collect();
        assert!(
            expected.iter().all(|fd| fds.contains(fd)),
            "missing fds in {fds:?}"
        );
        // ls's own open folder, nothing else (no descriptor of warden's below the slots
        // either, such as one its own parent left open).
        assert!(
            others.len() <= 1,
            "the child inherited more: {fds:?} (slots {slots:?})"
        );
    }

    /// The handlers are reset by the kernel (`CLONE_CLEAR_SIGHAND`) or, before Linux 5.5,
    /// by the child itself: either way the child starts with SIGPIPE at its default
    /// (warden, as every Rust program, ignores it), as with std's spawn.
    #[test]
    fn both_ways_of_resetting_the_handlers_give_the_child_a_default_sigpipe() {
        const SIGPIPE_BIT: u64 = 1 << (libc::SIGPIPE - 1);
        let ignored = |status: &str| -> u64 {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .expect("a SigIgn line");
            u64::from_str_radix(line.trim(), 16).expect("hex")
        };
        let ours = std::fs::read_to_string("/proc/self/status").expect("own status");
        assert_ne!(
            ignored(&ours) & SIGPIPE_BIT,
            0,
            "the test runner ignores SIGPIPE"
        );
        for clear_handlers in [true, false] {
            let (launch, mut read) = launch("cat /proc/self/status", &[], None);
            let slots = Slots::get().expect("slots");
            let cloned = crate::spawned::register(
                || {
                    let prepared = launch.prepare(slots)?;
                    let _placed = launch.place(slots)?;
                    prepared.clone3(None, clear_handlers).map_err(|e| match e {
                        Clone3Error::Clone(e) | Clone3Error::Run(e) => e,
                    })
                },
                |c| Some(c.pid),
            )
            .expect("cloned");
            drop(launch);
            let mut status = String::new();
            read.read_to_string(&mut status).expect("read");
            let mut code = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(cloned.pid as libc::pid_t, &mut code, 0) };
            crate::spawned::forget(cloned.pid);
            assert_eq!(
                ignored(&status) & SIGPIPE_BIT,
                0,
                "SIGPIPE still ignored (kernel reset: {clear_handlers})"
            );
        }
    }

    /// A child cloned with the short spawn slice (SEMANTICS 87) gives itself the default
    /// slice before its exec: the program reads its own slice from its first instruction.
    #[test]
    fn a_child_spawned_urgently_execs_with_the_default_slice() {
        let short = crate::sched::SPAWN_SLICE.as_nanos().to_string();
        let (launch, mut read) = launch("exec cat /proc/self/sched", &[], None);
        let out = crate::sched::spawn_urgently(|| output_of(launch, &mut read));
        let slice = out
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.rsplit(':').next())
            .map(str::trim)
            .expect("an se.slice line");
        assert_ne!(
            slice, short,
            "the program started with the spawn's short slice"
        );
    }

    /// Spawned urgently from a raised thread (nice -10, reset on fork: warden's supervision
    /// thread as root), which keeps its nice value for the spawn, the program still starts
    /// at nice 0, cloned or spawned by std (SEMANTICS 87).
    #[test]
    fn a_child_spawned_urgently_from_a_raised_thread_execs_at_nice_zero() {
        std::thread::spawn(|| {
            let raised = crate::sched::set_this_thread(-10, Some(crate::sched::SHORT_SLICE), true);
            if raised.is_err() {
                return; // no CAP_SYS_NICE here
            }
            // Field 19 of /proc/self/stat, read by the program itself.
            let script = "read -r line < /proc/self/stat; set -- ${line##*) }; echo \"${17}\"";
            let (cloned, mut read) = launch(script, &[], None);
            let out = crate::sched::spawn_urgently(|| output_of(cloned, &mut read));
            assert_eq!(out.trim(), "0", "cloned: the program's nice value");
            let (by_std, mut read) = launch(script, &[], None);
            let mut child = crate::sched::spawn_urgently(|| {
                crate::spawned::register(|| by_std.spawn_std(), |c| Some(c.id()))
            })
            .expect("std spawn");
            let _ = child.wait();
            let mut out = String::new();
            read.read_to_string(&mut out).expect("read");
            assert_eq!(out.trim(), "0", "spawned by std: the program's nice value");
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn a_missing_program_fails_the_spawn_as_std_says() {
        let (mut missing, _read) = launch("", &[("PATH", "/nonexistent:/also/not")], None);
        missing.program = "warden-test-no-such-program".into();
        match run_cloned(&missing) {
            Err(CloneRefused::Run(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
            other => panic!("not a spawn failure: {other:?}"),
        }
        missing.program = "/nonexistent/warden-test".into();
        match run_cloned(&missing) {
            Err(CloneRefused::Run(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
            other => panic!("not a spawn failure: {other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_not_executable_fails_with_permission_denied() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("not-executable");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        let (mut plain, _read) = launch("", &[], None);
        plain.program = file.into_os_string();
        match run_cloned(&plain) {
            Err(CloneRefused::Run(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}")
            }
            other => panic!("not a spawn failure: {other:?}"),
        }
    }

    #[test]
    fn path_folders_without_the_program_are_skipped_in_order() {
        let env = [("PATH", "/nonexistent::/usr/bin:/bin")];
        let (mut search, _read) = launch("", &env, None);
        search.program = "true".into();
        search.args.clear();
        assert_eq!(run_cloned(&search).ok(), Some(0));
    }
}
