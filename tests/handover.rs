//! Two wardens on one host sharing a pool's sessions through a real Redis, as in a rolling
//! update of warden itself: the new one starts `--passive`, is activated, the old one
//! drains and waits for its own workers only, and no session is lost.
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::redis::Redis;
use support::*;

/// A pool config for one warden; `ports` is shared by both wardens.
fn pool_config(
    dir: &std::path::Path,
    admin: u16,
    redis: &str,
    first_port: u16,
    min: u32,
) -> std::path::PathBuf {
    let worker = "import socket,os,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(100000)";
    let text = format!(
        r#"state_dir = "state"
[admin]
listen = "127.0.0.1:{admin}"
[cluster]
redis_url = "{redis}"
[[pool]]
name = "app"
command = ["python3", "-c", "{worker}"]
ports = "{first}-{last}"
min = {min}
max = 4
sessions_per_worker = 2
idle_timeout = "1h"
ready = {{ tcp = "127.0.0.1:{{port}}", timeout = "20s" }}
"#,
        first = first_port,
        last = first_port + 7,
        worker = worker.replace('"', "\\\""),
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// A base port with 8 free ports after it.
fn post(port: u16, token: &str, path: &str) -> Response {
    http(port, "POST", path, Some(token), None).expect("http")
}

fn get(port: u16, token: &str, path: &str) -> serde_json::Value {
    let r = http(port, "GET", path, Some(token), None).expect("http");
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// The worker paths under `/app` that a warden's tree lists.
fn workers(port: u16, token: &str) -> Vec<String> {
    let v = get(port, token, "/api/v1/actors");
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["actors"].as_array().cloned());
    list.unwrap_or_default()
        .iter()
        .filter_map(|a| a["path"].as_str())
        .filter(|p| p.starts_with("/app/"))
        .map(str::to_owned)
        .collect()
}

/// The entry of `worker` in the pool's details on one warden.
fn worker_detail(port: u16, token: &str, worker: &str) -> Option<serde_json::Value> {
    get(port, token, "/api/v1/actors/app")["details"]["workers"]
        .as_array()?
        .iter()
        .find(|w| w["worker"] == worker)
        .cloned()
}

#[test]
fn a_passive_warden_takes_over_a_pool_through_redis_and_no_session_is_lost() {
    let redis = Redis::start(free_port());
    let first_port = free_range(8);

    // The old warden, with a session open on its worker.
    let old_dir = temp_dir();
    let old_admin = free_port();
    let old_config = pool_config(old_dir.path(), old_admin, &redis.url(), first_port, 0);
    let mut old = Command::new(warden_bin())
        .args(["up", "-c"])
        .arg(&old_config)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(old_dir.path().join("err")).expect("log"))
        .spawn()
        .expect("old warden");
    wait_until("old warden answers", Duration::from_secs(20), || {
        http(old_admin, "GET", "/healthz", None, None).is_ok()
    });
    let old_token =
        std::fs::read_to_string(old_dir.path().join("state/admin.token")).expect("token");
    let old_token = old_token.trim();
    let s1 = post(old_admin, old_token, "/api/v1/pools/app/sessions");
    assert_eq!(s1.status, 201, "{}", s1.text());
    let s1 = s1.json();
    let old_worker = s1["worker"].as_str().expect("worker").to_owned();
    let old_pid = wait_for("old worker pid", Duration::from_secs(10), || {
        let r = http(
            old_admin,
            "GET",
            &format!("/api/v1/actors{old_worker}"),
            Some(old_token),
            None,
        )
        .ok()?;
        r.json()["pid"].as_u64()
    }) as u32;

    // The new warden starts passive: nothing runs, sessions are refused. Its pool has
    // `min = 1`, so a passive warden that started anything would show a worker.
    let new_dir = temp_dir();
    let new_admin = free_port();
    let new_config = pool_config(new_dir.path(), new_admin, &redis.url(), first_port, 1);
    let mut new = Command::new(warden_bin())
        .args(["up", "--passive", "-c"])
        .arg(&new_config)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(new_dir.path().join("err")).expect("log"))
        .spawn()
        .expect("new warden");
    wait_until("new warden answers", Duration::from_secs(20), || {
        http(new_admin, "GET", "/healthz", None, None).is_ok()
    });
    let new_token =
        std::fs::read_to_string(new_dir.path().join("state/admin.token")).expect("token");
    let new_token = new_token.trim();
    assert_eq!(
        post(new_admin, new_token, "/api/v1/pools/app/sessions").status,
        503
    );
    let new_pid = new.id();
    holds_for(
        "a passive warden starts no worker (actor or process)",
        Duration::from_secs(1),
        || workers(new_admin, new_token).is_empty() && children_of(new_pid).is_empty(),
    );

    // Handover: activate the new one, drain the old one.
    let activated = post(new_admin, new_token, "/api/v1/admin/activate");
    assert_eq!(activated.status, 200, "{}", activated.text());
    assert_eq!(
        post(new_admin, new_token, "/api/v1/admin/activate").status,
        409
    );
    // Once active, its `min` worker starts: an actor and a live process of this warden.
    let (new_worker, new_worker_pid) = wait_for(
        "the activated warden's min worker",
        Duration::from_secs(20),
        || {
            let worker = workers(new_admin, new_token).into_iter().next()?;
            let a = get(new_admin, new_token, &format!("/api/v1/actors{worker}"));
            let pid = (a["state"] == "running").then(|| a["pid"].as_u64())?? as u32;
            Some((worker, pid))
        },
    );
    assert!(alive(new_worker_pid), "{new_worker} pid {new_worker_pid}");
    assert!(
        children_of(new_pid).contains(&new_worker_pid),
        "{new_worker} (pid {new_worker_pid}) is not a child of the new warden"
    );
    assert_eq!(post(old_admin, old_token, "/api/v1/drain").status, 200);
    assert_eq!(
        post(old_admin, old_token, "/api/v1/pools/app/sessions").status,
        503
    );

    // New sessions go to the new warden's own worker, on another port.
    let s2 = post(new_admin, new_token, "/api/v1/pools/app/sessions");
    assert_eq!(s2.status, 201, "{}", s2.text());
    let s2 = s2.json();
    assert_ne!(
        s2["port"], s1["port"],
        "the new warden reused a port the old one holds"
    );
    assert_ne!(
        s2["worker"], s1["worker"],
        "worker ids are unique across the wardens"
    );

    // No session lost: the drained old warden keeps its worker running, with s1 on it,
    // for as long as s1 is open (watched for a second, the worker process too).
    holds_for(
        "the old worker keeps running while its session is open",
        Duration::from_secs(1),
        || {
            let d = worker_detail(old_admin, old_token, &old_worker);
            alive(old_pid)
                && d.as_ref()
                    .is_some_and(|d| d["state"] == "running" && d["sessions"] == 1)
        },
    );

    // The old session is still known (through Redis) and released through the new
    // warden; the old warden sees it and stops its now idle worker.
    let s1_id = s1["session_id"].as_str().expect("id");
    let released = http(
        new_admin,
        "DELETE",
        &format!("/api/v1/pools/app/sessions/{s1_id}"),
        Some(new_token),
        None,
    )
    .expect("http");
    assert_eq!(released.status, 204, "{}", released.text());
    wait_until(
        "the old warden's worker stops",
        Duration::from_secs(15),
        || !alive(old_pid),
    );
    wait_until("and leaves its tree", Duration::from_secs(10), || {
        http(old_admin, "GET", "/api/v1/actors", Some(old_token), None)
            .map(|r| !r.text().contains(&old_worker))
            .unwrap_or(false)
    });

    // The new warden's session is intact.
    let s2_id = s2["session_id"].as_str().expect("id");
    let released = http(
        new_admin,
        "DELETE",
        &format!("/api/v1/pools/app/sessions/{s2_id}"),
        Some(new_token),
        None,
    )
    .expect("http");
    assert_eq!(released.status, 204, "{}", released.text());

    for child in [&mut old, &mut new] {
        kill(child.id(), 15);
    }
    for child in [&mut old, &mut new] {
        wait_until("warden exits", Duration::from_secs(20), || {
            child.try_wait().ok().flatten().is_some()
        });
    }
}
