//! Benchmark of warden's operator interfaces, against a real `warden up`:
//!
//! - the admin HTTP API under load: CONNS keep-alive connections (one std thread each)
//!   send `GET /api/v1/actors` back to back for SECONDS seconds after a 1 s warm-up; the
//!   listing of N_ACTORS services is large (~245 bytes per actor: 245 KB for 1,000). Then
//!   the same for one actor, `GET /api/v1/actors/s0000`, for half as long (at least 2 s).
//!   Printed: requests/s, p50, p99 and max latency, the response body size, the number of
//!   errors (non-200 answers and broken connections), the CPU used by warden and by this
//!   client over the measured window, and warden's busiest threads.
//! - the local control socket (`state_dir/control.sock`, MessagePack frames) through the
//!   blocking [`warden::control::client::Client`]: sequential round trips of
//!   `Request::Actor { path: "/s0000" }` and `Request::Health` (200 warm-up, 2,000
//!   measured), and 200 of `Request::Status` (the whole listing, for comparison with
//!   HTTP), with the client's own CPU per round trip.
//!
//! It builds nothing: it runs the release binary `target/release/warden` (or `$WARDEN_BIN`)
//! on a generated config in a fresh temp dir with N_ACTORS `[[service]]`s running
//! `sleep 1000000`, waits (at most 60 s) until all are `running`, measures, stops warden
//! with SIGTERM (at most 30 s) and removes the temp dir.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_admin [-- N_ACTORS CONNS SECONDS]   # 1000 32 10
//! ```
//!
//! The client and warden share the machine: on a small machine the client's threads compete
//! with warden's two HTTP workers for CPU, so read the CPU columns with the rates.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warden::control::client::Client;
use warden::control::protocol::{Request, Response};

/// Time before measuring, on every HTTP connection.
const WARMUP: Duration = Duration::from_secs(1);
/// How long warden may take to bring every service to `running`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long warden may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Read/write timeout of every HTTP connection: no request can hang the benchmark.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Control socket round trips: warm-up, then measured.
const SOCKET_WARMUP: usize = 200;
const SOCKET_ROUNDS: usize = 2_000;
/// Round trips of the whole listing over the control socket.
const SOCKET_STATUS_ROUNDS: usize = 200;
/// Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on every Linux build).
const USER_HZ: f64 = 100.0;

fn main() {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("bench_admin: {message}");
            eprintln!(
                "usage: cargo run --release --example bench_admin [-- N_ACTORS CONNS SECONDS]"
            );
            std::process::exit(2);
        }
    };
    let bin = warden_bin();
    if !bin.is_file() {
        eprintln!(
            "bench_admin: no warden binary at {}: run `cargo build --release` first (or set WARDEN_BIN)",
            bin.display()
        );
        std::process::exit(2);
    }
    // `run` owns the running warden and the temp dir; both are cleaned up when it returns.
    if let Err(message) = run(&args, &bin) {
        eprintln!("bench_admin: {message}");
        std::process::exit(1);
    }
}

/// Command-line arguments.
#[derive(Debug, Clone, Copy)]
struct Args {
    actors: usize,
    conns: usize,
    seconds: u64,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let raw: Vec<String> = std::env::args().skip(1).collect();
        if raw.len() > 3 {
            return Err(format!("at most 3 arguments, got {}", raw.len()));
        }
        let get = |i: usize, default: u64, name: &str| -> Result<u64, String> {
            match raw.get(i) {
                None => Ok(default),
                Some(s) => match s.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name} must be a positive integer, got {s:?}")),
                },
            }
        };
        let actors = get(0, 1000, "N_ACTORS")?;
        let conns = get(1, 32, "CONNS")?;
        let seconds = get(2, 10, "SECONDS")?;
        if actors > 9999 {
            return Err("N_ACTORS is at most 9999 (names s0000..s9999)".to_owned());
        }
        if conns > 1024 {
            return Err("CONNS is at most 1024".to_owned());
        }
        Ok(Args {
            actors: actors as usize,
            conns: conns as usize,
            seconds,
        })
    }
}

/// `$WARDEN_BIN`, else the workspace's `target/release/warden`.
fn warden_bin() -> PathBuf {
    match std::env::var_os("WARDEN_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/warden"),
    }
}

