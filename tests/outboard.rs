//! Outboard children (`[[outboard]]`): the call round trip through `outboard_echo`, the
//! handshake (token, protocol and app version), heartbeats, hostile or broken input on the
//! child's socket, the stop asked over IPC before any signal, and the reconnection of a
//! child to a warden restarted after SIGKILL.
//!
//! Misbehaving children are played by the test itself: the configured process is a small
//! relay (`support::fd_relay`) that connects to its outboard socket when the test asks
//! and hands the connection over, so the peer warden checks is the child's own process;
//! the test reads `state/handoff/<name>/outboard.json` and speaks (or mis-speaks) the
//! protocol with `warden_supervisors::{ipc, wire}` on that connection. A connection the
//! test makes itself to a child's socket comes from outside the child's process group.
mod support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::outboard::echo_entry;
use support::*;
use warden_supervisors::ipc::{ChildMessage, OutboardConfigFile, SupervisorMessage, IPC_PROTOCOL};
use warden_supervisors::wire::{self, FrameError, MAX_FRAME};

/// Deadline for anything that should happen promptly.
const T: Duration = Duration::from_secs(15);

/// A heartbeat so slow that it never interferes with a played child.
const SLOW_HEARTBEAT: &str = "600s";

// ---------------------------------------------------------------------------------------
// Config snippets.

/// An `[[outboard]]` entry running `outboard_echo` without a ready check (with a ready
/// check: `support::outboard::echo_entry`).
fn echo_entry_no_ready(name: &str, extra: &str) -> String {
    format!(
        "[[outboard]]\nname = \"{name}\"\ncommand = [{}]\n{extra}\n\n",
        toml_str(&support::example_bin::example_bin("outboard_echo").to_string_lossy())
    )
}

/// An `[[outboard]]` entry whose process is the fd relay: the test plays the child.
fn played_entry(name: &str, extra: &str) -> String {
    format!(
        "[[outboard]]\nname = \"{name}\"\ncommand = {}\n{extra}\n\n",
        support::fd_relay::outboard_relay_command()
    )
}

/// `outboard_echo` as "echo" and a played child as "fake" (heartbeat too slow to matter).
fn echo_and_fake() -> Warden {
    let body = format!(
        "{}{}",
        echo_entry("echo", ""),
        played_entry("fake", &format!("heartbeat = \"{SLOW_HEARTBEAT}\""))
    );
    let w = Warden::start(&body);
    w.wait_state("echo", "running", T);
    w.wait_state("fake", "running", T);
    w
}

// ---------------------------------------------------------------------------------------
// HTTP helpers.

fn call(w: &Warden, path: &str, body: &[u8]) -> Response {
    http(
        w.port,
        "POST",
        &format!("/api/v1/actors/{path}/call"),
        Some(&w.token()),
        Some(body),
    )
    .expect("call request")
}

/// Proves that `outboard_echo` at `path` still answers calls.
fn assert_echo_answers(w: &Warden, path: &str, tag: &str) {
    let r = call(w, path, json!({ "still": tag }).to_string().as_bytes());
    assert_eq!(r.status, 200, "call {path} after {tag}: {}", r.text());
    assert_eq!(r.json(), json!({ "echo": { "still": tag } }), "after {tag}");
}

