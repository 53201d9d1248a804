//! Black-box tests of the `warden` command line: `check` and `up` on good and bad config
//! files, a taken admin port, usage errors, `--version`, JSON logs and SIGINT.
mod support;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

const GOOD: &str = r#"
state_dir = "state"

[admin]
listen = "127.0.0.1:1"

[root]
strategy = "one_for_all"

[restart]
policy = "transient"
backoff = { initial = "50ms", max = "2s", multiplier = 1.5, jitter = 0.0 }
reset_after = "10s"
intensity = { max = 3, within = "5s" }

[[supervisor]]
name = "app"
strategy = "rest_for_one"
intensity = { max = 5, within = "10s" }

[[supervisor]]
name = "inner"
parent = "app"

[[service]]
name = "api"
supervisor = "app/inner"
command = ["sleep", "1000"]
cwd = "."
env = { RUST_LOG = "info" }
stop = { signal = "TERM", timeout = "2s" }
restart = { policy = "permanent", backoff = { initial = "10ms" } }
ready = { tcp = "127.0.0.1:1", timeout = "1s" }

[[service]]
name = "worker"
command = ["sleep", "1000"]
ready = { delay = "250ms" }
"#;

/// One class of bad config: the file's text, a text on the offending line, and what
/// stderr must name (the key or the name at fault).
struct Bad {
    class: &'static str,
    text: &'static str,
    line_of: &'static str,
    names: &'static [&'static str],
}

const BAD: &[Bad] = &[
    Bad {
        class: "TOML syntax error",
        text: "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\nstop = { signal = \"TERM\" \n",
        line_of: "stop = {",
        names: &[],
    },
    Bad {
        class: "unknown key",
        text: "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\nbogus_key = 1\n",
        line_of: "bogus_key",
        names: &["bogus_key"],
    },
    Bad {
        class: "unknown nested key",
        text: "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\nrestart = { backoff = { initail = \"1s\" } }\n",
        line_of: "initail",
        names: &["initail"],
    },
    Bad {
        class: "wrong type",
        text: "[[service]]\nname = \"api\"\ncommand = \"sleep 1\"\n",
        line_of: "command =",
        names: &["command"],
    },
    Bad {
        class: "wrong type of a top-level table key",
        text: "[logs]\nmax_bytes = \"big\"\n",
        line_of: "max_bytes",
        names: &["max_bytes"],
    },
    Bad {
        class: "bad duration",
        text: "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\nstop = { timeout = \"soon\" }\n",
        line_of: "stop = {",
        names: &["timeout"],
    },
    Bad {
        class: "unknown strategy",
        text: "[[supervisor]]\nname = \"app\"\nstrategy = \"one_for_some\"\n",
        line_of: "strategy",
        names: &["strategy"],
    },
    Bad {
        class: "empty command",
        text: "[[service]]\nname = \"api\"\ncommand = []\n",
        line_of: "command",
        names: &["command"],
    },
    Bad {
        class: "empty program",
        text: "[[service]]\nname = \"api\"\ncommand = [\"\"]\n",
        line_of: "command",
        names: &["command"],
    },
    Bad {
        class: "duplicate name",
        text: "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\n\n[[service]]\nname = \"api\" # again\ncommand = [\"sleep\", \"1\"]\n",
        line_of: "# again",
        names: &["api"],
    },
    Bad {
        class: "duplicate name of a supervisor and a service",
        text: "[[supervisor]]\nname = \"app\"\n\n[[service]]\nname = \"app\" # again\ncommand = [\"sleep\", \"1\"]\n",
        line_of: "# again",
        names: &["app"],
    },
    Bad {
        class: "unknown parent",
        text: "[[service]]\nname = \"api\"\nsupervisor = \"nowhere\"\ncommand = [\"sleep\", \"1\"]\n",
        line_of: "nowhere",
        names: &["nowhere"],
    },
    Bad {
        class: "unknown parent of a supervisor",
        text: "[[supervisor]]\nname = \"app\"\nparent = \"nowhere\"\n",
        line_of: "nowhere",
        names: &["nowhere"],
    },
    Bad {
        class: "cyclic parent",
        text: "[[supervisor]]\nname = \"ping\"\nparent = \"pong\"\n\n[[supervisor]]\nname = \"pong\"\nparent = \"ping\"\n",
        line_of: "parent = \"pong\"",
        names: &["ping", "pong"],
    },
];

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the test text"));
    1 + text[..at].matches('\n').count()
}

/// Lines of the entry holding `line`: the line itself and the nearest table header above.
fn acceptable_lines(text: &str, line: usize) -> Vec<usize> {
    let mut lines = vec![line];
    let header = text
        .lines()
        .take(line)
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with('['))
        .map(|(i, _)| i + 1)
        .last();
    lines.extend(header);
    lines
}

