//! Self-upgrade in place (`POST /api/v1/admin/reexec`, SIGUSR2, `warden ctl reexec`):
//! warden execs the binary on disk as the same process, and every child keeps running.
//!
//! First [`preflight`] runs the binary on disk (`--version`, then `check -c CONFIG`), each
//! with a deadline, on a blocking thread; a failure names what failed and changes nothing.
//! Then [`exec`] hands over without stopping anything: the listening sockets of the admin
//! API and the control socket, the state_dir lock and the watchdog's pipe lose
//! `FD_CLOEXEC`, their numbers go to the new process in [`HANDOVER_ENV`] (which it reads
//! and removes, see [`Inherited::take`]), and the process image is replaced. The pid stays,
//! so the pidfile stays right and the lock (held by the inherited open file) is never free.
//! Children are adopted from the durable records exactly as after a crash (their output
//! pipes keep a reader in the child itself; outboard children reconnect with their token).
//! `execve` returns only on failure: then everything is put back and the old warden runs on.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use warden_actors::spawned;

/// The environment entry that carries the handed-over descriptors to the new process:
/// `admin=N,control=N,lock=N[,watchdog=N:PID]`.
pub const HANDOVER_ENV: &str = "WARDEN_REEXEC_FDS";

/// How long each preflight run of the new binary may take.
pub const PREFLIGHT_DEADLINE: Duration = Duration::from_secs(10);

/// The most output of a preflight run kept for the error message.
const PREFLIGHT_OUTPUT: u64 = 4096;

/// The descriptors a warden hands to the warden it execs.
#[derive(Debug)]
pub struct Handover {
    /// The admin API's listening socket.
    pub admin: OwnedFd,
    /// The control socket's listening socket.
    pub control: OwnedFd,
    /// The open file that holds the state_dir lock.
    pub lock: OwnedFd,
    /// The write end of the watchdog's pipe, and the watchdog's pid.
    pub watchdog: Option<(RawFd, u32)>,
}

/// What a re-executed warden inherited (all close-on-exec again).
#[derive(Debug)]
pub struct Inherited {
    /// The admin API's listening socket.
    pub admin: std::net::TcpListener,
    /// The control socket's listening socket.
    pub control: OwnedFd,
    /// The open file that holds the state_dir lock.
    pub lock: std::fs::File,
    /// The write end of the watchdog's pipe, and the watchdog's pid.
    pub watchdog: Option<(std::fs::File, u32)>,
}

impl Inherited {
    /// Reads and removes [`HANDOVER_ENV`] (children must not see it): `None` for a warden
    /// started afresh, an error naming the bad entry otherwise.
    pub fn take() -> Result<Option<Self>, String> {
        let Some(value) = std::env::var_os(HANDOVER_ENV) else {
            return Ok(None);
        };
        std::env::remove_var(HANDOVER_ENV);
        let value = value
            .into_string()
            .map_err(|v| format!("{HANDOVER_ENV}={v:?} is not text"))?;
        let mut admin = None;
        let mut control = None;
        let mut lock = None;
        let mut watchdog = None;
        for entry in value.split(',') {
            let bad = || format!("{HANDOVER_ENV}: bad entry {entry:?}");
            let (key, fd) = entry.split_once('=').ok_or_else(bad)?;
            let (fd, pid) = match fd.split_once(':') {
                Some((fd, pid)) => (fd, Some(pid.parse::<u32>().map_err(|_| bad())?)),
                None => (fd, None),
            };
            let fd = inherit_fd(fd.parse::<RawFd>().map_err(|_| bad())?).ok_or_else(bad)?;
            match (key, pid) {
                ("admin", None) => admin = Some(std::net::TcpListener::from(fd)),
                ("control", None) => control = Some(fd),
                ("lock", None) => lock = Some(std::fs::File::from(fd)),
                ("watchdog", Some(pid)) => watchdog = Some((std::fs::File::from(fd), pid)),
                _ => return Err(bad()),
            }
        }
        let missing = |what: &str| format!("{HANDOVER_ENV}={value:?} has no {what}");
        Ok(Some(Self {
            admin: admin.ok_or_else(|| missing("admin"))?,
            control: control.ok_or_else(|| missing("control"))?,
            lock: lock.ok_or_else(|| missing("lock"))?,
            watchdog,
        }))
    }
}

