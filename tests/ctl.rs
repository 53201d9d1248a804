//! Black-box tests of `warden ctl` against a running `warden up`: every verb over the local
//! control socket and over the admin HTTP API (`--admin`), its output, and its exit codes
//! (0 done, 1 the operation failed, 2 usage or connection error).
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(10);

const TREE: &str = r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "talker"
command = ["/bin/sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; exec sleep 1000"]
"#;

/// Runs `warden ctl -c CONFIG ARGS...` in the config's folder.
fn ctl(w: &Warden, args: &[&str]) -> (i32, String, String) {
    let config = w.config.to_str().expect("utf-8 path");
    let mut all = vec!["ctl", "-c", config];
    all.extend_from_slice(args);
    run_warden(&all, w.dir.path())
}

/// Runs `warden ctl -c CONFIG --admin http://127.0.0.1:PORT ARGS...`.
fn ctl_http(w: &Warden, args: &[&str]) -> (i32, String, String) {
    let admin = format!("http://127.0.0.1:{}", w.port);
    let mut all = vec!["--admin", admin.as_str()];
    all.extend_from_slice(args);
    ctl(w, &all)
}

/// Asserts exit code 0 and answers stdout.
fn ok(what: &str, out: (i32, String, String)) -> String {
    let (code, stdout, stderr) = out;
    assert_eq!(
        code, 0,
        "{what}: exit code; stdout: {stdout}; stderr: {stderr}"
    );
    stdout
}

/// Asserts exit code `want` and a non-empty message on stderr; answers stderr.
fn fails(what: &str, want: i32, out: (i32, String, String)) -> String {
    let (code, stdout, stderr) = out;
    assert_eq!(
        code, want,
        "{what}: exit code; stdout: {stdout}; stderr: {stderr}"
    );
    assert!(
        !stderr.trim().is_empty(),
        "{what}: a message on stderr; stdout: {stdout}"
    );
    stderr
}

fn pid_of(w: &Warden, path: &str) -> u32 {
    w.wait_state(path, "running", T)["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{path} has a pid")) as u32
}

fn start_tree() -> Warden {
    let w = Warden::start(TREE);
    pid_of(&w, "/app/api");
    pid_of(&w, "/talker");
    wait_until("talker wrote its lines", T, || {
        w.req("GET", "/api/v1/actors/talker/logs?tail=10")
            .text()
            .contains("line 5")
    });
    w
}

/// The table row of `path` in `ctl status` output, split in columns.
fn row<'a>(table: &'a str, path: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&path))
        .unwrap_or_else(|| panic!("no row for {path} in:\n{table}"))
}

