//! Durability of a running tree across warden crashes: a warden killed by SIGKILL and
//! started again on the same state_dir adopts every child still alive (same pid, no second
//! instance, output kept line for line), never adopts or signals a process whose pid was
//! reused, refuses to share its state_dir with a second warden, survives a crash loop, and
//! takes its children with it when `[runtime] on_exit = "stop"`.
mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::census::{instances_by_actor, marked, stat_field, Reaper};
use support::*;

const T: Duration = Duration::from_secs(10);

/// The tests of this file kill and restart wardens with tight timings: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A service that appends "start NAME <its pid>" to `file` and then is `sleep 1000`
/// (one process: the shell execs, so `$$` is the service's pid).
fn recording_sleeper(name: &str, file: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\ncommand = {}\n\n",
        sh(&format!(
            "echo \"start {name} $$\" >> '{file}'; exec sleep 1000"
        ))
    )
}

fn pid_of(a: &Value) -> Option<u32> {
    a["pid"].as_u64().map(|p| p as u32)
}

fn running_pid(w: &Warden, path: &str) -> u32 {
    pid_of(&w.wait_state(path, "running", T)).unwrap_or_else(|| panic!("{path} has no pid"))
}

/// Live instances (distinct process groups, sorted) of the actor `path`.
fn instances(state_dir: &Path, path: &str) -> Vec<u32> {
    let mut groups = instances_by_actor(&marked(state_dir))
        .remove(path)
        .unwrap_or_default();
    groups.sort_unstable();
    groups
}

/// A process the test started itself; killed and reaped on drop.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The record files in `state/children`, by file name.
fn record_files(state_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state_dir.join("children"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_warden_restarted_after_sigkill_adopts_every_child_with_the_same_pid_and_no_second_instance() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let starts = abs(&dir, "starts.txt");
    let names = ["a", "b", "c"];
    let body: String = names
        .iter()
        .map(|n| recording_sleeper(n, &starts))
        .collect();
    let mut w = Warden::start_in(dir, &body);
    let before: Vec<u32> = names.iter().map(|n| running_pid(&w, n)).collect();
    wait_until("3 start lines", T, || lines(Path::new(&starts)).len() >= 3);
    // Records are written off the supervision thread; a child whose record was still
    // queued at the SIGKILL is killed as an orphan and started afresh (SEMANTICS.md 24):
    // this test is about the recorded ones.
    wait_until("3 process records on disk", T, || {
        record_files(&state).len() >= 3
    });

    w.crash();
    for (name, pid) in names.iter().zip(&before) {
        assert!(
            alive(*pid),
            "{name} (pid {pid}) died with warden; on_exit is keep"
        );
    }
    let w = Warden::start_in(w.into_dir(), &body);
    for (name, pid) in names.iter().zip(&before) {
        let a = w.wait_state(name, "running", T);
        assert_eq!(pid_of(&a), Some(*pid), "{name} was not adopted: {a}");
        assert_eq!(a["restarts"], 0, "adoption is not a restart: {a}");
    }
    // A second instance would have written its start line by now.
    std::thread::sleep(Duration::from_millis(500));
    let all = lines(Path::new(&starts));
    for (name, pid) in names.iter().zip(&before) {
        let mine: Vec<&String> = all
            .iter()
            .filter(|l| l.starts_with(&format!("start {name} ")))
            .collect();
        assert_eq!(
            mine,
            [&format!("start {name} {pid}")],
            "{name} must have started exactly once: {all:?}"
        );
        assert_eq!(
            instances(&state, &format!("/{name}")),
            [*pid],
            "exactly one process of /{name}, the adopted one"
        );
    }

    // The new warden supervises what it adopted: an adopted child killed is restarted.
    let old_b = before[1];
    let killed_at = std::time::SystemTime::now();
    kill(old_b, 9);
    let b = wait_for("b restarted with a new pid", T, || {
        let a = w.actor("b");
        (a["state"] == "running" && pid_of(&a).is_some_and(|p| p != old_b)).then_some(a)
    });
    assert_eq!(b["restarts"], 1, "{b}");
    // Its exit is seen at once (a pidfd, not a poll): last_exit.at within 300 ms of the
    // kill, and the new run started one backoff (100 ms +-10 %) after that.
    let seen = diff_ms(rfc3339(&b["last_exit"]["at"]), killed_at);
    assert!(
        (-5.0..300.0).contains(&seen),
        "the adopted child's exit was seen {seen:.0} ms after its SIGKILL: {b}"
    );
    let backoff = diff_ms(rfc3339(&b["started_at"]), rfc3339(&b["last_exit"]["at"]));
    assert!(
        (85.0..600.0).contains(&backoff),
        "restarted {backoff:.0} ms after the exit; want the 100 ms backoff: {b}"
    );
    let reason = b["last_exit"]["reason"].as_str().unwrap_or("");
    // The status of an adopted process is read from /proc while it is a zombie (here
    // SIGKILL), or unknown when its new parent reaped it first.
    assert!(
        reason == "killed by SIGKILL" || reason.contains("status unknown"),
        "last_exit.reason should say SIGKILL or that the status is unknown: {b}"
    );
    let new_b = pid_of(&b).expect("pid");
    wait_until("b's second start line", T, || {
        lines(Path::new(&starts))
            .iter()
            .any(|l| l == &format!("start b {new_b}"))
    });
    for (i, name) in names.iter().enumerate() {
        if *name != "b" {
            assert_eq!(w.actor_pid(name), Some(before[i]), "{name} kept its pid");
        }
    }
}

/// The numbers of the "line N" lines of a log, in file order (a trailing partial line is
/// left out).
fn line_numbers(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            l.strip_prefix("line ")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected log line {l:?}"))
        })
        .collect()
}

