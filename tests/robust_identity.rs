//! "Nothing signals a stranger" and "nothing runs twice" across warden restarts, with real
//! processes, kill -9 and real /proc checks: records are checked against the process's
//! identity (pid, start time, boot id, process group, uid) when an actor takes them, a
//! record that cannot be adopted never leaves its process beside a fresh instance, the
//! orphan sweep kills by this warden's random instance id only, children do not inherit
//! warden's own notify/activation variables or its raised open files limit, secrets left
//! empty by a power loss are regenerated, and without pidfds warden falls back to /proc.
mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::census::stat_field;
use support::*;

const T: Duration = Duration::from_secs(10);

/// The tests of this file kill and restart wardens and plant pids: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pid_of(a: &Value) -> Option<u32> {
    a["pid"].as_u64().map(|p| p as u32)
}

fn running_pid(w: &Warden, path: &str) -> u32 {
    pid_of(&w.wait_state(path, "running", T)).unwrap_or_else(|| panic!("{path} has no pid"))
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("uid")
}

fn environ(pid: u32) -> Vec<String> {
    proc_strings(pid, "environ")
}

/// A process the test started itself; killed and reaped on drop.
struct Owned(Child);

impl Owned {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sleep 1000` in a process group of its own, with `env` added.
fn sleeper(env: &[(&str, &str)]) -> Owned {
    Owned(
        Command::new("sleep")
            .arg("1000")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sleep"),
    )
}

/// Writes a record for actor `/name` naming `pid` (its real start time plus `skew`, the
/// process group `pgid`), as a warden would have.
fn plant(state: &Path, name: &str, pid: u32, pgid: u32, skew: u64) -> PathBuf {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot id")
        .trim()
        .to_owned();
    let record = serde_json::json!({
        "path": format!("/{name}"),
        "pid": pid,
        "pgid": pgid,
        "start_time": stat_field(pid, 22).expect("start time") + skew,
        "boot_id": boot_id,
        "uid": uid_of(pid),
        "output": null,
    });
    let dir = state.join("children");
    std::fs::create_dir_all(&dir).expect("children dir");
    let file = dir.join(format!("{name}@{pid}.json"));
    std::fs::write(&file, serde_json::to_vec(&record).expect("json")).expect("write record");
    file
}

/// A fresh instance id written where warden keeps it, before warden first runs.
fn plant_instance(state: &Path) -> String {
    let id = format!("{:032x}", u128::from(std::process::id()) << 64 | 0xfeed);
    std::fs::create_dir_all(state).expect("state dir");
    std::fs::write(state.join("instance"), format!("{id}\n")).expect("instance file");
    id
}

/// Promise: nothing signals a stranger (SEMANTICS 24). The recorded process is alive with
/// the right start time when warden opens its store, but dies before its actor (behind a
/// slow first child) takes the record, and its pid is reused by another process: the new
/// process is neither adopted nor signalled. (The old code checked only that the pid was
/// alive at that moment, adopted the stranger and signalled its group on stop.)
#[test]
fn a_pid_reused_after_the_store_was_opened_is_neither_adopted_nor_signalled() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let recorded = sleeper(&[]);
    let x = recorded.pid();
    plant(&state, "svc", x, x, 0);
    let body = "[[service]]\nname = \"first\"\ncommand = [\"sleep\", \"1000\"]\n\
                ready = { delay = \"3s\" }\n\n\
                [[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"1000\"]\n";
    let w = Warden::start_in_env(dir, body, &[]);
    // The store is open (the first child is starting): now the pid gets a new owner.
    wait_until("/first spawned", T, || w.actor_pid("first").is_some());
    drop(recorded);
    let stranger = spawn_with_pid(x);
    if stranger.is_none() && !alive(x) {
        eprintln!("pid {x} could not be reused (a busy machine): nothing to check");
        return;
    }
    // Either our sleep has the pid, or another process of the machine took it first:
    // both are strangers to warden (the latter is not ours to watch for signals).
    let fresh = running_pid(&w, "svc");
    assert_ne!(
        fresh, x,
        "the process that took the recorded pid was adopted"
    );
    drop(w);
    if let Some(stranger) = stranger {
        assert!(
            alive(stranger.pid()),
            "warden signalled the process that reused a recorded pid"
        );
    }
}

/// Spawns `sleep 1000` with pid `pid` (free now) through ns_last_pid (root only); a few
/// tries, since other processes on the machine fork too.
fn spawn_with_pid(pid: u32) -> Option<Owned> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).ok()?;
        let s = sleeper(&[]);
        if s.pid() == pid {
            return Some(s);
        }
        if alive(pid) {
            eprintln!("pid {pid} taken by another process of the machine");
            return None;
        }
    }
    None
}

/// Promise: nothing signals a stranger (SEMANTICS 24). Records whose process group is 0
/// (which would be warden's own group) or not the process's own are never adopted and
/// their groups never signalled: strangers and the canary group live, a fresh instance
/// runs, warden stops cleanly. (The old code adopted both, and on stop sent the stop
/// signal and SIGKILL to group 0 — warden's own — and to the canary's group.)
#[test]
fn records_with_group_0_or_a_foreign_group_never_signal_that_group() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let canary = sleeper(&[]);
    let b = sleeper(&[]);
    let c = sleeper(&[]);
    plant(&state, "zero", b.pid(), 0, 0);
    plant(&state, "foreign", c.pid(), canary.pid(), 0);
    let body = "[[service]]\nname = \"zero\"\ncommand = [\"sleep\", \"1000\"]\n\n\
                [[service]]\nname = \"foreign\"\ncommand = [\"sleep\", \"1000\"]\n";
    let mut w = Warden::start_in_env(dir, body, &[]);
    let zero = running_pid(&w, "zero");
    let foreign = running_pid(&w, "foreign");
    assert_ne!(zero, b.pid(), "a record with process group 0 was adopted");
    assert_ne!(
        foreign,
        c.pid(),
        "a record naming another group was adopted"
    );
    let status = w.signal_and_wait(15, T);
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    for (what, p) in [("canary", &canary), ("stranger b", &b), ("stranger c", &c)] {
        assert!(alive(p.pid()), "{what} (pid {}) was signalled", p.pid());
    }
}

/// Promise: nothing runs twice (SEMANTICS 24). A record of a live process of this
/// instance that cannot be adopted (it names a group the process does not lead) is
/// dropped, and the process is killed before the fresh instance starts (the fresh one
/// looks whether the old is still alive). (The old code adopted it as if it led that
/// group, and would signal that group.)
#[test]
fn a_record_that_cannot_be_adopted_is_killed_before_the_fresh_instance_starts() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let instance = plant_instance(&state);
    let canary = sleeper(&[]);
    let old = sleeper(&[("WARDEN_INSTANCE", &instance), ("WARDEN_ACTOR", "/svc")]);
    plant(&state, "svc", old.pid(), canary.pid(), 0);
    let starts = abs(&dir, "starts.txt");
    // The fresh instance writes "old-alive" if the old process still runs (not a zombie)
    // when it starts.
    let script = format!(
        "s=$(sed -n 's/.*) \\(.\\).*/\\1/p' /proc/{old}/stat 2>/dev/null); \
         if [ -n \"$s\" ] && [ \"$s\" != Z ]; then echo old-alive >> '{starts}'; fi; \
         echo start $$ >> '{starts}'; exec sleep 1000",
        old = old.pid()
    );
    let body = format!("[[service]]\nname = \"svc\"\ncommand = {}\n", sh(&script));
    let w = Warden::start_in_env(dir, &body, &[]);
    let fresh = running_pid(&w, "svc");
    assert_ne!(fresh, old.pid(), "the unadoptable record was adopted");
    wait_until("the fresh start line", T, || {
        lines(Path::new(&starts)).contains(&format!("start {fresh}"))
    });
    assert_eq!(
        lines(Path::new(&starts)),
        [format!("start {fresh}")],
        "the old process was alive when the fresh instance started"
    );
    assert!(
        !alive(old.pid()),
        "the old instance still runs beside the fresh one"
    );
    drop(w);
    assert!(
        alive(canary.pid()),
        "the group named by the record was signalled"
    );
}

/// Promise: nothing signals a stranger (SEMANTICS 24; design: the orphan marker is
/// `WARDEN_INSTANCE`). The sweep at start kills a process marked with this instance and no
/// record, and spares one marked with another instance and one whose environment names
/// the same state_dir path (another warden, e.g. in a container). (The old code swept by
/// the state_dir path: it killed the latter and missed the former.)
#[test]
fn the_orphan_sweep_kills_by_instance_id_only() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let instance = plant_instance(&state);
    let state_text = state.to_string_lossy().into_owned();
    let other_instance = sleeper(&[("WARDEN_INSTANCE", "0123456789abcdef0123456789abcdef")]);
    let same_path = sleeper(&[("WARDEN_STATE_DIR", &state_text)]);
    let orphan = sleeper(&[("WARDEN_INSTANCE", &instance)]);
    let body = "[[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"1000\"]\n";
    let w = Warden::start_in_env(dir, body, &[]);
    running_pid(&w, "svc");
    wait_until("the orphan of this instance killed", T, || {
        !alive(orphan.pid())
    });
    assert!(
        alive(other_instance.pid()),
        "a process of another instance was killed"
    );
    assert!(
        alive(same_path.pid()),
        "a process naming the same state_dir path was killed"
    );
}

/// Promise: children do not inherit `NOTIFY_SOCKET`, `LISTEN_*` or `WATCHDOG_*`, nor a
/// marker naming state_dir; their RLIMIT_NOFILE is the one warden was started with
/// (design "Security"). (The old code passed all of these on, the marker was
/// `WARDEN_STATE_DIR=<state_dir>`, and children got warden's raised soft limit.)
#[test]
fn children_get_neither_warden_s_manager_variables_nor_its_raised_open_files_limit() {
    let _serial = serial();
    let (soft, hard) = open_files_limit();
    let lower = 256.min(hard);
    assert!(
        lower < hard,
        "the hard limit ({hard}) leaves nothing to raise"
    );
    // Warden inherits this soft limit from the test process (only this file's tests run in
    // it, one at a time).
    set_open_files_limit(lower, hard);
    let dir = temp_dir();
    let state = dir.path().join("state");
    let body = "[[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"1000\"]\n";
    let env = [
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("WATCHDOG_USEC", "1000000"),
        ("WATCHDOG_PID", "1"),
        ("LISTEN_FDS", "1"),
        ("LISTEN_PID", "1"),
        ("LISTEN_FDNAMES", "socket"),
        ("WARDEN_STATE_DIR", "/somewhere/else"),
    ];
    let w = Warden::start_in_env(dir, body, &env);
    set_open_files_limit(soft, hard);
    let pid = running_pid(&w, "svc");
    let vars = environ(pid);
    for (key, _) in env {
        assert!(
            !vars.iter().any(|v| v.starts_with(&format!("{key}="))),
            "the child inherited {key}: {vars:?}"
        );
    }
    assert!(
        !vars.iter().any(|v| v.contains(&*state.to_string_lossy())),
        "the child's environment names state_dir: {vars:?}"
    );
    let instance = instance_of(&state).expect("state_dir/instance");
    assert_eq!(instance.len(), 32, "{instance}");
    assert!(
        vars.contains(&format!("WARDEN_INSTANCE={instance}")),
        "{vars:?}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let child_soft: u64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("soft limit");
    assert_eq!(child_soft, lower, "the child's open files limit: {line}");
    let warden_limits =
        std::fs::read_to_string(format!("/proc/{}/limits", w.pid())).expect("limits");
    assert!(
        warden_limits
            .lines()
            .any(|l| l.starts_with("Max open files") && !l.contains(&format!(" {lower} "))),
        "warden itself did not raise its limit: {warden_limits}"
    );
}

fn open_files_limit() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let mut f = line.split_whitespace().skip(3);
    let soft = f.next().and_then(|v| v.parse().ok()).expect("soft");
    let hard = f.next().and_then(|v| v.parse().ok()).expect("hard");
    (soft, hard)
}

fn set_open_files_limit(soft: u64, hard: u64) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("prlimit");
    assert!(status.success(), "prlimit failed");
}

/// Promise: secrets are written durably, and a file a power loss left empty does not
/// block every start (design "Durability"). (The old code refused to start on an empty
/// admin.token.)
#[test]
fn an_empty_admin_token_and_pool_key_are_regenerated() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    std::fs::write(state.join("admin.token"), "").expect("token");
    std::fs::write(state.join("pool.key"), "").expect("key");
    let body = "[[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"1000\"]\n";
    let w = Warden::start_in_env(dir, body, &[]);
    running_pid(&w, "svc");
    use std::os::unix::fs::PermissionsExt;
    for (file, len) in [("admin.token", 64), ("pool.key", 64), ("instance", 32)] {
        let path = state.join(file);
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(text.trim().len(), len, "{file}: {text:?}");
        assert!(text.ends_with('\n'), "{file}: {text:?}");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    assert!(
        w.stderr_with("empty", T).is_some(),
        "no warning about the empty files: {}",
        w.stderr_text()
    );
}

/// Promise: without pidfd support warden says so at start and uses the /proc identity
/// check before each signal (SEMANTICS 24, design "Robustness"). With `WARDEN_PIDFD=off`:
/// a warden restarted after kill -9 adopts its child, sees the adopted child's exit within
/// a bound (polling /proc), restarts it, and stops an adopted child on request. (The old
/// code had no fallback and said nothing: it needed pidfds.)
#[test]
fn without_pidfds_adoption_exit_detection_and_stop_still_work() {
    let _serial = serial();
    let env = [("WARDEN_PIDFD", "off")];
    let body = "[[service]]\nname = \"a\"\ncommand = [\"sleep\", \"1000\"]\n\n\
                [[service]]\nname = \"b\"\ncommand = [\"sleep\", \"1000\"]\n";
    let dir = temp_dir();
    let mut w = Warden::start_in_env(dir, body, &env);
    let a = running_pid(&w, "a");
    let b = running_pid(&w, "b");
    w.crash();
    let w = Warden::start_in_env(w.into_dir(), body, &env);
    assert!(
        w.stderr_with("falling back", T).is_some(),
        "warden did not say it falls back without pidfds: {}",
        w.stderr_text()
    );
    assert_eq!(running_pid(&w, "a"), a, "a was not adopted");
    assert_eq!(running_pid(&w, "b"), b, "b was not adopted");

    // The exit of an adopted child (not warden's child) is seen by polling /proc.
    let killed = Instant::now();
    kill(a, 9);
    let restarted = wait_for("a restarted after its exit", T, || {
        let actor = w.actor("a");
        (actor["state"] == "running" && pid_of(&actor).is_some_and(|p| p != a)).then_some(actor)
    });
    let seen = killed.elapsed();
    eprintln!("adopted exit seen and restarted after {seen:?}");
    assert!(seen < Duration::from_secs(2), "took {seen:?}: {restarted}");

    // Stopping an adopted child signals it after the identity check.
    let r = w.req("POST", "/api/v1/actors/b/stop");
    assert!(r.status < 300, "stop: {} {}", r.status, r.text());
    w.wait_state("b", "stopped", T);
    wait_until("adopted b gone", T, || !alive(b));
}

/// Promise: nothing runs twice (design "Durability": an adopted process's exit status goes
/// to its new parent). A transient job adopted after kill -9 that then completes with code
/// 0 is not run again: warden reads its status from /proc while it is a zombie, and an
/// unknown status counts as normal for a transient child. (The old code reported `Lost`,
/// counted it as a failure and ran the job a second time.)
#[test]
fn an_adopted_transient_job_that_completes_is_not_run_again() {
    let _serial = serial();
    let dir = temp_dir();
    let runs = abs(&dir, "runs.txt");
    let gate = abs(&dir, "gate");
    let script =
        format!("echo run $$ >> '{runs}'; while [ ! -e '{gate}' ]; do sleep 0.05; done; exit 0");
    let body = format!(
        "[[service]]\nname = \"job\"\ncommand = {}\nrestart = {{ policy = \"transient\" }}\n",
        sh(&script)
    );
    let mut w = Warden::start_in_env(dir, &body, &[]);
    let first = running_pid(&w, "job");
    w.crash();
    let w = Warden::start_in_env(w.into_dir(), &body, &[]);
    assert_eq!(running_pid(&w, "job"), first, "the job was not adopted");
    std::fs::write(&gate, "").expect("open the gate");
    wait_until("the adopted job gone", T, || !alive(first));
    // Time for a wrong restart to happen (backoff is ~100 ms).
    std::thread::sleep(Duration::from_millis(700));
    let actor = w.actor("job");
    assert_eq!(
        lines(Path::new(&runs)),
        [format!("run {first}")],
        "the completed job ran again: {actor}"
    );
    assert_ne!(actor["state"], "running", "{actor}");
}

/// Promise: an adopted child keeps supervising as before (design "Durability": child
/// output goes to log files that survive a warden restart). A service whose stdout goes
/// elsewhere but whose stderr is on warden's pipe gets that pipe reattached on adoption:
/// lines it writes after the restart reach the log (a pipe nobody drains would block it
/// after 1 MiB). (The old code reattached only fd 1.)
#[test]
fn adoption_reattaches_a_pipe_that_only_stderr_still_uses() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let log = state.join("logs/chatty.log");
    let marker = abs(&dir, "after-restart");
    let body = format!(
        "[[service]]\nname = \"chatty\"\ncommand = {}\n",
        sh(&format!(
            "exec >/dev/null; i=0; while :; do i=$((i+1)); \
             if [ -e '{marker}' ]; then echo after $i >&2; else echo before $i >&2; fi; \
             sleep 0.02; done"
        ))
    );
    let mut w = Warden::start_in_env(dir, &body, &[]);
    let pid = running_pid(&w, "chatty");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("stderr lines in the log", T, || {
        read_log().contains("before 5")
    });
    w.crash();
    let w = Warden::start_in_env(w.into_dir(), &body, &[]);
    assert_eq!(running_pid(&w, "chatty"), pid, "not adopted");
    std::fs::write(&marker, "").expect("marker");
    wait_until(
        "stderr lines written after the restart in the log",
        T,
        || read_log().contains("after "),
    );
}
