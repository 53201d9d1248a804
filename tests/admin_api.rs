//! Black-box tests of the admin HTTP API of `warden up`: authentication, the token file,
//! the tree and actor views, exits, errors, logs and rotation, oversized bodies, and an API
//! that answers before the children are started.
mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::*;

const SLEEPER: &str = r#"
[[service]]
name = "svc"
command = ["sleep", "1000"]
"#;

const TREE: &str = r#"
[[supervisor]]
name = "app"

[[service]]
name = "api"
supervisor = "app"
command = ["sleep", "1000"]

[[service]]
name = "solo"
command = ["sleep", "1000"]
"#;

const KINDS: [&str; 7] = [
    "supervisor",
    "service",
    "outboard",
    "pool",
    "worker",
    "member",
    "actor",
];

/// [`support::raw_request`] with a JSON Content-Type and Content-Length added for a body
/// or a POST.
fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    if !body.is_empty() || method == "POST" {
        all.push(("Content-Type", "application/json"));
        all.push(("Content-Length", &length));
    }
    support::raw_request(port, method, path, &all, body)
}

/// Asserts an error answer: `status` and a JSON body `{"error": "<non-empty string>"}`.
fn assert_json_error(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: status; body: {}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.contains("application/json"),
        "{what}: content-type {ct:?}"
    );
    let body = r.json();
    let msg = body["error"].as_str();
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "{what}: expected {{\"error\": \"...\"}}, got {body}"
    );
}

/// RFC 3339 in UTC (`2024-05-01T12:00:00.123Z`), and within an hour of now.
fn assert_rfc3339_utc(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a timestamp string, got {v}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1) && b.len() > 21));
    assert!(shape, "{what}: {s:?} is not RFC 3339 UTC ending in Z");
    let t = humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{what}: {s:?}: {e}"));
    let now = SystemTime::now();
    let off = now
        .duration_since(t)
        .or_else(|_| t.duration_since(now))
        .unwrap_or_default();
    assert!(
        off < Duration::from_secs(3600),
        "{what}: {s} is far from now"
    );
}

fn paths(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|a| a["path"].as_str().expect("path").to_owned())
        .collect()
}

#[test]
fn healthz_answers_200_status_ok_without_a_token() {
    let w = Warden::start(SLEEPER);
    let r = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
}

#[test]
fn every_api_route_answers_401_json_without_a_valid_bearer_token_and_200_with_it() {
    let w = Warden::start(SLEEPER);
    let pid = w
        .wait_state("svc", "running", Duration::from_secs(10))
        .get("pid")
        .and_then(Value::as_u64)
        .expect("pid");
    let token = w.token();
    let mut same_len_wrong = token.clone();
    let last = same_len_wrong.pop().expect("non-empty token");
    same_len_wrong.push(if last == '0' { '1' } else { '0' });
    let bad_headers: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong token", Some("Bearer not-the-token".to_owned())),
        (
            "wrong token of the same length",
            Some(format!("Bearer {same_len_wrong}")),
        ),
        (
            "a prefix of the token",
            Some(format!("Bearer {}", &token[..10])),
        ),
        ("Basic scheme", Some("Basic x".to_owned())),
        (
            "Basic scheme with the token",
            Some(format!("Basic {token}")),
        ),
        ("scheme only", Some("Bearer".to_owned())),
        ("token without scheme", Some(token.clone())),
    ];
    let routes: [(&str, &str); 7] = [
        ("GET", "/api/v1/tree"),
        ("GET", "/api/v1/actors"),
        ("GET", "/api/v1/actors/svc"),
        ("GET", "/api/v1/actors/svc/logs?tail=5"),
        ("POST", "/api/v1/actors/svc/restart"),
        ("POST", "/api/v1/actors/svc/stop"),
        ("POST", "/api/v1/actors/svc/start"),
    ];
    for (method, route) in routes {
        for (label, header) in &bad_headers {
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|h| vec![("Authorization", h)])
                .unwrap_or_default();
            let r = raw_request(w.port, method, route, &headers, b"").expect("request");
            assert_json_error(&r, 401, &format!("{method} {route} with {label}"));
        }
    }
    // None of the refused requests touched the service.
    let a = w.actor("svc");
    assert_eq!(a["state"], "running");
    assert_eq!(a["pid"].as_u64(), Some(pid), "refused POSTs must not act");
    assert_eq!(a["restarts"], 0);

    // With the token every route answers 200.
    for (method, route) in routes {
        let r = http(w.port, method, route, Some(&token), None).expect("request");
        assert_eq!(
            r.status,
            200,
            "{method} {route} with the token: {}",
            r.text()
        );
    }
    assert_eq!(w.state("svc"), "running");
}

