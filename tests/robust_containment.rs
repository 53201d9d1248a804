//! "No descendant survives its service" and orphan reaping (design.md, Robustness
//! promises), with a real warden and real processes.
//!
//! The cgroup tests need a writable cgroup v2 hierarchy (CI runs as root, where there is
//! one); without it they say so and skip. The process-group and reaping tests run
//! everywhere.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{abs, alive, kill, run_warden, sh, temp_dir, wait_for, wait_until, Warden};

/// Generous for 2 busy cores.
const T: Duration = Duration::from_secs(10);

/// Where the cgroup v2 hierarchy is mounted, if it is, and writable by this test.
fn writable_v2() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = info.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next()? == "cgroup2")
            .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .to_owned();
    let probe = mount
        .join(own.trim_start_matches('/'))
        .join(format!("warden-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).ok()?;
    let has_kill = probe.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&probe);
    has_kill.then_some(mount)
}

/// The cgroup v2 mount, or `None` after saying why the test is skipped.
fn cgroups_or_skip(test: &str) -> Option<PathBuf> {
    let mount = writable_v2();
    if mount.is_none() {
        eprintln!("SKIP {test}: no writable cgroup v2 hierarchy here (not root, or no cgroup2 mount, or no cgroup.kill)");
    }
    mount
}

/// The cgroup directory `pid` lives in.
fn cgroup_of(mount: &Path, pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    Some(mount.join(rel.trim_start_matches('/')))
}

