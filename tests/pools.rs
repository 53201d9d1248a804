//! Black-box tests of `[[pool]]` in `warden up`: session placement on running workers with
//! `{port}` / `{worker_id}` filled in (and `PORT` / `WARDEN_WORKER_ID` set), packing up to
//! `sessions_per_worker`, scaling up to `max` and 503 past it, 404/401 answers, idle
//! reaping above `min` (a reaped worker leaves the tree), 503 while draining, rollouts
//! (new workers, old ones drained until their sessions are gone or their deadline) and
//! invalid rollouts that change nothing, and `warden check` on pools.
mod support;

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(15);

/// A worker: listens on `$PORT` (so a `tcp` ready check on `{port}` passes) and sleeps.
/// No double quotes and no braces: it goes into a TOML basic string as is.
const SERVER: &str = "import socket,os,time; s=socket.socket(); \
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(100000)";

/// A `[[pool]]` entry named `name` whose workers run [`SERVER`] with `--port {port}` and
/// `--id {worker_id}` in their arguments, on ports `lo-hi`, ready once their port accepts.
fn pool(name: &str, (lo, hi): (u16, u16), extra: &str) -> String {
    format!(
        r#"
[[pool]]
name = "{name}"
command = ["python3", "-c", "{SERVER}", "--port", "{{port}}", "--id", "{{worker_id}}"]
ports = "{lo}-{hi}"
ready = {{ tcp = "127.0.0.1:{{port}}", timeout = "10s" }}
stop = {{ signal = "TERM", timeout = "2s" }}
{extra}
"#
    )
}

fn post(w: &Warden, path: &str, body: &str) -> Response {
    http(
        w.port,
        "POST",
        path,
        Some(&w.token()),
        Some(body.as_bytes()),
    )
    .expect("http request")
}

fn acquire(w: &Warden, pool: &str) -> Response {
    w.req("POST", &format!("/api/v1/pools/{pool}/sessions"))
}

fn release(w: &Warden, pool: &str, id: &str) -> Response {
    w.req("DELETE", &format!("/api/v1/pools/{pool}/sessions/{id}"))
}

fn rollout(w: &Warden, pool: &str, body: &str) -> Response {
    post(w, &format!("/api/v1/pools/{pool}/rollout"), body)
}