#[test]
fn a_missing_token_file_is_created_with_mode_0600_and_64_hex_chars() {
    let w = Warden::start(SLEEPER);
    let file = w.path("state/admin.token");
    let meta = std::fs::metadata(&file).expect("token file exists");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "mode of {}",
        file.display()
    );
    let token = std::fs::read_to_string(&file).expect("read token");
    let token = token.trim();
    assert_eq!(token.len(), 64, "token {token:?}");
    assert!(
        token.chars().all(|c| c.is_ascii_hexdigit()),
        "token {token:?} is not hex"
    );
    let r = http(w.port, "GET", "/api/v1/actors", Some(token), None).expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_pre_existing_token_file_is_used_as_is() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
    let file = dir.path().join("state/admin.token");
    let mine = "my-own-operator-token-0123456789abcdef";
    std::fs::write(&file, format!("{mine}\n")).expect("write token");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let w = Warden::start_in(dir, SLEEPER);
    assert_eq!(
        std::fs::read_to_string(&file).expect("token"),
        format!("{mine}\n"),
        "the token file must not be rewritten"
    );
    let r = http(w.port, "GET", "/api/v1/actors", Some(mine), None).expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(
        w.port,
        "GET",
        "/api/v1/actors",
        Some("0".repeat(64).as_str()),
        None,
    )
    .expect("request");
    assert_json_error(&r, 401, "a fresh-looking token instead of the file's");
}