/// The instance id warden keeps in its state_dir.
fn instance(w: &Warden) -> String {
    std::fs::read_to_string(w.path("state/instance"))
        .expect("state/instance")
        .trim()
        .to_owned()
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat, `n >= 3`.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// A pid a service wrote to `file`.
fn pid_in(file: &Path) -> u32 {
    wait_for(&format!("a pid in {}", file.display()), T, || {
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

/// A process a service started that this test must not leave behind: SIGKILLed on drop
/// if it still is the same process (same start time).
struct Stray {
    pid: u32,
    start: Option<String>,
}

impl Stray {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            start: stat_field(pid, 22),
        }
    }
}

impl Drop for Stray {
    fn drop(&mut self) {
        if self.start.is_some() && stat_field(self.pid, 22) == self.start {
            kill(self.pid, 9);
        }
    }
}

/// A service whose shell starts a grandchild that leaves the process group (setsid).
fn setsid_service(dir: &tempfile::TempDir, extra: &str) -> String {
    let file = abs(dir, "grandchild.pid");
    format!(
        "{extra}\n[[service]]\nname = \"svc\"\ncommand = {}\nstop = {{ timeout = \"2s\" }}\n",
        sh(&format!("setsid sleep 1000 & echo $! > {file}; wait"))
    )
}

fn ctl(w: &Warden, verb: &str, path: &str) {
    let config = w.config.to_string_lossy().into_owned();
    let (code, out, err) = run_warden(&["ctl", "-c", &config, verb, path], w.dir.path());
    assert_eq!(code, 0, "ctl {verb} {path}: {out}{err}");
}

/// Promise: a stop ends with `cgroup.kill`, so a grandchild that called setsid is gone
/// too, and the empty cgroup is removed; the API says `"containment": "cgroup"`.
#[test]
fn stop_ends_a_setsid_grandchild_and_removes_the_services_cgroup() {
    let Some(mount) = cgroups_or_skip("stop_ends_a_setsid_grandchild") else {
        return;
    };
    let dir = temp_dir();
    let body = setsid_service(&dir, "");
    let w = Warden::start_in(dir, &body);
    let actor = w.wait_state("/svc", "running", T);
    assert_eq!(actor["containment"], "cgroup", "{actor}");
    let leader = w.actor_pid("/svc").expect("pid");
    let grandchild = pid_in(&w.path("grandchild.pid"));
    let _stray = Stray::new(grandchild);
    let cgroup = cgroup_of(&mount, leader).expect("leader's cgroup");
    assert!(
        cgroup.ends_with(format!("warden-{}/svc", instance(&w))),
        "{}",
        cgroup.display()
    );
    assert_eq!(cgroup_of(&mount, grandchild).as_ref(), Some(&cgroup));

    ctl(&w, "stop", "/svc");
    wait_until("the setsid grandchild gone after ctl stop", T, || {
        !alive(grandchild)
    });
    wait_until("the service's cgroup removed", T, || !cgroup.exists());
}

/// Promise: when the leader crashes, whatever is left of its run (a setsid grandchild
/// too) goes with it before the restart.
#[test]
fn a_crashed_leader_takes_its_setsid_grandchild_with_it() {
    let Some(_mount) = cgroups_or_skip("a_crashed_leader_takes_its_setsid_grandchild") else {
        return;
    };
    let dir = temp_dir();
    let body = setsid_service(&dir, "");
    let w = Warden::start_in(dir, &body);
    w.wait_state("/svc", "running", T);
    let leader = w.actor_pid("/svc").expect("pid");
    let grandchild = pid_in(&w.path("grandchild.pid"));
    let _stray = Stray::new(grandchild);
    kill(leader, 9);
    wait_until(
        "the setsid grandchild gone after its leader crashed",
        T,
        || !alive(grandchild),
    );
    // The restarted run has its own grandchild, stopped by warden on drop.
    wait_until("the service restarted", T, || {
        w.actor_pid("/svc").is_some_and(|p| p != leader)
    });
}

/// Promise: a warden stopped by SIGTERM ends every descendant of every service (setsid
/// ones too) and removes its `warden-<instance>` cgroup.
#[test]
fn sigterm_of_warden_ends_setsid_grandchildren_and_removes_its_cgroups() {
    let Some(mount) = cgroups_or_skip("sigterm_of_warden_ends_setsid_grandchildren") else {
        return;
    };
    let dir = temp_dir();
    let body = setsid_service(&dir, "");
    let mut w = Warden::start_in(dir, &body);
    w.wait_state("/svc", "running", T);
    let leader = w.actor_pid("/svc").expect("pid");
    let grandchild = pid_in(&w.path("grandchild.pid"));
    let _stray = Stray::new(grandchild);
    let base = cgroup_of(&mount, leader)
        .and_then(|c| c.parent().map(Path::to_path_buf))
        .expect("warden-<instance>");
    assert!(base.ends_with(format!("warden-{}", instance(&w))));
    let status = w.signal_and_wait(15, T);
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    assert!(
        !alive(grandchild),
        "the setsid grandchild outlived warden's SIGTERM"
    );
    assert!(!base.exists(), "{} left behind", base.display());
}

/// Promise: with `[runtime] cgroup = "off"` runs are contained by process groups, and
/// the API says so.
#[test]
fn with_cgroup_off_the_api_says_process_group() {
    let dir = temp_dir();
    let body = setsid_service(&dir, "[runtime]\ncgroup = \"off\"\n");
    let w = Warden::start_in(dir, &body);
    let actor = w.wait_state("/svc", "running", T);
    assert_eq!(actor["containment"], "process_group", "{actor}");
    let grandchild = pid_in(&w.path("grandchild.pid"));
    let _stray = Stray::new(grandchild);
    if let Some(mount) = writable_v2() {
        let leader = w.actor_pid("/svc").expect("pid");
        let cgroup = cgroup_of(&mount, leader).expect("leader's cgroup");
        assert!(
            !cgroup.to_string_lossy().contains("/warden-"),
            "a service ran in {} with cgroup = \"off\"",
            cgroup.display()
        );
    }
    // The root supervisor is no process.
    let tree = w.req("GET", "/api/v1/tree").json();
    assert!(tree["containment"].is_null(), "{tree}");
}

/// A service with a plain background grandchild and a setsid one.
fn two_grandchildren(dir: &tempfile::TempDir, runtime: &str) -> String {
    let plain = abs(dir, "plain.pid");
    let setsid = abs(dir, "setsid.pid");
    format!(
        "[runtime]\non_exit = \"stop\"\n{runtime}\n[[service]]\nname = \"svc\"\ncommand = {}\n",
        sh(&format!(
            "sleep 1000 & echo $! > {plain}; setsid sleep 1000 & echo $! > {setsid}; wait"
        ))
    )
}

fn kill9_takes_every_grandchild(runtime: &str) {
    let dir = temp_dir();
    let body = two_grandchildren(&dir, runtime);
    let mut w = Warden::start_in(dir, &body);
    w.wait_state("/svc", "running", T);
    let plain = pid_in(&w.path("plain.pid"));
    let setsid = pid_in(&w.path("setsid.pid"));
    let _strays = (Stray::new(plain), Stray::new(setsid));
    assert!(alive(plain) && alive(setsid));
    kill(w.pid(), 9);
    wait_until("warden gone after SIGKILL", T, || w.try_wait().is_some());
    wait_until(
        "every grandchild gone within 3 s of warden's SIGKILL",
        Duration::from_secs(3),
        || !alive(plain) && !alive(setsid),
    );
}

/// Promise: `on_exit = "stop"` kills whole cgroups, not only the leader, when warden is
/// SIGKILLed.
#[test]
fn on_exit_stop_kill9_of_warden_ends_every_grandchild_in_cgroups() {
    if cgroups_or_skip("on_exit_stop_kill9_of_warden_ends_every_grandchild_in_cgroups").is_none() {
        return;
    }
    kill9_takes_every_grandchild("");
}

/// Promise: `on_exit = "stop"` kills every descendant, not only the leader, also where
/// runs are contained by process groups (the watchdog's marker sweep).
#[test]
fn on_exit_stop_kill9_of_warden_ends_every_grandchild_with_process_groups() {
    kill9_takes_every_grandchild("cgroup = \"off\"");
}

/// Promise: warden is the reaper of its services' orphans (a child subreaper, or PID 1 in
/// a container): a daemon that double-forks is reparented to warden, and reaped when it
/// exits, leaving no zombie whose parent is warden.
#[test]
fn double_forked_orphans_are_reparented_to_warden_and_reaped() {
    let dir = temp_dir();
    let file = abs(&dir, "orphan.pid");
    let body = format!(
        "[[service]]\nname = \"svc\"\ncommand = {}\n",
        sh(&format!("(sleep 2 & echo $! > {file}); exec sleep 1000"))
    );
    let w = Warden::start_in(dir, &body);
    w.wait_state("/svc", "running", T);
    let orphan = pid_in(&w.path("orphan.pid"));
    let _stray = Stray::new(orphan);
    let warden = w.pid().to_string();
    // The subshell that forked it exits at once; until then it is the parent.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut parent = stat_field(orphan, 4);
    while parent.as_deref() != Some(warden.as_str()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        parent = stat_field(orphan, 4);
    }
    assert_eq!(
        parent.as_deref(),
        Some(warden.as_str()),
        "the orphan was not reparented to warden"
    );
    wait_until("the orphan reaped (no zombie left)", T, || {
        std::fs::metadata(format!("/proc/{orphan}")).is_err()
    });
    let zombies: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_field(*pid, 3).as_deref() == Some("Z")
                && stat_field(*pid, 4).as_deref() == Some(warden.as_str())
        })
        .collect();
    assert!(
        zombies.is_empty(),
        "zombies whose parent is warden: {zombies:?}"
    );
}