fn run(args: &Args, bin: &Path) -> Result<(), String> {
    let mut warden = Warden::start(bin, args.actors)?;
    println!(
        "warden {} (pid {}), {} services, admin on {}, temp dir {}",
        bin.display(),
        warden.pid(),
        args.actors,
        warden.addr,
        warden.dir.display()
    );

    let started = Instant::now();
    let token = warden.wait_all_running(args.actors)?;
    println!(
        "all {} services running {:.1} s after the admin API answered",
        args.actors,
        started.elapsed().as_secs_f64()
    );

    let listing = http_load(
        &warden,
        &token,
        "/api/v1/actors",
        args.conns,
        Duration::from_secs(args.seconds),
    );
    println!(
        "{}",
        listing.line(&format!(
            "GET /api/v1/actors ({} actors, {} conns)",
            args.actors, args.conns
        ))
    );
    let one_secs = args.seconds.div_ceil(2).max(2);
    let one = http_load(
        &warden,
        &token,
        "/api/v1/actors/s0000",
        args.conns,
        Duration::from_secs(one_secs),
    );
    println!(
        "{}",
        one.line(&format!(
            "GET /api/v1/actors/s0000 ({} actors, {} conns)",
            args.actors, args.conns
        ))
    );

    let socket = warden.dir.join("state/control.sock");
    let actor = Request::Actor {
        path: "/s0000".to_owned(),
    };
    for (label, request, warmup, rounds) in [
        (
            "control socket Actor /s0000".to_owned(),
            actor,
            SOCKET_WARMUP,
            SOCKET_ROUNDS,
        ),
        (
            "control socket Health".to_owned(),
            Request::Health,
            SOCKET_WARMUP,
            SOCKET_ROUNDS,
        ),
        (
            format!("control socket Status ({} actors)", args.actors),
            Request::Status,
            SOCKET_STATUS_ROUNDS / 10,
            SOCKET_STATUS_ROUNDS,
        ),
    ] {
        match socket_round_trips(&socket, request, warmup, rounds) {
            Ok((mut micros, client_cpu)) => {
                micros.sort_unstable();
                println!(
                    "{label}: {rounds} sequential round trips, p50 {} µs, p99 {} µs, max {} µs \
                     [client CPU {} µs per round trip]",
                    percentile(&micros, 0.50),
                    percentile(&micros, 0.99),
                    micros.last().copied().unwrap_or(0),
                    client_cpu.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                );
            }
            Err(e) => println!("{label}: failed: {e}"),
        }
    }

    match warden.stop() {
        Ok((status, took)) => println!(
            "warden stopped by SIGTERM in {:.1} s ({status})",
            took.as_secs_f64()
        ),
        Err(e) => println!("warden did not stop cleanly: {e}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The warden under test.

/// A `warden up` started by this program in its own temp dir. Dropping it stops warden
/// (SIGTERM to its pid, and only its pid) and removes the temp dir.
struct Warden {
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Warden {
    fn start(bin: &Path, actors: usize) -> Result<Warden, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "warden-bench-admin-{}-{nanos:09}",
            std::process::id()
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create temp dir {}: {e}", dir.display()))?;
        // From here on the dir is removed on every path (the guard's drop).
        let mut warden = Warden {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("cannot find a free port: {e}"))?;
        warden.addr = SocketAddr::from(([127, 0, 0, 1], port));

        let mut config = format!(
            "state_dir = \"state\"\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [runtime]\non_exit = \"stop\"\n"
        );
        for i in 0..actors {
            config.push_str(&format!(
                "\n[[service]]\nname = \"s{i:04}\"\ncommand = [\"sleep\", \"1000000\"]\n"
            ));
        }
        let config_path = warden.dir.join("warden.toml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let stderr_path = warden.stderr_path();
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
        let child = Command::new(bin)
            .arg("up")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        warden.child = Some(child);
        Ok(warden)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("warden.stderr")
    }

    /// The last lines warden wrote to stderr, for error messages.
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails if warden has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err("warden is not running".to_owned());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(format!(
                    "warden exited early ({status}); its stderr ends with:\n{}",
                    self.stderr_tail()
                ))
            }
            Err(e) => Err(format!("cannot check on warden: {e}")),
        }
    }

    /// Waits (at most [`START_TIMEOUT`]) until the token exists and the listing shows
    /// `actors` services, all `running`; returns the token.
    fn wait_all_running(&mut self, actors: usize) -> Result<String, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let token_path = self.dir.join("state/admin.token");
        let mut last = String::from("the admin token file does not exist yet");
        while Instant::now() < deadline {
            self.check_alive()?;
            match std::fs::read_to_string(&token_path) {
                Ok(token) if !token.trim().is_empty() => {
                    let token = token.trim().to_owned();
                    match self.count_running(&token) {
                        Ok(running) if running == actors => return Ok(token),
                        Ok(running) => last = format!("{running} of {actors} running"),
                        Err(e) => last = e,
                    }
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "not all services running after {START_TIMEOUT:?} (last: {last}); warden's stderr ends with:\n{}",
            self.stderr_tail()
        ))
    }

    /// How many `/sNNNN` actors `GET /api/v1/actors` shows as `running`.
    fn count_running(&self, token: &str) -> Result<usize, String> {
        let mut conn = HttpConn::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
        let request = get_request("/api/v1/actors", token);
        let mut body = Vec::new();
        let (status, _) = conn
            .request(&request, &mut body)
            .map_err(|e| format!("GET /api/v1/actors: {e}"))?;
        if status != 200 {
            return Err(format!(
                "GET /api/v1/actors answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let actors: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| format!("GET /api/v1/actors: not a JSON array: {e}"))?;
        Ok(actors
            .iter()
            .filter(|a| {
                a["state"] == "running" && a["path"].as_str().is_some_and(|p| p.starts_with("/s"))
            })
            .count())
    }

    /// CPU seconds (user + system) warden has used so far.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        parse_stat(&stat).map(|(_, secs)| secs)
    }

    /// CPU seconds (user + system) of each of warden's threads so far, by thread id,
    /// with the thread's name.
    fn thread_cpu_seconds(&self) -> HashMap<u32, (String, f64)> {
        let mut out = HashMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return out;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, secs)) = parse_stat(&stat) {
                out.insert(tid, (name, secs));
            }
        }
        out
    }

    /// SIGTERM to warden, then waits at most [`STOP_TIMEOUT`]. If it has not exited by
    /// then, SIGKILL to warden's pid (never to anything else).
    fn stop(&mut self) -> Result<(ExitStatus, Duration), String> {
        let Some(mut child) = self.child.take() else {
            return Err("warden was not running".to_owned());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("warden had already exited ({status})"));
        }
        let pid = Pid::from_raw(child.id() as i32);
        let sent = Instant::now();
        if let Err(e) = kill(pid, Signal::SIGTERM) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot send SIGTERM to warden: {e}; killed it"));
        }
        while sent.elapsed() < STOP_TIMEOUT {
            match child.try_wait() {
                Ok(Some(status)) => return Ok((status, sent.elapsed())),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("cannot wait for warden: {e}")),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "warden did not exit within {STOP_TIMEOUT:?} of SIGTERM; SIGKILLed it (its children may be left over); stderr ends with:\n{}",
            self.stderr_tail()
        ))
    }
}

