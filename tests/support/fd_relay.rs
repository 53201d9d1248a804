//! Connections whose peer is another process: a small Python relay connects to a unix
//! socket and hands the connected fd to the test over SCM_RIGHTS. The kernel records the
//! peer credentials (pid, uid) of a unix connection at `connect()`, so warden sees the
//! relay as the peer while the test speaks on the connection. Used to play an outboard
//! child from inside its process group (the relay is the child's own process) and to
//! connect as another user (the relay runs with another uid).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The relay. `serve` (as an outboard child's command): listens on
/// `$WARDEN_OUTBOARD_CONFIG.relay` and, for each connection, connects to the socket named
/// in `$WARDEN_OUTBOARD_CONFIG` and hands the fd over with its own pid. `once TARGET`: stdin is a unix socket to the test; connects
/// to TARGET once and hands the fd over the same way. A failed connect sends `E<error>`.
pub const RELAY_PY: &str = r#"
import json, os, socket, sys

def target(mode):
    if mode == "serve":
        config = os.environ["WARDEN_OUTBOARD_CONFIG"]
        with open(config) as f:
            # A relative socket is beside the config file, as the child library finds it.
            return os.path.join(os.path.dirname(config), json.load(f)["socket"])
    return sys.argv[2]

def hand_over(conn, mode):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(target(mode))
        socket.send_fds(conn, [str(os.getpid()).encode()], [s.fileno()])
    except OSError as e:
        conn.sendall(("E" + str(e)).encode())
    s.close()

mode = sys.argv[1]
if mode == "serve":
    path = os.environ["WARDEN_OUTBOARD_CONFIG"] + ".relay"
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        hand_over(conn, mode)
        conn.close()
else:
    hand_over(socket.socket(fileno=0), mode)
"#;

/// A TOML `command` array that runs the relay as an outboard child (`serve`).
pub fn outboard_relay_command() -> String {
    format!(
        "[\"python3\", \"-c\", {}, \"serve\"]",
        super::toml_str(RELAY_PY)
    )
}

/// Where the relay of the outboard child whose config file is `config_file` listens.
pub fn relay_socket(config_file: &Path) -> PathBuf {
    let mut path = config_file.as_os_str().to_owned();
    path.push(".relay");
    PathBuf::from(path)
}

/// Writes the relay script into `dir` (readable by every user) and returns its path.
pub fn write_relay(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fd_relay.py");
    std::fs::write(&path, RELAY_PY).expect("write the relay script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod relay");
    path
}

/// Receives what the relay sends on `from`: the connected stream and the relay's pid, or
/// the relay's error.
pub fn receive_connection(from: &UnixStream) -> Result<(UnixStream, u32), String> {
    let mut data = [0u8; 256];
    let mut space = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = space.len() as _;
    // SAFETY: recvmsg on a valid socket with the buffers described above.
    let n = unsafe { libc::recvmsg(from.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return Err(format!(
            "the relay sent nothing: {}",
            std::io::Error::last_os_error()
        ));
    }
    let text = String::from_utf8_lossy(&data[..n as usize]).into_owned();
    // SAFETY: walking the control messages the kernel filled in.
    let mut fd = None;
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    match fd {
        Some(fd) => {
            let pid = text
                .trim()
                .parse()
                .map_err(|_| format!("bad pid {text:?}"))?;
            Ok((UnixStream::from(fd), pid))
        }
        None => Err(text.trim_start_matches('E').to_owned()),
    }
}

/// Asks the relay serving at `relay_socket` (an outboard child's own process) for a new
/// connection to its outboard socket; retries until the relay listens (bounded).
pub fn connection_from_relay(relay_socket: &Path, timeout: Duration) -> (UnixStream, u32) {
    let asked = super::wait_for(
        &format!("the relay at {} to answer", relay_socket.display()),
        timeout,
        || UnixStream::connect(relay_socket).ok(),
    );
    let (stream, pid) = receive_connection(&asked).expect("a connection from the relay");
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(timeout))
        .expect("write timeout");
    (stream, pid)
}

/// Runs the relay once as `uid`:`gid` (with no supplementary groups) to connect to
/// `target`; returns the connection, or the relay's error (e.g. permission denied).
pub fn connect_as(relay: &Path, uid: u32, gid: u32, target: &Path) -> Result<UnixStream, String> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    // The system's python: a per-user shim (pyenv under /root) is not for other users.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .unwrap_or("python3");
    let mut child = Command::new(python)
        .arg(relay)
        .arg("once")
        .arg(target)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .uid(uid)
        .gid(gid)
        .spawn()
        .expect("spawn the relay");
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let got = receive_connection(&ours);
    let _ = child.wait();
    if got.is_err() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return got.map(|(s, _)| s).map_err(|e| format!("{e} {err}"));
    }
    got.map(|(s, _)| s)
}
