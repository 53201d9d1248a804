//! `warden up` under a service manager: it sends `READY=1` on `$NOTIFY_SOCKET` once every
//! child of the tree is running (not before), and `STOPPING=1` when a graceful stop
//! begins, so that a systemd unit with `Type=notify` (docs/operations.md) is `active`
//! exactly when the tree is up.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use support::{temp_dir, Warden};

fn receive(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn up_says_ready_once_the_tree_runs_and_stopping_when_it_stops() {
    let dir = temp_dir();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the manager's socket");
    let body = r#"
[[service]]
name = "slow"
command = ["sleep", "1000"]
ready = { delay = "1500ms" }
"#;
    let socket_text = socket_path.to_str().expect("utf-8 path").to_owned();
    let mut warden = Warden::start_in_env(dir, body, &[("NOTIFY_SOCKET", &socket_text)]);
    // Not before the child is ready: the delay holds it in `starting` for 1.5 s.
    let ready = receive(&socket, Duration::from_secs(20)).expect("READY=1 within 20 s");
    assert!(ready.lines().any(|l| l == "READY=1"), "got {ready:?}");
    assert_eq!(
        warden.state("/slow"),
        "running",
        "READY=1 came before the tree was up"
    );
    let status = warden.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let stopping = receive(&socket, Duration::from_secs(5)).expect("STOPPING=1");
    assert_eq!(stopping, "STOPPING=1");
}

#[test]
fn an_abstract_notify_socket_is_reached_too() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("warden-test-notify-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let socket = UnixDatagram::bind_addr(&address).expect("bind an abstract socket");
    let body = "[[service]]\nname = \"a\"\ncommand = [\"sleep\", \"1000\"]\n";
    let mut warden =
        Warden::start_in_env(temp_dir(), body, &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    let ready = receive(&socket, Duration::from_secs(20)).expect("READY=1 within 20 s");
    assert!(ready.starts_with("READY=1"), "got {ready:?}");
    warden.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
}
