//! Security: authenticated peers (issue 10). Each test performs an attack on one of
//! warden's local sockets and shows it fails:
//!
//! - `control.sock` serves warden's own uid and root only (SO_PEERCRED), closes a
//!   connection that never says hello, caps concurrent connections, and never allocates
//!   a frame from its length prefix alone;
//! - an outboard child's socket accepts only a process of that child's process group whose
//!   pid is the one in its hello; a second hello for a connected child (even with the
//!   right token) leaves the connected one alone; a Pong with a wrong sequence number is
//!   no heartbeat; connections are capped; a child cannot flood warden's log;
//! - an sd_notify `READY=1` counts only from the child's own processes;
//! - a TCP ready check counts only a listener held by the child's own processes.
//!
//! Connections made "from another process" go through `support::fd_relay`: a Python relay
//! connects (so the kernel records it as the peer) and hands the fd to the test.
mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fd_relay::{
    connect_as, connection_from_relay, outboard_relay_command, relay_socket, write_relay,
};
use support::*;
use warden::control::protocol::{ClientFrame, ServerFrame, PROTOCOL_VERSION};
use warden::control::socket::{HELLO_WITHIN, MAX_CONNECTIONS as CONTROL_MAX_CONNECTIONS};
use warden_actors::OUTBOARD_MAX_CONNECTIONS;
use warden_supervisors::ipc::{ChildMessage, OutboardConfigFile, SupervisorMessage, IPC_PROTOCOL};
use warden_supervisors::wire::{self, FrameError, MAX_FRAME};

/// Deadline for anything that should happen promptly.
const T: Duration = Duration::from_secs(15);

/// The uid and gid of `nobody` / `nogroup`.
const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------
// The control socket.

const TREE: &str = "[[service]]\nname = \"solo\"\ncommand = [\"sleep\", \"1000\"]\n";

fn control_socket(w: &Warden) -> PathBuf {
    w.path("state/control.sock")
}

fn send_control(s: &mut UnixStream, frame: &ClientFrame) -> Result<(), FrameError> {
    let payload = wire::encode(frame).expect("encode");
    wire::write_frame_blocking(s, &payload, MAX_FRAME)
}