#[test]
fn output_written_while_no_warden_runs_reaches_the_log_with_no_line_lost_or_repeated() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let log = state.join("logs/chatty.log");
    let body = format!(
        "[[service]]\nname = \"chatty\"\ncommand = {}\n",
        sh("i=0; while :; do i=$((i+1)); echo line $i; sleep 0.02; done")
    );
    let mut w = Warden::start_in(dir, &body);
    let pid = running_pid(&w, "chatty");
    wait_until("20 lines in the log", T, || line_numbers(&log).len() >= 20);

    w.crash();
    let at_crash = line_numbers(&log).last().copied().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(300));
    let mut w = Warden::start_in(w.into_dir(), &body);
    let a = w.wait_state("chatty", "running", T);
    assert_eq!(pid_of(&a), Some(pid), "chatty was not adopted: {a}");
    // Well past the lines written while no warden ran.
    wait_until("the log to go on after the restart", T, || {
        line_numbers(&log)
            .last()
            .is_some_and(|n| *n > at_crash + 40)
    });
    let status = w.signal_and_wait(15, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());

    let numbers = line_numbers(&log);
    let last = *numbers.last().expect("lines");
    if numbers != (1..=last).collect::<Vec<_>>() {
        let mut problems = Vec::new();
        let mut expected = 1;
        for n in &numbers {
            if *n != expected {
                problems.push(format!("expected {expected}, found {n}"));
            }
            expected = n + 1;
        }
        panic!(
            "the log must hold lines 1..={last} exactly once each (crash after line {at_crash}); \
             {} lines; first problems: {:?}",
            numbers.len(),
            &problems[..problems.len().min(10)]
        );
    }
}

