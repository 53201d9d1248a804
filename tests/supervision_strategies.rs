//! Restart strategies (one_for_one, one_for_all, rest_for_one) and supervisor intensity
//! (a nested supervisor escalating to its parent, the root giving up), with real child
//! processes under `warden up`.
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(10);

fn count(file: &str) -> usize {
    lines(Path::new(file)).len()
}

fn pid_of(a: &Value) -> Option<u32> {
    a["pid"].as_u64().map(|p| p as u32)
}

fn running_pid(w: &Warden, path: &str) -> u32 {
    pid_of(&w.wait_state(path, "running", T)).unwrap_or_else(|| panic!("{path} has no pid"))
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

fn assert_unchanged(w: &Warden, path: &str, pid: u32) {
    let a = w.actor(path);
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(pid_of(&a), Some(pid), "{path} was restarted: {a}");
    assert_eq!(a["restarts"], 0, "{a}");
    assert!(alive(pid));
}

#[test]
fn one_for_one_restarts_only_the_child_that_died() {
    let w = Warden::start(
        r#"
[root]
strategy = "one_for_one"

[restart]
backoff = { initial = "10ms", jitter = 0.0 }

[[service]]
name = "a"
command = ["sleep", "1000"]

[[service]]
name = "b"
command = ["sleep", "1000"]

[[service]]
name = "c"
command = ["sleep", "1000"]
"#,
    );
    let a = running_pid(&w, "a");
    let b = running_pid(&w, "b");
    let c = running_pid(&w, "c");
    kill(b, 9);
    let nb = wait_new_pid(&w, "b", b);
    assert_eq!(nb["restarts"], 1, "{nb}");
    assert_unchanged(&w, "a", a);
    assert_unchanged(&w, "c", c);
}

#[test]
fn one_for_all_restarts_every_child_stopping_in_reverse_and_starting_in_order() {
    let dir = temp_dir();
    let log = abs(&dir, "events.txt");
    // A short ready delay on each makes the start order visible in the file (the next
    // child starts only once the previous one is running).
    let body = format!(
        r#"
[root]
strategy = "one_for_all"

[restart]
backoff = {{ initial = "10ms", jitter = 0.0 }}

[[service]]
name = "a"
command = {a}
ready = {{ delay = "150ms" }}

[[service]]
name = "b"
command = {b}
ready = {{ delay = "150ms" }}

[[service]]
name = "c"
command = {c}
ready = {{ delay = "150ms" }}
"#,
        a = logging_child("a", &log),
        b = logging_child("b", &log),
        c = logging_child("c", &log),
    );
    let w = Warden::start_in(dir, &body);
    let a = running_pid(&w, "a");
    let b = running_pid(&w, "b");
    let c = running_pid(&w, "c");
    assert_eq!(events(&log), ["start a", "start b", "start c"]);

    kill(b, 9);
    let na = wait_new_pid(&w, "a", a);
    let nb = wait_new_pid(&w, "b", b);
    let nc = wait_new_pid(&w, "c", c);
    for (name, after) in [("a", &na), ("b", &nb), ("c", &nc)] {
        assert_eq!(after["restarts"], 1, "{name}: {after}");
    }
    for pid in [a, b, c] {
        wait_until("old run gone", T, || !alive(pid));
    }
    wait_until("8 events", T, || count(&log) >= 8);
    assert_eq!(
        events(&log),
        [
            "start a", "start b", "start c", // initial start, in order
            "stop c", "stop a", // the survivors stopped in reverse order (b was killed)
            "start a", "start b", "start c", // all started again, in order
        ]
    );
    assert_stopped_one_after_the_other(&log, "stop c", "stop a");
}

#[test]
fn rest_for_one_restarts_the_dead_child_and_those_after_it_but_not_those_before() {
    let dir = temp_dir();
    let log = abs(&dir, "events.txt");
    let body = format!(
        r#"
[root]
strategy = "rest_for_one"

[restart]
backoff = {{ initial = "10ms", jitter = 0.0 }}

[[service]]
name = "a"
command = {a}
ready = {{ delay = "150ms" }}

[[service]]
name = "b"
command = {b}
ready = {{ delay = "150ms" }}

[[service]]
name = "c"
command = {c}
ready = {{ delay = "150ms" }}
"#,
        a = logging_child("a", &log),
        b = logging_child("b", &log),
        c = logging_child("c", &log),
    );
    let w = Warden::start_in(dir, &body);
    let a = running_pid(&w, "a");
    let b = running_pid(&w, "b");
    let c = running_pid(&w, "c");

    kill(b, 9);
    let nb = wait_new_pid(&w, "b", b);
    let nc = wait_new_pid(&w, "c", c);
    assert_eq!(nb["restarts"], 1, "{nb}");
    assert_eq!(nc["restarts"], 1, "{nc}");
    assert_unchanged(&w, "a", a);
    wait_until("6 events", T, || count(&log) >= 6);
    assert_eq!(
        events(&log),
        ["start a", "start b", "start c", "stop c", "start b", "start c"]
    );
}

/// SEMANTICS #14: a nested supervisor over its intensity gives up after exactly `max`
/// restarts, stops its children in reverse order (one after the other), fails to its
/// parent, and is restarted by it; the parent's other child never notices.
#[test]
fn nested_supervisor_over_its_intensity_stops_its_children_and_is_restarted_by_its_parent() {
    let dir = temp_dir();
    let log = abs(&dir, "events.txt");
    let crashes = abs(&dir, "crashes.txt");
    // The crasher fails on its first 3 runs and runs for good from the 4th on, so the
    // count freezes once inner's second incarnation starts it.
    let crasher = sh(&format!(
        "touch '{crashes}'; n=$(wc -l < '{crashes}'); echo \"run $(date +%s%N)\" >> '{crashes}'; \
         if [ \"$n\" -ge 3 ]; then exec sleep 1000; fi; exit 1"
    ));
    let body = format!(
        r#"
[[supervisor]]
name = "inner"
intensity = {{ max = 2, within = "10s" }}

[[service]]
name = "b1"
supervisor = "inner"
command = {b1}
ready = {{ delay = "100ms" }}

[[service]]
name = "b2"
supervisor = "inner"
command = {b2}
ready = {{ delay = "100ms" }}

[[service]]
name = "crasher"
supervisor = "inner"
command = {crasher}
restart = {{ backoff = {{ initial = "10ms", jitter = 0.0 }}, intensity = {{ max = 1000, within = "10s" }} }}

[[service]]
name = "steady"
command = ["sleep", "1000"]
"#,
        b1 = logging_child("b1", &log),
        b2 = logging_child("b2", &log),
    );
    let w = Warden::start_in(dir, &body);
    let steady = running_pid(&w, "steady");

    let inner = wait_for("inner to be restarted by the root", T, || {
        let a = w.actor("inner");
        (a["restarts"].as_u64().unwrap_or(0) >= 1).then_some(a)
    });
    assert_eq!(inner["kind"], "supervisor", "{inner}");
    let reason = inner["last_exit"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("intensity"),
        "inner's last_exit.reason should say it exceeded its intensity: {inner}"
    );
    w.wait_state("inner/crasher", "running", T);
    wait_until("the crasher's 4th run", T, || count(&crashes) >= 4);
    assert_eq!(w.actor("inner")["restarts"], 1, "inner restarted once");

    // Its first incarnation allowed 2 restarts and gave up on the 3rd failure: exactly 3
    // runs before the pause of stopping b2 and b1 (>= 400 ms), then the 4th run.
    let runs: Vec<f64> = lines(Path::new(&crashes))
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u128>().ok())
        .map(|ns| ns as f64 / 1e6)
        .collect();
    assert_eq!(
        runs.len(),
        4,
        "3 failed runs, then one that keeps running: {runs:?}"
    );
    let first_pause = runs
        .windows(2)
        .position(|w| w[1] - w[0] >= 300.0)
        .map(|i| i + 1);
    assert_eq!(
        first_pause,
        Some(3),
        "inner's first incarnation should run the crasher exactly 3 times: {runs:?}"
    );

    // Giving up stopped the healthy children too, in reverse order, one after the other;
    // the new incarnation started them again in order.
    wait_until("b1 and b2 started again", T, || count(&log) >= 6);
    assert_eq!(
        events(&log),
        ["start b1", "start b2", "stop b2", "stop b1", "start b1", "start b2"]
    );
    assert_stopped_one_after_the_other(&log, "stop b2", "stop b1");

    // The root's other child never noticed.
    let a = w.actor("steady");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(pid_of(&a), Some(steady), "{a}");
    assert_eq!(a["restarts"], 0, "{a}");
    assert!(alive(steady));
}