#[test]
fn status_prints_a_table_with_a_header_and_a_row_per_actor_and_json_status_is_an_array() {
    let w = start_tree();
    let api = pid_of(&w, "/app/api");
    let out = ok("ctl status", ctl(&w, &["status"]));
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header.first(), Some(&"PATH"), "header first: {out}");
    for col in ["KIND", "STATE", "PID", "RESTARTS"] {
        assert!(header.contains(&col), "header has {col}: {out}");
    }
    let r = row(&out, "/app/api");
    assert_eq!(&r[1..4], ["service", "running", &api.to_string()], "{out}");
    assert_eq!(&row(&out, "/app")[1..3], ["supervisor", "running"], "{out}");
    assert_eq!(&row(&out, "/talker")[1..3], ["service", "running"], "{out}");
    assert_eq!(out.lines().count(), 4, "a header and three actors: {out}");

    let out = ok("ctl --json status", ctl(&w, &["--json", "status"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"));
    let list = v.as_array().unwrap_or_else(|| panic!("an array: {out}"));
    let paths: Vec<&str> = list.iter().filter_map(|a| a["path"].as_str()).collect();
    assert_eq!(paths, ["/app", "/app/api", "/talker"], "{out}");
    let api_json = &list[1];
    assert_eq!(api_json["state"], "running");
    assert_eq!(api_json["pid"].as_u64(), Some(u64::from(api)));
    assert_eq!(api_json["kind"], "service");
}

#[test]
fn tree_prints_the_nesting_indented() {
    let w = start_tree();
    let out = ok("ctl tree", ctl(&w, &["tree"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 4, "root and three actors: {out}");
    assert!(lines[0].starts_with('/'), "the root first: {out}");
    let indent = |name: &str| {
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"));
        line.len() - line.trim_start().len()
    };
    assert!(indent("app") > 0, "{out}");
    assert!(indent("api") > indent("app"), "api nested in app: {out}");
    assert_eq!(indent("talker"), indent("app"), "{out}");
    assert!(out.contains("running"), "{out}");

    let out = ok("ctl --json tree", ctl(&w, &["--json", "tree"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"));
    assert_eq!(v["path"], "/");
    assert_eq!(v["children"][0]["children"][0]["path"], "/app/api", "{v}");
}

#[test]
fn logs_tail_prints_the_last_lines_as_written() {
    let w = start_tree();
    let out = ok(
        "ctl logs --tail 2",
        ctl(&w, &["logs", "/talker", "--tail", "2"]),
    );
    assert_eq!(out, "line 4\nline 5\n");
    let out = ok("ctl logs", ctl(&w, &["logs", "/talker"]));
    assert_eq!(out, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    fails(
        "ctl logs of an unknown path",
        1,
        ctl(&w, &["logs", "/nope"]),
    );
}

#[test]
fn start_stop_restart_exit_0_and_drive_the_actor() {
    let w = start_tree();
    let api = pid_of(&w, "/app/api");

    let out = ok("ctl stop", ctl(&w, &["stop", "/app/api"]));
    assert!(out.contains("stopped"), "stop prints the actor: {out}");
    assert_eq!(w.state("/app/api"), "stopped");
    assert!(!alive(api));

    let out = ok("ctl start", ctl(&w, &["start", "/app/api"]));
    assert!(out.contains("running"), "start prints the actor: {out}");
    let started = pid_of(&w, "/app/api");
    assert_ne!(started, api);

    let out = ok(
        "ctl --json restart",
        ctl(&w, &["--json", "restart", "/app/api"]),
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"));
    assert_eq!(v["path"], "/app/api");
    assert_eq!(v["state"], "running");
    let restarted = v["pid"].as_u64().expect("pid") as u32;
    assert_ne!(restarted, started, "restart gives a new process");
    assert_eq!(pid_of(&w, "/app/api"), restarted);
    assert!(!alive(started));
}

#[test]
fn stop_of_an_unknown_path_exits_1_with_a_message() {
    let w = start_tree();
    let err = fails("ctl stop /nope", 1, ctl(&w, &["stop", "/nope"]));
    assert!(err.contains("/nope"), "names the path: {err}");
    let (code, stdout, _) = ctl(&w, &["--json", "stop", "/nope"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("JSON ({e}): {stdout}"));
    assert_eq!(v["kind"], "not_found", "{v}");
}

#[test]
fn stop_of_an_already_stopped_actor_exits_1_as_a_conflict() {
    let w = start_tree();
    ok("ctl stop", ctl(&w, &["stop", "/app/api"]));
    let err = fails("second ctl stop", 1, ctl(&w, &["stop", "/app/api"]));
    assert!(err.contains("stop"), "says what was refused: {err}");
    let (code, stdout, _) = ctl(&w, &["--json", "stop", "/app/api"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("JSON ({e}): {stdout}"));
    assert_eq!(v["kind"], "conflict", "{v}");
    assert_eq!(w.state("/app/api"), "stopped");
}

#[test]
fn wait_exits_0_for_a_running_actor_and_1_on_timeout_for_a_stopped_one() {
    let w = start_tree();
    ok(
        "ctl wait running actors",
        ctl(&w, &["wait", "/app/api", "/talker", "--timeout", "5s"]),
    );
    ok("ctl stop", ctl(&w, &["stop", "/app/api"]));
    let started = Instant::now();
    let err = fails(
        "ctl wait for a stopped actor",
        1,
        ctl(&w, &["wait", "/app/api", "--timeout", "1s"]),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "waited the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "gave up in time: {took:?}");
    assert!(err.contains("/app/api"), "names the actor: {err}");
    fails(
        "ctl wait for an unknown actor",
        1,
        ctl(&w, &["wait", "/nope", "--timeout", "1s"]),
    );
}

#[test]
fn wait_returns_once_a_starting_actor_becomes_running() {
    let w = Warden::start(
        r#"
[[service]]
name = "slow"
command = ["sleep", "1000"]
ready = { delay = "1500ms" }
"#,
    );
    w.wait_state("/slow", "starting", T);
    let out = ok(
        "ctl wait for a starting actor",
        ctl(&w, &["wait", "/slow", "--timeout", "8s"]),
    );
    assert!(out.contains("/slow"), "{out}");
    assert_eq!(w.state("/slow"), "running");
}

#[test]
fn reload_exits_0_and_prints_added_removed_changed() {
    let w = start_tree();
    w.rewrite(
        r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1001"]

[[service]]
name = "fresh"
command = ["sleep", "1000"]
"#,
    );
    let out = ok("ctl reload", ctl(&w, &["reload"]));
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name}: line in {out}"))
    };
    assert_eq!(field("added"), "/fresh", "{out}");
    assert_eq!(field("removed"), "/talker", "{out}");
    assert_eq!(field("changed"), "/app/api", "{out}");
    pid_of(&w, "/fresh");

    let out = ok("ctl --json reload", ctl(&w, &["--json", "reload"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"));
    assert_eq!(
        v,
        serde_json::json!({ "added": [], "removed": [], "changed": [] })
    );

    // A file that does not load: exit 1 with the file and key.
    w.rewrite("[[service]]\nname = \"x\"\ncommand = [\"sleep\", \"1\"]\nbogus = 1\n");
    let err = fails("ctl reload of a bad file", 1, ctl(&w, &["reload"]));
    assert!(
        err.contains("warden.toml") && err.contains("bogus"),
        "names the file and key: {err}"
    );
}

#[test]
fn drain_exits_0_and_healthz_answers_503() {
    let w = start_tree();
    let out = ok("ctl drain", ctl(&w, &["drain"]));
    assert!(out.contains("draining"), "{out}");
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(h.status, 503, "{}", h.text());
}

#[test]
fn over_admin_http_status_restart_logs_and_reload_work_with_the_configs_token() {
    let w = start_tree();
    let api = pid_of(&w, "/app/api");

    let out = ok("ctl --admin status", ctl_http(&w, &["status"]));
    assert_eq!(
        out.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .next(),
        Some("PATH")
    );
    assert_eq!(row(&out, "/app/api")[2], "running", "{out}");
    let out = ok(
        "ctl --admin --json status",
        ctl_http(&w, &["--json", "status"]),
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"));
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{out}");

    let out = ok("ctl --admin tree", ctl_http(&w, &["tree"]));
    assert!(out.contains("api"), "{out}");

    let out = ok(
        "ctl --admin --json restart",
        ctl_http(&w, &["--json", "restart", "/app/api"]),
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"));
    assert_eq!(v["state"], "running", "{v}");
    assert_ne!(
        v["pid"].as_u64(),
        Some(u64::from(api)),
        "a new process: {v}"
    );
    // The processes themselves, not only the JSON: the old one gone, the new one alive.
    let new_api = v["pid"].as_u64().expect("pid") as u32;
    assert!(!alive(api), "the old /app/api (pid {api}) still runs");
    assert!(
        alive(new_api),
        "the new /app/api (pid {new_api}) is not alive"
    );

    let out = ok(
        "ctl --admin logs",
        ctl_http(&w, &["logs", "/talker", "--tail", "1"]),
    );
    assert_eq!(out, "line 5\n");

    w.rewrite(&format!(
        "{TREE}\n[[service]]\nname = \"fresh\"\ncommand = [\"sleep\", \"1000\"]\n"
    ));
    let out = ok("ctl --admin reload", ctl_http(&w, &["reload"]));
    assert!(out.contains("added:   /fresh"), "{out}");
    pid_of(&w, "/fresh");

    fails(
        "ctl --admin stop of an unknown path",
        1,
        ctl_http(&w, &["stop", "/nope"]),
    );
    ok(
        "ctl --admin wait",
        ctl_http(&w, &["wait", "/app/api", "--timeout", "5s"]),
    );
    ok("ctl --admin stop", ctl_http(&w, &["stop", "/app/api"]));
    assert!(
        !alive(new_api),
        "/app/api (pid {new_api}) still runs after ctl stop"
    );
    fails(
        "ctl --admin wait for a stopped actor",
        1,
        ctl_http(&w, &["wait", "/app/api", "--timeout", "500ms"]),
    );
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(h.status, 200, "before drain: {}", h.text());
    ok("ctl --admin drain", ctl_http(&w, &["drain"]));
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(
        h.status,
        503,
        "ctl drain must make /healthz answer 503: {}",
        h.text()
    );
}

#[test]
fn over_admin_http_an_explicit_token_file_is_used_and_a_wrong_one_exits_2() {
    let w = start_tree();
    let good = w.path("good.token");
    std::fs::write(&good, format!("{}\n", w.token())).expect("token copy");
    let good = good.to_str().expect("utf-8").to_owned();
    let out = ok(
        "ctl --admin --token-file good status",
        ctl_http(&w, &["--token-file", &good, "status"]),
    );
    assert!(out.contains("/app/api"), "{out}");

    let wrong = w.path("wrong.token");
    std::fs::write(&wrong, "0123456789abcdef0123456789abcdef\n").expect("wrong token");
    let wrong = wrong.to_str().expect("utf-8").to_owned();
    // A refused token is a usage error (2), as a refused peer on the socket is.
    let err = fails(
        "ctl --admin with a wrong token file",
        2,
        ctl_http(&w, &["--token-file", &wrong, "status"]),
    );
    eprintln!("wrong token file -> exit 2, stderr: {err}");
    assert!(
        err.to_lowercase().contains("token"),
        "says the token is wrong: {err}"
    );
    let (code, _, err) = ctl_http(&w, &["--token-file", &wrong, "restart", "/app/api"]);
    assert_eq!(code, 2, "{err}");

    let missing = w.path("missing.token");
    let missing = missing.to_str().expect("utf-8").to_owned();
    let err = fails(
        "ctl --admin with a token file that does not exist",
        2,
        ctl_http(&w, &["--token-file", &missing, "status"]),
    );
    assert!(err.contains("missing.token"), "{err}");
}

#[test]
fn without_a_running_warden_ctl_exits_2_naming_what_it_could_not_reach() {
    let dir = temp_dir();
    let port = free_port();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"1000\"]\n"
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let (code, stdout, stderr) = run_warden(&["ctl", "-c", config, "status"], dir.path());
    assert_eq!(code, 2, "stdout: {stdout}; stderr: {stderr}");
    assert!(
        stderr.contains("control.sock") && stderr.contains("cannot connect"),
        "names the socket it could not reach: {stderr}"
    );

    // A stale socket file with nobody listening is the same.
    std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("state/control.sock"))
        .expect("bind");
    drop(stale);
    let (code, _, stderr) = run_warden(&["ctl", "-c", config, "status"], dir.path());
    assert_eq!(code, 2, "stale socket: {stderr}");

    // --admin to a port nobody listens on.
    std::fs::write(dir.path().join("token"), "abc\n").expect("token");
    let admin = format!("http://127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = run_warden(
        &[
            "ctl",
            "-c",
            config,
            "--admin",
            &admin,
            "--token-file",
            "token",
            "status",
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "closed port: stdout: {stdout}; stderr: {stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains(&admin),
        "names the URL it could not reach: {stderr}"
    );

    // No config file at all.
    let (code, _, stderr) = run_warden(&["ctl", "-c", "absent.toml", "status"], dir.path());
    assert_eq!(code, 2, "missing config: {stderr}");
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("warden.toml"), "").expect("config");
    for args in [
        &["ctl", "frobnicate"][..],
        &["ctl", "stop"],
        &["ctl", "start"],
        &["ctl", "restart"],
        &["ctl", "logs"],
        &["ctl", "wait"],
        &["ctl", "wait", "/x", "--timeout", "soon"],
        &["ctl", "status", "--bogus-flag"],
        &["ctl"],
    ] {
        let (code, stdout, stderr) = run_warden(args, dir.path());
        assert_eq!(code, 2, "{args:?}: stdout: {stdout}; stderr: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}: a message on stderr");
    }
}