/// README: "while no warden runs the child's writes wait in the pipe (up to 1 MiB), so no
/// line is lost". The child writes exactly 1 MiB (16,384 lines of 64 bytes) in one go
/// while warden is dead; the write must complete without a reader (the child says so in
/// a file), and the next warden must bring every line to the log, in order.
#[test]
fn one_mib_written_while_no_warden_runs_is_not_blocked_and_reaches_the_log_whole() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let log = state.join("logs/burst.log");
    let trigger = dir.path().join("trigger");
    let written = dir.path().join("written");
    const LINES: usize = 16 * 1024;
    let script = format!(
        "import os,sys,time\n\
         while not os.path.exists({trigger:?}): time.sleep(0.01)\n\
         data = b''.join(b'line %07d ' % i + b'x' * 50 + b'\\n' for i in range(1, {LINES} + 1))\n\
         assert len(data) == 1024 * 1024\n\
         sys.stdout.buffer.write(data); sys.stdout.buffer.flush()\n\
         open({written:?}, 'w').close()\n\
         time.sleep(1000)\n"
    );
    let body = format!(
        "[[service]]\nname = \"burst\"\ncommand = [\"python3\", \"-c\", {}]\n",
        toml_str(&script)
    );
    let mut w = Warden::start_in(dir, &body);
    let pid = running_pid(&w, "burst");
    w.crash();
    std::fs::write(&trigger, b"go").expect("trigger");
    wait_until(
        "the child's 1 MiB write completes while no warden runs",
        T,
        || written.exists(),
    );
    assert!(alive(pid), "the writer lives on");

    let w = Warden::start_in(w.into_dir(), &body);
    let a = w.wait_state("burst", "running", T);
    assert_eq!(pid_of(&a), Some(pid), "burst was not adopted: {a}");
    let numbers = || -> Vec<usize> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.len() == 63)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    };
    wait_until("all 16,384 lines in the log", T, || {
        numbers().len() >= LINES
    });
    let got = numbers();
    assert!(
        got == (1..=LINES).collect::<Vec<_>>(),
        "the log must hold lines 1..={LINES} once each, in order: {} lines, first {:?}",
        got.len(),
        &got[..got.len().min(5)]
    );
}

#[test]
fn a_record_whose_pid_now_belongs_to_another_process_is_neither_adopted_nor_signalled() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let body = "[[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"1000\"]\n";
    let mut w = Warden::start_in(dir, body);
    let old = running_pid(&w, "svc");
    w.crash();
    let record_path = state.join(format!("children/svc@{old}.json"));
    let record: Value = serde_json::from_slice(
        &std::fs::read(&record_path).unwrap_or_else(|e| panic!("{}: {e}", record_path.display())),
    )
    .expect("record is JSON");
    kill(old, 9);
    wait_until("the recorded child gone", T, || !alive(old));

    // An unrelated process of ours, in its own process group, gets the record.
    let mine = Owned(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sleep"),
    );
    let q = mine.0.id();
    let real_start = stat_field(q, 22).expect("start time of my process");
    let mut forged = record.clone();
    forged["pid"] = q.into();
    forged["pgid"] = q.into();
    forged["start_time"] = (real_start + 1000).into();
    assert_eq!(forged["path"], "/svc", "record: {record}");
    std::fs::remove_file(&record_path).expect("remove the old record");
    let forged_path = state.join(format!("children/svc@{q}.json"));
    std::fs::write(&forged_path, serde_json::to_vec(&forged).expect("json")).expect("write");

    let w = Warden::start_in(w.into_dir(), body);
    let fresh = running_pid(&w, "svc");
    assert_ne!(fresh, q, "a process with another start time was adopted");
    assert_ne!(fresh, old);
    // Time for a wrong signal to land.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(q),
        "warden signalled a process it does not own (pid {q})"
    );
    assert!(
        !forged_path.exists(),
        "the stale record {} is still there: {:?}",
        forged_path.display(),
        record_files(&state)
    );
    assert_eq!(
        record_files(&state),
        [format!("svc@{fresh}.json")],
        "only the fresh child is recorded"
    );
    assert_eq!(instances(&state, "/svc"), [fresh]);
    drop(w);
    assert!(
        alive(q),
        "warden's stop signalled a process it does not own"
    );
}

