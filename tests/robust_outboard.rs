//! Robustness promise "nothing blocks supervision" for outboard children: a child that
//! completes its handshake and then never reads its socket again (`outboard_stall`, as a
//! child whose call handler deadlocked) slows only itself. Its heartbeat verdict comes on
//! time, calls to it answer 504 while other children's calls stay fast, `ctl stop` and
//! SIGTERM to warden complete within its stop timeout, and other services restart on time.
//!
//! Every test first fills the stalled child's socket with 64 KiB calls: once its buffer
//! is full, any write to it waits for good, which is what used to wedge the link.
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::outboard::{big_body, echo_entry, fill_socket, stall_entry, CallInFlight};
use support::*;

/// Deadline for anything that should happen promptly.
const T: Duration = Duration::from_secs(15);

/// `POST .../call` answers 504 after this long (`warden::admin::CALL_TIMEOUT_MS`).
const CALL_TIMEOUT: Duration = Duration::from_millis(warden::admin::CALL_TIMEOUT_MS);

// ---------------------------------------------------------------------------------------
// Config entries (the outboard ones are in `support::outboard`).

fn sleeper_entry(name: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\ncommand = [\"sleep\", \"1000\"]\n\n")
}

// ---------------------------------------------------------------------------------------
// Small readings.

fn pid_of(a: &Value) -> Option<u32> {
    a["pid"].as_u64().map(|p| p as u32)
}

