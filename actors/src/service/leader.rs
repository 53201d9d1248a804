//! The leader of a run: the process warden spawned, watched until it exits and then
//! reaped, with ONE pidfd per process.
//!
//! With pidfds, the leader is started by [`Launch::clone3`] (its pidfd comes with the
//! clone) or, where `clone3` is refused, by std's spawn and `pidfd_open`; either way it
//! is watched through that pidfd and reaped (`waitpid`) only once the pidfd says it has
//! exited, so the group is SIGKILLed while the leader is still an unreaped zombie (its
//! number cannot have been reused). A `tokio::process::Child` would open a second pidfd
//! of the same process for its own reaping: with 1,000 services that is 1,000 more fds,
//! which every spawn copies (`dup_fd` in clone) and every exec closes again (measured:
//! docs/benchmarks.md). Without pidfds (`WARDEN_PIDFD=off`, or kernels before 5.3), tokio
//! reaps the child as before (SIGCHLD), and the group follows microseconds after the
//! reap.

use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

use super::launch::{Born, CloneRefused, Launch};
use super::proc;
use super::records::Written;

/// How often a leader whose pidfd could not be registered is polled for its exit.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// warden's own child, the leader of a run.
#[derive(Debug)]
pub(crate) enum Leader {
    /// Watched through warden's pidfd; reaped once that says it exited.
    Pidfd(OwnChild, AsyncFd<OwnedFd>),
    /// A pidfd could not be opened or registered for it (out of fds): polled.
    Polled(OwnChild),
    /// Without pidfds: reaped by tokio.
    Tokio(tokio::process::Child),
}

/// A child of warden's that nothing but its [`Leader`] reaps.
#[derive(Debug)]
pub(crate) enum OwnChild {
    /// Started by std's spawn.
    Std(std::process::Child),
    /// Started by [`Launch::clone3`]; its status once reaped.
    Cloned(u32, Option<ExitStatus>),
}

impl OwnChild {
    fn id(&self) -> u32 {
        match self {
            Self::Std(child) => child.id(),
            Self::Cloned(pid, _) => *pid,
        }
    }

    /// Reaps the child if it has exited; its status (kept once reaped).
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            Self::Std(child) => child.try_wait(),
            Self::Cloned(_, Some(status)) => Ok(Some(*status)),
            Self::Cloned(pid, status) => {
                let raw = libc::pid_t::try_from(*pid)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                let mut code = 0;
                // SAFETY: waitpid on our own child, which nothing else reaps.
                match unsafe { libc::waitpid(raw, &mut code, libc::WNOHANG) } {
                    0 => Ok(None),
                    r if r < 0 => Err(io::Error::last_os_error()),
                    _ => {
                        *status = Some(ExitStatus::from_raw(code));
                        Ok(*status)
                    }
                }
            }
        }
    }
}

impl Leader {
    /// Starts `launch` (in the cgroup of the open folder `cgroup` when it can), registered
    /// with the orphan reaper ([`super::spawned::register`]) before anything can reap it.
    pub(crate) fn spawn(launch: Launch, cgroup: Option<&OwnedFd>) -> io::Result<(Self, Born)> {
        if !proc::pidfds_available() {
            let child =
                super::spawned::register(|| launch.spawn_tokio(), tokio::process::Child::id)?;
            return Ok((Self::Tokio(child), Born::Outside));
        }
        let cloned = super::spawned::register(
            || Ok(launch.clone3(cgroup.map(|fd| fd.as_fd()))),
            |r| r.as_ref().ok().map(|c| c.pid),
        )?;
        match cloned {
            Ok(cloned) => {
                let born = cloned.born;
                Ok((
                    Self::watched(OwnChild::Cloned(cloned.pid, None), Ok(cloned.pidfd)),
                    born,
                ))
            }
            Err(CloneRefused::Run(e)) => Err(e),
            Err(CloneRefused::Unavailable) => {
                let child = super::spawned::register(|| launch.spawn_std(), |c| Some(c.id()))?;
                // Our child, not reaped yet: its pid is still its own.
                let pidfd = proc::pidfd_open(child.id());
                Ok((Self::watched(OwnChild::Std(child), pidfd), Born::Outside))
            }
        }
    }

    /// `child` watched through `pidfd`, or polled when that cannot be.
    fn watched(child: OwnChild, pidfd: io::Result<OwnedFd>) -> Self {
        let watch = pidfd.and_then(|fd| {
            // SAFETY: the AsyncFd owns the pidfd, open and unchanged while registered.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)
        });
        match watch {
            Ok(fd) => Self::Pidfd(child, fd),
            Err(e) => {
                tracing::warn!(pid = child.id(), error = %e, "cannot watch the child's pidfd: polling for its exit");
                Self::Polled(child)
            }
        }
    }

    /// The leader's pid.
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Self::Pidfd(child, _) | Self::Polled(child) => Some(child.id()),
            Self::Tokio(child) => child.id(),
        }
    }

    /// Until the leader has exited: through its pidfd (not reaped yet), else by reaping
    /// it (tokio) or polling (the status is kept for [`Leader::reap`]).
    pub(crate) async fn exited(&mut self) {
        match self {
            Self::Pidfd(_, fd) => {
                if let Ok(mut guard) = fd.readable().await {
                    guard.retain_ready();
                }
            }
            Self::Polled(child) => {
                let _ = poll_exit(child).await;
            }
            Self::Tokio(child) => {
                let _ = child.wait().await;
            }
        }
    }

    /// Until the leader has exited and its record is `written`, never reaping it before
    /// the record is (the record reads the identity of the pid, which must still be this
    /// process's). Watched through a pidfd, which reaps nothing, the exit is waited for
    /// first and the record only then: the record is long written by the time a service
    /// exits, so the thread that wrote it never has to wake the supervision thread (a
    /// wake-up that came while the new child was still starting). Otherwise waiting for
    /// the exit reaps, so the record comes first.
    pub(crate) async fn exited_and_recorded(&mut self, written: &mut Written) {
        if matches!(self, Self::Pidfd(..)) {
            self.exited().await;
            written.wait().await;
        } else {
            written.wait().await;
            self.exited().await;
        }
    }

    /// Reaps the leader (waiting for its exit if needed) and answers its status.
    pub(crate) async fn reap(&mut self) -> io::Result<ExitStatus> {
        match self {
            Self::Pidfd(child, fd) => {
                if let Ok(mut guard) = fd.readable().await {
                    guard.retain_ready();
                }
                poll_exit(child).await
            }
            Self::Polled(child) => poll_exit(child).await,
            Self::Tokio(child) => child.wait().await,
        }
    }
}

/// Until `child` is reaped (its status is kept once reaped).
async fn poll_exit(child: &mut OwnChild) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        tokio::time::sleep(POLL).await;
    }
}