/// Whether `stderr` names line `n` (as `FILE:n` or `line n`).
fn names_line(stderr: &str, n: usize) -> bool {
    let bytes = stderr.as_bytes();
    for pattern in [format!(":{n}"), format!("line {n}")] {
        let mut from = 0;
        while let Some(i) = stderr[from..].find(&pattern) {
            let end = from + i + pattern.len();
            if !bytes.get(end).is_some_and(|b| b.is_ascii_digit()) {
                return true;
            }
            from = end;
        }
    }
    false
}

/// Runs `warden ARGS` with a deadline; kills it and panics if it is still running then.
fn run_bounded(args: &[&str], cwd: &Path, timeout: Duration) -> (ExitStatus, String, String) {
    let out = cwd.join(".out");
    let err = cwd.join(".err");
    let mut child = Command::new(warden_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn warden");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "warden {args:?} still running after {timeout:?}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

#[test]
fn check_accepts_a_good_file_with_exit_0() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("warden.toml"), GOOD).expect("write");
    let (code, stdout, stderr) = run_warden(&["check", "-c", "warden.toml"], dir.path());
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    // The default file is warden.toml in the current folder.
    let (code, _, stderr) = run_warden(&["check"], dir.path());
    assert_eq!(code, 0, "default -c: {stderr}");
    assert!(
        !dir.path().join("state").exists(),
        "check must not create the state_dir"
    );
}