/// A session from a 201 answer: (session_id, worker, port); panics on anything else.
fn session(r: &Response, what: &str) -> (String, String, u16) {
    assert_eq!(r.status, 201, "{what}: {}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.contains("application/json"),
        "{what}: content-type {ct:?}"
    );
    let v = r.json();
    let id = v["session_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what}: no session_id in {v}"))
        .to_owned();
    let worker = v["worker"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no worker in {v}"))
        .to_owned();
    let port = v["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("{what}: no port in {v}"));
    (id, worker, port)
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
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: expected {{\"error\": \"...\"}}, got {body}"
    );
}

/// Every actor path of `GET /api/v1/actors`.
fn actor_paths(w: &Warden) -> Vec<String> {
    let r = w.req("GET", "/api/v1/actors");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|a| a["path"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The paths of the actors below `pool` (its workers), sorted.
fn workers_of(w: &Warden, pool: &str) -> Vec<String> {
    let prefix = format!("{pool}/");
    let mut v: Vec<String> = actor_paths(w)
        .into_iter()
        .filter(|p| p.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

fn details(w: &Warden, pool: &str) -> Value {
    let a = w.actor(pool);
    assert_eq!(a["kind"], "pool", "{pool}: {a}");
    assert!(a["details"].is_object(), "{pool} has no details: {a}");
    a["details"].clone()
}

/// The per-worker entry of `worker` in the pool's details.
fn worker_detail(details: &Value, worker: &str) -> Value {
    details["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|x| x["worker"] == worker).cloned())
        .unwrap_or_else(|| panic!("{worker} not in pool details {details}"))
}

fn environ(pid: u32) -> HashMap<String, String> {
    proc_strings(pid, "environ")
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn cmdline(pid: u32) -> Vec<String> {
    proc_strings(pid, "cmdline")
}

/// The value following `flag` in `args`.
fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The pid of a running worker (waits for it to be running).
fn running_pid(w: &Warden, worker: &str) -> u32 {
    let a = w.wait_state(worker, "running", T);
    assert_eq!(a["kind"], "worker", "{worker}: {a}");
    let pid = a["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{worker} has no pid: {a}")) as u32;
    assert!(alive(pid), "{worker} pid {pid} is not alive");
    pid
}

#[test]
fn sessions_are_placed_on_a_running_worker_with_port_and_worker_id_filled_in() {
    let ports = free_span(3);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 1\nmax = 3\nsessions_per_worker = 5\nenv = { APP_PORT = \"{port}\", APP_ID = \"id-{worker_id}\" }",
    ));
    let r = acquire(&w, "pool");
    let (id, worker, port) = session(&r, "first session");
    assert_eq!(worker, "/pool/w1", "the session goes to the min worker");
    assert!(
        (ports.0..=ports.1).contains(&port),
        "port {port} not in {ports:?}"
    );
    // The session was answered on a running worker, which listens on that port.
    let a = w.actor("/pool/w1");
    assert_eq!(
        a["state"], "running",
        "worker when the session is answered: {a}"
    );
    assert_eq!(a["kind"], "worker", "{a}");
    let pid = a["pid"].as_u64().expect("worker pid") as u32;
    assert!(alive(pid));
    TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("worker does not listen on its port {port}: {e}"));

    let env = environ(pid);
    assert_eq!(env.get("PORT"), Some(&port.to_string()), "PORT in {env:?}");
    assert_eq!(
        env.get("WARDEN_WORKER_ID").map(String::as_str),
        Some("w1"),
        "WARDEN_WORKER_ID"
    );
    assert_eq!(
        env.get("APP_PORT"),
        Some(&port.to_string()),
        "{{port}} in env"
    );
    assert_eq!(
        env.get("APP_ID").map(String::as_str),
        Some("id-w1"),
        "{{worker_id}} in env"
    );
    let args = cmdline(pid);
    assert_eq!(
        arg_after(&args, "--port"),
        Some(port.to_string().as_str()),
        "{{port}} in the command: {args:?}"
    );
    assert_eq!(
        arg_after(&args, "--id"),
        Some("w1"),
        "{{worker_id}} in the command: {args:?}"
    );
    assert!(
        !args
            .iter()
            .any(|a| a.contains("{port}") || a.contains("{worker_id}")),
        "placeholders left in {args:?}"
    );

    // A second session packs onto the same worker; ids are distinct.
    let (id2, worker2, port2) = session(&acquire(&w, "pool"), "second session");
    assert_eq!((worker2.as_str(), port2), ("/pool/w1", port));
    assert_ne!(id, id2, "session ids are unique");
    let d = details(&w, "pool");
    assert_eq!(d["sessions"], 2, "{d}");
    let w1 = worker_detail(&d, "/pool/w1");
    assert_eq!(w1["port"], port, "{w1}");
    assert_eq!(w1["sessions"], 2, "{w1}");
    assert_eq!(w1["draining"], false, "{w1}");
    assert_eq!(w1["state"], "running", "{w1}");
    assert_eq!(workers_of(&w, "/pool"), ["/pool/w1"], "no extra worker");
}

#[test]
fn sessions_per_worker_is_respected_new_workers_start_up_to_max_then_503_until_a_release() {
    let ports = free_span(2);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 0\nmax = 2\nsessions_per_worker = 2",
    ));
    w.wait_state("/pool", "running", T);
    assert!(
        workers_of(&w, "/pool").is_empty(),
        "min = 0 starts no worker"
    );

    // A body is optional; one given is accepted.
    let r = post(&w, "/api/v1/pools/pool/sessions", r#"{"user":"a"}"#);
    let (s1, w_a, p_a) = session(&r, "session 1");
    assert_eq!(w_a, "/pool/w1");
    assert_eq!(w.state("/pool/w1"), "running", "started for the session");
    let (_, w_b, p_b) = session(&acquire(&w, "pool"), "session 2");
    assert_eq!((w_b.as_str(), p_b), ("/pool/w1", p_a), "w1 has room for 2");
    assert_eq!(
        workers_of(&w, "/pool"),
        ["/pool/w1"],
        "no second worker yet"
    );

    let (_, w_c, p_c) = session(&acquire(&w, "pool"), "session 3");
    assert_eq!(w_c, "/pool/w2", "w1 is full: a new worker");
    assert_ne!(p_c, p_a, "each worker its own port");
    assert!((ports.0..=ports.1).contains(&p_c), "{p_c} in {ports:?}");
    let pid2 = running_pid(&w, "/pool/w2");
    assert_eq!(environ(pid2).get("PORT"), Some(&p_c.to_string()));
    assert_eq!(
        environ(pid2).get("WARDEN_WORKER_ID").map(String::as_str),
        Some("w2")
    );
    let (_, w_d, _) = session(&acquire(&w, "pool"), "session 4");
    assert_eq!(w_d, "/pool/w2");

    // Every worker full, pool at max.
    let r = acquire(&w, "pool");
    assert_json_error(&r, 503, "a session past max");
    assert_eq!(
        workers_of(&w, "/pool"),
        ["/pool/w1", "/pool/w2"],
        "no worker past max"
    );
    let d = details(&w, "pool");
    assert_eq!(d["sessions"], 4, "{d}");
    assert_eq!(d["capacity"], 4, "{d}");
    assert_eq!(d["min"], 0, "{d}");
    assert_eq!(d["max"], 2, "{d}");
    assert_eq!(worker_detail(&d, "/pool/w1")["sessions"], 2, "{d}");
    assert_eq!(worker_detail(&d, "/pool/w2")["sessions"], 2, "{d}");

    // One release makes room for exactly one.
    let r = release(&w, "pool", &s1);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty(), "204 has no body: {}", r.text());
    assert_json_error(&release(&w, "pool", &s1), 404, "a session released twice");
    assert_eq!(details(&w, "pool")["sessions"], 3);
    let (_, w_e, p_e) = session(&acquire(&w, "pool"), "session after a release");
    assert_eq!(
        (w_e.as_str(), p_e),
        ("/pool/w1", p_a),
        "the seat freed on w1"
    );
    assert_json_error(&acquire(&w, "pool"), 503, "full again");
}

/// SEMANTICS #27 "a session goes to the fullest worker with room", told apart from
/// first-fit and least-loaded placement: two running workers with room at different fill
/// levels, twice, the fuller one being first w1 and then w2.
#[test]
fn a_session_goes_to_the_fullest_worker_with_room_not_the_first_or_the_emptiest() {
    let ports = free_span(2);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 0\nmax = 2\nsessions_per_worker = 3",
    ));
    w.wait_state("/pool", "running", T);
    let mut on_w1 = Vec::new();
    for n in 0..3 {
        let (id, worker, _) = session(&acquire(&w, "pool"), &format!("session {n}"));
        assert_eq!(worker, "/pool/w1", "packing w1 first");
        on_w1.push(id);
    }
    let (_, worker, _) = session(&acquire(&w, "pool"), "w1 full");
    assert_eq!(worker, "/pool/w2");
    running_pid(&w, "/pool/w1");
    running_pid(&w, "/pool/w2");

    // w1 = 2, w2 = 1: both have room, w1 is fuller (least-loaded would pick w2).
    assert_eq!(release(&w, "pool", &on_w1.pop().expect("id")).status, 204);
    let (id, worker, _) = session(&acquire(&w, "pool"), "w1 2 of 3, w2 1 of 3");
    assert_eq!(worker, "/pool/w1", "the fuller worker with room is w1");
    on_w1.push(id);

    // w1 = 3 (full); one more on w2, then w1 = 1, w2 = 2: w2 is fuller (first-fit
    // would pick w1).
    let (_, worker, _) = session(&acquire(&w, "pool"), "w1 full again");
    assert_eq!(worker, "/pool/w2");
    for id in on_w1.drain(..2) {
        assert_eq!(release(&w, "pool", &id).status, 204);
    }
    let d = details(&w, "pool");
    assert_eq!(worker_detail(&d, "/pool/w1")["sessions"], 1, "{d}");
    assert_eq!(worker_detail(&d, "/pool/w2")["sessions"], 2, "{d}");
    let (_, worker, _) = session(&acquire(&w, "pool"), "w1 1 of 3, w2 2 of 3");
    assert_eq!(worker, "/pool/w2", "the fuller worker with room is w2");
}

#[test]
fn concurrent_session_requests_never_overfill_a_worker_or_start_workers_past_max() {
    let ports = free_span(2);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 0\nmax = 2\nsessions_per_worker = 3",
    ));
    w.wait_state("/pool", "running", T);
    let (port, token) = (w.port, w.token());
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let token = token.clone();
                s.spawn(move || {
                    http(
                        port,
                        "POST",
                        "/api/v1/pools/pool/sessions",
                        Some(&token),
                        None,
                    )
                    .expect("http")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut per_worker: HashMap<String, u32> = HashMap::new();
    let mut ids = Vec::new();
    for r in &answers {
        match r.status {
            201 => {
                let (id, worker, p) = session(r, "a concurrent session");
                assert!((ports.0..=ports.1).contains(&p), "{p} in {ports:?}");
                *per_worker.entry(worker).or_default() += 1;
                ids.push(id);
            }
            _ => assert_json_error(r, 503, "a concurrent session past capacity"),
        }
    }
    assert_eq!(ids.len(), 6, "2 workers x 3 seats: {per_worker:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "session ids are unique");
    assert_eq!(
        per_worker,
        HashMap::from([("/pool/w1".to_owned(), 3), ("/pool/w2".to_owned(), 3)]),
        "seats per worker"
    );
    assert_eq!(workers_of(&w, "/pool"), ["/pool/w1", "/pool/w2"]);
    let d = details(&w, "pool");
    assert_eq!(d["sessions"], 6, "{d}");
    assert_eq!(d["capacity"], 6, "{d}");
}

#[test]
fn unknown_sessions_pools_non_pool_paths_and_actions_are_404_and_no_token_is_401() {
    let ports = free_span(2);
    let body = format!(
        "{}\n[[service]]\nname = \"svc\"\ncommand = [\"sleep\", \"1000\"]\n",
        pool("pool", ports, "min = 1\nmax = 2")
    );
    let w = Warden::start(&body);
    running_pid(&w, "/pool/w1");
    w.wait_state("/svc", "running", T);
    let (sid, _, _) = session(&acquire(&w, "pool"), "a real session");

    assert_json_error(
        &release(&w, "pool", "no-such-session"),
        404,
        "DELETE an unknown session",
    );
    assert_json_error(
        &acquire(&w, "nopool"),
        404,
        "POST sessions of an unknown pool",
    );
    assert_json_error(
        &release(&w, "nopool", &sid),
        404,
        "DELETE a session of an unknown pool",
    );
    assert_json_error(
        &rollout(&w, "nopool", r#"{"env":{"A":"1"}}"#),
        404,
        "rollout of an unknown pool",
    );
    assert_json_error(&acquire(&w, "svc"), 404, "POST sessions on a service");
    assert_json_error(
        &release(&w, "svc", &sid),
        404,
        "DELETE a session on a service",
    );
    assert_json_error(
        &rollout(&w, "svc", r#"{"env":{"A":"1"}}"#),
        404,
        "rollout of a service",
    );
    assert_json_error(
        &acquire(&w, "pool/w1"),
        404,
        "POST sessions on a worker, not a pool",
    );
    assert_json_error(
        &w.req("POST", "/api/v1/pools/pool/frobnicate"),
        404,
        "an unknown pool action",
    );
    assert_json_error(
        &w.req("DELETE", "/api/v1/pools/pool/frobnicate/x"),
        404,
        "DELETE on an unknown pool action",
    );
    assert_json_error(
        &w.req("DELETE", "/api/v1/pools/pool/sessions"),
        404,
        "DELETE without a session id",
    );

    // Without a token, or with a wrong one: 401, and nothing happens.
    let no_token = [
        ("POST", "/api/v1/pools/pool/sessions".to_owned()),
        ("DELETE", format!("/api/v1/pools/pool/sessions/{sid}")),
        ("POST", "/api/v1/pools/pool/rollout".to_owned()),
        ("POST", "/api/v1/pools/nopool/sessions".to_owned()),
    ];
    for (method, path) in &no_token {
        let r = http(w.port, method, path, None, Some(br#"{"env":{"A":"1"}}"#)).expect("http");
        assert_json_error(&r, 401, &format!("{method} {path} without a token"));
        let r = http(
            w.port,
            method,
            path,
            Some("wrong-token"),
            Some(br#"{"env":{"A":"1"}}"#),
        )
        .expect("http");
        assert_json_error(&r, 401, &format!("{method} {path} with a wrong token"));
    }
    let d = details(&w, "pool");
    assert_eq!(
        d["sessions"], 1,
        "unauthorized requests changed nothing: {d}"
    );
    assert_eq!(workers_of(&w, "/pool"), ["/pool/w1"]);
    assert_eq!(worker_detail(&d, "/pool/w1")["draining"], false, "{d}");
    // The real session is still there.
    assert_eq!(release(&w, "pool", &sid).status, 204);
}

#[test]
fn a_pool_under_a_supervisor_is_addressed_by_its_full_path_and_sessions_belong_to_their_pool() {
    let inner = free_span(2);
    let other = free_span(2);
    let body = format!(
        "[[supervisor]]\nname = \"app\"\n{}\n{}",
        pool("inner", inner, "supervisor = \"app\"\nmin = 0\nmax = 2"),
        pool("other", other, "min = 0\nmax = 2"),
    );
    let w = Warden::start(&body);
    w.wait_state("/app/inner", "running", T);
    w.wait_state("/other", "running", T);

    let (sid, worker, port) = session(&acquire(&w, "app/inner"), "nested pool");
    assert_eq!(worker, "/app/inner/w1");
    assert!((inner.0..=inner.1).contains(&port), "{port} in {inner:?}");
    let pid = running_pid(&w, "/app/inner/w1");
    assert_eq!(
        environ(pid).get("WARDEN_WORKER_ID").map(String::as_str),
        Some("w1")
    );
    assert_json_error(&acquire(&w, "app"), 404, "sessions of a supervisor");
    assert_json_error(&acquire(&w, "inner"), 404, "a pool path without its parent");
    assert_json_error(
        &release(&w, "other", &sid),
        404,
        "a session released through another pool",
    );
    assert_eq!(details(&w, "app/inner")["sessions"], 1);
    assert_eq!(release(&w, "app/inner", &sid).status, 204);
    assert_eq!(details(&w, "app/inner")["sessions"], 0);
}

#[test]
fn idle_workers_above_min_are_reaped_and_leave_the_tree_while_the_min_worker_stays() {
    let ports = free_span(3);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 1\nmax = 3\nsessions_per_worker = 1\nidle_timeout = \"500ms\"",
    ));
    let pid1 = running_pid(&w, "/pool/w1");
    // The min worker is not reaped for idleness.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(workers_of(&w, "/pool"), ["/pool/w1"], "min worker kept");
    assert_eq!(w.actor_pid("/pool/w1"), Some(pid1));

    let (s1, w1, _) = session(&acquire(&w, "pool"), "session 1");
    let (s2, w2, _) = session(&acquire(&w, "pool"), "session 2");
    assert_eq!((w1.as_str(), w2.as_str()), ("/pool/w1", "/pool/w2"));
    let pid2 = running_pid(&w, "/pool/w2");
    let d = details(&w, "pool");
    assert_eq!(d["sessions"], 2, "{d}");
    assert_eq!(d["capacity"], 2, "{d}");
    assert_eq!(d["workers"].as_array().map(Vec::len), Some(2), "{d}");

    // w2 released first: it is the longer idle one, reaped; w1 (min) stays.
    let released = Instant::now();
    assert_eq!(release(&w, "pool", &s2).status, 204);
    assert_eq!(release(&w, "pool", &s1).status, 204);
    wait_until("w2 leaves the tree", Duration::from_secs(10), || {
        !actor_paths(&w).contains(&"/pool/w2".to_owned())
    });
    let after = released.elapsed();
    assert!(
        after >= Duration::from_millis(450),
        "w2 reaped after {after:?}, before its idle_timeout of 500ms"
    );
    wait_until("w2's process is gone", Duration::from_secs(10), || {
        !alive(pid2)
    });
    assert_json_error(
        &w.req("GET", "/api/v1/actors/pool/w2"),
        404,
        "a reaped worker",
    );
    assert!(
        !w.actor("/pool")["children"]
            .as_array()
            .is_some_and(|c| c.iter().any(|p| p == "/pool/w2")),
        "w2 still a child of /pool"
    );

    // w1 stays, idle, past several idle timeouts.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(workers_of(&w, "/pool"), ["/pool/w1"]);
    let a = w.actor("/pool/w1");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["pid"].as_u64(), Some(u64::from(pid1)), "w1 not restarted");
    assert!(alive(pid1));
    let d = details(&w, "pool");
    assert_eq!(d["sessions"], 0, "{d}");
    assert_eq!(d["capacity"], 1, "{d}");
    assert_eq!(d["min"], 1, "{d}");
    assert_eq!(d["max"], 3, "{d}");
    let ws = d["workers"].as_array().expect("workers");
    assert_eq!(ws.len(), 1, "{d}");
    assert_eq!(ws[0]["worker"], "/pool/w1", "{d}");
    assert_eq!(ws[0]["sessions"], 0, "{d}");
    assert_eq!(ws[0]["state"], "running", "{d}");

    // The pool still places sessions (on w1).
    let (_, again, _) = session(&acquire(&w, "pool"), "after reaping");
    assert_eq!(again, "/pool/w1");
}

/// A worker that takes its time to stop: it ignores SIGTERM (as a server finishing its
/// requests would), so it holds its port until the stop timeout's SIGKILL.
const SLOW_STOP_SERVER: &str = "import socket,os,time,signal; \
signal.signal(signal.SIGTERM, signal.SIG_IGN); s=socket.socket(); \
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(100000)";

#[test]
fn a_port_is_not_handed_to_a_new_worker_while_a_reaped_worker_still_holds_it() {
    let (lo, hi) = free_span(2);
    let w = Warden::start(&format!(
        r#"
[[pool]]
name = "pool"
command = ["python3", "-c", "{SLOW_STOP_SERVER}"]
ports = "{lo}-{hi}"
min = 0
max = 1
sessions_per_worker = 1
idle_timeout = "300ms"
ready = {{ tcp = "127.0.0.1:{{port}}", timeout = "10s" }}
stop = {{ signal = "TERM", timeout = "3s" }}
"#
    ));
    w.wait_state("/pool", "running", T);
    let (s1, w1, p1) = session(&acquire(&w, "pool"), "session 1");
    assert_eq!(w1, "/pool/w1");
    let pid1 = running_pid(&w, "/pool/w1");
    assert_eq!(release(&w, "pool", &s1).status, 204);
    // w1 is reaped (out of the pool's list) but, ignoring SIGTERM, is still stopping.
    wait_until("w1 reaped from the pool", Duration::from_secs(10), || {
        details(&w, "pool")["workers"]
            .as_array()
            .is_some_and(|v| v.is_empty())
    });
    assert!(alive(pid1), "w1 should still be in its stop timeout");

    let (_, w2, p2) = session(&acquire(&w, "pool"), "session 2");
    let w1_alive = alive(pid1);
    assert!(
        !(p2 == p1 && w1_alive),
        "session 2 was placed on {w2} at port {p2}, still held by the stopping w1 (pid {pid1})"
    );
    // The new worker keeps running on its port: no exit, no restart.
    std::thread::sleep(Duration::from_millis(1000));
    let a = w.actor(&w2);
    assert!(
        a["restarts"] == 0 && a["last_exit"].is_null(),
        "{w2} (port {p2}) exited after its session was placed: {a}\nlog: {}",
        w.req("GET", &format!("/api/v1/actors{w2}/logs?tail=5"))
            .text()
    );
}

#[test]
fn while_warden_drains_session_requests_get_503_and_releases_still_work() {
    let ports = free_span(2);
    let w = Warden::start(&pool("pool", ports, "min = 1\nmax = 2"));
    running_pid(&w, "/pool/w1");
    let (sid, _, _) = session(&acquire(&w, "pool"), "before draining");
    let pid1 = running_pid(&w, "/pool/w1");

    let r = post(&w, "/api/v1/drain", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let h = http(w.port, "GET", "/healthz", None, None).expect("healthz");
    assert_eq!(h.status, 503, "{}", h.text());

    assert_json_error(&acquire(&w, "pool"), 503, "a session while draining");
    assert_json_error(&acquire(&w, "pool"), 503, "again");
    assert_eq!(details(&w, "pool")["sessions"], 1, "no session was added");
    assert_eq!(workers_of(&w, "/pool"), ["/pool/w1"], "no worker started");
    // No session lost: while its session is open the drained worker keeps running.
    holds_for(
        "w1 keeps running with its session while warden drains",
        Duration::from_secs(1),
        || {
            let d = details(&w, "pool");
            alive(pid1)
                && worker_detail(&d, "/pool/w1")["state"] == "running"
                && worker_detail(&d, "/pool/w1")["sessions"] == 1
        },
    );
    let r = release(&w, "pool", &sid);
    assert_eq!(r.status, 204, "releasing while draining: {}", r.text());
    assert_json_error(&acquire(&w, "pool"), 503, "still draining");
    // Its last session gone, the drained worker stops (even the `min` one).
    wait_until("w1 stops after its last release", T, || !alive(pid1));
}

#[test]
fn rollout_starts_new_workers_and_stops_an_old_one_once_its_sessions_are_released() {
    let ports = free_span(3);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 1\nmax = 2\nsessions_per_worker = 2\nenv = { GEN = \"1\" }",
    ));
    let pid1 = running_pid(&w, "/pool/w1");
    let (s1, worker, _) = session(&acquire(&w, "pool"), "session on w1");
    assert_eq!(worker, "/pool/w1");
    assert_eq!(environ(pid1).get("GEN").map(String::as_str), Some("1"));

    let r = rollout(&w, "pool", r#"{"env":{"GEN":"2"}}"#);
    assert_eq!(r.status, 200, "rollout: {}", r.text());
    let v = r.json();
    let started: Vec<String> = v["started"]
        .as_array()
        .unwrap_or_else(|| panic!("no started in {v}"))
        .iter()
        .map(|p| p.as_str().unwrap_or("").to_owned())
        .collect();
    assert!(!started.is_empty(), "a rollout starts new workers: {v}");
    assert!(!started.contains(&"/pool/w1".to_owned()), "w1 is old: {v}");
    assert_eq!(v["draining"], serde_json::json!(["/pool/w1"]), "{v}");

    // New sessions go to a new worker, with the new environment.
    let (s2, new_worker, new_port) = session(&acquire(&w, "pool"), "session after rollout");
    assert!(
        started.contains(&new_worker),
        "new session on {new_worker}, not one of the new workers {started:?}"
    );
    let new_pid = running_pid(&w, &new_worker);
    let env = environ(new_pid);
    assert_eq!(env.get("GEN").map(String::as_str), Some("2"), "{env:?}");
    assert_eq!(env.get("PORT"), Some(&new_port.to_string()), "{env:?}");
    let new_id = new_worker.rsplit('/').next().unwrap_or("");
    assert_eq!(
        env.get("WARDEN_WORKER_ID").map(String::as_str),
        Some(new_id)
    );
    assert_eq!(
        arg_after(&cmdline(new_pid), "--port"),
        Some(new_port.to_string().as_str()),
        "the command is kept, with {{port}} filled in"
    );
    let (_, third, _) = session(&acquire(&w, "pool"), "another session after rollout");
    assert_ne!(third, "/pool/w1", "no session on a draining worker");

    // w1 keeps running while its session is open.
    let d = details(&w, "pool");
    let old = worker_detail(&d, "/pool/w1");
    assert_eq!(old["draining"], true, "{d}");
    assert_eq!(old["sessions"], 1, "{d}");
    assert_eq!(worker_detail(&d, &new_worker)["draining"], false, "{d}");
    std::thread::sleep(Duration::from_millis(700));
    let a = w.actor("/pool/w1");
    assert_eq!(a["state"], "running", "draining w1 with a session: {a}");
    assert_eq!(a["pid"].as_u64(), Some(u64::from(pid1)));
    assert!(alive(pid1));

    // Released: w1 is stopped and leaves the tree; the new worker stays.
    assert_eq!(release(&w, "pool", &s1).status, 204);
    wait_until("w1 leaves the tree", Duration::from_secs(10), || {
        !actor_paths(&w).contains(&"/pool/w1".to_owned())
    });
    wait_until("w1's process is gone", Duration::from_secs(10), || {
        !alive(pid1)
    });
    assert_eq!(w.state(&new_worker), "running");
    assert_eq!(w.actor_pid(&new_worker), Some(new_pid));
    let d = details(&w, "pool");
    assert!(
        !d["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|x| x["worker"] == "/pool/w1")),
        "w1 still in the details: {d}"
    );
    assert_eq!(d["sessions"], 2, "{d}");
    assert_eq!(release(&w, "pool", &s2).status, 204);
}

#[test]
fn rollout_stops_a_draining_worker_at_its_deadline_even_with_sessions_open() {
    let ports = free_span(3);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 1\nmax = 2\nsessions_per_worker = 1",
    ));
    let pid1 = running_pid(&w, "/pool/w1");
    let (_, worker, _) = session(&acquire(&w, "pool"), "session on w1");
    assert_eq!(worker, "/pool/w1");

    let body = format!(
        r#"{{"command":["python3","-c","{SERVER}","--gen","3","--port","{{port}}"],"deadline":"1s"}}"#
    );
    let sent = Instant::now();
    let r = rollout(&w, "pool", &body);
    assert_eq!(r.status, 200, "rollout: {}", r.text());
    let v = r.json();
    assert_eq!(v["draining"], serde_json::json!(["/pool/w1"]), "{v}");
    assert!(
        v["started"].as_array().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert!(
        actor_paths(&w).contains(&"/pool/w1".to_owned()),
        "w1 stays until its deadline"
    );

    let (_, new_worker, new_port) = session(&acquire(&w, "pool"), "after the rollout");
    assert_ne!(new_worker, "/pool/w1");
    let args = cmdline(running_pid(&w, &new_worker));
    assert_eq!(
        arg_after(&args, "--gen"),
        Some("3"),
        "new command: {args:?}"
    );
    assert_eq!(
        arg_after(&args, "--port"),
        Some(new_port.to_string().as_str()),
        "{args:?}"
    );

    wait_until(
        "w1 leaves the tree at its deadline",
        Duration::from_secs(10),
        || !actor_paths(&w).contains(&"/pool/w1".to_owned()),
    );
    let after = sent.elapsed();
    assert!(
        after >= Duration::from_millis(950),
        "w1 stopped {after:?} after the rollout, before its 1s deadline with a session open"
    );
    wait_until("w1's process is gone", Duration::from_secs(10), || {
        !alive(pid1)
    });
    assert_eq!(w.state(&new_worker), "running");
}

#[test]
fn an_invalid_rollout_is_400_and_changes_nothing() {
    // Room for a whole new set of workers: a valid rollout would be accepted.
    let ports = free_span(5);
    let w = Warden::start(&pool(
        "pool",
        ports,
        "min = 1\nmax = 2\nsessions_per_worker = 1\nenv = { GEN = \"1\" }",
    ));
    let pid1 = running_pid(&w, "/pool/w1");
    let (sid, _, _) = session(&acquire(&w, "pool"), "session on w1");
    let (_, w2, _) = session(&acquire(&w, "pool"), "session on w2");
    assert_eq!(w2, "/pool/w2");
    let pid2 = running_pid(&w, "/pool/w2");
    let before_workers = workers_of(&w, "/pool");
    // The pool's details refresh worker states on their own (about once a second): wait
    // until they show both workers running, so only a rollout could change them.
    let before = wait_for("the pool's details to show both workers running", T, || {
        let d = details(&w, "pool");
        let workers = d["workers"].as_array()?;
        (workers.len() == 2 && workers.iter().all(|x| x["state"] == "running")).then_some(d)
    });

    // (what, body, a word the error must name: "" for none)
    let bad = [
        ("an empty body object", "{}", ""),
        ("an empty command", r#"{"command":[]}"#, "command"),
        ("an empty program", r#"{"command":[""]}"#, "command"),
        (
            "an unknown placeholder in the command",
            r#"{"command":["python3","-c","pass","{nope}"]}"#,
            "nope",
        ),
        (
            "an unknown placeholder in env",
            r#"{"env":{"GEN":"{nope}"}}"#,
            "nope",
        ),
        ("not JSON", "not json", ""),
        ("an unknown key", r#"{"cmd":["python3"]}"#, ""),
        (
            "a command of the wrong type",
            r#"{"command":"python3"}"#,
            "",
        ),
        (
            "a bad deadline",
            r#"{"env":{"GEN":"2"},"deadline":"soon"}"#,
            "",
        ),
        ("no body", "", ""),
    ];
    let mut problems = Vec::new();
    for (what, body, word) in &bad {
        let r = rollout(&w, "pool", body);
        let error = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let ok = r.status == 400
            && r.header("content-type")
                .is_some_and(|c| c.contains("application/json"))
            && !error.is_empty()
            && error.contains(word);
        if !ok {
            problems.push(format!(
                "{what} ({body}): expected 400 {{\"error\"}} naming {word:?}, got {} {}",
                r.status,
                r.text()
            ));
        }
    }

    // Nothing changed: same workers, same pids, none draining, same sessions.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(workers_of(&w, "/pool"), before_workers, "workers changed");
    assert_eq!(w.actor_pid("/pool/w1"), Some(pid1));
    assert_eq!(w.actor_pid("/pool/w2"), Some(pid2));
    assert!(alive(pid1) && alive(pid2));
    let after = details(&w, "pool");
    assert_eq!(after, before, "pool details changed");
    assert_eq!(environ(pid1).get("GEN").map(String::as_str), Some("1"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The template is unchanged: a released seat is taken again on the same worker.
    assert_eq!(release(&w, "pool", &sid).status, 204);
    let (_, again, _) = session(&acquire(&w, "pool"), "after the bad rollouts");
    assert_eq!(again, "/pool/w1");

    // Control: the same pool takes a valid rollout.
    let r = rollout(&w, "pool", r#"{"env":{"GEN":"2"}}"#);
    assert_eq!(r.status, 200, "a valid rollout: {}", r.text());
    assert_eq!(
        r.json()["draining"],
        serde_json::json!(["/pool/w1", "/pool/w2"]),
        "{}",
        r.text()
    );
}

#[test]
fn warden_check_accepts_a_pool_and_refuses_ipc_ready_and_bad_pool_entries_with_exit_2() {
    let dir = temp_dir();
    let ports = (20000u16, 20003u16);
    let good = format!(
        "state_dir = \"state\"\n{}",
        pool(
            "shiny",
            ports,
            "min = 1\nmax = 4\nsessions_per_worker = 10\nidle_timeout = \"5m\""
        )
    );
    std::fs::write(dir.path().join("good.toml"), &good).expect("write");
    let (code, stdout, stderr) = run_warden(&["check", "-c", "good.toml"], dir.path());
    assert_eq!(
        code, 0,
        "a pool is valid\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "check must not create the state_dir"
    );

    let (lo, hi) = ports;
    let cases = [
        (
            "ipc.toml",
            "ready = { ipc = true }",
            "ipc",
            6,
            format!(
                "[[pool]]\nname = \"shiny\"\ncommand = [\"python3\"]\nports = \"{lo}-{hi}\"\nready = {{ ipc = true }}\n"
            ),
        ),
        (
            "placeholder.toml",
            "an unknown placeholder",
            "nope",
            4,
            format!(
                "[[pool]]\nname = \"shiny\"\ncommand = [\"python3\", \"{{nope}}\"]\nports = \"{lo}-{hi}\"\n"
            ),
        ),
        (
            "max.toml",
            "max over the number of ports",
            "max",
            6,
            format!(
                "[[pool]]\nname = \"shiny\"\ncommand = [\"python3\"]\nports = \"{lo}-{}\"\nmax = 4\n",
                lo + 1
            ),
        ),
    ];
    let mut problems = Vec::new();
    // Line 1 is `state_dir`, line 2 the `[[pool]]` entry; `key_line` is the bad key's.
    for (file, what, key, key_line, body) in &cases {
        std::fs::write(
            dir.path().join(file),
            format!("state_dir = \"state\"\n{body}"),
        )
        .expect("write");
        let (code, _, stderr) = run_warden(&["check", "-c", file], dir.path());
        if code != 2 {
            problems.push(format!("{what}: exit {code}, expected 2: {stderr}"));
        }
        if !stderr.contains(file) {
            problems.push(format!("{what}: file {file} not named: {stderr}"));
        }
        if !stderr.contains(key) {
            problems.push(format!("{what}: {key:?} not named: {stderr}"));
        }
        if ![2, *key_line]
            .iter()
            .any(|n| stderr.contains(&format!("{file}:{n}")))
        {
            problems.push(format!(
                "{what}: neither line 2 (the entry) nor {key_line} (the key) named: {stderr}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
