//! Shared helpers for the black-box tests: temp dirs, free ports, a running `warden up`,
//! a small HTTP client, polling with deadlines, and process checks by pid.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod census;
pub mod events;
pub mod example_bin;
pub mod fd_relay;
pub mod outboard;
pub mod pools;
pub mod redis;
pub mod rng;
pub mod systemd;
pub mod tls;
pub mod ws;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `warden` binary built for these tests.
pub fn warden_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden"))
}

/// `/proc/PID/<file>` (`cmdline` or `environ`) of a process warden started, split at its
/// NULs. A process seen right after its spawn may still be in its exec: until the kernel
/// has laid out the new program's arguments and environment, both read as empty (warden
/// reports the pid once the exec is certain, not done). An empty read is retried for up to
/// 10 s; empty when the process is gone (or is a zombie).
pub fn proc_strings(pid: u32, file: &str) -> Vec<String> {
    poll_for(Duration::from_secs(10), || {
        match std::fs::read(format!("/proc/{pid}/{file}")) {
            Ok(raw) if !raw.is_empty() => Some(
                raw.split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            Ok(_) if alive(pid) => None,
            _ => Some(Vec::new()),
        }
    })
    .unwrap_or_default()
}

/// A fresh temp dir, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("warden-test-")
        .tempdir()
        .expect("temp dir")
}

/// A free loopback port, never handed out twice in this test process (see [`free_range`]).
pub fn free_port() -> u16 {
    free_range(1)
}

/// `n` consecutive free loopback ports; the first of them. They lie below the kernel's
/// ephemeral range, so no outgoing connection (an HTTP poll, a Redis client, a ready probe)
/// can take one between this check and the worker's bind, and no two calls in this test
/// process hand out overlapping ranges (tests run side by side).
pub fn free_range(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FLOOR: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ceiling = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ceiling.saturating_sub(FLOOR);
    assert!(
        span > 2 * u32::from(n),
        "no room below the ephemeral ports ({ceiling})"
    );
    // Each test binary starts somewhere else in the span, so a leftover worker of an
    // earlier binary is unlikely to sit on the same ports (the bind check below covers it).
    let _ = NEXT.compare_exchange(
        0,
        (u64::from(std::process::id()) * 7919 % u64::from(span)) as u32,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    wait_for("free ports", Duration::from_secs(10), || {
        let offset = range_offset(NEXT.fetch_add(u32::from(n), Ordering::SeqCst), n, span)?;
        let base = u16::try_from(FLOOR + offset).ok()?;
        (base..base + n)
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
            .then_some(base)
    })
}

/// Where in a span of `span` ports the `n` ports counted from `counter` (the shared
/// counter's value before this call added `n`) begin, or `None` when they would run past
/// its end (the next call begins again at the bottom). One modulus for every `n`: with a
/// modulus that depended on `n`, a single port handed out after the counter passed the
/// span's size fell inside the range handed out just before it (the admin API's port on
/// a pool worker's, whose bind then failed).
fn range_offset(counter: u32, n: u16, span: u32) -> Option<u32> {
    let offset = counter % span;
    (offset + u32::from(n) <= span).then_some(offset)
}

#[test]
fn ranges_handed_out_one_after_another_never_overlap_across_the_wrap() {
    let span = 100;
    for start in [0, 37, 90, 97, 99, 100, 195, 250] {
        let mut counter = start;
        let mut taken: Vec<std::ops::Range<u32>> = Vec::new();
        for n in [6u16, 1, 8, 1, 1, 6, 4, 1, 6, 1, 8, 1, 3] {
            let before = counter;
            counter += u32::from(n);
            let Some(offset) = range_offset(before, n, span) else {
                continue;
            };
            let range = offset..offset + u32::from(n);
            assert!(range.end <= span, "{range:?} runs past {span}");
            for other in &taken {
                assert!(
                    range.end <= other.start || other.end <= range.start,
                    "from {start}: {range:?} overlaps {other:?}"
                );
            }
            taken.push(range);
        }
    }
}

/// `n` consecutive free loopback ports as inclusive bounds `(first, last)` (see
/// [`free_range`]).
pub fn free_span(n: u16) -> (u16, u16) {
    let first = free_range(n);
    (first, first + n - 1)
}

/// Polls `cond` every 10 ms until it is true or `timeout` passes; panics with `what` then.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`wait_until`] but returns the value once `f` gives `Some`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_for(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"))
}