#[test]
fn root_over_its_intensity_fails_every_child_and_warden_keeps_answering() {
    let dir = temp_dir();
    let crashes = abs(&dir, "crashes.txt");
    let body = format!(
        r#"
[root]
intensity = {{ max = 2, within = "10s" }}

[[service]]
name = "healthy"
command = ["sleep", "1000"]

[[service]]
name = "crasher"
command = {crasher}
restart = {{ backoff = {{ initial = "10ms", jitter = 0.0 }}, intensity = {{ max = 1000, within = "10s" }} }}
"#,
        crasher = sh(&format!("echo run >> '{crashes}'; exit 1")),
    );
    let mut w = Warden::start_in(dir, &body);
    let healthy = wait_for("healthy's pid", T, || w.actor_pid("healthy"));

    let c = w.wait_state("crasher", "failed", T);
    let h = w.wait_state("healthy", "failed", T);
    assert!(h["pid"].is_null(), "{h}");
    wait_until("the healthy sibling was stopped", T, || !alive(healthy));
    // 2 restarts allowed, the 3rd failure gives up.
    assert_eq!(count(&crashes), 3);

    // warden itself carries on.
    let quiet = Instant::now() + Duration::from_millis(400);
    while Instant::now() < quiet {
        assert!(w.try_wait().is_none(), "warden exited: {}", w.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&crashes), 3, "nothing was started again");
    for name in ["healthy", "crasher"] {
        assert_eq!(w.state(name), "failed");
    }

    // Both say why they were given up on, the healthy sibling included.
    for a in [c, h, w.actor("crasher"), w.actor("healthy")] {
        let reason = a["failed_reason"].as_str().unwrap_or_default();
        assert!(
            reason.to_lowercase().contains("intensity"),
            "failed_reason should say the root's intensity was exceeded: {a}"
        );
    }
}
