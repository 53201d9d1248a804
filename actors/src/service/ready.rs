//! Ready checks: when a started service counts as `running`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpStream, UnixDatagram};

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
    /// Binds a fresh datagram socket at `path` (replacing a stale file).
    pub(crate) fn bind(path: PathBuf) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        Ok(Self { socket, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    async fn wait_ready(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).await?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l.trim() == "READY=1") {
                return Ok(());
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn tcp_ready(addr: &str) {
    let mut pause = Duration::from_millis(10);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Waits until the check passes; `Err` says why it did not.
pub(crate) async fn wait(check: ReadyCheck, notify: Option<NotifySocket>) -> Result<(), String> {
    match check {
        ReadyCheck::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        ReadyCheck::Tcp { addr, timeout } => tokio::time::timeout(timeout, tcp_ready(&addr))
            .await
            .map_err(|_| {
                format!(
                    "tcp {addr} not accepting connections after {}",
                    humantime_like(timeout)
                )
            }),
        ReadyCheck::Notify { timeout, .. } => {
            let Some(socket) = notify else {
                return Err("notify socket missing".to_owned());
            };
            match tokio::time::timeout(timeout, socket.wait_ready()).await {
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
