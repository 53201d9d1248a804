//! Restart types, exponential backoff, `reset_after` and a child's own restart intensity,
//! seen from outside: real child processes under `warden up`, observed through the admin
//! API and through files the children append to.
mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(10);

fn count(file: &str) -> usize {
    lines(Path::new(file)).len()
}

fn pid_of(a: &Value) -> Option<u32> {
    a["pid"].as_u64().map(|p| p as u32)
}

/// Waits until `path` is running with a pid other than `old`.
fn wait_new_pid(w: &Warden, path: &str, old: u32) -> Value {
    wait_for(
        &format!("{path} running again with a pid other than {old}"),
        T,
        || {
            let a = w.actor(path);
            (a["state"] == "running" && pid_of(&a).is_some_and(|p| p != old)).then_some(a)
        },
    )
}

/// Checks that `file` keeps `n` lines for `quiet` (a bounded proof that nothing restarts).
fn stays_at(file: &str, n: usize, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    while Instant::now() < deadline {
        assert_eq!(count(file), n, "{file} grew: {:?}", lines(Path::new(file)));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Milliseconds since the epoch written by `date +%s%N` (the last word of a line).
fn line_ms(line: &str) -> f64 {
    let ns: u128 = line
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no nanosecond timestamp in {line:?}"));
    ns as f64 / 1e6
}

#[test]
fn permanent_child_is_restarted_after_a_clean_exit_after_a_crash_and_after_a_kill() {
    let dir = temp_dir();
    let clean = abs(&dir, "clean.txt");
    let crash = abs(&dir, "crash.txt");
    let body = format!(
        r#"
[restart]
policy = "permanent"
backoff = {{ initial = "20ms", jitter = 0.0 }}

[[service]]
name = "clean"
command = {clean_cmd}

[[service]]
name = "crash"
command = {crash_cmd}

[[service]]
name = "killed"
command = ["sleep", "1000"]
"#,
        clean_cmd = sh(&format!("echo run >> '{clean}'; exit 0")),
        crash_cmd = sh(&format!("echo run >> '{crash}'; exit 3")),
    );
    let w = Warden::start_in(dir, &body);

    wait_until("clean to run 3 times", T, || count(&clean) >= 3);
    let a = w.actor("clean");
    assert!(a["restarts"].as_u64().unwrap() >= 2, "{a}");
    assert_eq!(a["last_exit"]["code"], 0, "{a}");
    assert!(a["last_exit"]["signal"].is_null(), "{a}");

    wait_until("crash to run 3 times", T, || count(&crash) >= 3);
    let a = w.actor("crash");
    assert!(a["restarts"].as_u64().unwrap() >= 2, "{a}");
    assert_eq!(a["last_exit"]["code"], 3, "{a}");
    assert!(a["last_exit"]["signal"].is_null(), "{a}");

    let a = w.wait_state("killed", "running", T);
    let pid = pid_of(&a).expect("pid");
    kill(pid, 9);
    let a = wait_new_pid(&w, "killed", pid);
    assert_eq!(a["restarts"], 1, "{a}");
    assert_eq!(a["last_exit"]["signal"], "SIGKILL", "{a}");
    assert!(a["last_exit"]["code"].is_null(), "{a}");
    assert!(!alive(pid));
}

#[test]
fn transient_child_is_restarted_after_a_non_zero_exit_and_a_signal_but_exits_for_good_on_code_zero()
{
    let dir = temp_dir();
    let fail = abs(&dir, "fail.txt");
    let ok = abs(&dir, "ok.txt");
    let body = format!(
        r#"
[restart]
policy = "transient"
backoff = {{ initial = "20ms", jitter = 0.0 }}

[[service]]
name = "fails"
command = {fail_cmd}

[[service]]
name = "killed"
command = ["sleep", "1000"]

[[service]]
name = "succeeds"
command = {ok_cmd}
"#,
        fail_cmd = sh(&format!("echo run >> '{fail}'; exit 4")),
        ok_cmd = sh(&format!("echo run >> '{ok}'; exit 0")),
    );
    let w = Warden::start_in(dir, &body);

    wait_until("the failing transient child to run 3 times", T, || {
        count(&fail) >= 3
    });
    let a = w.actor("fails");
    assert!(a["restarts"].as_u64().unwrap() >= 2, "{a}");
    assert_eq!(a["last_exit"]["code"], 4, "{a}");

    let a = w.wait_state("killed", "running", T);
    let pid = pid_of(&a).expect("pid");
    kill(pid, 9);
    let a = wait_new_pid(&w, "killed", pid);
    assert_eq!(a["restarts"], 1, "{a}");
    assert_eq!(a["last_exit"]["signal"], "SIGKILL", "{a}");

    let a = w.wait_state("succeeds", "exited", T);
    assert_eq!(a["restarts"], 0, "{a}");
    assert_eq!(a["last_exit"]["code"], 0, "{a}");
    assert!(a["pid"].is_null(), "{a}");
    assert!(a["next_restart_at"].is_null(), "{a}");
    // Far longer than its 20ms backoff: it is not started again.
    stays_at(&ok, 1, Duration::from_millis(400));
    assert_eq!(w.state("succeeds"), "exited");
}

#[test]
fn temporary_child_is_never_restarted_whatever_its_exit() {
    let dir = temp_dir();
    let fail = abs(&dir, "fail.txt");
    let ok = abs(&dir, "ok.txt");
    let body = format!(
        r#"
[restart]
policy = "temporary"
backoff = {{ initial = "20ms", jitter = 0.0 }}

[[service]]
name = "fails"
command = {fail_cmd}

[[service]]
name = "succeeds"
command = {ok_cmd}

[[service]]
name = "killed"
command = ["sleep", "1000"]
"#,
        fail_cmd = sh(&format!("echo run >> '{fail}'; exit 1")),
        ok_cmd = sh(&format!("echo run >> '{ok}'; exit 0")),
    );
    let w = Warden::start_in(dir, &body);

    let a = w.wait_state("fails", "exited", T);
    assert_eq!(a["last_exit"]["code"], 1, "{a}");
    let a = w.wait_state("succeeds", "exited", T);
    assert_eq!(a["last_exit"]["code"], 0, "{a}");
    let a = w.wait_state("killed", "running", T);
    let pid = pid_of(&a).expect("pid");
    kill(pid, 9);
    let a = w.wait_state("killed", "exited", T);
    assert_eq!(a["last_exit"]["signal"], "SIGKILL", "{a}");
    assert!(a["pid"].is_null(), "{a}");

    stays_at(&fail, 1, Duration::from_millis(300));
    assert_eq!(count(&ok), 1);
    for name in ["fails", "succeeds", "killed"] {
        let a = w.actor(name);
        assert_eq!(a["state"], "exited", "{a}");
        assert_eq!(a["restarts"], 0, "{a}");
        assert!(a["next_restart_at"].is_null(), "{a}");
    }
}

#[test]
fn backoff_delays_double_from_initial_and_cap_at_max() {
    let dir = temp_dir();
    let starts = abs(&dir, "starts.txt");
    let body = format!(
        r#"
[[service]]
name = "flappy"
command = {cmd}
restart = {{ backoff = {{ initial = "100ms", multiplier = 2.0, max = "400ms", jitter = 0.0 }}, intensity = {{ max = 20, within = "60s" }} }}
"#,
        cmd = sh(&format!("date +%s%N >> '{starts}'; exit 1")),
    );
    let w = Warden::start_in(dir, &body);

    let mut snapshots = Vec::new();
    wait_until("6 starts", Duration::from_secs(20), || {
        snapshots.push(w.actor("flappy"));
        count(&starts) >= 6
    });
    let times: Vec<f64> = lines(Path::new(&starts))
        .iter()
        .map(|l| line_ms(l))
        .collect();
    let gaps: Vec<f64> = times.windows(2).map(|p| p[1] - p[0]).take(5).collect();
    let expected = [100.0, 200.0, 400.0, 400.0, 400.0];
    for (k, (gap, want)) in gaps.iter().zip(expected).enumerate() {
        assert!(
            *gap >= want * 0.9 && *gap <= want + 150.0,
            "gap {k} between starts was {gap:.0}ms, expected about {want}ms (all gaps: {gaps:?})"
        );
    }

    // Whenever it was seen waiting, the API told the pending delay and when it is due.
    let waiting: Vec<&Value> = snapshots
        .iter()
        .filter(|a| a["state"] == "backoff")
        .collect();
    assert!(
        !waiting.is_empty(),
        "never saw the actor in backoff while polling"
    );
    for a in waiting {
        let attempt = a["backoff"]["attempt"].as_u64().expect("backoff.attempt");
        let delay = a["backoff"]["delay_ms"].as_u64().expect("backoff.delay_ms");
        assert!(attempt >= 1, "{a}");
        let want = (100u64 << (attempt - 1).min(8)).min(400);
        assert_eq!(delay, want, "delay_ms for attempt {attempt}: {a}");
        assert!(a["next_restart_at"].is_string(), "{a}");
        assert!(a["pid"].is_null(), "{a}");
    }
}

#[test]
fn actor_in_backoff_shows_attempt_delay_and_when_it_will_be_restarted() {
    let dir = temp_dir();
    let starts = abs(&dir, "starts.txt");
    let body = format!(
        r#"
[[service]]
name = "flappy"
command = {cmd}
restart = {{ backoff = {{ initial = "1s", multiplier = 2.0, max = "10s", jitter = 0.0 }} }}
"#,
        cmd = sh(&format!("echo run >> '{starts}'; exit 1")),
    );
    let w = Warden::start_in(dir, &body);

    let a = w.wait_state("flappy", "backoff", T);
    let seen = SystemTime::now();
    assert_eq!(a["backoff"]["attempt"], 1, "{a}");
    assert_eq!(a["backoff"]["delay_ms"], 1000, "{a}");
    assert_eq!(a["restarts"], 0, "{a}");
    assert!(a["pid"].is_null(), "{a}");
    assert_eq!(a["last_exit"]["code"], 1, "{a}");
    let next = rfc3339(&a["next_restart_at"]);
    let exited = rfc3339(&a["last_exit"]["at"]);
    let after_exit = diff_ms(next, exited);
    assert!(
        (900.0..=1100.0).contains(&after_exit),
        "next_restart_at is {after_exit:.0}ms after the exit, expected the 1000ms delay: {a}"
    );
    let ahead = diff_ms(next, seen);
    assert!(
        (-200.0..=1100.0).contains(&ahead),
        "next_restart_at is {ahead:.0}ms from now: {a}"
    );

    // The next failure doubles the delay.
    wait_until("the second start", T, || count(&starts) >= 2);
    let a = wait_for("second backoff", T, || {
        let a = w.actor("flappy");
        (a["state"] == "backoff" && a["backoff"]["attempt"] == 2).then_some(a)
    });
    assert_eq!(a["backoff"]["delay_ms"], 2000, "{a}");
    assert_eq!(a["restarts"], 1, "{a}");
    let after_exit = diff_ms(
        rfc3339(&a["next_restart_at"]),
        rfc3339(&a["last_exit"]["at"]),
    );
    assert!(
        (1900.0..=2100.0).contains(&after_exit),
        "next_restart_at is {after_exit:.0}ms after the exit, expected 2000ms: {a}"
    );
}

#[test]
fn run_longer_than_reset_after_resets_the_backoff_while_fast_crashes_keep_growing() {
    let dir = temp_dir();
    let slow = abs(&dir, "slow.txt");
    let fast = abs(&dir, "fast.txt");
    let body = format!(
        r#"
[restart]
backoff = {{ initial = "100ms", multiplier = 2.0, max = "10s", jitter = 0.0 }}
reset_after = "500ms"
intensity = {{ max = 50, within = "60s" }}

[[service]]
name = "slow"
command = {slow_cmd}

[[service]]
name = "fast"
command = {fast_cmd}
"#,
        slow_cmd = sh(&format!("echo run >> '{slow}'; sleep 0.8; exit 1")),
        fast_cmd = sh(&format!("echo run >> '{fast}'; exit 1")),
    );
    let w = Warden::start_in(dir, &body);

    // The fast one: 100, 200, 400 ms... attempt and delay grow together.
    let a = wait_for("fast to reach attempt 3", T, || {
        let a = w.actor("fast");
        (a["backoff"]["attempt"].as_u64().unwrap_or(0) >= 3).then_some(a)
    });
    let attempt = a["backoff"]["attempt"].as_u64().unwrap();
    assert_eq!(
        a["backoff"]["delay_ms"].as_u64().unwrap(),
        100 << (attempt - 1),
        "{a}"
    );

    // The slow one: every run outlasts reset_after, so every delay is the initial one.
    let mut snapshots = Vec::new();
    wait_until(
        "slow to be restarted twice",
        Duration::from_secs(15),
        || {
            let a = w.actor("slow");
            let done = a["restarts"].as_u64().unwrap_or(0) >= 2;
            snapshots.push(a);
            done
        },
    );
    for a in &snapshots {
        if a["backoff"]["attempt"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(a["backoff"]["attempt"], 1, "backoff was not reset: {a}");
            assert_eq!(a["backoff"]["delay_ms"], 100, "backoff was not reset: {a}");
        }
    }
    let a = w.actor("slow");
    assert_eq!(a["backoff"]["delay_ms"], 100, "{a}");
}

#[test]
fn child_over_its_intensity_is_failed_and_an_operator_start_revives_it() {
    let dir = temp_dir();
    let starts = abs(&dir, "starts.txt");
    let body = format!(
        r#"
[[service]]
name = "flappy"
command = {cmd}
restart = {{ backoff = {{ initial = "200ms", jitter = 0.0 }}, intensity = {{ max = 3, within = "10s" }} }}
"#,
        cmd = sh(&format!("echo run >> '{starts}'; exit 1")),
    );
    let w = Warden::start_in(dir, &body);

    let a = w.wait_state("flappy", "failed", T);
    // The backoff grew to 800 ms (200, 400, 800) before the give-up.
    assert_eq!(a["backoff"]["attempt"], 3, "{a}");
    assert_eq!(a["backoff"]["delay_ms"], 800, "{a}");
    // The first run and 3 restarts; the 4th failure is the one that gives up.
    assert_eq!(a["restarts"], 3, "{a}");
    assert_eq!(count(&starts), 4);
    let reason = a["failed_reason"].as_str().unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("intensity"),
        "failed_reason should say the intensity was exceeded: {a}"
    );
    assert!(a["pid"].is_null(), "{a}");
    assert!(a["next_restart_at"].is_null(), "{a}");
    stays_at(&starts, 4, Duration::from_millis(500));
    assert_eq!(w.state("flappy"), "failed");

    // An operator start resets the window: it runs again, and restarts again by policy.
    let r = w.req("POST", "/api/v1/actors/flappy/start");
    assert_eq!(r.status, 200, "{}", r.text());
    // ... and the backoff: the first delay after the start is the initial one again.
    let a = w.wait_state("flappy", "backoff", T);
    assert_eq!(
        a["backoff"]["attempt"], 1,
        "backoff reset by the start: {a}"
    );
    assert_eq!(
        a["backoff"]["delay_ms"], 200,
        "backoff reset by the start: {a}"
    );
    wait_until("4 more runs after the operator start", T, || {
        count(&starts) >= 8
    });
    let a = w.wait_state("flappy", "failed", T);
    assert!(a["restarts"].as_u64().unwrap() >= 6, "{a}");
    stays_at(&starts, 8, Duration::from_millis(300));
}

#[test]
fn command_that_cannot_start_is_retried_by_policy_then_failed_with_the_reason() {
    let w = Warden::start(
        r#"
[[service]]
name = "ghost"
command = ["/nonexistent/warden-test-no-such-program", "--flag"]
restart = { backoff = { initial = "10ms", jitter = 0.0 }, intensity = { max = 2, within = "10s" } }
"#,
    );
    let a = w.wait_state("ghost", "failed", T);
    assert_eq!(a["restarts"], 2, "retried by its policy: {a}");
    assert!(a["pid"].is_null(), "{a}");
    let reason = a["last_exit"]["reason"].as_str().unwrap_or_default();
    let lower = reason.to_lowercase();
    assert!(
        (lower.contains("could not start") || lower.contains("cannot start"))
            && reason.contains("warden-test-no-such-program"),
        "last_exit.reason should say the program could not start: {a}"
    );
    assert!(a["failed_reason"].is_string(), "{a}");
}

/// Promise: a child that can never start, restarted without backoff and with no
/// intensity limit to speak of, does not keep warden's supervision thread from the API or
/// from signals (each failed start is handled on a later turn of the runtime). Before,
/// warden ignored SIGTERM for as long as such a loop ran.
#[test]
fn a_child_that_can_never_start_without_backoff_does_not_keep_warden_from_stopping() {
    let mut w = Warden::start(
        r#"
[[service]]
name = "ghost"
command = ["/nonexistent/warden-test-no-such-program"]
restart = { backoff = { initial = "0ms", max = "0ms", jitter = 0.0 }, intensity = { max = 1000000000, within = "1s" } }

[[service]]
name = "after"
command = ["sleep", "1000"]
"#,
    );
    // The actor API goes through the supervision thread: it answers mid-loop.
    wait_until("the ghost retried 200 times", T, || {
        w.actor("ghost")["restarts"].as_u64().unwrap_or(0) >= 200
    });
    let status = w.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "warden's exit after SIGTERM: {status:?}");
}

