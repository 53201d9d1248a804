//! Linux process facts from /proc and pidfds: a process's identity (pid, start time,
//! process group, uid; with the boot id it names one process for good), and [`Pinned`],
//! the one way warden signals and watches a process it did not spawn itself (an adopted
//! or recorded one).
//!
//! Signals go through a pidfd opened *before* the identity is checked again, so the fd is
//! pinned to the checked process and a recycled pid is never hit. Without pidfd support
//! (kernels before 5.10, which added `PIDFD_NONBLOCK`; a seccomp filter answering EPERM;
//! or `WARDEN_PIDFD=off` to force it in tests) warden says so once in its log and falls
//! back: the /proc identity is checked right before each signal, and exits are found by
//! polling /proc every [`EXIT_POLL`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// The environment variable that turns pidfd use off (`WARDEN_PIDFD=off`): read once at
/// start, for tests of the /proc fallback.
pub const PIDFD_ENV: &str = "WARDEN_PIDFD";

/// How often the fallback looks whether a process it watches has exited.
pub const EXIT_POLL: Duration = Duration::from_millis(50);

/// The kernel's boot id: records from another boot are never trusted.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

/// What /proc/PID/stat says of a process (a zombie included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Exited and not yet reaped by its parent.
    pub zombie: bool,
    /// Its process group (field 5).
    pub pgid: u32,
    /// Start time in clock ticks since boot (field 22).
    pub start_time: u64,
    /// Its wait status once it is a zombie (field 52, Linux 3.5+).
    pub exit_code: Option<i32>,
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed stat")
}

/// Reads a small /proc file whole into `buf`: reads until its end without asking its size
/// first (a /proc file says 0) and without growing a buffer (`read_to_string` made one
/// `statx`, one `lseek` and up to seven reads of /proc/PID/status). A file that does not
/// fit is an error.
fn read_small<'b>(path: &str, buf: &'b mut [u8]) -> io::Result<&'b str> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => {
                return std::str::from_utf8(&buf[..len])
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{path} is longer than {} bytes", buf.len()),
    ))
}

/// Reads /proc/PID/stat.
pub fn stat(pid: u32) -> io::Result<Stat> {
    // 52 numeric fields and a command name of at most 64 bytes fit in well under 2 KiB.
    let mut buf = [0u8; 2048];
    let stat = read_small(&format!("/proc/{pid}/stat"), &mut buf)?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(malformed)?;
    // Index 0 is field 3 (state).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied().ok_or_else(malformed);
    let state = field(3)?;
    let zombie = state == "Z" || state == "X";
    Ok(Stat {
        zombie,
        pgid: field(5)?.parse().map_err(|_| malformed())?,
        start_time: field(22)?.parse().map_err(|_| malformed())?,
        exit_code: if zombie {
            fields.get(52 - 3).and_then(|f| f.parse().ok())
        } else {
            None
        },
    })
}

/// The start time of the live (not zombie) process `pid`.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let s = stat(pid)?;
    if s.zombie {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "process is a zombie",
        ));
    }
    Ok(s.start_time)
}

/// The process group of `pid` (field 5 of /proc/PID/stat).
pub fn process_group(pid: u32) -> io::Result<u32> {
    Ok(stat(pid)?.pgid)
}

/// The real uid of `pid` (the `Uid:` line of /proc/PID/status).
pub fn uid(pid: u32) -> io::Result<u32> {
    // ~1.5 KiB on Linux 6.x; the buffer leaves room for fields to come.
    let mut buf = [0u8; 8192];
    let status = read_small(&format!("/proc/{pid}/status"), &mut buf)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed status"))
}

/// Who a live process is: with the boot id (checked by whoever compares records), these
/// name one process for good, whatever pid reuse happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    /// Its process group.
    pub pgid: u32,
    /// Its real uid.
    pub uid: u32,
}

