//! Security: per-child identity and a trusted state_dir (issue 10; design "Security").
//! Each test performs an attack and shows it fails: a child running as another user reads
//! none of warden's secrets nor a sibling's token; secrets, folders and files planted in
//! state_dir by someone else are refused or never followed; `user`/`group` are checked
//! when the config is.
//!
//! The suite runs as root (children are started as `nobody` and `daemon`); a test that
//! needs root says so and returns early when it is not.
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(15);

/// The uid of the system user `name`.
fn uid_of_user(name: &str) -> u32 {
    let out = Command::new("id").args(["-u", name]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a uid")
}

/// A field of the `Uid:`/`Gid:`/`Groups:` lines of /proc/PID/status.
fn status_line(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|r| r.trim().to_owned()))
        .unwrap_or_default()
}

/// `VAR` from the environment of `pid`.
fn environ_var(pid: u32, var: &str) -> Option<String> {
    proc_strings(pid, "environ")
        .iter()
        .find_map(|kv| kv.strip_prefix(&format!("{var}=")).map(str::to_owned))
}

/// Writes `warden.toml` (state_dir `state`, a free admin port) in `dir` and runs
/// `warden ARGS -c warden.toml`.
fn run_on(dir: &Path, args: &[&str], body: &str) -> (i32, String, String) {
    let config = write_config(dir, body);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", config.to_str().expect("utf-8")]);
    run_warden(&all, dir)
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let port = free_port();
    let config = dir.join("warden.toml");
    std::fs::write(
        &config,
        format!("state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n{body}"),
    )
    .expect("config");
    config
}

const SLEEPER: &str = "[[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"100000\"]\n";