/// Waits until the actor is in `state`; on timeout shows what it was instead.
fn wait_state_shown(w: &Warden, path: &str, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let a = w.actor(path);
        if a["state"] == state {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{path} not {state} within {timeout:?}; last seen: {a}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn restarts(a: &Value) -> u64 {
    a["restarts"].as_u64().unwrap_or(u64::MAX)
}

fn pid_of(a: &Value) -> Option<u32> {
    a["pid"].as_u64().map(|p| p as u32)
}

// ---------------------------------------------------------------------------------------
// Playing an outboard child.

/// The config file warden wrote for the outboard child `name` (waits until it exists).
fn outboard_config(w: &Warden, name: &str) -> OutboardConfigFile {
    let file = w.path(&format!("state/handoff/{name}/outboard.json"));
    let mut cfg: OutboardConfigFile =
        wait_for(&format!("{} to be written", file.display()), T, || {
            std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        });
    if cfg.socket.is_relative() {
        // Beside the config file, as the child library finds it.
        cfg.socket = file.parent().expect("folder").join(&cfg.socket);
    }
    cfg
}

/// A connection to the socket of the outboard child `name`, with read/write deadlines, and
/// the pid of the process that made it: the played child's own (through its relay), or,
/// for `echo` (the real `outboard_echo`, not played), the test's.
fn connect(w: &Warden, name: &str) -> (OutboardConfigFile, UnixStream, u32) {
    let cfg = outboard_config(w, name);
    let relay =
        support::fd_relay::relay_socket(&w.path(&format!("state/handoff/{name}/outboard.json")));
    let (stream, pid) = if name != "echo" {
        support::fd_relay::connection_from_relay(&relay, T)
    } else {
        let stream = wait_for(&format!("connect to {}", cfg.socket.display()), T, || {
            UnixStream::connect(&cfg.socket).ok()
        });
        (stream, std::process::id())
    };
    stream.set_read_timeout(Some(T)).expect("read timeout");
    stream.set_write_timeout(Some(T)).expect("write timeout");
    (cfg, stream, pid)
}

fn hello(protocol: u32, token: &str, app_version: u32, pid: u32) -> ChildMessage {
    ChildMessage::Hello {
        protocol,
        token: token.to_owned(),
        app_version,
        pid,
    }
}

fn send_msg(stream: &mut UnixStream, message: &ChildMessage) {
    let payload = wire::encode(message).expect("encode");
    wire::write_frame_blocking(stream, &payload, MAX_FRAME).expect("write frame");
}

/// The next message from warden; `None` when warden closed the connection.
fn recv_msg(stream: &mut UnixStream) -> Option<SupervisorMessage> {
    match wire::read_frame_blocking(stream, MAX_FRAME) {
        Ok(Some(payload)) => Some(wire::decode(&payload).expect("decode a supervisor message")),
        Ok(None) => None,
        // A reset after warden closed its end also counts as closed.
        Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("reading from warden: {e}"),
    }
}

/// A connection that said a correct hello and got `Welcome`.
fn connect_welcomed(w: &Warden, name: &str) -> UnixStream {
    let (cfg, mut stream, pid) = connect(w, name);
    send_msg(&mut stream, &hello(IPC_PROTOCOL, &cfg.token, 1, pid));
    match recv_msg(&mut stream) {
        Some(SupervisorMessage::Welcome { protocol }) => assert_eq!(protocol, IPC_PROTOCOL),
        other => panic!("expected welcome, got {other:?}"),
    }
    stream
}

/// Expects an `Error` frame, then the end of the connection; returns the error's message.
fn expect_error_then_eof(stream: &mut UnixStream, what: &str) -> String {
    let message = match recv_msg(stream) {
        Some(SupervisorMessage::Error { message }) => message,
        other => panic!("{what}: expected an error frame, got {other:?}"),
    };
    if let Some(other) = recv_msg(stream) {
        panic!("{what}: expected the connection to close after the error, got {other:?}");
    }
    message
}

/// Serves exactly one call on a welcomed connection while `POST .../{name}/call` is made
/// from another thread; returns that HTTP response.
fn call_through_played(w: &Warden, stream: &mut UnixStream, name: &str) -> Response {
    let port = w.port;
    let token = w.token();
    let path = format!("/api/v1/actors/{name}/call");
    let client = std::thread::spawn(move || {
        http(port, "POST", &path, Some(&token), Some(br#"{"q":42}"#)).expect("call request")
    });
    let deadline = Instant::now() + T;
    loop {
        assert!(
            Instant::now() < deadline,
            "no call reached the played child"
        );
        match recv_msg(stream) {
            Some(SupervisorMessage::Call { id, body }) => {
                assert_eq!(body, json!({ "q": 42 }), "the call body as relayed");
                send_msg(
                    stream,
                    &ChildMessage::Reply {
                        id,
                        result: Ok(json!({ "played": body })),
                    },
                );
                break;
            }
            Some(SupervisorMessage::Ping { seq }) => {
                send_msg(stream, &ChildMessage::Pong { seq });
            }
            other => panic!("expected a call, got {other:?}"),
        }
    }
    client.join().expect("client thread")
}

/// A fresh connection to the socket of `name` that sends `bytes` raw, then
/// (if `close_write`) shuts its write side; expects an error frame then EOF.
fn raw_refused(w: &Warden, name: &str, bytes: &[u8], close_write: bool, what: &str) -> String {
    let (_, mut stream, _) = connect(w, name);
    // A connection from outside the child's group may be refused before it is read.
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
    if close_write {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    expect_error_then_eof(&mut stream, what)
}

/// Asserts the played child `fake` is still the same running process, never restarted.
fn assert_fake_untouched(w: &Warden, pid: Option<u32>, what: &str) {
    let a = w.actor("fake");
    assert_eq!(a["state"], "running", "fake after {what}: {a}");
    assert_eq!(pid_of(&a), pid, "fake's pid after {what}: {a}");
    assert_eq!(restarts(&a), 0, "fake restarted after {what}: {a}");
}

// ---------------------------------------------------------------------------------------
// Round trip.

#[test]
fn a_call_is_relayed_to_outboard_echo_and_its_reply_returned_as_json() {
    let body = format!(
        "{}[[service]]\nname = \"plain\"\ncommand = [\"sleep\", \"1000\"]\n",
        echo_entry("echo", "")
    );
    let w = Warden::start(&body);
    let a = w.wait_state("echo", "running", T);
    assert_eq!(a["kind"], "outboard", "{a}");
    assert!(pid_of(&a).is_some(), "{a}");
    w.wait_state("plain", "running", T);

    let r = call(&w, "echo", br#"{"a":[1,2]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "echo": { "a": [1, 2] } }));

    // Any JSON value, not just objects.
    let r = call(&w, "echo", b"\"hi\"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "echo": "hi" }));

    let r = call(&w, "echo", b"this is not json");
    assert_eq!(r.status, 400, "non-JSON body: {}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());

    let r = call(&w, "plain", b"{}");
    assert_eq!(r.status, 404, "call on a [[service]]: {}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());

    let r = call(&w, "nope", b"{}");
    assert_eq!(r.status, 404, "call on an unknown path: {}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());

    // Still serving afterwards, and never restarted.
    assert_echo_answers(&w, "echo", "errors");
    let a = w.actor("echo");
    assert_eq!(restarts(&a), 0, "{a}");

    // Without the token, no call.
    let r = http(
        w.port,
        "POST",
        "/api/v1/actors/echo/call",
        None,
        Some(b"{}"),
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn an_outboard_child_with_an_ipc_ready_check_is_starting_until_it_says_ready() {
    let w = Warden::start(&played_entry(
        "slow",
        &format!("heartbeat = \"{SLOW_HEARTBEAT}\"\nready = {{ ipc = true, timeout = \"30s\" }}"),
    ));
    let a = w.wait_state("slow", "starting", T);
    let pid = pid_of(&a);
    assert!(pid.is_some(), "a starting child has its pid: {a}");

    let mut stream = connect_welcomed(&w, "slow");
    // Welcomed but not ready yet: still starting.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let a = w.actor("slow");
        assert_eq!(a["state"], "starting", "connected, not ready: {a}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let said_ready = Instant::now();
    send_msg(&mut stream, &ChildMessage::Ready);
    let a = w.wait_state("slow", "running", Duration::from_secs(5));
    assert!(
        said_ready.elapsed() < Duration::from_secs(3),
        "running {:?} after ready",
        said_ready.elapsed()
    );
    assert_eq!(pid_of(&a), pid, "{a}");
    assert_eq!(restarts(&a), 0, "{a}");

    // And the played child serves a call.
    let r = call_through_played(&w, &mut stream, "slow");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "played": { "q": 42 } }));
}

// ---------------------------------------------------------------------------------------
// Handshake.

#[test]
fn a_hello_with_a_wrong_token_is_refused_and_a_correct_one_is_welcomed() {
    let w = echo_and_fake();
    let pid = w.actor_pid("fake");

    let (cfg, mut stream, relay_pid) = connect(&w, "fake");
    let wrong = format!("{}x", cfg.token);
    send_msg(&mut stream, &hello(IPC_PROTOCOL, &wrong, 1, relay_pid));
    let message = expect_error_then_eof(&mut stream, "wrong token");
    assert!(message.contains("token"), "error frame: {message:?}");
    drop(stream);

    // An empty token too.
    let (_, mut stream, relay_pid) = connect(&w, "fake");
    send_msg(&mut stream, &hello(IPC_PROTOCOL, "", 1, relay_pid));
    expect_error_then_eof(&mut stream, "empty token");
    drop(stream);

    assert_fake_untouched(&w, pid, "wrong tokens");
    assert_echo_answers(&w, "echo", "wrong token");

    // The right token on a new connection is welcomed, and the link works.
    let mut stream = connect_welcomed(&w, "fake");
    let r = call_through_played(&w, &mut stream, "fake");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "played": { "q": 42 } }));

    assert_fake_untouched(&w, pid, "the correct hello");
    assert_echo_answers(&w, "echo", "correct hello");
    assert_eq!(restarts(&w.actor("echo")), 0);
}

/// `outboard_echo` (app version 1) under `version = 2`, as `body` configures it, must end
/// `failed` for good, naming the version.
fn assert_version_mismatch_fails_for_good(body: &str) {
    let w = Warden::start(body);
    let a = wait_state_shown(&w, "echo", "failed", T);
    let reason = a["failed_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("version"),
        "failed_reason should mention the version: {a}"
    );
    assert_eq!(restarts(&a), 0, "{a}");
    let token = outboard_config(&w, "echo").token;

    // No restart follows: still failed, no new run (a new run would write a new token).
    std::thread::sleep(Duration::from_secs(2));
    let a = w.actor("echo");
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(restarts(&a), 0, "{a}");
    assert_eq!(a["pid"], Value::Null, "a failed child has no pid: {a}");
    assert_eq!(
        outboard_config(&w, "echo").token,
        token,
        "the child was started again"
    );

    let r = call(&w, "echo", b"{}");
    assert!(
        r.status == 404 || r.status == 503,
        "call on a failed child: {} {}",
        r.status,
        r.text()
    );
    // warden itself carries on.
    assert_eq!(
        http(w.port, "GET", "/healthz", None, None).unwrap().status,
        200
    );
}

#[test]
fn an_app_version_other_than_the_configured_one_makes_the_child_failed_for_good() {
    assert_version_mismatch_fails_for_good(&echo_entry("echo", "version = 2"));
}

#[test]
fn an_app_version_mismatch_without_a_ready_check_makes_the_child_failed_for_good() {
    assert_version_mismatch_fails_for_good(&echo_entry_no_ready("echo", "version = 2"));
}

/// A played child that says hello with protocol 999 (right token) is refused and ends
/// `failed` for good; `ready` is the extra config line and `first_state` its state before.
fn assert_protocol_mismatch_fails_for_good(ready: &str, first_state: &str) {
    let w = Warden::start(&played_entry(
        "fake",
        &format!("heartbeat = \"{SLOW_HEARTBEAT}\"\n{ready}"),
    ));
    let a = w.wait_state("fake", first_state, T);
    let pid = pid_of(&a).expect("pid");

    let (cfg, mut stream, relay_pid) = connect(&w, "fake");
    send_msg(&mut stream, &hello(999, &cfg.token, 1, relay_pid));
    let message = expect_error_then_eof(&mut stream, "protocol 999");
    assert!(message.contains("protocol"), "error frame: {message:?}");

    let a = wait_state_shown(&w, "fake", "failed", T);
    let reason = a["failed_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("protocol"),
        "failed_reason should mention the protocol: {a}"
    );
    assert_eq!(restarts(&a), 0, "{a}");
    wait_until("the refused child's process is gone", T, || !alive(pid));

    std::thread::sleep(Duration::from_secs(2));
    let a = w.actor("fake");
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(restarts(&a), 0, "{a}");
    assert_eq!(a["pid"], Value::Null, "{a}");
}

#[test]
fn a_child_speaking_another_protocol_is_refused_and_failed_for_good() {
    assert_protocol_mismatch_fails_for_good("", "running");
}

#[test]
fn a_child_speaking_another_protocol_before_its_ipc_ready_is_failed_for_good() {
    assert_protocol_mismatch_fails_for_good("ready = { ipc = true }", "starting");
}

// ---------------------------------------------------------------------------------------
// Heartbeats.

#[test]
fn a_child_that_stops_answering_heartbeats_is_restarted() {
    // The heartbeat also bounds the time to connect (heartbeat x missed): 2 s for a
    // python relay to start and the test to say hello on 2 busy cores (400 ms was missed
    // under load, and the restarted child's new token refused the test's hello).
    let w = Warden::start(&played_entry(
        "fake",
        "heartbeat = \"1s\"\nmissed = 2\nrestart = { backoff = { initial = \"100ms\" } }",
    ));
    let a = w.wait_state("fake", "running", T);
    let pid = pid_of(&a).expect("pid");
    let mut stream = connect_welcomed(&w, "fake");

    // Pings come, and are never answered.
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    match recv_msg(&mut stream) {
        Some(SupervisorMessage::Ping { .. }) => {}
        other => panic!("expected a ping, got {other:?}"),
    }

    let a = wait_for(
        "fake restarted for missed heartbeats",
        Duration::from_secs(10),
        || {
            let a = w.actor("fake");
            (restarts(&a) >= 1 && a["last_exit"].is_object()).then_some(a)
        },
    );
    let reason = a["last_exit"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("heartbeat"),
        "last_exit.reason should mention heartbeats: {a}"
    );
    wait_until("the unresponsive process is gone", T, || !alive(pid));
    let a = wait_for("fake running again", T, || {
        let a = w.actor("fake");
        (a["state"] == "running" && pid_of(&a).is_some_and(|p| p != pid)).then_some(a)
    });
    assert!(restarts(&a) >= 1, "{a}");
}

#[test]
fn a_child_that_answers_heartbeats_is_left_alone() {
    // missed = 10: the played child (a python relay) gets a second to connect at all.
    let w = Warden::start(&played_entry("fake", "heartbeat = \"100ms\"\nmissed = 10"));
    let a = w.wait_state("fake", "running", T);
    let pid = pid_of(&a);
    let mut stream = connect_welcomed(&w, "fake");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while Instant::now() < until {
        match recv_msg(&mut stream) {
            Some(SupervisorMessage::Ping { seq }) => {
                pings += 1;
                send_msg(&mut stream, &ChildMessage::Pong { seq });
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert!(pings >= 5, "only {pings} pings in 1.5 s at 100ms");
    let a = w.actor("fake");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(pid_of(&a), pid, "{a}");
    assert_eq!(restarts(&a), 0, "{a}");
}

// ---------------------------------------------------------------------------------------
// Bad input on the socket.

#[test]
fn garbage_bytes_are_refused_with_an_error_frame_and_nothing_else_is_disturbed() {
    let w = echo_and_fake();
    let pid = w.actor_pid("fake");

    // A well-formed length, then bytes that are not MessagePack (0xc1 is never used).
    let garbage = [0, 0, 0, 6, 0xc1, 0xff, 0x00, b'a', b'b', b'c'];
    raw_refused(&w, "fake", &garbage, false, "garbage as hello (fake)");
    assert_fake_untouched(&w, pid, "garbage");
    assert_echo_answers(&w, "echo", "garbage (fake)");

    // MessagePack, but not a child message.
    let not_a_message = wire::encode(&json!({ "type": "launch_missiles" })).unwrap();
    let mut frame = (not_a_message.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&not_a_message);
    raw_refused(&w, "fake", &frame, false, "unknown message (fake)");

    // The same garbage on the socket of a connected child: the child is not disturbed.
    raw_refused(&w, "echo", &garbage, false, "garbage as hello (echo)");
    assert_echo_answers(&w, "echo", "garbage (echo)");

    // Garbage after a good handshake: an error frame, the connection closes, the child
    // keeps running and can connect again.
    let mut stream = connect_welcomed(&w, "fake");
    stream.write_all(&garbage).unwrap();
    let message = expect_error_then_eof(&mut stream, "garbage after hello");
    assert!(!message.is_empty());
    drop(stream);
    assert_fake_untouched(&w, pid, "garbage after hello");
    assert_echo_answers(&w, "echo", "garbage after hello");

    let mut stream = connect_welcomed(&w, "fake");
    let r = call_through_played(&w, &mut stream, "fake");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_truncated_frame_is_refused_with_an_error_frame_and_nothing_else_is_disturbed() {
    let w = echo_and_fake();
    let pid = w.actor_pid("fake");

    // Announces 100 bytes, sends 10, then closes its write side.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0x80; 10]);
    let message = raw_refused(&w, "fake", &truncated, true, "truncated frame (fake)");
    assert!(
        message.contains("truncated"),
        "error frame should say truncated: {message:?}"
    );
    assert_fake_untouched(&w, pid, "a truncated frame");
    assert_echo_answers(&w, "echo", "truncated (fake)");

    // A length prefix cut short.
    raw_refused(&w, "fake", &[0, 0], true, "truncated prefix (fake)");
    assert_fake_untouched(&w, pid, "a truncated prefix");

    raw_refused(&w, "echo", &truncated, true, "truncated frame (echo)");
    assert_echo_answers(&w, "echo", "truncated (echo)");

    let mut stream = connect_welcomed(&w, "fake");
    let r = call_through_played(&w, &mut stream, "fake");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_frame_over_the_maximum_is_refused_at_once_and_nothing_else_is_disturbed() {
    let w = echo_and_fake();
    let pid = w.actor_pid("fake");

    // The prefix alone, connection left open: refused without waiting for 4 GiB.
    let started = Instant::now();
    let message = raw_refused(&w, "fake", &[0xff; 4], false, "0xFFFFFFFF prefix (fake)");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the oversized frame took {:?} to be refused",
        started.elapsed()
    );
    assert!(
        message.contains("maximum") || message.contains("large"),
        "error frame should say the frame is too large: {message:?}"
    );
    assert_fake_untouched(&w, pid, "an oversized frame");
    assert_echo_answers(&w, "echo", "oversized (fake)");

    // Just over 1 MiB.
    let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
    raw_refused(&w, "fake", &just_over, false, "MAX_FRAME + 1 prefix (fake)");

    raw_refused(&w, "echo", &[0xff; 4], false, "0xFFFFFFFF prefix (echo)");
    assert_echo_answers(&w, "echo", "oversized (echo)");

    // An oversized frame after a good handshake.
    let mut stream = connect_welcomed(&w, "fake");
    stream.write_all(&[0xff; 4]).unwrap();
    expect_error_then_eof(&mut stream, "oversized after hello");
    drop(stream);
    assert_fake_untouched(&w, pid, "oversized after hello");
    assert_echo_answers(&w, "echo", "oversized after hello");
}

#[test]
fn a_second_connection_of_a_connected_child_is_refused_and_the_first_stays_usable() {
    let w = echo_and_fake();
    let pid = w.actor_pid("fake");

    let mut first = connect_welcomed(&w, "fake");
    let (cfg, mut second, relay_pid) = connect(&w, "fake");
    send_msg(&mut second, &hello(IPC_PROTOCOL, &cfg.token, 1, relay_pid));
    let message = expect_error_then_eof(&mut second, "second connection");
    assert!(
        message.contains("already connected"),
        "error frame: {message:?}"
    );
    drop(second);

    // The first connection still carries calls.
    let r = call_through_played(&w, &mut first, "fake");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "played": { "q": 42 } }));
    assert_fake_untouched(&w, pid, "a second connection");

    // A connection to the real echo child's socket (from the test, outside its process
    // group, even with its token) does not disturb it either.
    let (cfg, mut second, pid) = connect(&w, "echo");
    let _ = wire::write_frame_blocking(
        &mut second,
        &wire::encode(&hello(IPC_PROTOCOL, &cfg.token, 1, pid)).expect("encode"),
        MAX_FRAME,
    );
    let message = expect_error_then_eof(&mut second, "second connection (echo)");
    assert!(
        message.contains("process group"),
        "error frame: {message:?}"
    );
    assert_echo_answers(&w, "echo", "second connection");
    assert_eq!(restarts(&w.actor("echo")), 0);
}

#[test]
fn a_call_the_child_never_answers_gets_504() {
    let w = Warden::start(&played_entry(
        "fake",
        &format!("heartbeat = \"{SLOW_HEARTBEAT}\""),
    ));
    w.wait_state("fake", "running", T);
    let mut stream = connect_welcomed(&w, "fake");
    let port = w.port;
    let token = w.token();
    let client = std::thread::spawn(move || {
        let started = Instant::now();
        let r = http(
            port,
            "POST",
            "/api/v1/actors/fake/call",
            Some(&token),
            Some(b"1"),
        )
        .expect("call request");
        (r, started.elapsed())
    });
    match recv_msg(&mut stream) {
        Some(SupervisorMessage::Call { body, .. }) => assert_eq!(body, json!(1)),
        other => panic!("expected a call, got {other:?}"),
    }
    // Never answered.
    let (r, took) = client.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    // README: 504 after 10 s without a reply; not at once, not much later.
    assert!(
        took >= Duration::from_millis(9500) && took <= Duration::from_secs(12),
        "504 after {took:?}, want 10 s"
    );
    assert!(r.json()["error"].is_string(), "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// Stop.

#[test]
fn stop_asks_the_child_over_ipc_before_any_signal() {
    let w = Warden::start(&echo_entry(
        "echo",
        "stop = { signal = \"TERM\", timeout = \"20s\" }",
    ));
    w.wait_state("echo", "running", T);
    assert_echo_answers(&w, "echo", "before stop");

    let started = Instant::now();
    let r = w.req("POST", "/api/v1/actors/echo/stop");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}: the child was not asked over IPC (stop timeout 20s)"
    );
    let a = w.wait_state("echo", "stopped", T);
    assert_eq!(
        a["last_exit"]["code"], 0,
        "outboard_echo exits 0 when asked to stop over IPC, not by a signal: {a}"
    );
    assert_eq!(a["last_exit"]["signal"], Value::Null, "{a}");

    let log = w.path("state/logs/echo.log");
    wait_until("echo.log says \"asked to stop, bye\"", T, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("asked to stop, bye")
    });

    // And it can be started again, and serves.
    let r = w.req("POST", "/api/v1/actors/echo/start");
    assert_eq!(r.status, 200, "{}", r.text());
    w.wait_state("echo", "running", T);
    assert_echo_answers(&w, "echo", "after restart");
}

/// An outboard child that ignores the stop request it gets over IPC keeps running for its
/// whole stop timeout; only then does warden signal it (SIGTERM, which ends `sleep`).
#[test]
fn a_child_that_ignores_the_ipc_stop_is_signalled_only_after_its_stop_timeout() {
    let w = Warden::start(&played_entry(
        "fake",
        &format!(
            "heartbeat = \"{SLOW_HEARTBEAT}\"\nstop = {{ signal = \"TERM\", timeout = \"2s\" }}"
        ),
    ));
    let a = w.wait_state("fake", "running", T);
    let pid = pid_of(&a).expect("pid");
    let mut stream = connect_welcomed(&w, "fake");
    let (port, token) = (w.port, w.token());
    let started = Instant::now();
    let client = std::thread::spawn(move || {
        http(port, "POST", "/api/v1/actors/fake/stop", Some(&token), None).expect("stop")
    });
    match recv_msg(&mut stream) {
        Some(SupervisorMessage::Stop) => {}
        other => panic!("expected a stop request over IPC, got {other:?}"),
    }
    // Ignored: the process keeps running until its 2 s stop timeout (checked to 1.8 s).
    let asked = started.elapsed();
    assert!(asked < Duration::from_secs(1), "asked only after {asked:?}");
    holds_for(
        "the child runs on during its stop timeout",
        Duration::from_millis(1800).saturating_sub(asked),
        || alive(pid),
    );
    wait_until("the child is signalled after its stop timeout", T, || {
        !alive(pid)
    });
    let gone = started.elapsed();
    assert!(
        gone >= Duration::from_secs(2) && gone < Duration::from_secs(5),
        "the child ended {gone:?} after the stop request; want its 2 s stop timeout"
    );
    let r = client.join().expect("stop thread");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = w.wait_state("fake", "stopped", T);
    assert_eq!(
        a["last_exit"]["signal"], "SIGTERM",
        "the stop signal ended it: {a}"
    );
}

// ---------------------------------------------------------------------------------------
// Reconnection after a warden crash.

/// SIGKILLs `pid` on drop if it still is an `outboard_echo` (in case the test fails while
/// no warden supervises it).
struct KillEchoOnDrop(u32);

impl Drop for KillEchoOnDrop {
    fn drop(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if alive(self.0) && String::from_utf8_lossy(&cmdline).contains("outboard_echo") {
            kill(self.0, 9);
        }
    }
}

#[test]
fn an_outboard_child_reconnects_to_a_warden_restarted_after_sigkill_without_a_restart() {
    let body = echo_entry("echo", "");
    let mut w = Warden::start(&body);
    let a = w.wait_state("echo", "running", T);
    let pid = pid_of(&a).expect("echo pid");
    let _guard = KillEchoOnDrop(pid);
    assert_echo_answers(&w, "echo", "before the crash");

    w.crash();
    assert!(
        alive(pid),
        "the child outlives a SIGKILLed warden (on_exit = keep)"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "the child keeps running without warden");

    let w = Warden::start_in(w.into_dir(), &body);
    let a = w.wait_state("echo", "running", T);
    assert_eq!(pid_of(&a), Some(pid), "adopted with the same pid: {a}");
    assert_eq!(restarts(&a), 0, "{a}");

    // The child reconnects by itself: calls work again within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = call(&w, "echo", br#"{"after":"crash"}"#);
        if r.status == 200 {
            assert_eq!(r.json(), json!({ "echo": { "after": "crash" } }));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no call round trip 10 s after the restart: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let a = w.actor("echo");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(pid_of(&a), Some(pid), "{a}");
    assert_eq!(restarts(&a), 0, "{a}");
    assert!(alive(pid));

    // Still supervised: a stop goes over the new link.
    let r = w.req("POST", "/api/v1/actors/echo/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until("the adopted child exits on stop", T, || !alive(pid));
}
