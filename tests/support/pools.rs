//! Pools for tests: a `[[pool]]` entry whose workers are small Python TCP servers on a
//! range of free loopback ports, and sessions taken from it over the admin API.

use super::{Response, Warden};

/// A worker: listens on `$PORT` and sleeps. No double quotes, no braces (TOML string).
pub const SERVER: &str = "import socket,os,time; s=socket.socket(); \
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(100000)";

/// The TOML `command` of a [`SERVER`] worker.
pub fn server_command() -> String {
    format!("[\"python3\", \"-c\", \"{SERVER}\"]")
}

/// A pool `app` running `command` (TOML array) on ports `lo..lo+n-1`, with extra keys,
/// sharing its registry through Redis at `redis` when given.
pub fn pool(command: &str, lo: u16, n: u16, extra: &str, redis: Option<&str>) -> String {
    let cluster = redis
        .map(|url| format!("[cluster]\nredis_url = \"{url}\"\n"))
        .unwrap_or_default();
    format!(
        r#"{cluster}
[[pool]]
name = "app"
command = {command}
ports = "{lo}-{hi}"
ready = {{ tcp = "127.0.0.1:{{port}}", timeout = "10s" }}
stop = {{ signal = "TERM", timeout = "2s" }}
{extra}
"#,
        hi = lo + n - 1
    )
}

/// `POST /api/v1/pools/app/sessions`.
pub fn acquire(w: &Warden) -> Response {
    w.req("POST", "/api/v1/pools/app/sessions")
}

/// `DELETE /api/v1/pools/app/sessions/{id}`.
pub fn release(w: &Warden, id: &str) -> Response {
    w.req("DELETE", &format!("/api/v1/pools/app/sessions/{id}"))
}

/// (session id, worker, port) of a 201 answer.
pub fn session(r: &Response) -> (String, String, u16) {
    assert_eq!(r.status, 201, "acquire: {}", r.text());
    let v = r.json();
    (
        v["session_id"].as_str().expect("session_id").to_owned(),
        v["worker"].as_str().expect("worker").to_owned(),
        v["port"].as_u64().expect("port") as u16,
    )
}