#[test]
fn operator_stop_during_a_pending_backoff_cancels_the_restart() {
    let dir = temp_dir();
    let starts = abs(&dir, "starts.txt");
    let body = format!(
        r#"
[[service]]
name = "flappy"
command = {cmd}
restart = {{ backoff = {{ initial = "1s", jitter = 0.0 }} }}
"#,
        cmd = sh(&format!("echo run >> '{starts}'; exit 1")),
    );
    let w = Warden::start_in(dir, &body);

    let a = w.wait_state("flappy", "backoff", T);
    assert!(a["next_restart_at"].is_string(), "{a}");
    let r = w.req("POST", "/api/v1/actors/flappy/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["state"], "stopped", "{a}");
    assert!(a["next_restart_at"].is_null(), "{a}");

    // Well past the 1s delay: no new run.
    stays_at(&starts, 1, Duration::from_millis(1500));
    let a = w.actor("flappy");
    assert_eq!(a["state"], "stopped", "{a}");
    assert_eq!(a["restarts"], 0, "{a}");
}

/// SEMANTICS #12 (stale timers): the stop timeout of an earlier run does not fire on the
/// next one. The run exits at once on SIGTERM; an operator start follows right away; when
/// the old run's 1 s stop timeout would have passed, the new run still runs, unsignalled.
#[test]
fn the_stop_timeout_of_an_earlier_run_does_not_kill_the_next_run() {
    let w = Warden::start(
        r#"
[[service]]
name = "quick"
command = ["sleep", "1000"]
stop = { signal = "TERM", timeout = "1s" }
"#,
    );
    let first = w.wait_state("quick", "running", T)["pid"]
        .as_u64()
        .expect("pid");
    let r = w.req("POST", "/api/v1/actors/quick/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.req("POST", "/api/v1/actors/quick/start");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = w.wait_state("quick", "running", T);
    let second = a["pid"].as_u64().expect("pid") as u32;
    assert_ne!(u64::from(second), first);
    std::thread::sleep(Duration::from_millis(1500));
    let a = w.actor("quick");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["pid"].as_u64(), Some(u64::from(second)), "{a}");
    assert!(
        alive(second),
        "the new run was killed by the old run's stop timer"
    );
}

/// SEMANTICS #12 (stale timers): the ready timeout of an earlier run does not fire on the
/// next one. Run 1 never says READY=1 (timeout 4 s); an operator restart at 3 s starts
/// run 2, which says READY=1 2.5 s after its start: after run 1's timeout would have
/// fired (at 4 s), before its own (at about 7 s), with 1.5 s of slack on each side for a
/// busy machine (python's start included). Run 2 must become running, not be restarted
/// as unready.
#[test]
fn the_ready_timeout_of_an_earlier_run_does_not_end_the_next_run() {
    let dir = temp_dir();
    let runs = abs(&dir, "runs.txt");
    let script = format!(
        "import os,socket,time\n\
         open({runs:?}, 'a').write('run\\n')\n\
         n = len(open({runs:?}).read().splitlines())\n\
         if n >= 2:\n    time.sleep(2.5)\n    \
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n    \
         s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)\n"
    );
    let body = format!(
        r#"
[[service]]
name = "slow"
command = ["python3", "-c", {script}]
ready = {{ notify = true, timeout = "4s" }}
"#,
        script = toml_str(&script),
    );
    let w = Warden::start_in(dir, &body);
    let first = wait_for("run 1 spawned", T, || w.actor_pid("slow"));
    let t0 = Instant::now();
    assert_eq!(w.state("slow"), "starting");
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        w.state("slow"),
        "starting",
        "run 1 is still waiting for READY=1"
    );
    let r = w.req("POST", "/api/v1/actors/slow/restart");
    assert_eq!(r.status, 200, "{}", r.text());
    let second = wait_for("run 2 spawned", T, || {
        w.actor_pid("slow").filter(|p| *p != first)
    });
    let a = w.wait_state("slow", "running", T);
    assert_eq!(a["pid"].as_u64(), Some(u64::from(second)), "{a}");
    assert!(
        t0.elapsed() >= Duration::from_millis(4000),
        "run 2 became ready before run 1's timeout would have fired: the test proves nothing"
    );
    assert!(
        a["last_exit"]["reason"]
            .as_str()
            .is_none_or(|r| !r.to_lowercase().contains("ready")),
        "{a}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let a = w.actor("slow");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["pid"].as_u64(), Some(u64::from(second)), "{a}");
    assert_eq!(count(&runs), 2, "no third run");
}