/// Promise (Security: per-child identity): a child with `user = "nobody"` runs as nobody
/// (uid, gid and supplementary groups), reads its own token through the folder it
/// inherits, and cannot read `pool.key`, `admin.token`, a sibling's token (a sibling of
/// another user, and one of warden's own user) nor a sibling's log; nothing in its
/// environment names state_dir. The probe is the child itself: it tries each read and
/// reports in its log. (Before: every child ran as warden's uid, was told
/// `WARDEN_STATE_DIR`, and read every one of these files.)
#[test]
fn a_child_running_as_nobody_reads_no_secret_of_warden_nor_of_its_siblings() {
    if !is_root() {
        eprintln!("skipped: needs root to start children as other users");
        return;
    }
    let dir = temp_dir();
    // The probe's folder: nobody reads `targets` and `go` there; state_dir stays 0700.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let probe_dir = dir.path().join("probe");
    std::fs::create_dir(&probe_dir).expect("probe dir");
    std::fs::set_permissions(&probe_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let state = dir.path().join("state");
    let probe = format!(
        "cd /; while [ ! -f {p}/go ]; do sleep 0.05; done; \
         echo \"uid=$(id -u)\"; \
         if env | grep -q {state}; then echo 'env: names state_dir'; else echo 'env: clean'; fi; \
         if cat \"$WARDEN_WORKER_TOKEN_FILE\" >/dev/null 2>&1; then echo 'own-token: read'; else echo 'own-token: denied'; fi; \
         while read -r name path; do \
           if cat \"$path\" >/dev/null 2>&1; then echo \"$name: READ\"; else echo \"$name: denied\"; fi; \
         done < {p}/targets; \
         echo probe-done; exec sleep 100000",
        p = probe_dir.display(),
        state = state.display(),
    );
    let first = free_range(2);
    let body = format!(
        r#"[[outboard]]
name = "ob"
command = ["sleep", "100000"]

[[pool]]
name = "q"
command = ["sleep", "100000"]
ports = "{q}-{q}"
min = 1
max = 1
user = "daemon"

[[pool]]
name = "p"
command = {probe}
ports = "{p}-{p}"
min = 1
max = 1
user = "nobody"
"#,
        q = first,
        p = first + 1,
        probe = sh(&probe),
    );
    let w = Warden::start_in(dir, &body);
    let q = w.wait_state("q/w1", "running", T);
    let q_pid = q["pid"].as_u64().expect("q pid") as u32;
    let p = w.wait_state("p/w1", "running", T);
    let p_pid = p["pid"].as_u64().expect("p pid") as u32;

    // Identity, as the kernel sees it: uid, gid and groups are nobody's / daemon's only.
    let nobody = uid_of_user("nobody");
    assert_eq!(
        status_line(p_pid, "Uid:")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec![nobody.to_string(); 4]
    );
    let groups = status_line(p_pid, "Groups:");
    assert!(
        !groups.split_whitespace().any(|g| g == "0"),
        "no root group: {groups}"
    );
    assert_eq!(
        status_line(q_pid, "Uid:").split_whitespace().next(),
        Some(uid_of_user("daemon").to_string().as_str())
    );

    // The sibling's token: the file its environment names, reached through its folder.
    let q_token = environ_var(q_pid, "WARDEN_WORKER_TOKEN_FILE").expect("q token var");
    assert!(
        q_token.starts_with("/proc/self/fd/"),
        "the token is named through an inherited folder: {q_token}"
    );
    let q_token = q_token.replacen("/proc/self/", &format!("/proc/{q_pid}/"), 1);
    let meta = std::fs::metadata(&q_token).expect("q token file");
    assert_eq!(
        meta.uid(),
        uid_of_user("daemon"),
        "owned by the worker's user"
    );
    assert_eq!(meta.mode() & 0o777, 0o400);
    let ob_config = state.join("handoff/ob/outboard.json");
    assert!(ob_config.exists(), "the outboard sibling's config");
    let targets = [
        ("pool.key", state.join("pool.key")),
        ("admin.token", state.join("admin.token")),
        ("instance", state.join("instance")),
        ("sibling-outboard-config", ob_config),
        ("sibling-worker-token", state.join("handoff/q~w1/token")),
        ("sibling-worker-token-fd", PathBuf::from(&q_token)),
        ("sibling-log", state.join("logs/ob.log")),
        ("control.sock", state.join("control.sock")),
    ];
    let list: String = targets
        .iter()
        .map(|(name, path)| format!("{name} {}\n", path.display()))
        .collect();
    std::fs::write(probe_dir.join("targets"), list).expect("targets");
    std::fs::write(probe_dir.join("go"), "").expect("go");

    let log = state.join("logs/p/w1.log");
    let report = wait_for("the probe's report", T, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("probe-done").then_some(text)
    });
    assert!(report.contains(&format!("uid={nobody}")), "{report}");
    assert!(report.contains("env: clean"), "{report}");
    assert!(
        report.contains("own-token: read"),
        "the worker reads its own token: {report}"
    );
    for (name, _) in &targets {
        assert!(
            report.contains(&format!("{name}: denied")),
            "{name} was not denied to a child running as nobody: {report}"
        );
    }
    for (var, value) in std::fs::read(format!("/proc/{p_pid}/environ"))
        .expect("environ")
        .split(|b| *b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
    {
        assert!(
            !value.contains(state.to_str().expect("utf-8")),
            "{var}={value} names state_dir"
        );
    }
}

/// Promise (Security: trusted state_dir): an `admin.token` that other users may read
/// (mode 0644: someone planted it, or it leaks) is refused at start, naming it. (Before: it
/// was used as it was, so a planted token gave full API access.)
#[test]
fn a_planted_admin_token_readable_by_others_is_refused_at_start_naming_it() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let token = state.join("admin.token");
    std::fs::write(&token, format!("{}\n", "ab".repeat(32))).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, err) = run_on(dir.path(), &["up"], SLEEPER);
    assert_ne!(code, 0, "warden must refuse to start: {err}");
    assert!(
        err.contains(token.to_str().expect("utf-8")) && err.contains("0644"),
        "the error names the file and its mode: {err}"
    );
    // A token too short to be one is refused too.
    std::fs::write(&token, "1234\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, _, err) = run_on(dir.path(), &["up"], SLEEPER);
    assert_ne!(code, 0, "warden must refuse to start: {err}");
    assert!(
        err.contains("admin.token") && err.contains("too short"),
        "{err}"
    );
}

/// Promise (Security: trusted state_dir): a world-writable state_dir is refused at start,
/// naming it; a missing one is created 0700. (Before: any existing folder was used, so
/// another user could plant tokens, records and symbolic links in it.)
#[test]
fn a_world_writable_state_dir_is_refused_naming_it_and_a_new_one_is_0700() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, _, err) = run_on(dir.path(), &["up"], SLEEPER);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(state.to_str().expect("utf-8")) && err.contains("writable"),
        "the error names state_dir and the problem: {err}"
    );
    assert!(
        !state.join("admin.token").exists(),
        "nothing was written in it"
    );

    let fresh = temp_dir();
    let w = Warden::start_in(fresh, SLEEPER);
    w.wait_state("svc", "running", T);
    for folder in ["state", "state/logs", "state/children", "state/handoff"] {
        let mode = std::fs::metadata(w.path(folder)).expect(folder).mode() & 0o777;
        assert_eq!(mode, 0o700, "{folder}");
    }
    let log_mode = std::fs::metadata(w.path("state/logs/svc.log"))
        .map(|m| m.mode() & 0o777)
        .unwrap_or(0o600);
    assert_eq!(log_mode, 0o600, "log files are 0600");
}