/// The next frame from warden; `None` when warden closed the connection (EOF or reset).
fn receive_control(s: &mut UnixStream) -> Option<ServerFrame> {
    match wire::read_frame_blocking(s, MAX_FRAME) {
        Ok(Some(payload)) => Some(wire::decode(&payload).expect("a server frame")),
        Ok(None) => None,
        Err(FrameError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => None,
        Err(e) => panic!("reading from the control socket: {e}"),
    }
}

fn control_hello() -> ClientFrame {
    ClientFrame::Hello {
        protocol: PROTOCOL_VERSION,
        client: "security_peers".to_owned(),
    }
}

fn connect_control(w: &Warden) -> UnixStream {
    let s = UnixStream::connect(control_socket(w)).expect("connect to control.sock");
    s.set_read_timeout(Some(T)).expect("read timeout");
    s.set_write_timeout(Some(T)).expect("write timeout");
    s
}

/// A control connection that said hello and was welcomed.
fn welcomed_control(w: &Warden) -> UnixStream {
    let mut s = connect_control(w);
    send_control(&mut s, &control_hello()).expect("hello");
    match receive_control(&mut s) {
        Some(ServerFrame::Welcome { .. }) => s,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Makes `path` and every folder above it that the test created reachable by others (as a
/// mistaken `chmod` would), so that only the peer-credential check stands in the way.
fn open_up(w: &Warden, path: &Path, mode: u32) {
    for dir in [w.dir.path().to_owned(), w.path("state")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Promise: control.sock serves warden's own uid and root only. Even with the socket made
/// world-writable, a client running as `nobody` is closed without a welcome, and warden
/// logs one line naming its uid and pid. (Before: it was welcomed and could stop anything.)
#[test]
fn a_control_client_of_another_uid_is_refused_even_when_the_socket_mode_lets_it_in() {
    let w = Warden::start(TREE);
    w.wait_state("solo", "running", T);
    let relay = write_relay(w.dir.path());
    open_up(&w, &control_socket(&w), 0o666);

    let mut stranger =
        connect_as(&relay, NOBODY, NOBODY, &control_socket(&w)).expect("nobody can connect");
    stranger.set_read_timeout(Some(T)).unwrap();
    // Writing may already fail: the connection is closed at once.
    let _ = send_control(&mut stranger, &control_hello());
    match receive_control(&mut stranger) {
        None => {}
        Some(frame) => panic!("a client of uid {NOBODY} got an answer: {frame:?}"),
    }
    wait_until("warden logs the refused uid", T, || {
        without_ansi(&w.stderr_text())
            .lines()
            .any(|l| l.contains("control socket") && l.contains(&format!("uid={NOBODY}")))
    });
    // warden's own uid (root here) is still served.
    drop(welcomed_control(&w));
    assert_eq!(w.state("solo"), "running");
}

/// `text` without its ANSI colour sequences.
fn without_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Promise: a control connection that never says hello is closed after HELLO_WITHIN.
/// (Before: it was held open for ever, pinning an fd.)
#[test]
fn a_control_connection_that_never_says_hello_is_closed_within_the_hello_timeout() {
    let w = Warden::start(TREE);
    let mut silent = connect_control(&w);
    let started = Instant::now();
    silent
        .set_read_timeout(Some(HELLO_WITHIN + Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    match silent.read(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the silent connection was not closed: {e}"),
    }
    let took = started.elapsed();
    assert!(
        took >= HELLO_WITHIN - Duration::from_millis(500) && took < HELLO_WITHIN + T / 3,
        "closed after {took:?}, want about {HELLO_WITHIN:?}"
    );
    drop(welcomed_control(&w));
}

/// Promise: at most CONTROL_MAX_CONNECTIONS control connections at once; one more is
/// refused with an error frame, and a slot freed is usable again. (Before: no cap.)
#[test]
fn control_connections_over_the_cap_are_refused_cleanly_and_slots_come_back() {
    let w = Warden::start(TREE);
    let mut held: Vec<UnixStream> = (0..CONTROL_MAX_CONNECTIONS)
        .map(|_| welcomed_control(&w))
        .collect();
    let mut extra = connect_control(&w);
    let _ = send_control(&mut extra, &control_hello());
    match receive_control(&mut extra) {
        Some(ServerFrame::Error { message }) => {
            assert!(message.contains("connections"), "error frame: {message:?}")
        }
        other => {
            panic!("connection {CONTROL_MAX_CONNECTIONS} + 1: expected an error, got {other:?}")
        }
    }
    assert!(
        receive_control(&mut extra).is_none(),
        "closed after the error"
    );
    // The HTTP API still answers, and a freed slot serves again.
    assert_eq!(w.state("solo"), "running");
    drop(held.pop());
    wait_for("a freed slot serves a new client", T, || {
        let mut s = connect_control(&w);
        send_control(&mut s, &control_hello()).ok()?;
        matches!(receive_control(&mut s), Some(ServerFrame::Welcome { .. })).then_some(())
    });
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Promise: a length prefix costs nothing until its bytes arrive. A 4 GiB prefix is
/// refused at once; connections that each announce a frame just under the 1 MiB maximum
/// and send one byte leave warden's memory flat, and warden answers throughout.
#[test]
fn huge_length_prefixes_are_refused_or_cost_nothing_until_their_bytes_arrive() {
    let w = Warden::start(TREE);
    w.wait_state("solo", "running", T);
    let mut s = welcomed_control(&w);
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    match receive_control(&mut s) {
        Some(ServerFrame::Error { message }) => {
            assert!(message.contains("maximum"), "error frame: {message:?}")
        }
        other => panic!("a 4 GiB prefix: expected an error frame, got {other:?}"),
    }
    let before = rss_kib(w.pid());
    let stalled: Vec<UnixStream> = (0..CONTROL_MAX_CONNECTIONS - 1)
        .map(|_| {
            let mut s = welcomed_control(&w);
            let mut announce = ((MAX_FRAME - 1) as u32).to_be_bytes().to_vec();
            announce.push(0x80);
            s.write_all(&announce).unwrap();
            s
        })
        .collect();
    // Every announced frame waits; warden still answers.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.state("solo"), "running");
    let grown = rss_kib(w.pid()).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "{} stalled 1 MiB frames grew warden's RSS by {grown} KiB",
        stalled.len()
    );
}

// ---------------------------------------------------------------------------------------
// Outboard children.

/// An `[[outboard]]` child played by the test: its process is the fd relay, which makes
/// connections to its outboard socket when the test asks.
fn played_entry(name: &str, extra: &str) -> String {
    format!(
        "[[outboard]]\nname = \"{name}\"\ncommand = {}\n{extra}\n\n",
        outboard_relay_command()
    )
}

/// Starts warden with the played children `(name, extra config)`; all running.
fn start_played(children: &[(&str, &str)]) -> Warden {
    let body: String = children
        .iter()
        .map(|(name, extra)| played_entry(name, extra))
        .collect();
    let w = Warden::start(&body);
    for (name, _) in children {
        w.wait_state(name, "running", T);
    }
    w
}

fn outboard_config(w: &Warden, name: &str) -> OutboardConfigFile {
    let file = w.path(&format!("state/handoff/{name}/outboard.json"));
    let mut cfg: OutboardConfigFile = wait_for("the outboard config", T, || {
        serde_json::from_slice(&std::fs::read(&file).ok()?).ok()
    });
    if cfg.socket.is_relative() {
        // Beside the config file, as the child library finds it.
        cfg.socket = file.parent().expect("folder").join(&cfg.socket);
    }
    cfg
}

/// A connection to `name`'s outboard socket made by the child's own process (the relay);
/// returns it and the child's pid.
fn from_child(w: &Warden, name: &str) -> (UnixStream, u32) {
    let config_file = w.path(&format!("state/handoff/{name}/outboard.json"));
    connection_from_relay(&relay_socket(&config_file), T)
}

fn child_hello(token: &str, app_version: u32, pid: u32) -> ChildMessage {
    ChildMessage::Hello {
        protocol: IPC_PROTOCOL,
        token: token.to_owned(),
        app_version,
        pid,
    }
}

fn send_msg(s: &mut UnixStream, message: &ChildMessage) {
    let payload = wire::encode(message).expect("encode");
    wire::write_frame_blocking(s, &payload, MAX_FRAME).expect("write frame");
}

/// The next message from warden; `None` when warden closed the connection.
fn recv_msg(s: &mut UnixStream) -> Option<SupervisorMessage> {
    match wire::read_frame_blocking(s, MAX_FRAME) {
        Ok(Some(payload)) => Some(wire::decode(&payload).expect("a supervisor message")),
        Ok(None) => None,
        Err(FrameError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => None,
        Err(e) => panic!("reading from warden: {e}"),
    }
}

fn expect_refused(s: &mut UnixStream, what: &str) -> String {
    let message = match recv_msg(s) {
        Some(SupervisorMessage::Error { message }) => message,
        other => panic!("{what}: expected an error frame, got {other:?}"),
    };
    assert!(recv_msg(s).is_none(), "{what}: not closed after the error");
    message
}

/// A connection of the child itself that said a correct hello and was welcomed.
fn welcomed_child(w: &Warden, name: &str) -> UnixStream {
    let cfg = outboard_config(w, name);
    let (mut s, pid) = from_child(w, name);
    send_msg(&mut s, &child_hello(&cfg.token, 1, pid));
    match recv_msg(&mut s) {
        Some(SupervisorMessage::Welcome { .. }) => s,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Serves one call on a welcomed connection (answering pings meanwhile) while
/// `POST .../call` is made from another thread; returns the HTTP status.
fn call_through(w: &Warden, s: &mut UnixStream, name: &str) -> u16 {
    let (port, token) = (w.port, w.token());
    let path = format!("/api/v1/actors/{name}/call");
    let client = std::thread::spawn(move || {
        http(port, "POST", &path, Some(&token), Some(b"{\"q\":1}"))
            .expect("call")
            .status
    });
    loop {
        match recv_msg(s) {
            Some(SupervisorMessage::Call { id, body }) => {
                send_msg(
                    s,
                    &ChildMessage::Reply {
                        id,
                        result: Ok(body),
                    },
                );
                break;
            }
            Some(SupervisorMessage::Ping { seq }) => send_msg(s, &ChildMessage::Pong { seq }),
            other => panic!("expected a call, got {other:?}"),
        }
    }
    client.join().expect("client thread")
}

fn restarts(a: &Value) -> u64 {
    a["restarts"].as_u64().unwrap_or(u64::MAX)
}

/// Promise: a second hello for a connected child, even from the child's own process
/// group with the right token (and an app version that would be fatal), is refused as
/// "already connected" and leaves the connected child running and connected.
/// (Before: the version was judged first, so the real child was stopped and `failed`.)
#[test]
fn a_second_hello_with_the_right_token_leaves_the_connected_child_running_and_connected() {
    let w = start_played(&[("fake", "heartbeat = \"600s\"")]);
    let a = w.actor("fake");
    let mut first = welcomed_child(&w, "fake");

    let cfg = outboard_config(&w, "fake");
    let (mut second, pid) = from_child(&w, "fake");
    send_msg(&mut second, &child_hello(&cfg.token, 999, pid));
    let message = expect_refused(&mut second, "a second hello");
    assert!(message.contains("already connected"), "{message:?}");

    holds_for(
        "the connected child keeps running",
        Duration::from_secs(1),
        || {
            let now = w.actor("fake");
            now["state"] == "running" && now["pid"] == a["pid"] && restarts(&now) == 0
        },
    );
    assert_eq!(
        call_through(&w, &mut first, "fake"),
        200,
        "the first link carries calls"
    );
}

/// Promise: an outboard connection from a process outside the child's process group is
/// refused at accept, even with the right token, and so is a hello whose pid is not the
/// connecting process's. (Before: the test process was welcomed as the child, and got
/// its calls.)
#[test]
fn an_outboard_connection_from_outside_the_childs_group_is_refused_even_with_the_right_token() {
    let w = start_played(&[("fake", "heartbeat = \"600s\"")]);
    let cfg = outboard_config(&w, "fake");

    let mut stranger = UnixStream::connect(&cfg.socket).expect("connect");
    stranger.set_read_timeout(Some(T)).unwrap();
    // The refusal may come before the hello is even read.
    let _ = wire::write_frame_blocking(
        &mut stranger,
        &wire::encode(&child_hello(&cfg.token, 1, std::process::id())).unwrap(),
        MAX_FRAME,
    );
    let message = expect_refused(&mut stranger, "a stranger with the token");
    assert!(message.contains("process group"), "{message:?}");

    // The child's own process, claiming another pid in its hello.
    let (mut liar, _) = from_child(&w, "fake");
    send_msg(&mut liar, &child_hello(&cfg.token, 1, std::process::id()));
    let message = expect_refused(&mut liar, "a hello naming another pid");
    assert!(message.contains("pid"), "{message:?}");

    // Nothing was harmed: the child itself connects and serves.
    let mut child = welcomed_child(&w, "fake");
    assert_eq!(call_through(&w, &mut child, "fake"), 200);
    assert_eq!(restarts(&w.actor("fake")), 0);
}

/// Promise: a Pong counts as a heartbeat only with the sequence number of a ping warden
/// sent. A child that answers every ping with a wrong number is restarted for missed
/// heartbeats. (Before: any Pong reset the count, so a replayed Pong{seq:0} kept a dead
/// child "alive".)
#[test]
fn a_pong_with_a_wrong_sequence_number_is_not_a_heartbeat() {
    let w = start_played(&[(
        "fake",
        "heartbeat = \"200ms\"\nmissed = 2\nrestart = { backoff = { initial = \"100ms\" } }",
    )]);
    let mut s = welcomed_child(&w, "fake");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let restarted = loop {
        match wire::read_frame_blocking(&mut s, MAX_FRAME) {
            Ok(Some(payload)) => {
                if let Ok(SupervisorMessage::Ping { seq }) = wire::decode(&payload) {
                    let _ = wire::write_frame_blocking(
                        &mut s,
                        &wire::encode(&ChildMessage::Pong { seq: seq + 1000 }).unwrap(),
                        MAX_FRAME,
                    );
                    let _ = wire::write_frame_blocking(
                        &mut s,
                        &wire::encode(&ChildMessage::Pong { seq: 0 }).unwrap(),
                        MAX_FRAME,
                    );
                }
            }
            Ok(None) => {}
            Err(_) => {}
        }
        let a = w.actor("fake");
        if restarts(&a) >= 1 {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "answering with wrong Pong numbers kept the child alive: {a}"
        );
    };
    let reason = restarted["last_exit"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("heartbeat"), "{restarted}");
}

/// Promise: at most OUTBOARD_MAX_CONNECTIONS connections wait on one child's socket;
/// more are refused, and the child still connects once they are gone. (Before: no cap.)
#[test]
fn outboard_connections_over_the_cap_are_refused() {
    let w = start_played(&[("fake", "heartbeat = \"600s\"")]);
    let held: Vec<UnixStream> = (0..OUTBOARD_MAX_CONNECTIONS)
        .map(|_| from_child(&w, "fake").0)
        .collect();
    let (mut extra, _) = from_child(&w, "fake");
    let message = expect_refused(&mut extra, "one connection over the cap");
    assert!(message.contains("connections"), "{message:?}");
    drop(held);
    let mut child = wait_for("a slot is free again", T, || {
        let cfg = outboard_config(&w, "fake");
        let (mut s, pid) = from_child(&w, "fake");
        send_msg(&mut s, &child_hello(&cfg.token, 1, pid));
        matches!(recv_msg(&mut s), Some(SupervisorMessage::Welcome { .. })).then_some(s)
    });
    assert_eq!(call_through(&w, &mut child, "fake"), 200);
}

/// Promise: a child cannot flood warden's log: what it reports is cut short, escaped (no
/// forged log lines) and rate-limited. (Before: 200 error frames of 64 KiB with newlines
/// went into warden's log verbatim, 12.8 MB of it.)
#[test]
fn an_outboard_child_cannot_flood_warden_log_nor_forge_lines_in_it() {
    let w = start_played(&[("fake", "heartbeat = \"600s\"")]);
    let mut s = welcomed_child(&w, "fake");
    let junk = format!("{}\nFORGED line from the child\n", "x".repeat(64 * 1024));
    for _ in 0..200 {
        send_msg(
            &mut s,
            &ChildMessage::Error {
                message: junk.clone(),
            },
        );
    }
    // The link is still there and warden answers.
    assert_eq!(call_through(&w, &mut s, "fake"), 200);
    let log = w.stderr_text();
    assert!(
        log.len() < 256 * 1024,
        "warden's log grew to {} bytes from one child's error frames",
        log.len()
    );
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "the child forged a line in warden's log"
    );
    assert!(
        log.contains("the child reported an error"),
        "the first ones are logged"
    );
}

// ---------------------------------------------------------------------------------------
// sd_notify.

/// Promise: `READY=1` counts only from a process of the child's own process group; the
/// notify socket is 0600 in a 0700 folder. A stranger's READY=1 leaves the service
/// `starting` until its ready timeout. (Before: anyone who could write the socket made
/// it ready.)
#[test]
fn an_sd_notify_ready_from_a_stranger_does_not_make_the_service_ready() {
    let w = Warden::start(
        "[[service]]\nname = \"n\"\ncommand = [\"sleep\", \"1000\"]\n\
         ready = { notify = true, timeout = \"3s\" }\n",
    );
    let a = w.wait_state("n", "starting", T);
    let pid = a["pid"].as_u64().expect("pid") as u32;
    let path = wait_for("NOTIFY_SOCKET in the child's environment", T, || {
        warden_actors::proc::environ_var(pid, "NOTIFY_SOCKET")
    });
    // The child reaches it through a folder it inherited (`/proc/self/fd/N/...`).
    let path = path.replacen("/proc/self/", &format!("/proc/{pid}/"), 1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "notify socket mode");
    let dir = Path::new(&path).parent().unwrap();
    let dir_mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        dir_mode & 0o067,
        0,
        "notify folder mode {dir_mode:04o}: at most the child's group may search it"
    );

    let stranger = UnixDatagram::unbound().unwrap();
    stranger.send_to(b"READY=1\n", &path).expect("send READY=1");
    holds_for(
        "a stranger's READY=1 is ignored",
        Duration::from_millis(1500),
        || {
            let a = w.actor("n");
            a["state"] == "starting" && restarts(&a) == 0
        },
    );
    // The ready timeout follows, as if nothing had been sent.
    let a = wait_for("restarted after its ready timeout", T, || {
        let a = w.actor("n");
        (restarts(&a) >= 1).then_some(a)
    });
    assert!(
        a["last_exit"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("READY=1"),
        "{a}"
    );
}

// ---------------------------------------------------------------------------------------
// TCP ready checks.

/// Promise (finding 10): a TCP ready check passes only when the listener is held by a
/// process of the child's group. A port squatted by another process does not make a
/// service `running`; a child that listens itself does become `running`.
/// (Before: any listener on the port made the child running at once.)
#[test]
fn a_tcp_ready_check_is_not_passed_by_another_process_listening_on_the_port() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let squatted = squatter.local_addr().unwrap().port();
    let free = free_port();
    let listener = format!(
        "import socket, time; s = socket.socket(); \
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         s.bind(('127.0.0.1', {free})); s.listen(); time.sleep(1000)"
    );
    // honest first: a child that has not yet been running holds back those after it.
    let body = format!(
        "[[service]]\nname = \"honest\"\ncommand = [\"sh\", \"-c\", {}]\n\
         ready = {{ tcp = \"127.0.0.1:{free}\", timeout = \"10s\" }}\n\n\
         [[service]]\nname = \"victim\"\ncommand = [\"sleep\", \"1000\"]\n\
         ready = {{ tcp = \"127.0.0.1:{squatted}\", timeout = \"2s\" }}\n",
        toml_str(&format!("exec python3 -c {}", sh_quote(&listener)))
    );
    let w = Warden::start(&body);
    // A child that listens itself passes.
    w.wait_state("honest", "running", T);
    w.wait_state("victim", "starting", T);
    holds_for(
        "the squatted port does not make victim running",
        Duration::from_millis(1500),
        || w.actor("victim")["state"] == "starting",
    );
    let a = wait_for("victim restarted after its ready timeout", T, || {
        let a = w.actor("victim");
        (restarts(&a) >= 1).then_some(a)
    });
    let reason = a["last_exit"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains(&squatted.to_string()), "{a}");
    drop(squatter);
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