/// Polls `f` every 10 ms until it gives `Some`, or `None` once `timeout` passes.
pub fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the tests run as root (CI does: children are then started as other users).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !after.starts_with('Z') && !after.starts_with('X')
        }
        Err(_) => false,
    }
}

/// The live direct children of `pid` (by the parent pid in `/proc/*/stat`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .collect::<Vec<_>>();
                    // after[0] is the state, after[1] the parent pid.
                    Some(after.first()? != &"Z" && after.get(1)?.parse::<u32>().ok()? == pid)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Checks `cond` every 10 ms for `period`; panics with `what` the first time it is false.
pub fn holds_for(what: &str, period: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + period;
    loop {
        assert!(cond(), "no longer true: {what}");
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` (e.g. libc-style number 9) to `pid`.
pub fn kill(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A minimal HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> std::io::Result<Response> {
    http_within(port, method, path, token, body, Duration::from_secs(60))
}

/// As [`http`], failing once a read waits longer than `within` (a wedged warden makes a
/// test fail fast instead of hanging it).
pub fn http_within(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    within: Duration,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(within))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or(b"");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The body of a chunked transfer (as far as it is complete).
pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Sends one request with exactly the headers given (`Host` and `Connection: close` are
/// added) and `body` as is, for tests of malformed or oversized requests; a failed body
/// write is ignored (the server may answer early), then the response is read.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    for chunk in body.chunks(16 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        read?;
    }
    parse_response(&raw)
}

/// A `warden up` process started by a test, with its config dir, port and token.
/// Dropping it stops warden with SIGTERM (which stops its children), then SIGKILLs warden
/// if it has not exited within 10 s.
pub struct Warden {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    pub config: PathBuf,
    pub stderr: PathBuf,
}

impl Warden {
    /// Writes `body` (TOML without `state_dir` and `[admin]`, which are added) to
    /// `warden.toml` in a fresh dir and starts `warden up` on it; waits until the admin API
    /// answers.
    pub fn start(body: &str) -> Warden {
        let dir = temp_dir();
        Self::start_in(dir, body)
    }

    /// As [`Warden::start`], in a given dir.
    pub fn start_in(dir: tempfile::TempDir, body: &str) -> Warden {
        Self::started(Self::spawn_with(dir, body, &[], false, None, false))
    }

    /// As [`Warden::start_in`], with warden's stderr a pipe that this returns and nobody
    /// reads unless the caller does.
    pub fn start_with_unread_stderr(
        dir: tempfile::TempDir,
        body: &str,
    ) -> (Warden, std::process::ChildStderr) {
        let mut w = Self::spawn_with(dir, body, &[], false, None, true);
        let stderr = w
            .child
            .as_mut()
            .and_then(|c| c.stderr.take())
            .expect("warden's stderr pipe");
        (Self::started(w), stderr)
    }

    /// As [`Warden::start_in`], with `file` open for reading at fd 3 of warden (not
    /// close-on-exec), as a careless parent of warden could leave one.
    pub fn start_in_inheriting(dir: tempfile::TempDir, body: &str, file: &Path) -> Warden {
        Self::started(Self::spawn_with(dir, body, &[], false, Some(file), false))
    }

    /// As [`Warden::start_in`], with `env` added to warden's environment, and warden in a
    /// process group of its own (so that a wrong group signal from warden, which such
    /// tests provoke, cannot reach the test harness).
    pub fn start_in_env(dir: tempfile::TempDir, body: &str, env: &[(&str, &str)]) -> Warden {
        Self::started(Self::spawn_with(dir, body, env, true, None, false))
    }

    /// As [`Warden::start_in`], but returns at once, without waiting for the admin API
    /// (for tests that act during start-up).
    pub fn spawn_in(dir: tempfile::TempDir, body: &str) -> Warden {
        Self::spawn_with(dir, body, &[], false, None, false)
    }

    fn started(mut w: Warden) -> Warden {
        let port = w.port;
        wait_until("admin API answers", Duration::from_secs(20), || {
            if let Some(status) = w.try_wait() {
                panic!("warden exited early ({status}): {}", w.stderr_text());
            }
            http(port, "GET", "/healthz", None, None).is_ok()
        });
        w
    }

    fn spawn_with(
        dir: tempfile::TempDir,
        body: &str,
        env: &[(&str, &str)],
        own_group: bool,
        fd3: Option<&Path>,
        stderr_pipe: bool,
    ) -> Warden {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let config = dir.path().join("warden.toml");
        let text =
            format!("state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n{body}");
        std::fs::write(&config, text).expect("write config");
        let stderr = dir.path().join("warden.stderr");
        let mut cmd = match fd3 {
            // sh opens it at fd 3 exactly, then becomes warden.
            Some(file) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg("exec 3<\"$1\"; shift; exec \"$@\"")
                    .arg("sh")
                    .arg(file)
                    .arg(warden_bin());
                sh
            }
            None => Command::new(warden_bin()),
        };
        cmd.arg("up")
            .arg("-c")
            .arg(&config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if stderr_pipe {
            cmd.stderr(Stdio::piped());
        } else {
            cmd.stderr(std::fs::File::create(&stderr).expect("stderr file"));
        }
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().expect("spawn warden");
        Warden {
            dir,
            port,
            child: Some(child),
            config,
            stderr,
        }
    }

    /// Rewrites the config with a new `body` after the `state_dir` and `[admin]` lines
    /// that [`Warden::start`] wrote (for a reload).
    pub fn rewrite(&self, body: &str) {
        let text = format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\n{body}",
            self.port
        );
        std::fs::write(&self.config, text).expect("rewrite config");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/admin.token"))
            .expect("token file")
            .trim()
            .to_owned()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// warden's stderr once it contains `needle`, or `None` after `timeout`. warden's own
    /// log reaches stderr from a thread of its own, a few milliseconds after the event
    /// (SEMANTICS 89; later on a busy machine): a line is waited for, never read at once.
    pub fn stderr_with(&self, needle: &str, timeout: Duration) -> Option<String> {
        poll_for(timeout, || {
            Some(self.stderr_text()).filter(|text| text.contains(needle))
        })
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// An authorized request.
    pub fn req(&self, method: &str, path: &str) -> Response {
        http(self.port, method, path, Some(&self.token()), None).expect("http request")
    }

    /// `GET /api/v1/actors/{path}` as JSON (path without the leading `/`).
    pub fn actor(&self, path: &str) -> serde_json::Value {
        let r = self.req(
            "GET",
            &format!("/api/v1/actors/{}", path.trim_start_matches('/')),
        );
        assert_eq!(r.status, 200, "GET actor {path}: {}", r.text());
        r.json()
    }

    pub fn state(&self, path: &str) -> String {
        self.actor(path)["state"].as_str().unwrap_or("").to_owned()
    }

    pub fn actor_pid(&self, path: &str) -> Option<u32> {
        self.actor(path)["pid"].as_u64().map(|p| p as u32)
    }

    /// Waits until the actor is in `state`.
    pub fn wait_state(&self, path: &str, state: &str, timeout: Duration) -> serde_json::Value {
        wait_for(&format!("{path} to be {state}"), timeout, || {
            let a = self.actor(path);
            (a["state"] == state).then_some(a)
        })
    }

    /// SIGKILLs warden and waits (bounded) until it is gone (reaped).
    pub fn crash(&mut self) {
        kill(self.pid(), 9);
        wait_until("warden gone after SIGKILL", Duration::from_secs(10), || {
            self.try_wait().is_some()
        });
    }

    /// The dir of a warden that has exited, to start the next warden in.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        assert!(self.try_wait().is_some(), "into_dir: warden still runs");
        std::mem::replace(&mut self.dir, temp_dir())
    }

    /// Sends `signal` to warden and waits (bounded) for its exit status.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        kill(pid, signal);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "warden did not exit within {timeout:?}: {}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows what warden said: the end of its log.
            let text = self.stderr_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(120)..];
            eprintln!("--- last {} lines of warden's log ---", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                // Graceful first so children are cleaned up, then SIGKILL.
                kill(child.id(), 15);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs `warden ARGS` to completion (bounded) and returns (exit code, stdout, stderr).
pub fn run_warden(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(warden_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run warden");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads the lines of a file (empty if missing).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A TOML basic string holding `s`.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML `command` array running `script` with `/bin/sh -c`.
pub fn sh(script: &str) -> String {
    format!("[\"/bin/sh\", \"-c\", {}]", toml_str(script))
}

/// The absolute path of `rel` in `dir`, as a string for scripts.
pub fn abs(dir: &tempfile::TempDir, rel: &str) -> String {
    dir.path()
        .join(rel)
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

/// A JSON RFC 3339 timestamp as a time.
pub fn rfc3339(v: &serde_json::Value) -> std::time::SystemTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 timestamp, got {v}"));
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("bad RFC 3339 timestamp {s:?}: {e}"))
}

/// `a - b` in milliseconds (negative if `a` is earlier).
pub fn diff_ms(a: std::time::SystemTime, b: std::time::SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// How long a [`logging_child`] takes to stop after SIGTERM: it sleeps this long before
/// writing its stop line and exiting, so that a supervisor stopping children one by one
/// leaves at least this much time between their stop lines.
pub const LOGGING_CHILD_STOP_MS: f64 = 200.0;

/// A `/bin/sh` service command that appends "start NAME <ns>" to `file` when it starts,
/// and on SIGTERM sleeps 200 ms, appends "stop NAME <ns>" and exits 0 (`<ns>`: `date
/// +%s%N` at the moment of writing).
pub fn logging_child(name: &str, file: &str) -> String {
    sh(&format!(
        "trap 'sleep 0.2; echo \"stop {name} $(date +%s%N)\" >> \"{file}\"; exit 0' TERM; \
         echo \"start {name} $(date +%s%N)\" >> \"{file}\"; sleep 1000 & wait"
    ))
}

/// The first two words of each line of a [`logging_child`] log: "start a", "stop c".
pub fn events(file: &str) -> Vec<String> {
    lines(Path::new(file))
        .iter()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Milliseconds since the epoch of the first line of `file` starting with `event` (e.g.
/// "stop c"), from the `date +%s%N` written last on it.
pub fn event_ms(file: &str, event: &str) -> f64 {
    let all = lines(Path::new(file));
    let line = all
        .iter()
        .find(|l| l.starts_with(&format!("{event} ")))
        .unwrap_or_else(|| panic!("no {event:?} in {all:?}"));
    let ns: u128 = line
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    ns as f64 / 1e6
}

/// Asserts that `later`'s line comes at least [`LOGGING_CHILD_STOP_MS`] after
/// `earlier`'s: the supervisor waited for one child to exit before stopping the next.
pub fn assert_stopped_one_after_the_other(file: &str, earlier: &str, later: &str) {
    let gap = event_ms(file, later) - event_ms(file, earlier);
    assert!(
        gap >= LOGGING_CHILD_STOP_MS,
        "{later:?} came {gap:.0} ms after {earlier:?}: the supervisor must wait for each \
         child to exit (each takes {LOGGING_CHILD_STOP_MS} ms) before stopping the next"
    );
}

/// The instance id of the warden of `state_dir` (`state_dir/instance`), which its
/// children carry as `WARDEN_INSTANCE`.
pub fn instance_of(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join("instance")).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}