/// Runs `warden ARGS` with a deadline; returns (exit code, stderr).
fn run_bounded(args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let dir = temp_dir();
    let err = dir.path().join("stderr");
    let mut child = Command::new(warden_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn warden");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`warden {}` did not exit within {timeout:?}: {}",
                args.join(" "),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

#[test]
fn a_second_warden_on_a_running_state_dir_exits_1_naming_the_running_pid_and_the_first_keeps_its_children(
) {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let body = "[[service]]\nname = \"a\"\ncommand = [\"sleep\", \"1000\"]\n\n\
                [[service]]\nname = \"b\"\ncommand = [\"sleep\", \"1000\"]\n";
    let w = Warden::start_in(dir, body);
    let a = running_pid(&w, "a");
    let b = running_pid(&w, "b");
    let config = w.config.to_str().expect("utf-8").to_owned();

    let (code, stderr) = run_bounded(&["up", "-c", &config], Duration::from_secs(20));
    assert_eq!(code, Some(1), "second warden: {stderr}");
    assert!(
        stderr.contains(&w.pid().to_string()),
        "the refusal must name the running warden's pid {}: {stderr}",
        w.pid()
    );
    assert_eq!(
        std::fs::read_to_string(state.join("warden.pid"))
            .unwrap_or_default()
            .trim(),
        w.pid().to_string(),
        "the pid file still names the first warden"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        alive(a) && alive(b),
        "the first warden's children were touched"
    );
    for (name, pid) in [("a", a), ("b", b)] {
        let actor = w.actor(name);
        assert_eq!(actor["state"], "running", "{actor}");
        assert_eq!(pid_of(&actor), Some(pid), "{actor}");
        assert_eq!(actor["restarts"], 0, "{actor}");
    }
    assert_eq!(
        http(w.port, "GET", "/healthz", None, None)
            .expect("first warden answers")
            .status,
        200
    );
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Asserts that no actor of a crash-loop tree has more than one live instance.
fn at_most_one_instance_each(state: &Path, when: &str) {
    for path in ["/healthy", "/crash1", "/crash2"] {
        let groups = instances(state, path);
        assert!(
            groups.len() <= 1,
            "{when}: {path} has {} live instances (process groups {groups:?}): {:?}",
            groups.len(),
            marked(state)
        );
    }
}

/// The counts of the "recovered the state of an earlier warden" log line.
const RECOVERED_KEYS: [&str; 3] = ["adoptable", "stale", "orphans_killed"];

/// The number logged as `key=N` in warden's stderr (ANSI colours removed), or 0.
fn logged_count(stderr: &str, key: &str) -> u64 {
    let mut plain = String::new();
    let mut chars = stderr.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(&format!("{key}=")))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

#[test]
fn fifty_sigkills_at_random_moments_leave_every_child_running_exactly_once_and_nothing_behind() {
    let _serial = serial();
    let began = Instant::now();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let crasher = |name: &str| {
        let file = abs(&dir, &format!("{name}.txt"));
        format!(
            "[[service]]\nname = \"{name}\"\ncommand = {}\n\
             restart = {{ backoff = {{ initial = \"10ms\", max = \"40ms\" }}, \
             intensity = {{ max = 1000000, within = \"1s\" }} }}\n\n",
            sh(&format!(
                "echo start >> '{file}'; sleep 0.0$(($$ % 9 + 1)); exit 1"
            ))
        )
    };
    let body = format!(
        "{}{}{}",
        recording_sleeper("healthy", &abs(&dir, "healthy.txt")),
        crasher("crash1"),
        crasher("crash2"),
    );
    let seed = 0x5eed_2024_u64;
    let mut rng = Rng(seed);
    let mut dir = dir;
    let mut recovered = [0u64; 3];
    let mut rounds_that_adopted = 0;
    for round in 0..50 {
        let mut w = Warden::start_in(dir, &body);
        let pause = rng.below(151);
        std::thread::sleep(Duration::from_millis(pause));
        w.crash();
        at_most_one_instance_each(&state, &format!("round {round} (seed {seed:#x})"));
        let stderr = w.stderr_text();
        for (total, key) in recovered.iter_mut().zip(RECOVERED_KEYS) {
            *total += logged_count(&stderr, key);
        }
        if logged_count(&stderr, RECOVERED_KEYS[0]) > 0 {
            rounds_that_adopted += 1;
        }
        dir = w.into_dir();
    }
    eprintln!(
        "50 crashes took {:?}; the restarts recovered {:?}; {rounds_that_adopted} rounds adopted",
        began.elapsed(),
        RECOVERED_KEYS.iter().zip(recovered).collect::<Vec<_>>()
    );
    // The crashes must have hit wardens that had children to leave behind: otherwise
    // adoption (the thing under test) was never exercised. Each round after the first
    // finds at least the previous round's healthy child when that one had started.
    assert!(
        rounds_that_adopted >= 25,
        "only {rounds_that_adopted} of 50 restarts adopted a child: adoption was barely exercised \
         ({recovered:?})"
    );

    let mut w = Warden::start_in(dir, &body);
    assert_eq!(
        http(w.port, "GET", "/healthz", None, None)
            .expect("healthz")
            .status,
        200
    );
    assert!(
        !w.stderr_text().contains("state store"),
        "{}",
        w.stderr_text()
    );
    let healthy = running_pid(&w, "healthy");
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        at_most_one_instance_each(&state, "after the last start");
        let procs: Vec<u32> = marked(&state)
            .into_iter()
            .filter(|m| m.actor.as_deref() == Some("/healthy"))
            .map(|m| m.pid)
            .collect();
        assert_eq!(
            procs,
            [healthy],
            "exactly one /healthy process, the one warden runs"
        );
        assert_eq!(
            w.actor_pid("healthy"),
            Some(healthy),
            "/healthy kept its pid"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let healthy_records: Vec<String> = record_files(&state)
        .into_iter()
        .filter(|f| f.starts_with("healthy@"))
        .collect();
    assert_eq!(healthy_records, [format!("healthy@{healthy}.json")]);
    for crasher in ["crash1", "crash2"] {
        let file = abs(&w.dir, &format!("{crasher}.txt"));
        let n = lines(Path::new(&file)).len();
        wait_until(&format!("{crasher} keeps being restarted"), T, || {
            lines(Path::new(&file)).len() > n + 2
        });
        let a = w.actor(crasher);
        assert_ne!(a["state"], "failed", "{a}");
    }

    let status = w.signal_and_wait(15, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    wait_until("no process of this warden left", T, || {
        marked(&state).is_empty()
    });
    let took = began.elapsed();
    eprintln!("crash loop test took {took:?}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn with_on_exit_stop_a_warden_killed_by_sigkill_takes_its_children_with_it() {
    let _serial = serial();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let _reaper = Reaper(state.clone());
    let body = "[runtime]\non_exit = \"stop\"\n\n\
                [[service]]\nname = \"a\"\ncommand = [\"sleep\", \"1000\"]\n\n\
                [[service]]\nname = \"b\"\ncommand = [\"sleep\", \"1000\"]\n";
    let mut w = Warden::start_in(dir, body);
    let a = running_pid(&w, "a");
    let b = running_pid(&w, "b");
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(a) && alive(b), "children died before warden did");
    let killed = Instant::now();
    w.crash();
    wait_until(
        "the children gone within 2 s of warden's SIGKILL",
        Duration::from_secs(2),
        || !alive(a) && !alive(b),
    );
    eprintln!(
        "children gone {:?} after warden's SIGKILL",
        killed.elapsed()
    );
    assert!(marked(&state).is_empty(), "{:?}", marked(&state));
}