impl Identity {
    /// The identity of the live (not zombie) process `pid`.
    pub fn of(pid: u32) -> io::Result<Self> {
        let s = stat(pid)?;
        if s.zombie {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "process is a zombie",
            ));
        }
        Ok(Self {
            pid,
            start_time: s.start_time,
            pgid: s.pgid,
            uid: uid(pid)?,
        })
    }

    /// Whether this process leads its own process group, so that the group may be
    /// signalled (a group of 0 or 1, or another process's group, never is).
    pub fn leads_its_group(&self) -> bool {
        self.pgid > 1 && self.pgid == self.pid
    }
}

/// Whether warden uses pidfds: probed once (a pidfd of warden itself), and off when
/// `WARDEN_PIDFD=off`. The first call logs a warning when warden falls back to /proc.
pub fn pidfds_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var(PIDFD_ENV).is_ok_and(|v| v == "off") {
            tracing::warn!("{PIDFD_ENV}=off: no pidfds; falling back to /proc identity checks before each signal and polling for exits");
            return false;
        }
        match pidfd_open(std::process::id()) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "pidfds are not available (Linux 5.10+, and not blocked by seccomp): falling back to /proc identity checks before each signal and polling for exits");
                false
            }
        }
    })
}

/// A pidfd for `pid` (Linux 5.10+, for `PIDFD_NONBLOCK`): signals through it can never
/// reach a recycled pid, and it becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd` (0: only asks whether it still exists,
/// a zombie included).
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Why a process could not be pinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The pid is gone, or now names another process (start time, group or uid differ):
    /// it must never be signalled.
    #[error("pid {pid} is not the recorded process ({why})")]
    NotTheSame {
        /// The pid.
        pid: u32,
        /// What differs.
        why: String,
    },
}

/// A process whose identity was checked after a pidfd was opened on it: every signal
/// reaches that process or nothing. Without pidfds, the identity is checked again right
/// before each signal.
#[derive(Debug)]
pub struct Pinned {
    identity: Identity,
    pidfd: Option<OwnedFd>,
}

impl Pinned {
    /// Pins the process `expected` names: opens a pidfd on its pid, THEN reads its
    /// identity from /proc and compares (so the fd cannot name a process that replaced it
    /// in between). A pidfd that cannot be opened for another reason than the process
    /// being gone (EMFILE, ENOSYS, EPERM) falls back to checks before each signal.
    pub fn pin(expected: Identity) -> Result<Self, PinError> {
        let pidfd = if pidfds_available() {
            match pidfd_open(expected.pid) {
                Ok(fd) => Some(fd),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return Err(PinError::NotTheSame {
                        pid: expected.pid,
                        why: "gone".to_owned(),
                    })
                }
                Err(e) => {
                    tracing::warn!(pid = expected.pid, error = %e, "cannot open a pidfd: checking /proc before each signal instead");
                    None
                }
            }
        } else {
            None
        };
        let now = Identity::of(expected.pid).map_err(|e| PinError::NotTheSame {
            pid: expected.pid,
            why: e.to_string(),
        })?;
        if now != expected {
            return Err(PinError::NotTheSame {
                pid: expected.pid,
                why: format!("found {now:?}, recorded {expected:?}"),
            });
        }
        Ok(Self {
            identity: now,
            pidfd,
        })
    }

    /// The identity checked when it was pinned.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Whether the pinned process still exists, a zombie included (so its pid and its
    /// group's number are not free for reuse).
    pub fn exists(&self) -> bool {
        match &self.pidfd {
            Some(fd) => pidfd_send_signal(fd, 0).is_ok(),
            None => stat(self.identity.pid).is_ok_and(|s| s.start_time == self.identity.start_time),
        }
    }

    /// Sends `signal` to the pinned process only.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        match &self.pidfd {
            Some(fd) => pidfd_send_signal(fd, signal),
            None => {
                if !self.exists() {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                let pid = libc::pid_t::try_from(self.identity.pid)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                // SAFETY: kill takes a pid and a signal number.
                if unsafe { libc::kill(pid, signal) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
        }
    }

    /// Sends `signal` to the pinned process's group, if it leads one, while the leader
    /// still exists (alive or a zombie: the group's number cannot have been reused);
    /// otherwise to the leader alone through [`Pinned::signal`]. Answers whether anything
    /// was signalled.
    pub fn signal_group(&self, signal: i32) -> bool {
        if !self.identity.leads_its_group() {
            return self.signal(signal).is_ok();
        }
        if !self.exists() {
            return false;
        }
        let Ok(pgid) = libc::pid_t::try_from(self.identity.pgid) else {
            return false;
        };
        // SAFETY: killpg takes a group id (> 1, checked) and a signal number.
        unsafe { libc::killpg(pgid, signal) == 0 }
    }

    /// Waits until the pinned process has exited; answers its wait status when it could
    /// be read (while it is a zombie, from /proc), `None` when its parent reaped it first.
    pub async fn exited(&self) -> Option<i32> {
        let watched = self.pidfd.as_ref().map(|fd| {
            // SAFETY: the AsyncFd owns its duplicate of the pidfd, open and unchanged while
            // it is registered.
            fd.try_clone().and_then(|dup| unsafe {
                AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE)
                    .map_err(io::Error::from)
            })
        });
        match watched {
            Some(Ok(fd)) => {
                if let Ok(mut guard) = fd.readable().await {
                    guard.retain_ready();
                }
            }
            Some(Err(e)) => {
                tracing::warn!(pid = self.identity.pid, error = %e, "cannot watch a pidfd: polling /proc for the exit instead");
                self.polled_exit().await;
            }
            None => self.polled_exit().await,
        }
        stat(self.identity.pid)
            .ok()
            .filter(|s| s.zombie && s.start_time == self.identity.start_time)
            .and_then(|s| s.exit_code)
    }

    /// Polls /proc until the process is a zombie or gone.
    async fn polled_exit(&self) {
        let mut tick = tokio::time::interval(EXIT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let running = stat(self.identity.pid)
                .is_ok_and(|s| !s.zombie && s.start_time == self.identity.start_time);
            if !running {
                return;
            }
        }
    }
}