/// Promise (Security: trusted state_dir): a state_dir owned by another user is refused at
/// start, naming it and its owner. (Before: it was used.)
#[test]
fn a_state_dir_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown the folder");
        return;
    }
    let dir = temp_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let nobody = uid_of_user("nobody");
    std::os::unix::fs::chown(&state, Some(nobody), None).expect("chown");
    let (code, _, err) = run_on(dir.path(), &["up"], SLEEPER);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(state.to_str().expect("utf-8")) && err.contains(&format!("uid {nobody}")),
        "the error names state_dir and its owner: {err}"
    );
}

/// Promise (Security: files in state_dir are never followed): a symbolic link planted as
/// `warden.pid` or as a child's log is not followed: its target is untouched (warden
/// replaces the pid file, and refuses the log naming it). (Before: warden truncated the
/// pid link's target and appended the child's output to the log link's target.)
#[test]
fn symlinks_planted_as_the_pid_file_or_a_log_are_not_followed() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("logs")).expect("logs");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep\n").expect("victim");
    std::os::unix::fs::symlink(&victim, state.join("warden.pid")).expect("pid link");
    std::os::unix::fs::symlink(&victim, state.join("logs/talker.log")).expect("log link");
    let body = format!(
        "[[service]]\nname = \"talker\"\ncommand = {}\n",
        sh("echo written-through-the-link; exec sleep 100000")
    );
    let w = Warden::start_in(dir, &body);
    w.wait_state("talker", "running", T);
    wait_until("warden refuses the linked log", T, || {
        w.stderr_text().contains("symbolic link")
    });
    assert!(
        w.stderr_text().contains("talker.log"),
        "the error names the log: {}",
        w.stderr_text()
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "keep\n",
        "the link's target is untouched"
    );
    let pid_file = std::fs::symlink_metadata(w.path("state/warden.pid")).expect("pid file");
    assert!(pid_file.is_file(), "the pid file is warden's own now");
}

/// Promise (Security: records are read only from regular files of bounded size): a record
/// that is a symbolic link (to a well-formed record of a live process) or a FIFO is never
/// read, and one larger than the cap is refused naming it; all are deleted, nothing is
/// adopted from them, warden starts at once. (Before: the link was followed and the
/// stranger adopted as the service, and a FIFO blocked warden's start for good.)
#[test]
fn symlinked_fifo_and_oversized_records_are_refused_and_never_adopted() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let children = state.join("children");
    std::fs::create_dir_all(&children).expect("children");
    // A stranger leading its own process group, and a record of it outside state_dir.
    let mut stranger = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("100000")
            .process_group(0)
            .spawn()
            .expect("stranger")
    };
    let pid = stranger.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').expect("stat").1;
    let start_time: u64 = after
        .split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("n");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot");
    let record = serde_json::json!({
        "path": "/svc", "pid": pid, "pgid": pid, "start_time": start_time,
        "boot_id": boot_id.trim(), "uid": unsafe { libc::getuid() }, "output": null,
    });
    let outside = dir.path().join("forged.json");
    std::fs::write(&outside, record.to_string()).expect("forged");
    std::os::unix::fs::symlink(&outside, children.join(format!("svc@{pid}.json"))).expect("link");
    nix::unistd::mkfifo(
        &children.join("svc@2.json"),
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .expect("fifo");
    let huge = children.join("svc@3.json");
    std::fs::write(&huge, vec![b' '; 100 * 1024]).expect("huge");

    let w = Warden::start_in(dir, SLEEPER);
    let svc = w.wait_state("svc", "running", T);
    assert_ne!(
        svc["pid"].as_u64(),
        Some(u64::from(pid)),
        "the stranger was adopted through a linked record: {svc}"
    );
    assert!(alive(pid), "the stranger is never signalled");
    assert_eq!(
        std::fs::read_to_string(&outside).expect("forged"),
        record.to_string(),
        "the link's target is untouched"
    );
    let err = w
        .stderr_with("more than", T)
        .unwrap_or_else(|| w.stderr_text());
    assert!(
        err.contains("svc@3.json") && err.contains("more than"),
        "the oversized record is refused naming it: {err}"
    );
    for name in [
        format!("svc@{pid}.json"),
        "svc@2.json".into(),
        "svc@3.json".into(),
    ] {
        assert!(
            std::fs::symlink_metadata(w.path(&format!("state/children/{name}"))).is_err(),
            "{name} was not deleted"
        );
    }
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// Promise (Security: per-child identity): a warden that does not run as root refuses a
/// child of another user at `warden check`, naming the child and the user (run as
/// `daemon` through setpriv); root accepts it. (Before: there was no `user` key.)
#[test]
fn a_non_root_warden_refuses_another_user_at_check_naming_the_child_and_the_user() {
    if !is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to run warden check as another user");
        return;
    }
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let body = "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\nuser = \"nobody\"\n";
    let config = write_config(dir.path(), body);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, err) = run_warden(
        &["check", "-c", config.to_str().expect("utf-8")],
        dir.path(),
    );
    assert_eq!(code, 0, "root may start a child as nobody: {err}");
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=daemon", "--regid=daemon", "--clear-groups"])
        .arg(warden_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("\"api\"")
            && err.contains("user")
            && err.contains("\"nobody\"")
            && err.contains("not root"),
        "the error names the child and the user: {err}"
    );
}