/// The name and CPU seconds (user + system) in a `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses. utime and stime are
    // fields 14 and 15, the 12th and 13th after the closing parenthesis.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / USER_HZ))
}

impl Drop for Warden {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("bench_admin: stopping warden: {e}");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "bench_admin: cannot remove temp dir {}: {e}",
                self.dir.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// A minimal keep-alive HTTP/1.1 client.

fn get_request(path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/json\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

/// One keep-alive connection.
struct HttpConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl HttpConn {
    fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(HttpConn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
        })
    }

    /// Sends `request` and reads the whole response; the body goes to `body`. Returns the
    /// status and whether the server will close the connection after it.
    fn request(&mut self, request: &[u8], body: &mut Vec<u8>) -> io::Result<(u16, bool)> {
        self.writer.write_all(request)?;
        body.clear();
        let mut line = String::new();

        // Status line.
        self.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {:?}", line.trim_end())))?;
        let http10 = line.starts_with("HTTP/1.0");

        // Headers.
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = http10;
        for _ in 0..200 {
            self.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return Err(invalid(format!("bad header line {header:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse()
                    .map_err(|_| invalid(format!("bad content-length {value:?}")))?;
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                let value = value.to_ascii_lowercase();
                close = value.contains("close") || (http10 && !value.contains("keep-alive"));
            }
        }
        if !line.trim_end().is_empty() {
            return Err(invalid("too many header lines".to_owned()));
        }

        // Body.
        if chunked {
            loop {
                self.read_line(&mut line)?;
                let size_text = line.trim_end().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    for _ in 0..200 {
                        self.read_line(&mut line)?;
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                self.read_exact_into(body, size)?;
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf)?;
                if &crlf != b"\r\n" {
                    return Err(invalid("chunk not followed by CRLF".to_owned()));
                }
            }
        } else if let Some(n) = content_length {
            self.read_exact_into(body, n)?;
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // No length: the body runs to the end of the connection.
            self.reader.read_to_end(body)?;
            close = true;
        }
        Ok((status, close))
    }

    /// Reads one CRLF-terminated line (at most 64 KiB) into `line`, replacing it.
    fn read_line(&mut self, line: &mut String) -> io::Result<()> {
        line.clear();
        let n = (&mut self.reader).take(64 * 1024).read_line(line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        if !line.ends_with('\n') {
            return Err(invalid("line too long or truncated".to_owned()));
        }
        Ok(())
    }

    /// Appends exactly `n` bytes to `body`.
    fn read_exact_into(&mut self, body: &mut Vec<u8>, n: usize) -> io::Result<()> {
        let start = body.len();
        body.resize(start + n, 0);
        self.reader.read_exact(&mut body[start..])
    }
}

// ---------------------------------------------------------------------------------------
// HTTP load.

/// What one load run measured.
#[derive(Debug, Default)]
struct LoadResult {
    /// Latency of each measured request, in nanoseconds (sorted once merged).
    latencies: Vec<u64>,
    /// Non-200 answers, failed requests and failed connects within the measured window.
    errors: u64,
    /// The first such error, for the report.
    first_error: Option<String>,
    /// Body size of a 200 answer.
    body_bytes: usize,
    /// Measured window.
    window: Duration,
    /// CPU seconds warden and this client used over the window.
    warden_cpu: Option<f64>,
    client_cpu: Option<f64>,
    /// warden's busiest threads over the window: name, id, CPU seconds.
    warden_threads: Vec<(String, u32, f64)>,
}

impl LoadResult {
    fn merge(&mut self, other: LoadResult) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.body_bytes = self.body_bytes.max(other.body_bytes);
    }

    fn line(&self, label: &str) -> String {
        let secs = self.window.as_secs_f64();
        let ms = |ns: u64| fmt_ms(ns as f64 / 1e6);
        let cpu = |c: Option<f64>| {
            c.map_or_else(|| "?".to_owned(), |c| format!("{:.0}%", 100.0 * c / secs))
        };
        let mut out = format!(
            "{label}: {:.0} req/s, p50 {}, p99 {}, max {}, {} bytes/response, {} errors \
             [{} requests in {:.1} s; CPU warden {}, client {}]",
            self.latencies.len() as f64 / secs,
            ms(percentile(&self.latencies, 0.50)),
            ms(percentile(&self.latencies, 0.99)),
            ms(self.latencies.last().copied().unwrap_or(0)),
            self.body_bytes,
            self.errors,
            self.latencies.len(),
            secs,
            cpu(self.warden_cpu),
            cpu(self.client_cpu),
        );
        if !self.warden_threads.is_empty() {
            let threads: Vec<String> = self
                .warden_threads
                .iter()
                .map(|(name, tid, cpu)| format!("{name} ({tid}) {:.0}%", 100.0 * cpu / secs))
                .collect();
            out.push_str(&format!(
                "\n  busiest warden threads: {}",
                threads.join(", ")
            ));
        }
        if let Some(e) = &self.first_error {
            out.push_str(&format!("\n  first error: {e}"));
        }
        out
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU seconds (user + system) this process has used so far.
fn own_cpu_seconds() -> Option<f64> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}

/// `conns` threads, each on its own keep-alive connection, GET `path` back to back for
/// [`WARMUP`] + `duration`; only requests started after the warm-up are measured.
fn http_load(
    warden: &Warden,
    token: &str,
    path: &str,
    conns: usize,
    duration: Duration,
) -> LoadResult {
    let request = Arc::new(get_request(path, token));
    let barrier = Arc::new(Barrier::new(conns + 1));
    let addr = warden.addr;
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let request = Arc::clone(&request);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || load_thread(addr, &request, &barrier, duration))
        })
        .collect();

