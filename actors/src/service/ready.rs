//! Ready checks: when a started service counts as `running`.
//!
//! Every check counts only what the child's own processes ([`ChildProcesses`]) do: a
//! `notify` socket is created 0600 (before bind) in a 0700 folder, has SO_PASSCRED on, and
//! takes `READY=1` only from a sender of the child's process group (others are ignored,
//! with a rate-limited log line); a `tcp` check passes only once the listener on the port
//! is held by one of the child's processes, so a process squatting the port never makes
//! the child `running`.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixDatagram};

use super::listener;
use crate::log_budget::LogBudget;
use crate::peer::ChildProcesses;

/// How a service shows it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// A TCP connect to this `host:port` succeeds.
    Tcp {
        /// `host:port`.
        addr: String,
        /// Given up (an abnormal exit) after this long.
        timeout: Duration,
    },
    /// This long after the start.
    Delay(Duration),
    /// The child sends `READY=1` on `$NOTIFY_SOCKET` (systemd's sd_notify protocol).
    Notify {
        /// Folder for the per-run notify sockets.
        socket_dir: PathBuf,
        /// Given up after this long.
        timeout: Duration,
    },
}

/// A bound notify socket; the file is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds a fresh datagram socket at `path` (replacing a stale file): the folder is
    /// made 0700, the socket 0600 before it is bound (so its file never exists with a
    /// looser mode), and SO_PASSCRED is on so each datagram says who sent it.
    pub(crate) fn bind(path: PathBuf) -> io::Result<Self> {
        use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
        use nix::sys::stat::{fchmod, Mode};
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let _ = std::fs::remove_file(&path);
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        fchmod(&fd, Mode::from_bits_truncate(0o600))?;
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path)?)?;
        let socket = UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd))?;
        Ok(Self { socket, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for `READY=1` from one of `child`'s processes; datagrams from anyone else
    /// are ignored (logged within a budget).
    async fn wait_ready(&self, child: &ChildProcesses) -> io::Result<()> {
        let mut buf = vec![0u8; 4096];
        let mut strangers = LogBudget::default();
        loop {
            let (n, sender) = self
                .socket
                .async_io(Interest::READABLE, || {
                    receive_with_sender(self.socket.as_raw_fd(), &mut buf)
                })
                .await?;
            let verdict = match sender {
                Some(pid) => child.check_sender(pid).map_err(|e| e.to_string()),
                None => Err("no sender credentials".to_owned()),
            };
            if let Err(why) = verdict {
                if let Some(suppressed) = strangers.take() {
                    tracing::warn!(socket = %self.path.display(), reason = %why, suppressed, "notify: ignoring a datagram that is not from the child");
                }
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l.trim() == "READY=1") {
                return Ok(());
            }
        }
    }
}

/// Receives one datagram into `buf`: its length and the sender's pid (SCM_CREDENTIALS).
fn receive_with_sender(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    let mut space = nix::cmsg_space!(UnixCredentials);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let sender = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(creds) => u32::try_from(creds.pid()).ok(),
            _ => None,
        })
    });
    Ok((msg.bytes, sender))
}

/// Creates `dir` (and missing parents) 0700, or makes an existing one 0700.
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a folder", dir.display()),
        ));
    }
    // Group search only (0710: a child's handoff folder, whose group is the child's) is
    // no way in for anyone else; any other group or other bit is.
    if meta.permissions().mode() & 0o067 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Waits until a connect to `addr` succeeds and the listener is `child`'s; `last` keeps
/// why the last connect that succeeded did not count.
async fn tcp_ready(addr: &str, child: &ChildProcesses, last: &mut Option<String>) {
    let mut pause = Duration::from_millis(10);
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let target = stream.peer_addr();
            drop(stream);
            let verdict = match target {
                Ok(target) => {
                    let child = child.clone();
                    tokio::task::spawn_blocking(move || listener::held_by_child(target, &child))
                        .await
                        .unwrap_or_else(|e| Err(format!("the listener check failed: {e}")))
                }
                Err(e) => Err(format!("cannot read the connection's address: {e}")),
            };
            match verdict {
                Ok(()) => return,
                Err(why) => *last = Some(why),
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Waits until the check passes for the run whose processes are `child`; `Err` says why
/// it did not.
pub(crate) async fn wait(
    check: ReadyCheck,
    notify: Option<NotifySocket>,
    child: ChildProcesses,
) -> Result<(), String> {
    match check {
        ReadyCheck::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        ReadyCheck::Tcp { addr, timeout } => {
            let mut last = None;
            let passed = tokio::time::timeout(timeout, tcp_ready(&addr, &child, &mut last)).await;
            passed.map_err(|_| match last {
                Some(why) => format!(
                    "tcp {addr}: not the child's listener after {}: {why}",
                    humantime_like(timeout)
                ),
                None => format!(
                    "tcp {addr} not accepting connections after {}",
                    humantime_like(timeout)
                ),
            })
        }
        ReadyCheck::Notify { timeout, .. } => {
            let Some(socket) = notify else {
                return Err("notify socket missing".to_owned());
            };
            match tokio::time::timeout(timeout, socket.wait_ready(&child)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("notify socket {}: {e}", socket.path().display())),
                Err(_) => Err(format!(
                    "no READY=1 on $NOTIFY_SOCKET within {}",
                    humantime_like(timeout)
                )),
            }
        }
    }
}

fn humantime_like(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