#[test]
fn check_refuses_each_bad_config_class_with_exit_2_naming_file_line_and_key() {
    let dir = temp_dir();
    let mut failures = Vec::new();
    for bad in BAD {
        let file = "bad-config.toml";
        std::fs::write(dir.path().join(file), bad.text).expect("write");
        let (code, _, stderr) = run_warden(&["check", "-c", file], dir.path());
        let line = line_of(bad.text, bad.line_of);
        let lines = acceptable_lines(bad.text, line);
        let mut problems = Vec::new();
        if code != 2 {
            problems.push(format!("exit {code}, expected 2"));
        }
        if !stderr.contains(file) {
            problems.push("file name missing".to_owned());
        }
        if !lines.iter().any(|&n| names_line(&stderr, n)) {
            problems.push(format!("line {lines:?} missing"));
        }
        for name in bad.names {
            if !stderr.contains(name) {
                problems.push(format!("{name:?} missing"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}; stderr: {stderr}",
                bad.class,
                problems.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn check_refuses_an_unreadable_file_with_exit_2_naming_it() {
    let dir = temp_dir();
    let (code, _, stderr) = run_warden(&["check", "-c", "no-such-file.toml"], dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no-such-file.toml"), "{stderr}");

    std::fs::create_dir(dir.path().join("a-folder.toml")).expect("mkdir");
    let (code, _, stderr) = run_warden(&["check", "-c", "a-folder.toml"], dir.path());
    assert_eq!(code, 2, "a folder as config: {stderr}");
    assert!(stderr.contains("a-folder.toml"), "{stderr}");

    let (code, _, stderr) = run_warden(&["up", "-c", "no-such-file.toml"], dir.path());
    assert_eq!(code, 2, "up on a missing file: {stderr}");
    assert!(stderr.contains("no-such-file.toml"), "{stderr}");
}

#[test]
fn up_on_a_bad_file_exits_2_starts_nothing_and_binds_nothing() {
    let mut failures = Vec::new();
    for bad in BAD {
        let dir = temp_dir();
        let port = free_port();
        let text = format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[service]]\nname = \"marker\"\n\
             command = [\"sh\", \"-c\", \"touch marker-ran; exec sleep 1000\"]\n\n{}",
            bad.text
        );
        std::fs::write(dir.path().join("warden.toml"), &text).expect("write");
        let (status, _, stderr) = run_bounded(
            &["up", "-c", "warden.toml"],
            dir.path(),
            Duration::from_secs(10),
        );
        let prefix_lines = text.len() - bad.text.len();
        let line = text[..prefix_lines].matches('\n').count() + line_of(bad.text, bad.line_of);
        let lines = acceptable_lines(&text, line);
        let mut problems = Vec::new();
        if status.code() != Some(2) {
            problems.push(format!("exit {status}, expected 2"));
        }
        if !stderr.contains("warden.toml") {
            problems.push("file name missing".to_owned());
        }
        if !lines.iter().any(|&n| names_line(&stderr, n)) {
            problems.push(format!("line {lines:?} missing"));
        }
        if listening(port) {
            problems.push(format!("something listens on the admin port {port}"));
        }
        // A service that had been spawned would touch its marker at once.
        std::thread::sleep(Duration::from_millis(100));
        if dir.path().join("marker-ran").exists() {
            problems.push("the good [[service]] ran".to_owned());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}; stderr: {stderr}",
                bad.class,
                problems.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn up_exits_1_naming_the_address_when_the_admin_port_is_taken_and_leaves_no_child() {
    let dir = temp_dir();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    std::fs::write(
        dir.path().join("warden.toml"),
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"{addr}\"\n\n\
             [[service]]\nname = \"child\"\n\
             command = [\"sh\", \"-c\", \"echo $$ > child.pid; exec sleep 1000\"]\n"
        ),
    )
    .expect("write");
    let (status, _, stderr) = run_bounded(
        &["up", "-c", "warden.toml"],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&addr.to_string()),
        "stderr must name {addr}: {stderr}"
    );
    // SEMANTICS #6: the admin port is bound before any child starts, so the child was
    // never spawned. (Were it spawned, its first command writes the file within
    // milliseconds; 300 ms gives a busy machine time to show it.)
    let pid_file = dir.path().join("child.pid");
    std::thread::sleep(Duration::from_millis(300));
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    {
        kill(pid, 9);
    }
    assert!(
        !pid_file.exists(),
        "a child was spawned by a warden that could not bind its admin port"
    );
    drop(taken);
}

#[test]
fn unknown_subcommands_and_bad_flags_exit_2() {
    let dir = temp_dir();
    for args in [
        &["frobnicate"][..],
        &[],
        &["up", "--bogus"],
        &["check", "--bogus"],
        &["check", "-c"],
        &["--log-format", "xml", "check"],
        &["--bogus"],
    ] {
        let (code, _, stderr) = run_warden(args, dir.path());
        assert_eq!(code, 2, "warden {args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "warden {args:?} says why");
    }
}

#[test]
fn version_flag_exits_0_and_prints_the_version() {
    let dir = temp_dir();
    let (code, stdout, stderr) = run_warden(&["--version"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("warden"), "{stdout}");
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}

/// Starts `warden --log-format json up` on a good config; returns it, its port and dir.
fn json_up(dir: &Path, port: u16) -> std::process::Child {
    std::fs::write(
        dir.join("warden.toml"),
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[service]]\nname = \"sleeper\"\ncommand = [\"sleep\", \"1000\"]\n"
        ),
    )
    .expect("write");
    Command::new(warden_bin())
        .args(["--log-format", "json", "up", "-c", "warden.toml"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr"))
        .spawn()
        .expect("spawn")
}

fn non_json_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.is_object()))
        .map(str::to_owned)
        .collect()
}

#[test]
fn log_format_json_writes_every_stderr_line_as_a_json_object() {
    let dir = temp_dir();
    let port = free_port();
    let mut child = json_up(dir.path(), port);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("admin API answers", Duration::from_secs(20), || {
            http(port, "GET", "/healthz", None, None).is_ok()
        });
        let token = std::fs::read_to_string(dir.path().join("state/admin.token"))
            .expect("token")
            .trim()
            .to_owned();
        wait_until("sleeper running", Duration::from_secs(10), || {
            http(port, "GET", "/api/v1/actors/sleeper", Some(&token), None)
                .is_ok_and(|r| r.json()["state"] == "running")
        });
    }));
    kill(child.id(), 15);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "SIGTERM exits 0");
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    assert!(
        stderr.lines().any(|l| !l.trim().is_empty()),
        "warden logs something at start"
    );
    let bad = non_json_lines(&stderr);
    assert!(bad.is_empty(), "lines that are not JSON objects: {bad:#?}");
}

#[test]
fn log_format_json_keeps_stderr_json_when_up_fails_on_a_taken_port() {
    let dir = temp_dir();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    std::fs::write(
        dir.path().join("warden.toml"),
        format!("state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .expect("write");
    let (status, _, stderr) = run_bounded(
        &["--log-format", "json", "up", "-c", "warden.toml"],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let bad = non_json_lines(&stderr);
    assert!(bad.is_empty(), "lines that are not JSON objects: {bad:#?}");
    drop(taken);
}

#[test]
fn sigint_stops_up_gracefully_with_exit_0_leaving_no_child() {
    let mut w = Warden::start(
        r#"
[[service]]
name = "sleeper"
command = ["sleep", "1000"]
"#,
    );
    let a = w.wait_state("sleeper", "running", Duration::from_secs(10));
    let pid = a["pid"].as_u64().expect("pid") as u32;
    let status = w.signal_and_wait(2, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    wait_until("service gone", Duration::from_secs(5), || !alive(pid));
}
