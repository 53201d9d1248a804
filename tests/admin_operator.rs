//! Black-box tests of the operator routes of the admin API under `warden up`: readiness,
//! Prometheus metrics, the Server-Sent Events stream, drain, and the error answers of
//! these routes (401, 404/405, 413).
mod support;

use std::time::Duration;

use serde_json::Value;
use support::events::EventStream;
use support::*;

const T: Duration = Duration::from_secs(10);

/// A wrong but well-formed bearer token.
const WRONG_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Asserts an error answer: `status` and a JSON body `{"error": "<non-empty string>"}`.
fn assert_json_error(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: status; body: {}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.contains("application/json"),
        "{what}: content-type {ct:?}, body {}",
        r.text()
    );
    let body = r.json();
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: expected {{\"error\": \"...\"}}, got {body}"
    );
}

fn get(port: u16, path: &str, token: Option<&str>) -> Response {
    http(port, "GET", path, token, None).expect("http request")
}

fn paths(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `/readyz` as (status, JSON body), checked to be JSON; asked with the token, so that a
/// 503 names the actors it waits for.
fn readyz(w: &Warden) -> (u16, Value) {
    let r = get(w.port, "/readyz", Some(&w.token()));
    let ct = r.header("content-type").unwrap_or("").to_owned();
    assert!(
        ct.contains("application/json"),
        "/readyz content-type {ct:?}: {}",
        r.text()
    );
    (r.status, r.json())
}

/// One sample of the Prometheus text: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the sample lines of Prometheus text format (label values without escapes).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("metric line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("metric value is not a number: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let labels = inner
                    .split("\",")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label {l:?} in {line:?}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn metrics_text(w: &Warden) -> String {
    let r = w.req("GET", "/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "/metrics content-type {ct:?}");
    r.text()
}

/// `warden_actor_restarts_total{path=...}`.
fn restarts_metric(all: &[Sample], path: &str) -> f64 {
    let found: Vec<&Sample> = all
        .iter()
        .filter(|s| s.name == "warden_actor_restarts_total" && s.label("path") == Some(path))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one warden_actor_restarts_total for {path}: {found:?}"
    );
    found[0].value
}

/// The states whose `warden_actor_state{path=...}` gauge is 1.
fn states_metric(all: &[Sample], path: &str) -> Vec<String> {
    let gauges: Vec<&Sample> = all
        .iter()
        .filter(|s| s.name == "warden_actor_state" && s.label("path") == Some(path))
        .collect();
    assert!(!gauges.is_empty(), "no warden_actor_state for {path}");
    for g in &gauges {
        assert!(
            g.value == 0.0 || g.value == 1.0,
            "a state gauge is 0 or 1: {g:?}"
        );
    }
    gauges
        .iter()
        .filter(|g| g.value == 1.0)
        .map(|g| g.label("state").unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn readyz_is_503_json_while_a_child_waits_on_its_ready_delay_and_200_once_all_run() {
    let w = Warden::start(
        r#"
[[service]]
name = "quick"
command = ["sleep", "1000"]

[[service]]
name = "slow"
command = ["sleep", "1000"]
ready = { delay = "2500ms" }
"#,
    );
    // The slow child passes its ready check 2.5 s after it is spawned: until then it is
    // starting, and warden is not ready.
    w.wait_state("/slow", "starting", T);
    let (status, body) = readyz(&w);
    let still_starting = w.state("/slow") == "starting";
    assert!(still_starting, "the check ran inside the ready delay");
    assert_eq!(status, 503, "/readyz while /slow starts: {body}");
    assert!(
        paths(&body["waiting"]).contains(&"/slow".to_owned()),
        "waiting names /slow: {body}"
    );
    assert!(
        !paths(&body["waiting"]).contains(&"/quick".to_owned()),
        "a running child is not waited on: {body}"
    );

    let ready_at = wait_for("/readyz 200", T, || {
        let (status, body) = readyz(&w);
        (status == 200).then_some(body)
    });
    assert_eq!(w.state("/slow"), "running");
    assert_eq!(w.state("/quick"), "running");
    assert_eq!(paths(&ready_at["waiting"]), Vec::<String>::new());
}

/// A child in backoff alone holds /readyz at 503 and is named in `waiting` (no failed
/// child to explain the 503 instead).
#[test]
fn readyz_is_503_naming_a_child_in_backoff() {
    let w = Warden::start(
        r#"
[[service]]
name = "ok"
command = ["sleep", "1000"]

[[service]]
name = "flappy"
command = ["/bin/sh", "-c", "sleep 0.2; exit 1"]
restart = { backoff = { initial = "5s", max = "5s", jitter = 0.0 } }
"#,
    );
    w.wait_state("/ok", "running", T);
    w.wait_state("/flappy", "backoff", T);
    let (status, body) = readyz(&w);
    // Read while /flappy was in backoff before and after (its backoff is 5 s).
    assert_eq!(
        w.state("/flappy"),
        "backoff",
        "left backoff during the check"
    );
    assert_eq!(status, 503, "/readyz with a child in backoff: {body}");
    assert_eq!(paths(&body["waiting"]), ["/flappy"], "{body}");
}

#[test]
fn readyz_is_503_while_a_child_is_in_backoff_or_failed_and_200_once_the_failed_one_is_stopped() {
    let w = Warden::start(
        r#"
[[service]]
name = "ok"
command = ["sleep", "1000"]

[[service]]
name = "flappy"
command = ["/bin/sh", "-c", "sleep 0.2; exit 1"]
restart = { backoff = { initial = "5s", max = "5s", jitter = 0.0 } }

[[service]]
name = "doomed"
command = ["/bin/sh", "-c", "exit 1"]
restart = { intensity = { max = 0, within = "60s" } }
"#,
    );
    w.wait_state("/doomed", "failed", T);
    w.wait_state("/flappy", "backoff", T);
    let (status, body) = readyz(&w);
    assert_eq!(
        status, 503,
        "/readyz with a failed and a backoff child: {body}"
    );
    let waiting = paths(&body["waiting"]);
    assert!(waiting.contains(&"/doomed".to_owned()), "{body}");
    assert!(
        waiting.contains(&"/flappy".to_owned()) || w.state("/flappy") != "backoff",
        "{body}"
    );
    assert!(!waiting.contains(&"/ok".to_owned()), "{body}");

    // An operator stop takes both out of the set that is meant to run.
    for path in ["doomed", "flappy"] {
        let r = w.req("POST", &format!("/api/v1/actors/{path}/stop"));
        assert_eq!(r.status, 200, "stop /{path}: {}", r.text());
    }
    w.wait_state("/doomed", "stopped", T);
    w.wait_state("/flappy", "stopped", T);
    let (status, body) = readyz(&w);
    assert_eq!(
        status, 200,
        "/readyz once the failing children are stopped by an operator: {body}"
    );
}

/// Only children meant to run are waited on: a `transient` child that was given up on is
/// done with, and a child an operator is stopping (slowly: it ignores SIGTERM) is not
/// meant to run any more, so /readyz is 200 with both. Old code: 503 for good with the
/// failed transient child, and 503 during the stop.
#[test]
fn readyz_does_not_wait_for_a_failed_transient_child_nor_one_an_operator_stops() {
    let w = Warden::start(
        r#"
[[service]]
name = "ok"
command = ["sleep", "1000"]

[[service]]
name = "once"
command = ["/bin/sh", "-c", "exit 1"]
restart = { policy = "transient", intensity = { max = 0, within = "60s" } }

[[service]]
name = "stubborn"
command = ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]
stop = { signal = "TERM", timeout = "4s" }
"#,
    );
    w.wait_state("/once", "failed", T);
    w.wait_state("/stubborn", "running", T);
    let (status, body) = readyz(&w);
    assert_eq!(status, 200, "/readyz with a failed transient child: {body}");

    let port = w.port;
    let token = w.token();
    let stop = std::thread::spawn(move || {
        http(
            port,
            "POST",
            "/api/v1/actors/stubborn/stop",
            Some(&token),
            None,
        )
    });
    w.wait_state("/stubborn", "stopping", T);
    let (status, body) = readyz(&w);
    assert_eq!(
        w.state("/stubborn"),
        "stopping",
        "the stop ended during the check"
    );
    assert_eq!(
        status, 200,
        "/readyz while an operator stops /stubborn: {body}"
    );
    let stopped = stop.join().expect("stop thread").expect("stop answered");
    assert_eq!(stopped.status, 200, "{}", stopped.text());
}

#[test]
fn drain_answers_200_then_healthz_and_readyz_answer_503_draining() {
    let w = Warden::start(
        r#"
[[service]]
name = "svc"
command = ["sleep", "1000"]
"#,
    );
    w.wait_state("/svc", "running", T);
    wait_until("/readyz 200", T, || readyz(&w).0 == 200);

    let r = w.req("POST", "/api/v1/drain");
    assert_eq!(r.status, 200, "drain: {}", r.text());

    let h = get(w.port, "/healthz", None);
    assert_eq!(h.status, 503, "/healthz after drain: {}", h.text());
    assert_eq!(h.json(), serde_json::json!({ "status": "draining" }));
    let (status, body) = readyz(&w);
    assert_eq!(status, 503, "/readyz after drain: {body}");

    // Draining again is fine, and the children keep running.
    let r = w.req("POST", "/api/v1/drain");
    assert_eq!(r.status, 200, "second drain: {}", r.text());
    assert_eq!(w.state("/svc"), "running");
}

/// SIGUSR1 drains like `POST /api/v1/drain` (README): /healthz and /readyz answer 503
/// "draining", warden keeps running and so do its children (same pid).
#[test]
fn sigusr1_drains_warden_and_the_children_keep_running() {
    let mut w = Warden::start(
        r#"
[[service]]
name = "svc"
command = ["sleep", "1000"]
"#,
    );
    let pid = w.wait_state("/svc", "running", T)["pid"].clone();
    wait_until("/readyz 200", T, || readyz(&w).0 == 200);
    assert_eq!(get(w.port, "/healthz", None).status, 200);

    kill(w.pid(), 10); // SIGUSR1
    wait_until("/healthz 503 after SIGUSR1", T, || {
        get(w.port, "/healthz", None).status == 503
    });
    let h = get(w.port, "/healthz", None);
    assert_eq!(h.json(), serde_json::json!({ "status": "draining" }));
    assert_eq!(readyz(&w).0, 503, "/readyz after SIGUSR1");
    assert!(w.try_wait().is_none(), "SIGUSR1 must not stop warden");
    let a = w.actor("/svc");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["pid"], pid, "{a}");
}

#[test]
fn metrics_needs_the_bearer_token() {
    let w = Warden::start("");
    let r = get(w.port, "/metrics", None);
    assert_json_error(&r, 401, "GET /metrics without a token");
    let r = get(w.port, "/metrics", Some(WRONG_TOKEN));
    assert_json_error(&r, 401, "GET /metrics with a wrong token");
    let r = get(w.port, "/metrics", Some(&w.token()));
    assert_eq!(r.status, 200, "GET /metrics with the token: {}", r.text());
}

#[test]
fn metrics_show_state_and_restarts_per_actor_and_count_a_sigkill_restart() {
    let w = Warden::start(
        r#"
[[supervisor]]
name = "app"

[[service]]
name = "x"
supervisor = "app"
command = ["sleep", "1000"]
"#,
    );
    let before = w.wait_state("/app/x", "running", T);
    let old_pid = before["pid"].as_u64().expect("pid") as u32;

    let text = metrics_text(&w);
    let all = samples(&text);
    assert_eq!(restarts_metric(&all, "/app/x"), 0.0, "{text}");
    assert_eq!(states_metric(&all, "/app/x"), vec!["running"], "{text}");
    assert_eq!(states_metric(&all, "/app"), vec!["running"], "{text}");
    let running_line = all
        .iter()
        .find(|s| {
            s.name == "warden_actor_state"
                && s.label("path") == Some("/app/x")
                && s.label("state") == Some("running")
        })
        .expect("running gauge");
    assert_eq!(running_line.value, 1.0);
    let rss = all
        .iter()
        .find(|s| s.name == "process_resident_memory_bytes")
        .unwrap_or_else(|| panic!("process_resident_memory_bytes missing: {text}"));
    assert!(rss.value > 0.0, "resident memory is positive: {rss:?}");
    assert!(
        text.contains("# TYPE warden_actor_restarts_total counter"),
        "restarts is typed as a counter: {text}"
    );

    kill(old_pid, 9);
    let after = wait_for("/app/x restarted", T, || {
        let a = w.actor("/app/x");
        (a["state"] == "running" && a["pid"].as_u64().is_some_and(|p| p as u32 != old_pid))
            .then_some(a)
    });
    assert_eq!(after["restarts"], 1);
    let text = metrics_text(&w);
    let all = samples(&text);
    assert_eq!(restarts_metric(&all, "/app/x"), 1.0, "{text}");
    assert_eq!(states_metric(&all, "/app/x"), vec!["running"], "{text}");
}

#[test]
fn events_stream_delivers_a_state_event_with_path_state_pid_and_at_after_a_sigkill() {
    let w = Warden::start(
        r#"
[[service]]
name = "x"
command = ["sleep", "1000"]
"#,
    );
    let old_pid = w.wait_state("/x", "running", T)["pid"]
        .as_u64()
        .expect("pid") as u32;
    // The head is answered once the handler has subscribed: no event after it is lost.
    let mut events = EventStream::open(w.port, &w.token());
    kill(old_pid, 9);

    let is_x = |e: &Value| e["path"] == "/x";
    events.until("an event for /x after the kill", T, |all| {
        all.iter().any(is_x)
    });
    let first = events
        .state_events()
        .into_iter()
        .find(|e| is_x(e))
        .expect("event for /x");
    let obj = first.as_object().expect("event data is an object");
    for key in ["path", "state", "pid", "at"] {
        assert!(obj.contains_key(key), "event has {key}: {first}");
    }
    let state = first["state"].as_str().unwrap_or_default();
    assert!(
        ["backoff", "starting", "running"].contains(&state),
        "first state after a SIGKILL: {first}"
    );
    let at = first["at"].as_str().unwrap_or_default();
    assert!(
        at.len() >= 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "at is an RFC 3339 UTC time: {first}"
    );

    // The restart shows up as `running` with the new pid.
    events.until("/x running again with a new pid", T, |all| {
        all.iter().any(|e| {
            is_x(e)
                && e["state"] == "running"
                && e["pid"].as_u64().is_some_and(|p| p as u32 != old_pid)
        })
    });
    let new_pid = w.wait_state("/x", "running", T)["pid"].as_u64();
    let running = events
        .state_events()
        .into_iter()
        .rfind(|e| is_x(e) && e["state"] == "running")
        .expect("running event");
    assert_eq!(running["pid"].as_u64(), new_pid, "event pid is the new pid");
}

#[test]
fn events_needs_the_bearer_token() {
    let w = Warden::start("");
    let r = get(w.port, "/api/v1/events", None);
    assert_json_error(&r, 401, "GET /api/v1/events without a token");
    let r = get(w.port, "/api/v1/events", Some(WRONG_TOKEN));
    assert_json_error(&r, 401, "GET /api/v1/events with a wrong token");
}

#[test]
fn reload_drain_metrics_and_events_answer_401_json_to_a_missing_wrong_or_malformed_token() {
    let w = Warden::start(
        r#"
[[service]]
name = "svc"
command = ["sleep", "1000"]
"#,
    );
    let routes = [
        ("POST", "/api/v1/reload"),
        ("POST", "/api/v1/drain"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/events"),
    ];
    for (method, path) in routes {
        let r = http(w.port, method, path, None, None).expect("http");
        assert_json_error(&r, 401, &format!("{method} {path} without a token"));
        let r = http(w.port, method, path, Some(WRONG_TOKEN), None).expect("http");
        assert_json_error(&r, 401, &format!("{method} {path} with a wrong token"));
        let token = w.token();
        let basic = format!("Basic {token}");
        let mut headers = vec![("Authorization", basic.as_str())];
        if method == "POST" {
            headers.push(("Content-Length", "0"));
        }
        let r = raw_request(w.port, method, path, &headers, b"").expect("http");
        assert_json_error(&r, 401, &format!("{method} {path} with a Basic scheme"));
    }
    // None of the refused requests drained warden.
    let h = get(w.port, "/healthz", None);
    assert_eq!(h.status, 200, "/healthz after refused drains: {}", h.text());
}

#[test]
fn reload_and_drain_refuse_a_body_over_64_kib_with_413_json_and_do_nothing() {
    let w = Warden::start(
        r#"
[[service]]
name = "svc"
command = ["sleep", "1000"]
"#,
    );
    w.wait_state("/svc", "running", T);
    // An edit that a reload would apply: it must not be applied by a refused request.
    let mut text = std::fs::read_to_string(&w.config).expect("config");
    text.push_str("\n[[service]]\nname = \"added\"\ncommand = [\"sleep\", \"1000\"]\n");
    std::fs::write(&w.config, text).expect("edit config");

    let token = w.token();
    let auth = format!("Bearer {token}");
    let big = vec![b' '; 64 * 1024 + 1];
    let len = big.len().to_string();
    for path in ["/api/v1/reload", "/api/v1/drain"] {
        let r = raw_request(
            w.port,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("Content-Length", &len),
            ],
            &big,
        )
        .expect("http");
        assert_json_error(&r, 413, &format!("POST {path} with Content-Length {len}"));

        // The same size sent chunked, with no length declared up front.
        let mut chunked = Vec::new();
        for part in big.chunks(8 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let r = raw_request(
            w.port,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "chunked"),
            ],
            &chunked,
        )
        .expect("http");
        assert_json_error(&r, 413, &format!("POST {path} with a chunked body"));
    }

    let h = get(w.port, "/healthz", None);
    assert_eq!(
        h.status,
        200,
        "a refused drain does not drain: {}",
        h.text()
    );
    let r = w.req("GET", "/api/v1/actors/added");
    assert_eq!(
        r.status,
        404,
        "a refused reload does not reload: {}",
        r.text()
    );

    // A body just at the limit is taken.
    let at_limit = vec![b' '; 64 * 1024];
    let r = http(
        w.port,
        "POST",
        "/api/v1/reload",
        Some(&token),
        Some(&at_limit),
    )
    .expect("http");
    assert_eq!(
        r.status,
        200,
        "a 64 KiB body is within the limit: {}",
        r.text()
    );
    assert_eq!(paths(&r.json()["added"]), vec!["/added"]);
}