/// Takes ownership of an inherited descriptor (above stdio, open), closing it on the next
/// exec again.
fn inherit_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl on an integer; fails with EBADF if it is not an open descriptor.
    if fd <= 2 || unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: the exec'ing warden handed this descriptor to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The binary warden was started from, as a path on disk (what a new build replaces).
pub fn binary_on_disk() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // Linux says "PATH (deleted)" once the file was replaced: the path is what counts.
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// Runs `binary --version` and `binary check -c config`, each within `deadline`: the
/// version line it printed, or what failed. Blocking: call it off the supervision thread.
pub fn preflight(binary: &Path, config: &Path, deadline: Duration) -> Result<String, String> {
    let version = run_within(binary, &[OsStr::new("--version")], deadline)?;
    run_within(
        binary,
        &[OsStr::new("check"), OsStr::new("-c"), config.as_os_str()],
        deadline,
    )?;
    Ok(version.trim().to_owned())
}

/// Runs `binary args` with a deadline: its stdout if it exits 0, else an error naming the
/// command and what it said.
fn run_within(binary: &Path, args: &[&OsStr], deadline: Duration) -> Result<String, String> {
    let shown = format!(
        "{} {}",
        binary.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = Command::new(binary);
    cmd.args(args).env_remove(HANDOVER_ENV);
    let spawned::Finished {
        status,
        stdout,
        stderr,
    } = spawned::run_to_end(&mut cmd, deadline, PREFLIGHT_OUTPUT)
        .map_err(|e| format!("`{shown}` cannot run: {e}"))?;
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(format!(
            "`{shown}` failed ({status}): {}",
            last_words(&stderr, &stdout)
        )),
        None => Err(format!(
            "`{shown}` did not finish within {}",
            humantime::format_duration(deadline)
        )),
    }
}

/// What a failed run said (stderr, else stdout), on one line.
fn last_words(stderr: &str, stdout: &str) -> String {
    let said = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
    if said.is_empty() {
        "it said nothing".to_owned()
    } else {
        said
    }
}

/// The arguments of the re-executed warden: this one's, without `--passive` (the tree
/// already runs).
pub fn arguments() -> Vec<OsString> {
    std::env::args_os()
        .skip(1)
        .filter(|a| a != "--passive")
        .collect()
}

/// How long a reexec waits for warden's queued log lines to reach stderr.
const LOG_FLUSH_BOUND: Duration = Duration::from_millis(500);

