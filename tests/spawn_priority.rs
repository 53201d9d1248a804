//! The supervision thread's priority (SEMANTICS.md, threading model): where warden may
//! (as root here), the thread that runs the supervisors is raised to nice -10 with
//! `SCHED_RESET_ON_FORK`, and nothing inherits that: its children, what they fork, and
//! warden's other threads run at nice 0, as under a warden that raised nothing.
mod support;

use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);

/// Field 19 (nice) of /proc/PID/task/TID/stat.
fn nice_of(pid: u32, tid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).expect("stat");
    let (_, after) = stat.rsplit_once(')').expect("a stat line");
    after
        .split_whitespace()
        .nth(19 - 3)
        .and_then(|n| n.parse().ok())
        .expect("a nice field")
}

/// The children of `pid` (of any of its threads).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|text| {
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A warden running `/forks`, a shell that has forked a `sleep`; and the shell's pid.
fn forking_service() -> (Warden, u32) {
    let w = Warden::start(
        "[[service]]\nname = \"forks\"\ncommand = [\"sh\", \"-c\", \"sleep 1000 & wait\"]\n",
    );
    w.wait_state("/forks", "running", T);
    let leader = w.actor_pid("/forks").expect("a running service has a pid");
    wait_until("the service forked its sleep", T, || {
        !children_of(leader).is_empty()
    });
    (w, leader)
}

#[test]
fn the_supervision_thread_is_raised_and_its_children_and_other_threads_are_not() {
    let (w, leader) = forking_service();
    let pid = w.pid();
    let main = nice_of(pid, pid);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(main, -10, "a root warden raises its supervision thread");
    } else {
        assert!(
            main >= 0,
            "a warden without CAP_SYS_NICE raises nothing: {main}"
        );
    }
    assert_eq!(nice_of(leader, leader), 0, "the service starts at nice 0");
    for grandchild in children_of(leader) {
        assert_eq!(nice_of(grandchild, grandchild), 0, "what it forks too");
    }
    let threads: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .filter(|&tid| tid != pid)
        .collect();
    assert!(!threads.is_empty(), "warden has helper threads");
    for tid in threads {
        assert!(
            nice_of(pid, tid) >= 0,
            "thread {tid} of warden inherited the raise"
        );
    }
}

/// `se.slice` (ns) of `/proc/PID/sched`; `None` where the kernel does not show it.
fn slice_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/sched"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("se.slice"))
        .and_then(|l| l.rsplit(':').next()?.trim().parse().ok())
}

#[test]
fn a_service_and_what_it_forks_run_with_the_default_slice() {
    // This test process has the kernel's default slice (nothing here sets one).
    let Some(default) = slice_of(std::process::id()) else {
        return;
    };
    let (w, leader) = forking_service();
    assert_eq!(
        slice_of(leader),
        Some(default),
        "the service runs with the default slice, not its spawn's"
    );
    for grandchild in children_of(leader) {
        assert_eq!(slice_of(grandchild), Some(default), "what it forks too");
    }
    let pid = w.pid();
    // SAFETY: geteuid cannot fail.
    let own = if unsafe { libc::geteuid() } == 0 && nice_of(pid, pid) == -10 {
        100_000 // the raised thread's short slice (SEMANTICS 88)
    } else {
        default
    };
    assert_eq!(
        slice_of(pid),
        Some(own),
        "the supervision thread is back to its own slice after the spawns"
    );
}

/// CPU-bound processes at nice 0, killed when dropped.
struct Hogs(Vec<std::process::Child>);

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

#[test]
fn logs_keep_draining_beside_cpu_bound_load() {
    // The log threads run at nice +10 with the shortest slice (SEMANTICS 88): under
    // twice as many CPU hogs as CPUs they still get their share, and a child's output
    // reaches its log.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _hogs = Hogs(
        (0..2 * cpus)
            .map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("a CPU hog")
            })
            .collect(),
    );
    let w = Warden::start(
        "[[service]]\nname = \"talker\"\ncommand = [\"sh\", \"-c\", \"yes line | head -n 4000000; echo the end; exec sleep 1000\"]\n",
    );
    // 20 MB: enough to keep the writer's queue full for a while.
    let log = w.path("state/logs/talker.log");
    wait_until(
        "20 MB and the last line in the log beside the hogs",
        T,
        || std::fs::read_to_string(&log).is_ok_and(|text| text.ends_with("the end\n")),
    );
}
