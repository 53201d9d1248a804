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

#[test]
fn the_supervision_thread_is_raised_and_its_children_and_other_threads_are_not() {
    let w = Warden::start(
        "[[service]]\nname = \"forks\"\ncommand = [\"sh\", \"-c\", \"sleep 1000 & wait\"]\n",
    );
    w.wait_state("/forks", "running", T);
    let leader = w.actor_pid("/forks").expect("a running service has a pid");
    wait_until("the service forked its sleep", T, || {
        !children_of(leader).is_empty()
    });
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