#[test]
fn unknown_routes_answer_404_json() {
    let w = Warden::start("");
    let token = w.token();
    for (method, path) in [
        ("GET", "/nope"),
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v2/actors"),
        ("POST", "/api/v1/nope"),
        ("DELETE", "/api/v1/reload"),
    ] {
        let r = http(w.port, method, path, Some(&token), None).expect("http");
        assert_json_error(&r, 404, &format!("{method} {path}"));
    }
}

#[test]
fn get_on_post_only_routes_answers_404_json() {
    // warden routes by method and path alike: a GET on a POST-only route is an unknown
    // route (404), not 405.
    let w = Warden::start(
        r#"
[[service]]
name = "svc"
command = ["sleep", "1000"]
"#,
    );
    let token = w.token();
    for path in [
        "/api/v1/reload",
        "/api/v1/drain",
        "/api/v1/actors/svc/stop",
        "/api/v1/actors/svc/restart",
    ] {
        let r = get(w.port, path, Some(&token));
        eprintln!("GET {path} -> {} {}", r.status, r.text());
        assert_json_error(&r, 404, &format!("GET {path}"));
    }
    // And the GET did nothing.
    assert_eq!(w.state("/svc"), "running");
    let h = get(w.port, "/healthz", None);
    assert_eq!(h.status, 200, "{}", h.text());
}
