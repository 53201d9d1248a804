//! Tells the service manager that started warden how it is doing (systemd's sd_notify
//! protocol): `READY=1` once the tree is up, `STOPPING=1` when a graceful stop begins,
//! so that a unit with `Type=notify` is `active` only once every child is running.
//!
//! The message is one datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace), sent without blocking; without the variable nothing is sent. Children
//! never inherit warden's `NOTIFY_SOCKET` (see `warden_actors::service`), so only warden
//! speaks for itself.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The variable that names the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (such as `"READY=1"`) to `$NOTIFY_SOCKET`; `Ok(false)` when warden was
/// not started by a service manager that listens.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let bytes = target.as_encoded_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            socket.send_to(state.as_bytes(), &target)?;
        }
    }
    Ok(true)
}

/// [`notify`], logging a failure instead of returning it: the service manager's view is
/// worth a warning, never a failure of warden.
pub fn tell(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state, "told the service manager"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(state, error = %e, "cannot tell the service manager ($NOTIFY_SOCKET)")
        }
    }
}
