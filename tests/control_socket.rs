//! Black-box tests of the local control socket of `warden up` (`state_dir/control.sock`):
//! its mode, the hello handshake, requests and replies, and robustness against clients
//! that send junk, truncated, oversized or undecodable frames. A bad connection gets an
//! `error` frame where possible and is closed; warden and every other connection carry on.
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;
use warden::control::client::Client;
use warden::control::protocol::{
    ClientFrame, FailureKind, Request, Response, ServerFrame, PROTOCOL_VERSION,
};
use warden_supervisors::wire::{self, MAX_FRAME};

const T: Duration = Duration::from_secs(10);

const TREE: &str = r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "solo"
command = ["sleep", "1000"]
"#;

fn socket_path(w: &Warden) -> PathBuf {
    w.path("state/control.sock")
}

fn start_tree() -> Warden {
    let w = Warden::start(TREE);
    w.wait_state("/app/api", "running", T);
    w.wait_state("/solo", "running", T);
    w
}

/// A raw connection to the control socket, with read and write timeouts.
fn connect(w: &Warden) -> UnixStream {
    let s = UnixStream::connect(socket_path(w)).expect("connect to the control socket");
    s.set_read_timeout(Some(T)).expect("read timeout");
    s.set_write_timeout(Some(T)).expect("write timeout");
    s
}

fn send(s: &mut UnixStream, frame: &ClientFrame) {
    let payload = wire::encode(frame).expect("encode");
    wire::write_frame_blocking(s, &payload, MAX_FRAME).expect("write frame");
}

/// Reads one server frame; panics on a timeout, a bad frame or the end of the stream.
fn receive(s: &mut UnixStream) -> ServerFrame {
    let payload = wire::read_frame_blocking(s, MAX_FRAME)
        .expect("read a frame")
        .expect("a frame before the end of the stream");
    wire::decode(&payload).expect("a server frame")
}

fn hello(protocol: u32) -> ClientFrame {
    ClientFrame::Hello {
        protocol,
        client: "control_socket test".to_owned(),
    }
}

/// A raw connection that has been welcomed.
fn welcomed(w: &Warden) -> UnixStream {
    let mut s = connect(w);
    send(&mut s, &hello(PROTOCOL_VERSION));
    match receive(&mut s) {
        ServerFrame::Welcome { protocol, .. } => assert_eq!(protocol, PROTOCOL_VERSION),
        other => panic!("expected welcome, got {other:?}"),
    }
    s
}