    // Every thread has connected (or failed to) once the barrier opens.
    barrier.wait();
    std::thread::sleep(WARMUP);
    let cpu_before = (warden.cpu_seconds(), own_cpu_seconds());
    let threads_before = warden.thread_cpu_seconds();
    let measured_from = Instant::now();
    std::thread::sleep(duration);
    let cpu_after = (warden.cpu_seconds(), own_cpu_seconds());
    let threads_after = warden.thread_cpu_seconds();
    let cpu_window = measured_from.elapsed();

    let mut result = LoadResult::default();
    for thread in threads {
        match thread.join() {
            Ok(part) => result.merge(part),
            Err(_) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| "a load thread panicked".to_owned());
            }
        }
    }
    result.latencies.sort_unstable();
    result.window = duration;
    let scale = duration.as_secs_f64() / cpu_window.as_secs_f64();
    result.warden_cpu = cpu_after.0.zip(cpu_before.0).map(|(a, b)| (a - b) * scale);
    result.client_cpu = cpu_after.1.zip(cpu_before.1).map(|(a, b)| (a - b) * scale);
    let mut busiest: Vec<(String, u32, f64)> = threads_after
        .into_iter()
        .map(|(tid, (name, after))| {
            let before = threads_before.get(&tid).map_or(0.0, |(_, b)| *b);
            (name, tid, (after - before) * scale)
        })
        .filter(|(_, _, cpu)| *cpu > 0.0)
        .collect();
    busiest.sort_by(|a, b| b.2.total_cmp(&a.2));
    busiest.truncate(4);
    result.warden_threads = busiest;
    result
}

