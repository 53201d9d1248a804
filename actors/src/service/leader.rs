//! The leader of a run: the process warden spawned, watched until it exits and then
//! reaped, with ONE pidfd per process.
//!
//! With pidfds, the child is a `std::process::Child` watched through a pidfd of warden's
//! own and reaped (`try_wait`) only once that pidfd says it has exited, so the group is
//! SIGKILLed while the leader is still an unreaped zombie (its number cannot have been
//! reused). A `tokio::process::Child` would open a second pidfd of the same process for
//! its own reaping: with 1,000 services that is 1,000 more fds, which every spawn copies
//! (`dup_fd` in clone) and every exec closes again (measured: docs/benchmarks.md).
//! Without pidfds (`WARDEN_PIDFD=off`, or kernels before 5.3), tokio reaps the child as
//! before (SIGCHLD), and the group follows microseconds after the reap.

use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

use super::proc;

/// How often a leader whose pidfd could not be registered is polled for its exit.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// warden's own child, the leader of a run.
#[derive(Debug)]
pub(crate) enum Leader {
    /// Watched through warden's pidfd; reaped once that says it exited.
    Pidfd(std::process::Child, AsyncFd<OwnedFd>),
    /// A pidfd could not be opened or registered for it (out of fds): polled.
    Polled(std::process::Child),
    /// Without pidfds: reaped by tokio.
    Tokio(tokio::process::Child),
}

impl Leader {
    /// Spawns `cmd`, registered with the orphan reaper ([`super::spawned::register`])
    /// before anything can reap it.
    pub(crate) fn spawn(cmd: std::process::Command) -> io::Result<Self> {
        if !proc::pidfds_available() {
            let mut cmd = tokio::process::Command::from(cmd);
            cmd.kill_on_drop(false);
            let child = super::spawned::register(|| cmd.spawn(), tokio::process::Child::id)?;
            return Ok(Self::Tokio(child));
        }
        let mut cmd = cmd;
        let child = super::spawned::register(|| cmd.spawn(), |c| Some(c.id()))?;
        // Our child, not reaped yet: its pid is still its own.
        let watch = proc::pidfd_open(child.id()).and_then(|fd| {
            // SAFETY: the AsyncFd owns the pidfd, open and unchanged while registered.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)
        });
        Ok(match watch {
            Ok(fd) => Self::Pidfd(child, fd),
            Err(e) => {
                tracing::warn!(pid = child.id(), error = %e, "cannot watch the child's pidfd: polling for its exit");
                Self::Polled(child)
            }
        })
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
            Self::Polled(child) => poll_exit(child).await,
            Self::Tokio(child) => {
                let _ = child.wait().await;
            }
        }
    }

    /// Reaps the leader (waiting for its exit if needed) and answers its status.
    pub(crate) async fn reap(&mut self) -> io::Result<ExitStatus> {
        match self {
            Self::Pidfd(child, fd) => {
                if let Ok(mut guard) = fd.readable().await {
                    guard.retain_ready();
                }
                poll_exit(child).await;
                child.wait()
            }
            Self::Polled(child) => {
                poll_exit(child).await;
                child.wait()
            }
            Self::Tokio(child) => child.wait().await,
        }
    }
}

/// Until `child` can be reaped without blocking (std keeps the status once reaped).
async fn poll_exit(child: &mut std::process::Child) {
    while let Ok(None) = child.try_wait() {
        tokio::time::sleep(POLL).await;
    }
}