/// Reads what the server sends until it closes the connection (EOF, or a reset when it
/// closed with our bytes unread); answers the error message of the `error` frame it sent
/// first, if any. Panics if the connection stays open past the deadline.
fn error_then_closed(s: &mut UnixStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let deadline = Instant::now() + T;
    let mut raw = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "the server did not close the connection; got {} bytes",
                    raw.len()
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                break
            }
            Err(e) => panic!("reading from the control socket: {e}"),
        }
    }
    if raw.is_empty() {
        return None;
    }
    let payload = wire::read_frame_blocking(&mut raw.as_slice(), MAX_FRAME)
        .expect("a whole frame")
        .expect("a frame");
    assert_eq!(
        raw.len(),
        4 + payload.len(),
        "nothing follows the error frame"
    );
    match wire::decode::<ServerFrame>(&payload).expect("a server frame") {
        ServerFrame::Error { message } => {
            assert!(!message.is_empty(), "the error frame says why");
            Some(message)
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// Asks Status with the Rust client and checks the answer lists the tree.
fn assert_answers(client: &mut Client, when: &str) {
    match client.ask(Request::Status) {
        Ok(Ok(Response::Actors(views))) => {
            let paths: Vec<String> = views.iter().map(|v| v.info.path.to_string()).collect();
            assert_eq!(paths, ["/app", "/app/api", "/solo"], "{when}");
        }
        other => panic!("{when}: Status answered {other:?}"),
    }
}

/// Runs `attack` on a fresh raw connection while another client, connected before it,
/// gets answers before, during and after; then checks warden still serves HTTP and new
/// socket clients. Answers the error message the attacked connection got, if any.
fn survives(w: &Warden, attack: impl FnOnce(&mut UnixStream, &mut Client)) -> Option<String> {
    survives_timed(w, attack).0
}

/// As [`survives`], also giving the time from the end of the attack until the error
/// frame (or the close) arrived.
fn survives_timed(
    w: &Warden,
    attack: impl FnOnce(&mut UnixStream, &mut Client),
) -> (Option<String>, Duration) {
    let mut bystander = Client::connect_socket(&socket_path(w)).expect("bystander connects");
    assert_answers(&mut bystander, "bystander before the attack");
    let mut bad = connect(w);
    attack(&mut bad, &mut bystander);
    let attacked = Instant::now();
    let message = error_then_closed(&mut bad);
    let took = attacked.elapsed();
    assert_answers(&mut bystander, "bystander after the attack");
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(h.status, 200, "/healthz after the attack: {}", h.text());
    let mut newcomer = Client::connect_socket(&socket_path(w)).expect("a new client connects");
    assert_answers(&mut newcomer, "a new client after the attack");
    (message, took)
}

/// A `/proc/PID/status` field in KiB (`VmHWM`: peak resident memory, `VmPeak`: peak
/// virtual memory).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// SEMANTICS #21 "a 4 GiB length prefix costs nothing": refused within 500 ms, naming
/// the length, while warden's peak resident memory grows by less than 8 MiB and its
/// peak virtual memory by less than 1 GiB (a 4 GiB buffer would show there even
/// untouched).
fn assert_4_gib_prefix_costs_nothing(after_handshake: bool) {
    let w = start_tree();
    let (hwm, peak) = (status_kib(w.pid(), "VmHWM"), status_kib(w.pid(), "VmPeak"));
    let (message, took) = survives_timed(&w, |bad, _| {
        if after_handshake {
            send(bad, &hello(PROTOCOL_VERSION));
            assert!(matches!(receive(bad), ServerFrame::Welcome { .. }));
        }
        // No payload follows and the write side stays open: the server must refuse on
        // the prefix alone, without waiting for (or allocating) 4 GiB.
        bad.write_all(&[0xFF; 4]).expect("write prefix");
    });
    let message = message.expect("an error frame");
    assert!(
        message.contains("4294967295") && message.contains("over the maximum"),
        "the error should name the length and the limit: {message}"
    );
    assert!(
        took < Duration::from_millis(500),
        "refused only after {took:?}"
    );
    let grew_rss = status_kib(w.pid(), "VmHWM").saturating_sub(hwm);
    let grew_virtual = status_kib(w.pid(), "VmPeak").saturating_sub(peak);
    assert!(grew_rss < 8 * 1024, "peak RSS grew by {grew_rss} KiB");
    assert!(
        grew_virtual < 1024 * 1024,
        "peak virtual memory grew by {grew_virtual} KiB"
    );
}

/// Deterministic pseudo-random bytes (xorshift).
fn junk(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn the_socket_file_exists_in_state_dir_with_mode_0600() {
    let w = start_tree();
    let meta = std::fs::metadata(socket_path(&w)).expect("control.sock exists");
    assert!(meta.file_type().is_socket(), "control.sock is a socket");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "mode {:o}",
        meta.permissions().mode() & 0o777
    );
}

#[test]
fn hello_with_the_right_protocol_is_welcomed_and_requests_get_replies_with_their_id() {
    let w = start_tree();
    let mut s = welcomed(&w);
    for id in [42u64, 7, u64::MAX] {
        send(
            &mut s,
            &ClientFrame::Request {
                id,
                request: Request::Health,
            },
        );
        match receive(&mut s) {
            ServerFrame::Reply {
                id: got,
                result: Ok(Response::Health(_)),
            } => assert_eq!(got, id),
            other => panic!("expected a health reply, got {other:?}"),
        }
    }
}

#[test]
fn a_request_before_hello_gets_an_error_frame_and_the_connection_is_closed() {
    let w = start_tree();
    let mut s = connect(&w);
    send(
        &mut s,
        &ClientFrame::Request {
            id: 1,
            request: Request::Status,
        },
    );
    let message = error_then_closed(&mut s).expect("an error frame");
    assert!(
        message.contains("hello"),
        "says hello comes first: {message}"
    );
}

#[test]
fn hello_with_protocol_999_gets_an_error_frame_naming_both_versions_and_is_closed() {
    let w = start_tree();
    let mut s = connect(&w);
    send(&mut s, &hello(999));
    let message = error_then_closed(&mut s).expect("an error frame");
    assert!(
        message.contains("999") && message.contains(&PROTOCOL_VERSION.to_string()),
        "names both versions: {message}"
    );
    // Clients that speak the right version are still served.
    let mut client = Client::connect_socket(&socket_path(&w)).expect("right version");
    assert_answers(&mut client, "a client with the right version");
}

#[test]
fn a_second_hello_gets_an_error_frame_and_the_connection_is_closed() {
    let w = start_tree();
    let mut s = welcomed(&w);
    send(&mut s, &hello(PROTOCOL_VERSION));
    let message = error_then_closed(&mut s).expect("an error frame");
    assert!(message.contains("hello"), "{message}");
}

#[test]
fn one_kib_of_random_junk_gets_an_error_frame_and_close_while_others_are_served() {
    let w = start_tree();
    let message = survives(&w, |bad, _| {
        bad.write_all(&junk(1024, 0x9E37_79B9_7F4A_7C15))
            .expect("write junk");
        // Whatever the junk announced, the server now reaches the end of it.
        bad.shutdown(Shutdown::Write).expect("shutdown");
    });
    let message = message.expect("an error frame");
    assert!(message.contains("bad frame"), "{message}");
}

#[test]
fn junk_after_a_valid_length_prefix_gets_an_error_frame_and_close_while_others_are_served() {
    let w = start_tree();
    let message = survives(&w, |bad, _| {
        let body = junk(1020, 42);
        bad.write_all(&(body.len() as u32).to_be_bytes())
            .expect("write length");
        bad.write_all(&body).expect("write junk");
    });
    let message = message.expect("an error frame");
    assert!(message.contains("bad frame"), "{message}");
}

#[test]
fn a_truncated_frame_gets_an_error_frame_and_close_while_others_are_served() {
    let w = start_tree();
    let message = survives(&w, |bad, bystander| {
        send(bad, &hello(PROTOCOL_VERSION));
        assert!(matches!(receive(bad), ServerFrame::Welcome { .. }));
        bad.write_all(&100u32.to_be_bytes()).expect("write length");
        bad.write_all(&[0x81; 10]).expect("write 10 bytes");
        // A half-sent frame holds up nobody else.
        assert_answers(bystander, "bystander while a frame is half sent");
        bad.shutdown(Shutdown::Write).expect("shutdown");
    });
    let message = message.expect("an error frame");
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn a_truncated_frame_from_a_client_that_goes_away_is_dropped_while_others_are_served() {
    let w = start_tree();
    let mut bystander = Client::connect_socket(&socket_path(&w)).expect("bystander connects");
    assert_answers(&mut bystander, "bystander before");
    {
        let mut bad = connect(&w);
        bad.write_all(&100u32.to_be_bytes()).expect("write length");
        bad.write_all(&[0u8; 10]).expect("write 10 bytes");
    } // closed entirely
    assert_answers(&mut bystander, "bystander after");
    let mut newcomer = Client::connect_socket(&socket_path(&w)).expect("a new client");
    assert_answers(&mut newcomer, "newcomer");
}

#[test]
fn a_4_gib_length_prefix_is_refused_at_once_while_others_are_served() {
    assert_4_gib_prefix_costs_nothing(true);
}

#[test]
fn a_4_gib_length_prefix_as_the_first_frame_is_refused_while_others_are_served() {
    assert_4_gib_prefix_costs_nothing(false);
}

#[test]
fn a_valid_frame_of_garbage_messagepack_gets_an_error_frame_and_close_while_others_are_served() {
    let w = start_tree();
    // 0xc1 is never used in MessagePack.
    let garbage = [0xc1u8, 0xc1, 0xff, 0x00, 0x13, 0x37];
    let message = survives(&w, |bad, _| {
        wire::write_frame_blocking(bad, &garbage, MAX_FRAME).expect("write");
    });
    let message = message.expect("an error frame");
    assert!(message.contains("bad frame"), "{message}");

    // After the handshake, well-formed MessagePack that is not a client frame.
    let not_a_frame =
        wire::encode(&serde_json::json!({ "type": "launch", "id": 1 })).expect("encode");
    let message = survives(&w, |bad, _| {
        send(bad, &hello(PROTOCOL_VERSION));
        assert!(matches!(receive(bad), ServerFrame::Welcome { .. }));
        wire::write_frame_blocking(bad, &not_a_frame, MAX_FRAME).expect("write");
    });
    assert!(message.is_some(), "an error frame");
}

#[test]
fn many_bad_connections_at_once_leave_warden_serving() {
    let w = start_tree();
    let mut bystander = Client::connect_socket(&socket_path(&w)).expect("bystander connects");
    let mut bad: Vec<UnixStream> = (0..50)
        .map(|i| {
            let mut s = connect(&w);
            let _ = s.write_all(&junk(64, i + 1));
            s
        })
        .collect();
    assert_answers(&mut bystander, "bystander among 50 bad connections");
    for s in &mut bad {
        let _ = s.shutdown(Shutdown::Write);
        error_then_closed(s);
    }
    assert_answers(&mut bystander, "bystander after 50 bad connections");
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(h.status, 200);
}

#[test]
fn status_returns_every_actor_with_its_state_and_pid() {
    let w = start_tree();
    let api = w.actor_pid("/app/api");
    let mut client = Client::connect_socket(&socket_path(&w)).expect("connect");
    match client.ask(Request::Status).expect("asked") {
        Ok(Response::Actors(views)) => {
            let paths: Vec<String> = views.iter().map(|v| v.info.path.to_string()).collect();
            assert_eq!(paths, ["/app", "/app/api", "/solo"]);
            let v = &views[1];
            assert_eq!(v.info.state.as_str(), "running");
            assert_eq!(v.info.pid, api);
            assert_eq!(
                views[0]
                    .children
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
                ["/app/api"]
            );
        }
        other => panic!("Status answered {other:?}"),
    }
    match client.ask(Request::Actor {
        path: "/solo".to_owned(),
    }) {
        Ok(Ok(Response::Actor(view))) => assert_eq!(view.info.path.to_string(), "/solo"),
        other => panic!("Actor answered {other:?}"),
    }
}

#[test]
fn stop_of_an_unknown_path_returns_a_not_found_failure() {
    let w = start_tree();
    let mut client = Client::connect_socket(&socket_path(&w)).expect("connect");
    match client.ask(Request::Stop {
        path: "/nope".to_owned(),
    }) {
        Ok(Err(failure)) => {
            assert_eq!(failure.kind, FailureKind::NotFound, "{failure:?}");
            assert!(failure.message.contains("/nope"), "{failure:?}");
        }
        other => panic!("Stop /nope answered {other:?}"),
    }
    // The connection stays usable after a failure.
    assert_answers(&mut client, "after a failed request");
    let api = wait_for("/app/api's pid", Duration::from_secs(10), || {
        w.actor_pid("app/api")
    });
    assert!(alive(api));
    match client.ask(Request::Stop {
        path: "/app/api".to_owned(),
    }) {
        Ok(Ok(Response::Actor(view))) => assert_eq!(view.info.state.as_str(), "stopped"),
        other => panic!("Stop /app/api answered {other:?}"),
    }
    // Not only the reply: the process is gone once Stop has answered.
    assert!(
        !alive(api),
        "/app/api (pid {api}) still runs after Stop answered"
    );
    match client.ask(Request::Stop {
        path: "/app/api".to_owned(),
    }) {
        Ok(Err(failure)) => assert_eq!(failure.kind, FailureKind::Conflict, "{failure:?}"),
        other => panic!("second Stop answered {other:?}"),
    }
}