/// Replaces this process with `binary args`, handing `handover` over. Returns only when
/// the exec failed, with every descriptor closed on exec again and the environment as it
/// was. Call with no spawn in progress (see [`spawned::with_locked`]).
pub fn exec(binary: &Path, args: &[OsString], handover: &Handover) -> std::io::Error {
    use std::os::unix::ffi::OsStrExt as _;
    let mut fds = vec![
        ("admin", handover.admin.as_raw_fd(), None),
        ("control", handover.control.as_raw_fd(), None),
        ("lock", handover.lock.as_raw_fd(), None),
    ];
    if let Some((fd, pid)) = handover.watchdog {
        fds.push(("watchdog", fd, Some(pid)));
    }
    let value = fds
        .iter()
        .map(|(key, fd, pid)| match pid {
            Some(pid) => format!("{key}={fd}:{pid}"),
            None => format!("{key}={fd}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let to_c = |s: &OsStr| std::ffi::CString::new(s.as_bytes());
    let (Ok(path), Ok(argv)) = (
        to_c(binary.as_os_str()),
        std::iter::once(binary.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(to_c)
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        return std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the binary path or an argument holds a NUL byte",
        );
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    for (_, fd, _) in &fds {
        // SAFETY: fcntl on descriptors this process owns.
        unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
    }
    // The lines logged so far reach stderr before the exec drops the queue holding them.
    crate::own_log::flush(LOG_FLUSH_BOUND);
    std::env::set_var(HANDOVER_ENV, &value);
    // Warden's signals wait (blocked, pending across the exec) until the new warden has
    // its handlers: a SIGTERM or a second SIGUSR2 during the exec is not fatal, nor lost.
    let held = handled_signals();
    // SAFETY: a set built by sigaddset; the old mask goes to a zeroed sigset_t.
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: pthread_sigmask on the calling thread with valid pointers.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &held, &mut before) };
    // SAFETY: NUL-terminated path and argv that outlive the call; environ is the process's.
    unsafe { libc::execv(path.as_ptr(), argv_ptrs.as_ptr()) };
    let error = std::io::Error::last_os_error();
    // SAFETY: as above, putting the mask back.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
    std::env::remove_var(HANDOVER_ENV);
    for (_, fd, _) in &fds {
        // SAFETY: as above.
        unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    error
}

/// The signals `warden up` handles (SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2).
fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset adds valid signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Unblocks, on the calling thread, the signals [`exec`] blocked: call it once their
/// handlers are installed (what arrived during the exec is delivered now).
pub fn unblock_handled_signals() {
    let set = handled_signals();
    // SAFETY: pthread_sigmask on the calling thread with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// A reexec request on its way to `warden up`'s loop, with where to answer.
#[derive(Debug)]
pub struct Order {
    /// The answer: [`Response::Reexecuting`](crate::control::protocol::Response) once the
    /// binary passed its preflight, or what failed.
    pub reply: tokio::sync::oneshot::Sender<
        Result<crate::control::protocol::Response, crate::control::protocol::Failure>,
    >,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both tests use the process's environment: one at a time.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: fcntl F_GETFD on an open descriptor.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    fn blocked(signal: i32) -> bool {
        // SAFETY: reading the calling thread's mask into a zeroed set.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            libc::sigismember(&mask, signal) == 1
        }
    }

    /// A failed exec returns its error and leaves the process as it was: every handed
    /// descriptor closed on exec again, no handover variable, the signal mask unchanged.
    #[test]
    fn a_failed_exec_puts_everything_back() {
        let _env = ENV
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let dir = tempfile::tempdir().expect("temp dir");
        let control = std::os::unix::net::UnixListener::bind(dir.path().join("s")).expect("socket");
        let lock = std::fs::File::create(dir.path().join("lock")).expect("file");
        let handover = Handover {
            admin: admin.into(),
            control: control.into(),
            lock: lock.into(),
            watchdog: None,
        };
        let error = exec(Path::new("/nonexistent/warden"), &[], &handover);
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
        for fd in [&handover.admin, &handover.control, &handover.lock] {
            assert!(
                cloexec(fd.as_raw_fd()),
                "fd {} is inherited",
                fd.as_raw_fd()
            );
        }
        assert!(std::env::var_os(HANDOVER_ENV).is_none());
        assert!(!blocked(libc::SIGUSR2), "SIGUSR2 left blocked");
    }

    /// The handover variable is read once and removed; a bad one is refused naming it.
    #[test]
    fn a_bad_handover_variable_is_refused_naming_the_entry() {
        let _env = ENV
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::env::set_var(HANDOVER_ENV, "admin=1,control=x");
        let error = Inherited::take().expect_err("refused");
        assert!(error.contains("admin=1"), "{error}");
        assert!(std::env::var_os(HANDOVER_ENV).is_none());
        assert!(Inherited::take().expect("absent").is_none());
    }
}
