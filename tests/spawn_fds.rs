//! What each spawn costs warden in open fds: one pidfd per live service process, never
//! two. A child leaves warden's descriptor table at its first step (it keeps only the low
//! slots it inherits through), but where `clone3` is refused every fd warden holds is
//! copied into each child and closed again by the child's exec: measured in
//! docs/benchmarks.md, 3,000 fds cost ~240 us per spawn there, 2,000 ~160 us.
mod support;

use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);
const SERVICES: usize = 20;

/// warden's own pidfds (those of its children, plus at most a few of its own).
fn pidfds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[pidfd]")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn each_service_process_costs_warden_one_pidfd_across_restarts() {
    let mut body = String::new();
    for i in 0..SERVICES {
        body.push_str(&format!(
            "[[service]]\nname = \"s{i}\"\ncommand = [\"sleep\", \"1000\"]\n\n"
        ));
    }
    let w = Warden::start(&body);
    for i in 0..SERVICES {
        w.wait_state(&format!("/s{i}"), "running", T);
    }
    let limit = SERVICES + 3;
    wait_until("one pidfd per service", T, || pidfds_of(w.pid()) <= limit);
    // A crash and its restart leave no pidfd behind.
    for i in 0..5 {
        let path = format!("/s{i}");
        let old = w.actor_pid(&path).expect("a running service has a pid");
        kill(old, libc::SIGKILL);
        wait_until("the service restarted", T, || {
            w.actor_pid(&path).is_some_and(|pid| pid != old) && w.state(&path) == "running"
        });
    }
    wait_until("still one pidfd per service", T, || {
        pidfds_of(w.pid()) <= limit
    });
    assert!(
        pidfds_of(w.pid()) >= SERVICES,
        "every service process is watched through a pidfd"
    );
}

/// SEMANTICS 84: a child gets of warden's descriptors only those handed to it. A
/// descriptor that whoever started warden left open for it (fd 3 here, not close-on-exec,
/// below the slots warden hands descriptors through) is not passed on to its services.
#[test]
fn a_descriptor_left_open_for_warden_is_not_passed_on_to_its_services() {
    let dir = temp_dir();
    let marker = dir.path().join("left-open-for-warden");
    std::fs::write(&marker, "x").expect("write the marker");
    let listing = dir.path().join("fds.txt");
    let body = format!(
        "[[service]]\nname = \"lister\"\ncommand = [\"sh\", \"-c\", \"ls -l /proc/$$/fd > {0}.tmp; mv {0}.tmp {0}; exec sleep 1000\"]\n",
        listing.display()
    );
    let w = Warden::start_in_inheriting(dir, &body, &marker);
    let warden_has_it =
        std::fs::read_link(format!("/proc/{}/fd/3", w.pid())).is_ok_and(|target| target == marker);
    assert!(warden_has_it, "warden itself holds the marker at fd 3");
    wait_until("the service listed its fds", T, || listing.exists());
    let fds = std::fs::read_to_string(&listing).expect("the listing");
    assert!(
        !fds.contains("left-open-for-warden"),
        "the service inherited warden's fd 3:\n{fds}"
    );
}