fn restarts(a: &Value) -> u64 {
    a["restarts"].as_u64().unwrap_or(0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// How long `GET /healthz` takes to answer 200.
fn healthz_time(w: &Warden) -> Duration {
    let began = Instant::now();
    let r = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    let took = began.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    took
}

/// How long `POST /api/v1/actors/{path}/restart` takes (it answers once the actor is
/// running again); checks that the pid changed.
fn restart_time(w: &Warden, path: &str) -> Duration {
    let before = w.actor_pid(path);
    let began = Instant::now();
    let r = w.req("POST", &format!("/api/v1/actors/{path}/restart"));
    let took = began.elapsed();
    assert_eq!(r.status, 200, "restart {path}: {}", r.text());
    let a = w.wait_state(path, "running", T);
    assert_ne!(pid_of(&a), before, "{path} was not restarted: {a}");
    took
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Promise: a child that stops reading its socket gets its heartbeat verdict (a restart)
/// within heartbeat x missed (plus slack), even once its socket is full. Before the fix
/// the link awaited the blocked write inside its loop and never judged the child.
#[test]
fn a_child_that_stops_reading_is_restarted_for_missed_heartbeats_on_time() {
    let heartbeat = Duration::from_millis(500);
    let missed = 3;
    let w = Warden::start(&stall_entry(
        "stall",
        &[],
        "heartbeat = \"500ms\"\nmissed = 3\nrestart = { backoff = { initial = \"100ms\" } }",
    ));
    let a = w.wait_state("stall", "running", T);
    let pid = pid_of(&a).expect("pid");

    let filled = Instant::now();
    let calls = fill_socket(&w, "stall");
    let slack = Duration::from_secs(3);
    let bound = heartbeat * missed + slack;
    let a = wait_for(
        "the stalled child restarted for missed heartbeats",
        bound,
        || {
            let a = w.actor("stall");
            (restarts(&a) >= 1 && a["last_exit"].is_object()).then_some(a)
        },
    );
    let took = filled.elapsed();
    eprintln!("heartbeat verdict {took:?} after the socket filled (bound {bound:?})");
    let reason = a["last_exit"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("heartbeat"), "last_exit: {a}");
    wait_until("the stalled process is gone", T, || !alive(pid));
    w.wait_state("stall", "running", T);
    // Every call answered (the run they went to is over), none hangs.
    for call in calls {
        let (status, _) = call.wait(CALL_TIMEOUT + T, "a call to the restarted child");
        let status = status.expect("an HTTP answer");
        assert!(status == 503 || status == 504, "status {status}");
    }
}

/// Promise: calls to a child that stopped reading answer 504 within their timeout (none
/// hangs), while another outboard child's calls still answer at once. Before the fix a
/// caller blocked in the socket write (holding the link's write lock) for good.
#[test]
fn calls_to_a_child_that_stopped_reading_answer_504_and_other_childrens_calls_stay_fast() {
    let body = format!(
        "{}{}",
        stall_entry("stall", &[], "heartbeat = \"30s\"\nmissed = 10"),
        echo_entry("echo", "")
    );
    let w = Warden::start(&body);
    w.wait_state("stall", "running", T);
    w.wait_state("echo", "running", T);

    let calls = fill_socket(&w, "stall");
    // While they wait, the healthy child answers big calls fast.
    let mut echo_times = Vec::new();
    for _ in 0..10 {
        let (status, took) = CallInFlight::start(&w, "echo", big_body()).wait(T, "a call to echo");
        assert_eq!(status, Ok(200));
        echo_times.push(took);
    }
    let echo_median = median(echo_times.clone());
    eprintln!(
        "echo calls while the other child is wedged: median {echo_median:?}, all {echo_times:?}"
    );
    assert!(
        echo_median < Duration::from_millis(500),
        "echo calls slowed down: {echo_times:?}"
    );

    for (i, call) in calls.into_iter().enumerate() {
        let (status, took) = call.wait(CALL_TIMEOUT + T, &format!("call {i} to the stalled child"));
        assert_eq!(
            status,
            Ok(504),
            "call {i} to the stalled child (after {took:?})"
        );
        assert!(
            took < CALL_TIMEOUT + Duration::from_secs(5),
            "call {i} answered 504 only after {took:?}"
        );
    }
    let a = w.actor("stall");
    assert_eq!(restarts(&a), 0, "not restarted within its heartbeats: {a}");
}

/// Promise: stopping never depends on the socket. `warden ctl stop` of a child that
/// stopped reading (and ignores SIGTERM) completes within its stop timeout plus the write
/// deadline (1 s here) and slack, and its process is gone. Before the fix the stop
/// request was never seen: the link was stuck in a write.
#[test]
fn ctl_stop_of_a_child_that_stopped_reading_completes_within_its_stop_timeout() {
    let stop_timeout = Duration::from_secs(2);
    let write_deadline = Duration::from_secs(1);
    let w = Warden::start(&stall_entry(
        "stall",
        &["--ignore-term"],
        "heartbeat = \"1s\"\nmissed = 10\nstop = { timeout = \"2s\" }",
    ));
    let a = w.wait_state("stall", "running", T);
    let pid = pid_of(&a).expect("pid");
    let _calls = fill_socket(&w, "stall");
    // Let the calls reach the socket.
    std::thread::sleep(Duration::from_millis(300));

    let began = Instant::now();
    let mut ctl = Command::new(warden_bin())
        .args(["ctl", "-c"])
        .arg(&w.config)
        .args(["stop", "/stall"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warden ctl");
    let bound = stop_timeout + write_deadline + Duration::from_secs(4);
    let status = loop {
        if let Some(status) = ctl.try_wait().expect("ctl status") {
            break status;
        }
        if began.elapsed() > bound {
            let _ = ctl.kill();
            let _ = ctl.wait();
            panic!("warden ctl stop did not complete within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = began.elapsed();
    eprintln!("ctl stop of the stalled child took {took:?} (bound {bound:?})");
    assert!(status.success(), "ctl stop: {status}");
    assert!(
        !alive(pid),
        "the stalled child (pid {pid}) is still alive after the stop"
    );
    let a = w.wait_state("stall", "stopped", T);
    assert_eq!(
        a["last_exit"]["signal"], "SIGKILL",
        "it ignores SIGTERM: SIGKILL ends it: {a}"
    );
}

/// Promise: warden's shutdown completes even when an outboard child never reads: SIGTERM
/// exits 0 within a bound and leaves no child. Before the fix the shutdown waited for the
/// wedged link for good.
#[test]
fn sigterm_to_warden_exits_0_while_an_outboard_child_never_reads() {
    let body = format!(
        "{}{}{}",
        sleeper_entry("plain"),
        echo_entry("echo", ""),
        stall_entry(
            "stall",
            &["--ignore-term"],
            "heartbeat = \"1s\"\nmissed = 10\nstop = { timeout = \"2s\" }"
        ),
    );
    let mut w = Warden::start(&body);
    let mut children = Vec::new();
    for name in ["plain", "echo", "stall"] {
        let a = w.wait_state(name, "running", T);
        children.push(pid_of(&a).expect("pid"));
    }
    let _calls = fill_socket(&w, "stall");
    std::thread::sleep(Duration::from_millis(300));

    let began = Instant::now();
    let bound = Duration::from_secs(2 + 1 + 5);
    let status = w.signal_and_wait(15, bound);
    eprintln!("warden exited {:?} after SIGTERM", began.elapsed());
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    wait_until("no child left", Duration::from_secs(2), || {
        children.iter().all(|p| !alive(*p))
    });
}

/// Promise: a child that stops reading slows only itself: while it is wedged, another
/// service restarts within 5x its quiet time and `/healthz` answers in under 50 ms.
/// (Medians of several samples; the quiet restart time is floored at 10 ms so timer
/// granularity on 2 busy cores does not decide.)
#[test]
fn a_child_that_stopped_reading_does_not_slow_other_restarts_or_healthz() {
    let body = format!(
        "{}{}",
        sleeper_entry("plain"),
        stall_entry("stall", &[], "heartbeat = \"30s\"\nmissed = 10")
    );
    let w = Warden::start(&body);
    w.wait_state("plain", "running", T);
    w.wait_state("stall", "running", T);

    // Warm-up (the first restarts after start are slower), then the quiet figures.
    restart_time(&w, "plain");
    restart_time(&w, "plain");
    let quiet_restart = median((0..5).map(|_| restart_time(&w, "plain")).collect());
    let quiet_health = median((0..10).map(|_| healthz_time(&w)).collect());

    let _calls = fill_socket(&w, "stall");
    std::thread::sleep(Duration::from_millis(500));
    let wedged_restart = median((0..5).map(|_| restart_time(&w, "plain")).collect());
    let wedged_health = median((0..10).map(|_| healthz_time(&w)).collect());
    eprintln!(
        "restart of plain: quiet {quiet_restart:?}, stalled neighbour {wedged_restart:?}; \
         /healthz: quiet {quiet_health:?}, stalled neighbour {wedged_health:?}"
    );
    let bound = quiet_restart.max(Duration::from_millis(10)) * 5;
    assert!(
        wedged_restart <= bound,
        "restart took {wedged_restart:?} with a wedged neighbour (quiet {quiet_restart:?})"
    );
    assert!(
        wedged_health < Duration::from_millis(50),
        "/healthz took {wedged_health:?} with a wedged neighbour"
    );
}