/// Promise (config errors before anything starts): `[runtime] cgroup` takes only
/// "auto" or "off".
#[test]
fn an_unknown_cgroup_value_is_refused_by_check() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("warden.toml"),
        "[runtime]\ncgroup = \"maybe\"\n",
    )
    .expect("write config");
    let (code, out, err) = run_warden(&["check", "-c", "warden.toml"], dir.path());
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("cgroup") && err.contains("auto, off"), "{err}");
}

/// Promise: a process adopted by a restarted warden keeps its cgroup (found from
/// /proc/PID/cgroup), so stopping it still ends a grandchild that called setsid.
#[test]
fn an_adopted_service_keeps_its_cgroup_and_a_stop_still_ends_its_setsid_grandchild() {
    let Some(mount) = cgroups_or_skip("an_adopted_service_keeps_its_cgroup") else {
        return;
    };
    let dir = temp_dir();
    // The grandchild leaves the group and clears its environment (so no marker sweep
    // finds it either): only the adopted run's cgroup still holds it.
    let file = abs(&dir, "grandchild.pid");
    let body = format!(
        "[[service]]\nname = \"svc\"\ncommand = {}\n",
        sh(&format!(
            "env -i setsid sleep 1000 & echo $! > {file}; exec sleep 1000"
        ))
    );
    let mut first = Warden::start_in(dir, &body);
    first.wait_state("/svc", "running", T);
    let leader = first.actor_pid("/svc").expect("pid");
    let grandchild = pid_in(&first.path("grandchild.pid"));
    let _strays = (Stray::new(leader), Stray::new(grandchild));
    let cgroup = cgroup_of(&mount, leader).expect("leader's cgroup");
    kill(first.pid(), 9);
    wait_until("warden gone after SIGKILL", T, || {
        first.try_wait().is_some()
    });
    let dir = std::mem::replace(&mut first.dir, temp_dir());

    let second = Warden::start_in(dir, &body);
    let actor = second.wait_state("/svc", "running", T);
    assert_eq!(
        actor["pid"],
        leader,
        "not adopted: {actor}\n{}",
        second.stderr_text()
    );
    assert_eq!(actor["containment"], "cgroup", "{actor}");
    ctl(&second, "stop", "/svc");
    wait_until(
        "the adopted run's setsid grandchild gone after ctl stop",
        T,
        || !alive(grandchild),
    );
    wait_until("the adopted run's cgroup removed", T, || !cgroup.exists());
}