/// What fd `fd` of `pid` points at (e.g. `pipe:[1234]`).
pub fn fd_target(pid: u32, fd: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The value of `key` in the environment of `pid`, if readable.
pub fn environ_var(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|entry| {
        let text = std::str::from_utf8(entry).ok()?;
        let (k, v) = text.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

/// The soft RLIMIT_NOFILE warden was started with, when warden raised its own since:
/// children get this one back (see [`children_open_files_limit`]).
static CHILD_NOFILE: OnceLock<libc::rlim_t> = OnceLock::new();

/// Remembers `soft`, the open files limit warden was started with, before warden raises
/// its own: every child spawned later gets it back.
pub fn keep_open_files_limit_for_children(soft: u64) {
    let _ = CHILD_NOFILE.set(soft as libc::rlim_t);
}

/// The soft open files limit children must get, when it differs from warden's own now.
pub fn children_open_files_limit() -> Option<libc::rlim_t> {
    let wanted = *CHILD_NOFILE.get()?;
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return Some(wanted);
    }
    (now.rlim_cur != wanted).then_some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc file is read whole in one buffer, and one that does not fit is refused
    /// rather than cut (a cut stat would parse into wrong fields).
    #[test]
    fn a_proc_file_is_read_whole_or_refused() {
        let me = std::process::id();
        let mut buf = [0u8; 2048];
        let text = read_small(&format!("/proc/{me}/stat"), &mut buf).expect("own stat");
        assert!(text.starts_with(&format!("{me} (")), "{text}");
        assert!(text.ends_with('\n'), "read to its end: {text}");
        let mut tiny = [0u8; 8];
        let e = read_small(&format!("/proc/{me}/stat"), &mut tiny).unwrap_err();
        assert!(e.to_string().contains("longer than 8 bytes"), "{e}");

        let own = stat(me).expect("own stat");
        assert!(!own.zombie && own.start_time > 0);
        // SAFETY: getpgrp and getuid cannot fail.
        let (group, real) = unsafe { (libc::getpgrp(), libc::getuid()) };
        assert_eq!(own.pgid, u32::try_from(group).expect("a group id"));
        assert_eq!(uid(me).expect("own status"), real);
    }
}
