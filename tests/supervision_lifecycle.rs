//! Lifecycle of services under `warden up`: ordered start and reverse stop, ready checks
//! holding the next child, stop timeouts ending in SIGKILL to the whole process group,
//! no process left behind, and operator control through the admin API.
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

/// Reads a pid a child wrote to `file` (waits until it is there).
fn pid_in(file: &str) -> u32 {
    wait_for(&format!("a pid in {file}"), T, || {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
}

/// A python3 one-liner (in double quotes, for a shell script) that sends `READY=1` on
/// `$NOTIFY_SOCKET` after `delay` seconds and then sleeps.
fn notify_after(delay: f64) -> String {
    format!(
        "python3 -c 'import socket,os,time; time.sleep({delay}); \
         s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
         s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"]); time.sleep(1000)'"
    )
}

#[test]
fn children_start_in_file_order_waiting_for_readiness_and_stop_in_reverse_on_sigterm() {
    let dir = temp_dir();
    let log = abs(&dir, "events.txt");
    // "a" has a short ready delay too, so that its line cannot race b's in the file.
    let body = format!(
        r#"
[[service]]
name = "a"
command = {a}
ready = {{ delay = "100ms" }}

[[service]]
name = "b"
command = {b}
ready = {{ delay = "300ms" }}

[[service]]
name = "c"
command = {c}
"#,
        a = logging_child("a", &log),
        b = logging_child("b", &log),
        c = logging_child("c", &log),
    );
    let mut w = Warden::start_in(dir, &body);
    let pids: Vec<u32> = ["a", "b", "c"].iter().map(|n| running_pid(&w, n)).collect();
    wait_until("3 starts", T, || count(&log) >= 3);
    let b_to_c = event_ms(&log, "start c") - event_ms(&log, "start b");
    assert!(
        b_to_c >= 200.0,
        "c wrote its start line {b_to_c:.0}ms after b; it must wait for b's 300ms ready delay"
    );
    let spawned = diff_ms(
        rfc3339(&w.actor("c")["started_at"]),
        rfc3339(&w.actor("b")["started_at"]),
    );
    assert!(
        spawned >= 295.0,
        "c was spawned {spawned:.0}ms after b; it must wait for b's 300ms ready delay"
    );

    let status = w.signal_and_wait(15, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    assert_eq!(
        events(&log),
        ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    );
    // Reverse order means one after the other, not three SIGTERMs back to back.
    assert_stopped_one_after_the_other(&log, "stop c", "stop b");
    assert_stopped_one_after_the_other(&log, "stop b", "stop a");
    for pid in pids {
        wait_until("every service gone", Duration::from_secs(5), || !alive(pid));
    }
}

#[test]
fn notify_child_is_starting_until_it_sends_ready_and_the_next_child_waits_for_it() {
    let dir = temp_dir();
    let log = abs(&dir, "events.txt");
    let body = format!(
        r#"
[[service]]
name = "n"
command = {n}
ready = {{ notify = true, timeout = "20s" }}

[[service]]
name = "after"
command = {after}
"#,
        n = sh(&format!(
            "echo \"start n $(date +%s%N)\" >> '{log}'; exec {}",
            notify_after(0.5)
        )),
        after = sh(&format!(
            "echo \"start after $(date +%s%N)\" >> '{log}'; exec sleep 1000"
        )),
    );
    let w = Warden::start_in(dir, &body);

    let a = wait_for("n spawned", T, || {
        let a = w.actor("n");
        pid_of(&a).is_some().then_some(a)
    });
    assert_eq!(a["state"], "starting", "no READY=1 yet: {a}");
    let after = w.actor("after");
    assert!(after["pid"].is_null(), "after started too early: {after}");
    assert_ne!(after["state"], "running", "{after}");

    let a = w.wait_state("n", "running", T);
    assert_eq!(a["restarts"], 0, "{a}");
    running_pid(&w, "after");
    wait_until("both start lines", T, || count(&log) >= 2);
    assert_eq!(events(&log), ["start n", "start after"]);
    let gap = event_ms(&log, "start after") - event_ms(&log, "start n");
    assert!(
        gap >= 450.0,
        "after started {gap:.0}ms after n, before n's READY=1 (sent 500ms after its start)"
    );
}

/// A run that never passes its ready check within `timeout` is ended and restarted: the
/// old process is gone, a new process exists and is `starting` again (not only the
/// `restarts` counter).
fn assert_unready_run_is_restarted(ready: &str) {
    let w = Warden::start(&format!(
        r#"
[[service]]
name = "mute"
command = ["sleep", "1000"]
ready = {ready}
restart = {{ backoff = {{ initial = "50ms", jitter = 0.0 }} }}
"#
    ));
    let first = wait_for("mute spawned", T, || {
        let a = w.actor("mute");
        pid_of(&a).is_some().then_some(a)
    });
    assert_eq!(first["state"], "starting", "{first}");
    let started = rfc3339(&first["started_at"]);
    let first = pid_of(&first).unwrap();
    let a = wait_for("mute restarted", T, || {
        let a = w.actor("mute");
        (a["restarts"].as_u64().unwrap_or(0) >= 1).then_some(a)
    });
    let given_up = diff_ms(rfc3339(&a["last_exit"]["at"]), started);
    assert!(
        given_up >= 480.0,
        "the first run ended {given_up:.0}ms after its start, before its 500ms ready timeout: {a}"
    );
    let reason = a["last_exit"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("ready"),
        "last_exit.reason should name the ready check: {a}"
    );
    wait_until("the unready run gone", T, || !alive(first));
    assert_ne!(a["state"], "running", "never ready, never running: {a}");
    // A new process runs, and is waiting for its own ready check again.
    let second = wait_for("a new live run", T, || {
        let a = w.actor("mute");
        pid_of(&a)
            .filter(|&p| p != first && alive(p))
            .map(|p| (p, a))
    });
    assert_eq!(second.1["state"], "starting", "the new run: {}", second.1);
}

#[test]
fn notify_child_that_never_signals_ready_within_its_timeout_is_restarted() {
    assert_unready_run_is_restarted(r#"{ notify = true, timeout = "500ms" }"#);
}

#[test]
fn tcp_ready_check_that_never_connects_within_its_timeout_is_restarted() {
    // Nothing listens on this port.
    let silent = free_port();
    assert_unready_run_is_restarted(&format!(
        r#"{{ tcp = "127.0.0.1:{silent}", timeout = "500ms" }}"#
    ));
}

#[test]
fn stop_timeout_ends_in_sigkill_to_the_whole_process_group() {
    let dir = temp_dir();
    let pid_file = abs(&dir, "pid");
    let gpid_file = abs(&dir, "gpid");
    let body = format!(
        r#"
[[service]]
name = "stubborn"
command = {cmd}
stop = {{ signal = "TERM", timeout = "500ms" }}
"#,
        cmd = sh(&format!(
            "trap '' TERM; echo $$ > '{pid_file}'; sleep 1000 & echo $! > '{gpid_file}'; wait"
        )),
    );
    let w = Warden::start_in(dir, &body);
    let leader = running_pid(&w, "stubborn");
    assert_eq!(pid_in(&pid_file), leader);
    let grandchild = pid_in(&gpid_file);
    assert!(alive(grandchild));

    let t0 = Instant::now();
    let r = w.req("POST", "/api/v1/actors/stubborn/stop");
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["state"], "stopped", "{a}");
    assert!(a["pid"].is_null(), "{a}");
    assert_eq!(a["last_exit"]["signal"], "SIGKILL", "{a}");
    assert!(
        took >= Duration::from_millis(450) && took <= Duration::from_secs(5),
        "stop took {took:?}; expected about the 500ms stop timeout"
    );
    wait_until("the leader gone", Duration::from_secs(5), || !alive(leader));
    wait_until("the grandchild gone", Duration::from_secs(5), || {
        !alive(grandchild)
    });
}

/// A relative program (`./bin/hello.sh`) is found from the config file's folder, as
/// every relative path in the file is, even when the service has another `cwd`; the
/// child still runs in its `cwd`. Old code: "./bin/hello.sh: No such file or directory"
/// (looked up from `cwd`), then `failed`.
#[test]
fn a_relative_program_is_found_from_the_config_folder_not_from_cwd() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let work = dir.path().join("work");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&work).expect("work dir");
    std::fs::create_dir(&bin).expect("bin dir");
    let program = bin.join("hello.sh");
    std::fs::write(&program, "#!/bin/sh\npwd > started.txt\nexec sleep 1000\n").expect("script");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let body = "[[service]]\nname = \"svc\"\ncommand = [\"./bin/hello.sh\"]\ncwd = \"work\"\n";
    let w = Warden::start_in(dir, body);
    running_pid(&w, "svc");
    let started = work.join("started.txt");
    // The shell creates the file before it writes the line: wait for the whole line.
    let cwd = wait_for("the program wrote where it runs", T, || {
        std::fs::read_to_string(&started)
            .ok()
            .filter(|text| text.ends_with('\n'))
    });
    assert_eq!(
        Path::new(cwd.trim()),
        work.canonicalize().expect("canonical"),
        "the program runs in its cwd"
    );
}

/// A plain `[[service]]` runs in its `cwd`, with its `env` added to warden's, and is
/// stopped by its `stop.signal` (here INT, as in the README), not by SIGTERM.
#[test]
fn a_service_runs_in_its_cwd_with_its_env_and_is_stopped_by_its_stop_signal() {
    let dir = temp_dir();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    let script = "import os,signal,sys,time\n\
        open('cwd.txt', 'w').write(os.getcwd())\n\
        open('env.txt', 'w').write(os.environ.get('GREETING', '') + ' ' + os.environ.get('PATH', ''))\n\
        def stop(n, f):\n    open('signal.txt', 'w').write(signal.Signals(n).name); sys.exit(0)\n\
        signal.signal(signal.SIGINT, stop)\n\
        signal.signal(signal.SIGTERM, stop)\n\
        time.sleep(1000)\n";
    let body = format!(
        r#"
[[service]]
name = "svc"
command = ["python3", "-c", {script}]
cwd = {cwd}
env = {{ GREETING = "hello there" }}
stop = {{ signal = "INT", timeout = "10s" }}
"#,
        script = toml_str(script),
        cwd = toml_str(work.to_str().expect("utf-8")),
    );
    let w = Warden::start_in(dir, &body);
    let pid = running_pid(&w, "svc");
    let cwd_file = work.join("cwd.txt");
    let env_file = work.join("env.txt");
    wait_until("the service wrote its cwd and env", T, || {
        env_file.exists() && cwd_file.exists()
    });
    let cwd = std::fs::read_to_string(&cwd_file).expect("cwd.txt");
    assert_eq!(
        Path::new(&cwd),
        work.canonicalize().expect("canonical"),
        "the service's working folder"
    );
    let env = std::fs::read_to_string(&env_file).expect("env.txt");
    assert!(env.starts_with("hello there "), "GREETING: {env:?}");
    assert!(
        env.len() > "hello there ".len(),
        "warden's own environment (PATH) is inherited: {env:?}"
    );

    let t0 = Instant::now();
    let r = w.req("POST", "/api/v1/actors/svc/stop");
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let signal = std::fs::read_to_string(work.join("signal.txt")).unwrap_or_default();
    assert_eq!(signal, "SIGINT", "the stop signal the service received");
    assert_eq!(r.json()["last_exit"]["code"], 0, "{}", r.text());
    assert!(
        took < Duration::from_secs(5),
        "stopped by INT, not the timeout: {took:?}"
    );
    assert!(!alive(pid));
}

#[test]
fn crashed_leader_takes_its_grandchildren_with_it() {
    let dir = temp_dir();
    let gpid_file = abs(&dir, "gpid");
    let body = format!(
        r#"
[[service]]
name = "parent"
command = {cmd}
restart = {{ backoff = {{ initial = "10ms", jitter = 0.0 }} }}
"#,
        cmd = sh(&format!(
            "sleep 1000 & echo $! > '{gpid_file}.tmp'; mv '{gpid_file}.tmp' '{gpid_file}'; wait"
        )),
    );
    let w = Warden::start_in(dir, &body);
    let leader = running_pid(&w, "parent");
    let grandchild = pid_in(&gpid_file);
    assert!(alive(grandchild));

    kill(leader, 9);
    wait_until("the grandchild of the killed leader gone", T, || {
        !alive(grandchild)
    });
    // The next run has its own leader and grandchild.
    wait_for("a new leader", T, || {
        w.actor_pid("parent").filter(|p| *p != leader)
    });
}

#[test]
fn sigterm_to_warden_exits_zero_and_leaves_no_process_behind() {
    let dir = temp_dir();
    let g1 = abs(&dir, "g1");
    let g2 = abs(&dir, "g2");
    let body = format!(
        r#"
[[service]]
name = "plain"
command = ["sleep", "1000"]

[[service]]
name = "family"
command = {family}

[[service]]
name = "stubborn"
command = {stubborn}
stop = {{ timeout = "300ms" }}
"#,
        family = sh(&format!("sleep 1000 & echo $! > '{g1}'; wait")),
        stubborn = sh(&format!(
            "trap '' TERM; sleep 1000 & echo $! > '{g2}'; sleep 1000 & wait"
        )),
    );
    let mut w = Warden::start_in(dir, &body);
    let mut pids: Vec<u32> = ["plain", "family", "stubborn"]
        .iter()
        .map(|n| running_pid(&w, n))
        .collect();
    pids.push(pid_in(&g1));
    pids.push(pid_in(&g2));
    assert!(pids.iter().all(|p| alive(*p)));

    let t0 = Instant::now();
    let status = w.signal_and_wait(15, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t0.elapsed()
    );
    for pid in pids {
        wait_until(
            &format!("pid {pid} gone after warden exited"),
            Duration::from_secs(5),
            || !alive(pid),
        );
    }
}

#[test]
fn api_stop_start_and_restart_drive_an_actor_and_refuse_what_is_not_allowed() {
    let w = Warden::start(
        r#"
[[service]]
name = "x"
command = ["sleep", "1000"]
"#,
    );
    let first = running_pid(&w, "x");

    let r = w.req("POST", "/api/v1/actors/x/start");
    assert_eq!(r.status, 409, "start of a running actor: {}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());

    let r = w.req("POST", "/api/v1/actors/x/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["state"], "stopped", "{a}");
    assert!(a["pid"].is_null(), "{a}");
    wait_until("the stopped run gone", T, || !alive(first));

    let r = w.req("POST", "/api/v1/actors/x/stop");
    assert_eq!(r.status, 409, "stop of a stopped actor: {}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    assert_eq!(w.state("x"), "stopped");

    let r = w.req("POST", "/api/v1/actors/x/start");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["state"], "running", "{a}");
    let second = pid_of(&a).expect("pid after start");
    assert_ne!(second, first);
    assert!(alive(second));
    let restarts = a["restarts"].as_u64().expect("restarts");

    let r = w.req("POST", "/api/v1/actors/x/restart");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["state"], "running", "{a}");
    let third = pid_of(&a).expect("pid after restart");
    assert_ne!(third, second);
    assert_eq!(a["restarts"].as_u64(), Some(restarts + 1), "{a}");
    wait_until("the restarted run gone", T, || !alive(second));
    assert!(alive(third));

    for (method, path) in [
        ("GET", "/api/v1/actors/nope"),
        ("POST", "/api/v1/actors/nope/stop"),
        ("POST", "/api/v1/actors/nope/start"),
        ("POST", "/api/v1/actors/nope/restart"),
        ("GET", "/api/v1/actors/x/nope"),
    ] {
        let r = w.req(method, path);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert!(
            r.json()["error"].is_string(),
            "{method} {path}: {}",
            r.text()
        );
    }
}