fn load_thread(
    addr: SocketAddr,
    request: &[u8],
    barrier: &Barrier,
    duration: Duration,
) -> LoadResult {
    let mut result = LoadResult::default();
    let error = |result: &mut LoadResult, message: String| {
        result.errors += 1;
        result.first_error.get_or_insert(message);
    };
    let mut conn = HttpConn::connect(addr);
    barrier.wait();
    let measure_from = Instant::now() + WARMUP;
    let end = measure_from + duration;
    let mut body = Vec::with_capacity(512 * 1024);
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let measured = started >= measure_from;
        let c = match conn.as_mut() {
            Ok(c) => c,
            Err(e) => {
                if measured {
                    error(&mut result, format!("connect: {e}"));
                }
                std::thread::sleep(Duration::from_millis(10));
                conn = HttpConn::connect(addr);
                continue;
            }
        };
        match c.request(request, &mut body) {
            Ok((status, close)) => {
                let took = started.elapsed();
                if measured {
                    if status == 200 {
                        result.latencies.push(took.as_nanos() as u64);
                        result.body_bytes = result.body_bytes.max(body.len());
                    } else {
                        error(
                            &mut result,
                            format!(
                                "status {status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            ),
                        );
                    }
                }
                if close {
                    conn = HttpConn::connect(addr);
                }
            }
            Err(e) => {
                if measured {
                    error(&mut result, format!("request: {e}"));
                }
                conn = HttpConn::connect(addr);
            }
        }
    }
    result
}

// ---------------------------------------------------------------------------------------
// Control socket.

/// `warmup` then `rounds` sequential round trips of `request` on one connection; the
/// measured ones in microseconds, and the client's own CPU time per round trip (encoding,
/// decoding, syscalls) in microseconds.
fn socket_round_trips(
    socket: &Path,
    request: Request,
    warmup: usize,
    rounds: usize,
) -> Result<(Vec<u64>, Option<u64>), String> {
    let mut client = Client::connect_socket(socket).map_err(|e| e.to_string())?;
    let mut micros = Vec::with_capacity(rounds);
    let mut cpu_from = None;
    for i in 0..warmup + rounds {
        if i == warmup {
            cpu_from = thread_cpu_seconds();
        }
        let started = Instant::now();
        let answer = client.ask(request.clone());
        let took = started.elapsed();
        match answer {
            Ok(Ok(Response::Actor(_) | Response::Health(_) | Response::Actors(_))) => {}
            Ok(Ok(other)) => return Err(format!("unexpected answer {other:?}")),
            Ok(Err(failure)) => return Err(format!("{:?}: {failure}", failure.kind)),
            Err(e) => return Err(e.to_string()),
        }
        if i >= warmup {
            micros.push(took.as_micros() as u64);
        }
    }
    let client_cpu_micros = thread_cpu_seconds()
        .zip(cpu_from)
        .map(|(after, before)| ((after - before) * 1e6 / rounds as f64) as u64);
    Ok((micros, client_cpu_micros))
}

/// CPU seconds (user + system) the calling thread has used so far.
fn thread_cpu_seconds() -> Option<f64> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}