#[test]
fn tree_nests_child_objects_and_actors_is_a_flat_list_parents_first_without_root() {
    let w = Warden::start(TREE);
    w.wait_state("app/api", "running", Duration::from_secs(10));
    w.wait_state("solo", "running", Duration::from_secs(10));

    let r = w.req("GET", "/api/v1/tree");
    assert_eq!(r.status, 200, "{}", r.text());
    let root = r.json();
    assert_eq!(root["path"], "/");
    assert_eq!(root["kind"], "supervisor");
    let top = root["children"].as_array().expect("root children array");
    let top_paths: Vec<&str> = top
        .iter()
        .map(|c| c["path"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(top_paths, ["/app", "/solo"], "root children in file order");
    let app = &top[0];
    assert!(app.is_object(), "children are objects: {app}");
    assert_eq!(app["kind"], "supervisor");
    assert_eq!(app["name"], "app");
    let inner = app["children"].as_array().expect("app children array");
    assert_eq!(inner.len(), 1, "{app}");
    assert!(
        inner[0].is_object(),
        "nested children are objects: {}",
        inner[0]
    );
    assert_eq!(inner[0]["path"], "/app/api");
    assert_eq!(inner[0]["kind"], "service");
    assert_eq!(inner[0]["state"], "running");
    assert!(inner[0]["pid"].is_u64());
    assert_eq!(inner[0]["children"], serde_json::json!([]));
    assert_eq!(top[1]["children"], serde_json::json!([]));

    let r = w.req("GET", "/api/v1/actors");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let got = paths(&list);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["/app", "/app/api", "/solo"],
        "every actor but the root"
    );
    for (i, p) in got.iter().enumerate() {
        if let Some((parent, _)) = p.rsplit_once('/').filter(|(parent, _)| !parent.is_empty()) {
            let at = got.iter().position(|q| q == parent).expect("parent listed");
            assert!(at < i, "parent {parent} after child {p} in {got:?}");
        }
    }
    for a in list.as_array().expect("array") {
        assert!(a.is_object(), "flat list of objects: {a}");
        assert!(
            a["children"]
                .as_array()
                .is_some_and(|c| c.iter().all(Value::is_string)),
            "children in /api/v1/actors are paths: {a}"
        );
    }
}

#[test]
fn actor_view_has_every_documented_field_with_rfc3339_z_timestamps_and_kinds() {
    let w = Warden::start(TREE);
    w.wait_state("app/api", "running", Duration::from_secs(10));
    let a = w.actor("app/api");
    for key in [
        "path",
        "name",
        "kind",
        "state",
        "pid",
        "started_at",
        "restarts",
        "last_exit",
        "next_restart_at",
        "backoff",
        "failed_reason",
        "children",
    ] {
        assert!(a.get(key).is_some(), "field {key:?} missing from {a}");
    }
    assert_eq!(a["path"], "/app/api");
    assert_eq!(a["name"], "api");
    assert_eq!(a["kind"], "service");
    assert_eq!(a["state"], "running");
    let pid = a["pid"].as_u64().expect("pid is a number") as u32;
    assert!(alive(pid));
    assert_rfc3339_utc(&a["started_at"], "started_at");
    assert_eq!(a["restarts"], 0);
    assert!(a["last_exit"].is_null(), "{a}");
    assert!(a["next_restart_at"].is_null(), "{a}");
    assert!(a["backoff"]["attempt"].is_u64(), "{a}");
    assert!(a["backoff"]["delay_ms"].is_u64(), "{a}");
    assert!(a["failed_reason"].is_null(), "{a}");
    assert_eq!(a["children"], serde_json::json!([]));

    let app = w.actor("app");
    assert_eq!(app["path"], "/app");
    assert_eq!(app["kind"], "supervisor");
    assert!(app["pid"].is_null(), "{app}");
    assert_eq!(app["children"], serde_json::json!(["/app/api"]));

    let list = w.req("GET", "/api/v1/actors").json();
    for a in list.as_array().expect("array") {
        let kind = a["kind"].as_str().unwrap_or("");
        assert!(KINDS.contains(&kind), "kind {kind:?} of {}", a["path"]);
        let state = a["state"].as_str().unwrap_or("");
        assert!(
            ["starting", "running", "backoff", "stopping", "stopped", "exited", "failed"]
                .contains(&state),
            "state {state:?}"
        );
    }
}

#[test]
fn sigkill_is_reported_as_signal_sigkill_with_null_code_and_backoff_is_visible() {
    let w = Warden::start(
        r#"
[[service]]
name = "victim"
command = ["sleep", "1000"]
restart = { backoff = { initial = "1500ms", jitter = 0.0 } }
"#,
    );
    let a = w.wait_state("victim", "running", Duration::from_secs(10));
    let pid = a["pid"].as_u64().expect("pid") as u32;
    kill(pid, 9);
    let b = w.wait_state("victim", "backoff", Duration::from_secs(5));
    let exit = &b["last_exit"];
    assert_eq!(exit["signal"], "SIGKILL", "{b}");
    assert!(
        exit["code"].is_null(),
        "code must be null after a signal: {b}"
    );
    assert!(
        exit["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{b}"
    );
    assert_rfc3339_utc(&exit["at"], "last_exit.at");
    assert!(b["pid"].is_null(), "no pid while in backoff: {b}");
    assert_rfc3339_utc(&b["next_restart_at"], "next_restart_at");
    assert!(b["backoff"]["attempt"].as_u64().unwrap_or(0) >= 1, "{b}");
    let delay = b["backoff"]["delay_ms"].as_u64().unwrap_or(0);
    assert!((1000..=2000).contains(&delay), "delay_ms {delay}: {b}");

    let r = w.wait_state("victim", "running", Duration::from_secs(10));
    assert_eq!(r["restarts"], 1, "{r}");
    let new_pid = r["pid"].as_u64().expect("new pid") as u32;
    assert_ne!(new_pid, pid);
    assert!(r["next_restart_at"].is_null(), "{r}");
    assert_eq!(
        r["last_exit"]["signal"], "SIGKILL",
        "last_exit is kept: {r}"
    );
}

#[test]
fn exit_3_is_reported_as_code_3_with_null_signal() {
    let w = Warden::start(
        r#"
[[service]]
name = "three"
command = ["sh", "-c", "sleep 0.2; exit 3"]
restart = { policy = "temporary" }
"#,
    );
    let a = w.wait_state("three", "exited", Duration::from_secs(10));
    let exit = &a["last_exit"];
    assert_eq!(exit["code"], 3, "{a}");
    assert!(
        exit["signal"].is_null(),
        "signal must be null after an exit: {a}"
    );
    assert_rfc3339_utc(&exit["at"], "last_exit.at");
    assert!(
        exit["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{a}"
    );
    assert!(a["pid"].is_null(), "{a}");
    assert_eq!(a["restarts"], 0);
}

#[test]
fn unknown_actors_routes_and_actions_are_404_json_and_disallowed_transitions_409_json() {
    let w = Warden::start(SLEEPER);
    let pid = w
        .wait_state("svc", "running", Duration::from_secs(10))
        .get("pid")
        .and_then(Value::as_u64)
        .expect("pid");

    for (method, path) in [
        ("GET", "/api/v1/actors/nope"),
        ("GET", "/api/v1/actors/svc/nope"),
        ("GET", "/api/v1/actors/a%20b"),
        ("GET", "/api/v1/nothing"),
        ("GET", "/nothing"),
        ("POST", "/api/v1/nothing"),
        ("POST", "/api/v1/actors/svc/frobnicate"),
        ("POST", "/api/v1/actors/nope/stop"),
        ("POST", "/api/v1/actors/nope/start"),
        ("POST", "/api/v1/actors/nope/restart"),
    ] {
        let r = w.req(method, path);
        assert_json_error(&r, 404, &format!("{method} {path}"));
    }
    let a = w.actor("svc");
    assert_eq!(a["state"], "running", "an unknown action must not act");
    assert_eq!(a["pid"].as_u64(), Some(pid));

    let r = w.req("POST", "/api/v1/actors/svc/start");
    assert_json_error(&r, 409, "start of a running actor");
    assert_eq!(w.actor("svc")["pid"].as_u64(), Some(pid));

    let r = w.req("POST", "/api/v1/actors/svc/stop");
    assert_eq!(r.status, 200, "stop: {}", r.text());
    let stopped = r.json();
    assert_eq!(
        stopped["path"], "/svc",
        "stop answers with the actor: {stopped}"
    );
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["pid"].is_null(), "{stopped}");
    wait_until("old pid gone", Duration::from_secs(5), || {
        !alive(pid as u32)
    });

    let r = w.req("POST", "/api/v1/actors/svc/stop");
    assert_json_error(&r, 409, "stop of a stopped actor");

    let r = w.req("POST", "/api/v1/actors/svc/start");
    assert_eq!(r.status, 200, "start: {}", r.text());
    assert_eq!(r.json()["state"], "running");
}

#[test]
fn logs_tail_returns_the_last_lines_of_stdout_and_stderr_as_text_plain() {
    let w = Warden::start(
        r#"
[[supervisor]]
name = "grp"

[[service]]
name = "talker"
command = ["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exec sleep 1000"]
"#,
    );
    w.wait_state("talker", "running", Duration::from_secs(10));
    let all = wait_for("4 log lines", Duration::from_secs(10), || {
        let r = w.req("GET", "/api/v1/actors/talker/logs");
        (r.status == 200 && r.text().lines().count() >= 4).then_some(r)
    });
    assert!(
        all.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        all.headers
    );
    assert_eq!(
        all.text(),
        "out1\nerr1\nout2\nerr2\n",
        "default tail: every line, as written"
    );

    let r = w.req("GET", "/api/v1/actors/talker/logs?tail=2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.text(), "out2\nerr2\n");

    let r = w.req("GET", "/api/v1/actors/talker/logs?tail=abc");
    assert_json_error(&r, 400, "tail=abc");
    let r = w.req("GET", "/api/v1/actors/talker/logs?tail=-1");
    assert_json_error(&r, 400, "tail=-1");
    let r = w.req("GET", "/api/v1/actors/nope/logs");
    assert_json_error(&r, 404, "logs of an unknown actor");
    let r = w.req("GET", "/api/v1/actors/grp/logs");
    assert_json_error(&r, 404, "logs of a supervisor");
}

#[test]
fn logs_rotate_at_max_bytes_keeping_at_most_keep_rotated_files_of_the_newest_output() {
    // `[logs]` is warden's addition to the design's config (see src/config.rs).
    let w = Warden::start(
        r#"
[logs]
max_bytes = 2048
keep = 2

[[service]]
name = "chatty"
command = ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo \"line $i padding padding padding\"; i=$((i+1)); done; exec sleep 1000"]
"#,
    );
    let current = w.path("state/logs/chatty.log");
    let first = w.path("state/logs/chatty.log.1");
    let second = w.path("state/logs/chatty.log.2");
    let third = w.path("state/logs/chatty.log.3");
    wait_until("all 20000 lines logged", Duration::from_secs(20), || {
        assert!(!third.exists(), "chatty.log.3 must never exist (keep = 2)");
        std::fs::read_to_string(&current).is_ok_and(|t| t.contains("line 19999 "))
    });
    assert!(current.exists(), "chatty.log");
    assert!(first.exists(), "chatty.log.1");
    assert!(second.exists(), "chatty.log.2");
    assert!(!third.exists(), "chatty.log.3 must not exist (keep = 2)");
    // A file is rotated before a write would take it past max_bytes; one write is at most
    // one read of the child's pipe, so no file is bigger than max_bytes plus that.
    for f in [&second, &first, &current] {
        let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 2048 + 64 * 1024, "{} is {len} bytes", f.display());
    }
    // The files kept are the newest output, contiguous, oldest first.
    let mut text = String::new();
    for f in [&second, &first, &current] {
        text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    let numbers: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("line "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(numbers.last(), Some(&19999));
    assert!(
        numbers.len() < 20000,
        "older output must have been dropped: {} lines kept",
        numbers.len()
    );
    for pair in numbers.windows(2).skip(1) {
        assert_eq!(pair[1], pair[0] + 1, "kept lines are contiguous");
    }
    let r = w.req("GET", "/api/v1/actors/chatty/logs?tail=1");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("line 19999 "), "{}", r.text());
}

#[test]
fn a_one_mib_post_body_is_refused_with_413_and_warden_keeps_answering() {
    let w = Warden::start(
        r#"
[[service]]
name = "x"
command = ["sleep", "1000"]
"#,
    );
    let pid = w
        .wait_state("x", "running", Duration::from_secs(10))
        .get("pid")
        .and_then(Value::as_u64)
        .expect("pid");
    let token = w.token();
    let auth = format!("Bearer {token}");
    let body = vec![b'a'; 1024 * 1024];
    let r = raw_request(
        w.port,
        "POST",
        "/api/v1/actors/x/stop",
        &[("Authorization", &auth)],
        &body,
    );
    let seen = match &r {
        Ok(r) => format!("{} {}", r.status, r.text()),
        Err(e) => format!("no response: {e}"),
    };
    eprintln!("1 MiB POST /api/v1/actors/x/stop answered: {seen}");
    // Warden is alive and answers whatever happened.
    assert!(w.pid() > 0 && alive(w.pid()), "warden died");
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz after the big body");
    assert_eq!(h.status, 200);
    assert_eq!(w.req("GET", "/api/v1/actors").status, 200);
    let r = r.unwrap_or_else(|e| panic!("no HTTP answer to a 1 MiB body: {e}"));
    assert_json_error(&r, 413, "a 1 MiB POST body (design.md: 413)");
    assert_eq!(
        w.actor("x")["pid"].as_u64(),
        Some(pid),
        "a refused request must not stop the actor"
    );
}

/// The 64 KiB body limit holds on every POST route, as exactly 413 with a JSON error, and
/// a refused request changes nothing; a body of exactly 64 KiB is not refused for its size.
#[test]
fn every_post_route_refuses_64_kib_plus_1_with_413_json_and_changes_nothing() {
    let port = free_port();
    let w = Warden::start(&format!(
        r#"
[[service]]
name = "x"
command = ["sleep", "1000"]

[[outboard]]
name = "ob"
command = ["sleep", "1000"]
heartbeat = "600s"

[[pool]]
name = "p"
command = ["sleep", "1000"]
ports = "{port}-{port}"
min = 0
max = 1
"#
    ));
    let x = w.wait_state("x", "running", Duration::from_secs(10));
    let ob = w.wait_state("ob", "running", Duration::from_secs(10));
    let token = w.token();
    let auth = format!("Bearer {token}");
    let big = vec![b' '; 64 * 1024 + 1];
    let len = big.len().to_string();
    let mut wrong = Vec::new();
    for path in [
        "/api/v1/actors/x/start",
        "/api/v1/actors/x/stop",
        "/api/v1/actors/x/restart",
        "/api/v1/actors/ob/call",
        "/api/v1/pools/p/sessions",
        "/api/v1/pools/p/rollout",
        "/api/v1/pools/p/tokens/verify",
        "/api/v1/reload",
        "/api/v1/drain",
        "/api/v1/admin/activate",
    ] {
        let r = raw_request(w.port, "POST", path, &[("Authorization", &auth)], &big)
            .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"));
        let json_error = r
            .header("content-type")
            .unwrap_or("")
            .contains("application/json")
            && r.json()["error"].as_str().is_some_and(|m| !m.is_empty());
        if r.status != 413 || !json_error {
            wrong.push(format!("{path}: {} {:?}", r.status, r.text()));
        }
    }
    assert!(
        wrong.is_empty(),
        "a {len}-byte body must get 413 with a JSON error on every POST route; got:\n{}",
        wrong.join("\n")
    );
    // Nothing changed: same processes, no restart, no session, not draining.
    for (path, before) in [("x", &x), ("ob", &ob)] {
        let a = w.actor(path);
        assert_eq!(a["state"], "running", "{a}");
        assert_eq!(a["pid"], before["pid"], "{a}");
        assert_eq!(a["restarts"], 0, "{a}");
    }
    let p = w.actor("p");
    assert_eq!(p["details"]["sessions"], 0, "{p}");
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(
        h.status,
        200,
        "a refused drain does not drain: {}",
        h.text()
    );

    // Exactly 64 KiB is within the limit.
    let prefix = br#"{"token":""#;
    let mut at_limit = prefix.to_vec();
    at_limit.resize(64 * 1024 - 2, b'a');
    at_limit.extend_from_slice(br#""}"#);
    assert_eq!(at_limit.len(), 64 * 1024);
    let r = http(
        w.port,
        "POST",
        "/api/v1/pools/p/tokens/verify",
        Some(&token),
        Some(&at_limit),
    )
    .expect("http");
    assert_ne!(
        r.status,
        413,
        "exactly 64 KiB must not be refused: {}",
        r.text()
    );
}

#[test]
fn the_admin_api_answers_before_the_children_are_started() {
    let w = Warden::start(
        r#"
[[service]]
name = "slow"
command = ["sleep", "1000"]
ready = { delay = "3s" }

[[service]]
name = "second"
command = ["sleep", "1000"]
"#,
    );
    let r = w.req("GET", "/api/v1/actors");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let second = list
        .as_array()
        .expect("array")
        .iter()
        .find(|a| a["path"] == "/second")
        .cloned()
        .unwrap_or_else(|| panic!("/second listed before it starts: {list}"));
    assert_eq!(second["state"], "starting", "{list}");
    assert!(second["pid"].is_null(), "second not spawned yet: {second}");
    let slow = w.actor("slow");
    assert_eq!(slow["state"], "starting", "{slow}");
    // Then the children start in order.
    w.wait_state("slow", "running", Duration::from_secs(10));
    w.wait_state("second", "running", Duration::from_secs(10));
}