/// Promise (Config): an unknown `user` or `group` is refused at check, naming it and its
/// key; so is an actor named `..` (it would read as a path step in state_dir).
#[test]
fn unknown_users_and_groups_and_dot_names_are_refused_at_check() {
    let dir = temp_dir();
    for (body, wanted) in [
        (
            "[[service]]\nname = \"a\"\ncommand = [\"true\"]\nuser = \"no-such-user-xyz\"\n",
            "key `user`: unknown user \"no-such-user-xyz\"",
        ),
        (
            "[[outboard]]\nname = \"b\"\ncommand = [\"true\"]\ngroup = \"no-such-group-xyz\"\n",
            "key `group`: unknown group \"no-such-group-xyz\"",
        ),
        (
            "[[pool]]\nname = \"c\"\ncommand = [\"true\"]\nports = \"20000\"\nuser = \"root\"\ngroup = \"no-such-group-xyz\"\n",
            "unknown group \"no-such-group-xyz\"",
        ),
        (
            "[[service]]\nname = \"..\"\ncommand = [\"true\"]\n",
            "invalid name \"..\"",
        ),
    ] {
        let (code, _, err) = run_on(dir.path(), &["check"], body);
        assert_eq!(code, 2, "{body}: {err}");
        assert!(err.contains(wanted), "{body}: expected {wanted:?} in {err}");
    }
}

/// Promise (Security: per-child identity): a `ready = { notify = true }` child running as
/// nobody reports ready on its own socket, reached through its handoff folder (its
/// `NOTIFY_SOCKET` names `/proc/self/fd/N/...`, never state_dir; the socket is handed to its
/// user). (Before: the socket was in state_dir, which a child of another user cannot
/// reach, and its environment named state_dir.)
#[test]
fn a_notify_child_running_as_nobody_gets_ready_through_its_handoff_folder() {
    if !is_root() {
        eprintln!("skipped: needs root to start children as other users");
        return;
    }
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ready = "import socket,os,time; \
         s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
         s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(100000)";
    let body = format!(
        "[[service]]\nname = \"n\"\ncommand = [\"python3\", \"-c\", {}]\nuser = \"nobody\"\nready = {{ notify = true, timeout = \"10s\" }}\n",
        toml_str(ready)
    );
    let w = Warden::start_in(dir, &body);
    let a = w.wait_state("n", "running", T);
    let pid = a["pid"].as_u64().expect("pid") as u32;
    let socket = environ_var(pid, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    assert!(socket.starts_with("/proc/self/fd/"), "{socket}");
}

/// Promise (Durability: a warden killed and started again adopts every child still
/// alive): a child started as another user (`user = "nobody"`) is recorded with that
/// user's uid, the one it was started with, so the next warden finds its identity
/// unchanged and adopts it: same pid, no restart, no second instance. A record holding
/// warden's own uid instead would not match the live process: it would be killed and
/// started afresh.
#[test]
fn a_child_running_as_nobody_is_recorded_as_nobody_and_adopted_after_a_sigkill() {
    if !is_root() {
        eprintln!("skipped: needs root to start children as other users");
        return;
    }
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let body = format!("{SLEEPER}user = \"nobody\"\n");
    let mut w = Warden::start_in(dir, &body);
    let pid = w.wait_state("svc", "running", T)["pid"]
        .as_u64()
        .expect("pid") as u32;
    let nobody = uid_of_user("nobody");
    let record = w.path(&format!("state/children/svc@{pid}.json"));
    let recorded = wait_for("the child's process record", T, || {
        let text = std::fs::read_to_string(&record).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()
    });
    assert_eq!(recorded["uid"], nobody, "recorded as nobody: {recorded}");
    assert_eq!(recorded["pid"], pid, "{recorded}");

    w.crash();
    assert!(alive(pid), "the child (pid {pid}) died with warden");
    let w = Warden::start_in(w.into_dir(), &body);
    let adopted = w.wait_state("svc", "running", T);
    assert_eq!(adopted["pid"], pid, "not adopted: {adopted}");
    assert_eq!(
        adopted["restarts"], 0,
        "adoption is not a restart: {adopted}"
    );
    assert_eq!(
        status_line(pid, "Uid:").split_whitespace().next(),
        Some(nobody.to_string().as_str()),
        "the adopted process is still nobody's"
    );
}
