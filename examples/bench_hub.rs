//! Benchmark of hub and spokes, against real `warden up` processes on loopback:
//!
//! - verb round trip hub API -> spoke -> reply: a spoke warden with N_ACTORS services
//!   (`sleep 1000000`) joins a hub; over one keep-alive connection, 2,000 sequential
//!   `GET /api/v1/spokes/edge/actors/s0000` (after 200 warm-up) and 200 of the whole
//!   `.../actors` listing; printed p50 / p99 / max, beside the spoke's own API for the
//!   same requests (the relay's cost is the difference);
//! - SPOKES simulated spokes (tasks of one event loop on one thread, speaking the
//!   protocol by hand): the time for all of them to enroll (each with its own token, all
//!   at once), the hub's RSS with all connected;
//! - reconnect storm: the hub is killed with SIGKILL and started again; each simulated
//!   spoke reconnects with its credential after a jittered backoff (200 ms doubling,
//!   +-50 %, as the link does); printed: the time from the new hub's first answer until
//!   every spoke is connected again, and `/healthz` p50 / p99 / max meanwhile, asked
//!   over one keep-alive connection each by four probers at once: of the hub and of an
//!   idle warden beside it (same HTTP server, no spokes: the machine's own noise), each
//!   from a `SCHED_FIFO` thread (runs as soon as its answer arrives: the server's
//!   answer time as a client sees it; the goal's figure) and from a normal one (adds
//!   the prober's own wait for a core);
//!
//! The spokes are one event loop, not a thread each: 1,000 threads woken together on 2
//! cores kept the hub's threads waiting for a core (summed over its threads, 2-4x the
//! CPU they used), and the storm's `/healthz` p99 measured that (9-15 ms against ~1 ms
//! with the event loop, same hub binary, same storm length and hub CPU). 1,000 real
//! spokes run on 1,000 other machines. `BENCH_HUB_DEBUG=1` prints each hub thread's CPU
//! and run-queue wait during the storm and the slow answers; `BENCH_HUB_PERF=FILE`
//! records the restarted hub with `perf` until every spoke is back.
//! - revocation: `DELETE /api/v1/spokes/{name}` on 20 connected simulated spokes, the
//!   time from sending the DELETE until the spoke sees its socket closed (seen by a
//!   thread of its own: the DELETE's answer, after a durable write, is not waited for).
//!
//! It builds nothing: it runs `target/release/warden` (or `$WARDEN_BIN`).
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_hub [-- N_ACTORS SPOKES]     # 1000 1000
//! cargo run --release --example bench_hub -- 0 1000    # no verb round trip: spokes only
//! ```

#[path = "../tests/support/ws.rs"]
#[allow(dead_code)]
mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_actors::link::protocol::{self, Auth, HubFrame, SpokeFrame};

const CONNECT: &str = "/api/v1/hub/connect";

fn main() {
    let mut args = std::env::args().skip(1);
    let actors: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let spokes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let bin = match std::env::var_os("WARDEN_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/warden"),
    };
    if !bin.is_file() {
        eprintln!(
            "bench_hub: no warden binary at {}: cargo build --release",
            bin.display()
        );
        std::process::exit(2);
    }
    raise_nofile();
    if let Err(e) = run(&bin, actors, spokes) {
        eprintln!("bench_hub: {e}");
        std::process::exit(1);
    }
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Warden {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Warden {
    fn start(bin: &Path, dir: &Path, body: &str) -> Result<Warden, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let config = dir.join("warden.toml");
        std::fs::write(
            &config,
            format!("state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n{body}"),
        )
        .map_err(|e| e.to_string())?;
        let child = spawn(bin, &config, dir)?;
        let w = Warden {
            child,
            dir: dir.to_owned(),
            config,
            port,
            bin: bin.to_owned(),
        };
        w.wait_healthy()?;
        Ok(w)
    }

    fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if request(self.port, "GET", "/healthz", None).is_ok_and(|(s, _)| s == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err("warden did not answer /healthz within 30 s".into())
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/admin.token"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        request(self.port, "GET", path, Some(&self.token()))
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Per thread (by name): CPU time, and time spent runnable but waiting for a core,
    /// so far (`/proc/PID/task/TID/schedstat`).
    fn threads(&self) -> std::collections::BTreeMap<String, (Duration, Duration)> {
        let mut out = std::collections::BTreeMap::<String, (Duration, Duration)>::new();
        let dir = format!("/proc/{}/task", self.child.id());
        for task in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            let mut fields = stat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            let (cpu, wait) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
            let entry = out.entry(name.trim().to_owned()).or_default();
            entry.0 += Duration::from_nanos(cpu);
            entry.1 += Duration::from_nanos(wait);
        }
        out
    }

    /// CPU time (user + system) the process used so far.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|t| t.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        // /proc counts in USER_HZ, which is 100 on Linux whatever the kernel's HZ.
        Duration::from_millis(ticks * 10)
    }

    fn kill9_and_restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.bin, &self.config, &self.dir)?;
        Ok(())
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &Path, config: &Path, dir: &Path) -> Result<Child, String> {
    Command::new(bin)
        .arg("up")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("warden.stderr"))
                .map_err(|e| e.to_string())?,
        )
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// One request on a fresh connection.
fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let mut conn = Conn::open(port)?;
    conn.call(method, path, token, None)
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Result<Conn, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::new(s),
        })
    }

    fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let e = |e: std::io::Error| e.to_string();
        self.reader.get_mut().write_all(req.as_bytes()).map_err(e)?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(e)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).map_err(e)?;
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut out = vec![0u8; length];
        self.reader.read_exact(&mut out).map_err(e)?;
        Ok((status, out))
    }
}

/// One `/healthz` on `conn`: how long it took; then a pause of 0.5 ms (the pace of the
/// probe).
fn healthz_once(conn: &mut Conn) -> Result<Duration, String> {
    let t = Instant::now();
    let (status, _) = conn.call("GET", "/healthz", None, None)?;
    let took = t.elapsed();
    if status != 200 {
        return Err(format!("/healthz {status}"));
    }
    std::thread::sleep(Duration::from_micros(500));
    Ok(took)
}

/// How a prober thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    /// Like every other thread of the machine (and the 1,000 simulated spokes'): what it
    /// measures includes its own wait for a core.
    Normal,
    /// `SCHED_FIFO`: it runs as soon as its answer arrives, so what it measures is the
    /// server's answer time (plus loopback), not its own wait behind the spokes' threads.
    RealTime,
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Priority::Normal => "normal",
            Priority::RealTime => "real-time",
        })
    }
}

/// One `/healthz` answer: when it was asked and how long it took.
struct Sample {
    at: Instant,
    took: Duration,
}

/// A thread that asks `/healthz` over one keep-alive connection, at the pace of
/// [`healthz_once`], until told to stop.
struct Prober(std::thread::JoinHandle<Result<Vec<Sample>, String>>);

impl Prober {
    fn start(port: u16, priority: Priority, stop: Arc<std::sync::atomic::AtomicBool>) -> Prober {
        Prober(std::thread::spawn(move || {
            if priority == Priority::RealTime {
                let param = libc::sched_param { sched_priority: 50 };
                // SAFETY: sets the calling thread's policy; `param` outlives the call.
                if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
                    // Without the privilege it measures as the normal prober does.
                    eprintln!(
                        "note: the real-time prober runs at normal priority: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            let mut conn = Conn::open(port)?;
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let at = Instant::now();
                samples.push(Sample {
                    at,
                    took: healthz_once(&mut conn)?,
                });
            }
            Ok(samples)
        }))
    }

    fn join(self) -> Result<Vec<Sample>, String> {
        self.0.join().map_err(|_| "a prober panicked".to_owned())?
    }
}

/// CPU time (user + system) this process used so far.
fn own_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    usage.map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(
                tv.tv_sec().max(0) as u64,
                (tv.tv_usec().max(0) as u32) * 1000,
            )
        };
        t(u.user_time()) + t(u.system_time())
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (n={})",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

fn timed(
    conn: &mut Conn,
    path: &str,
    token: &str,
    warmup: usize,
    rounds: usize,
) -> Result<Vec<Duration>, String> {
    let mut out = Vec::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let t = Instant::now();
        let (status, body) = conn.call("GET", path, Some(token), None)?;
        if status != 200 {
            return Err(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if i >= warmup {
            out.push(t.elapsed());
        }
    }
    Ok(out)
}

fn create_token(hub: &Warden, conn: &mut Conn, name: &str) -> Result<String, String> {
    let body = format!(r#"{{"name":"{name}","ttl":"1h"}}"#);
    let (status, out) = conn.call(
        "POST",
        "/api/v1/hub/tokens",
        Some(&hub.token()),
        Some(&body),
    )?;
    if status != 201 {
        return Err(format!("token: {status} {}", String::from_utf8_lossy(&out)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    Ok(v["token"].as_str().unwrap_or_default().to_owned())
}

fn hello(name: &str, auth: Auth) -> Vec<u8> {
    protocol::encode(&SpokeFrame::Hello {
        version: protocol::PROTOCOL_VERSION,
        name: name.to_owned(),
        auth,
    })
}

/// Connects and says hello; the credential (new, or the one presented) if welcomed.
fn enroll(port: u16, name: &str, auth: Auth) -> Option<(ws::Ws, Option<String>)> {
    let mut socket = ws::Ws::connect(port, CONNECT).ok()?;
    socket.send(&hello(name, auth)).ok()?;
    let answer = socket.recv_binary()?;
    match protocol::decode::<HubFrame>(&answer, usize::MAX).ok()? {
        HubFrame::Welcome { credential } => Some((socket, credential)),
        _ => None,
    }
}

/// The simulated spokes: all of them on one thread, as tasks of one event loop. (A
/// thread per spoke measured the benchmark more than the hub: 1,000 threads woken at
/// once on 2 cores kept the hub's own threads waiting for a core.)
mod sim {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use warden_actors::link::protocol::{self, Auth, HubFrame};

    /// Counters shared with the benchmark's main thread.
    #[derive(Default)]
    pub struct Progress {
        pub enrolled: AtomicUsize,
        pub reconnected: AtomicUsize,
        pub stop: AtomicBool,
    }

    /// Runs `tokens.len()` spokes (`sim0000`, ...) against the hub on `port` until
    /// `progress.stop`.
    pub fn run(port: u16, tokens: Vec<String>, progress: Arc<Progress>) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let spokes: Vec<_> = tokens
                .into_iter()
                .enumerate()
                .map(|(i, token)| {
                    tokio::task::spawn_local(spoke(
                        port,
                        format!("sim{i:04}"),
                        token,
                        progress.clone(),
                    ))
                })
                .collect();
            for s in spokes {
                let _ = s.await;
            }
        });
        Ok(())
    }

    async fn connect(port: u16) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            super::CONNECT
        );
        stream.write_all(req.as_bytes()).await?;
        // The hub says nothing after its 101 until the hello: reading in chunks cannot
        // take a frame's bytes.
        let mut head = Vec::new();
        let mut chunk = [0u8; 512];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed during the handshake"));
            }
            head.extend_from_slice(&chunk[..n]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(std::io::Error::other("no upgrade"));
        }
        Ok(stream)
    }

    /// One frame: its opcode and payload.
    async fn recv(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        stream.read_exact(&mut h).await?;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            len = u64::from(stream.read_u16().await?);
        } else if len == 127 {
            len = stream.read_u64().await?;
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
        stream.read_exact(&mut payload).await?;
        Ok((h[0] & 0x0f, payload))
    }

    /// Connects and says hello; the socket and the credential (new, or none when one was
    /// presented) if welcomed.
    async fn enroll(port: u16, name: &str, auth: Auth) -> Option<(TcpStream, Option<String>)> {
        let mut stream = connect(port).await.ok()?;
        stream
            .write_all(&super::ws::frame(0x2, &super::hello(name, auth)))
            .await
            .ok()?;
        loop {
            match recv(&mut stream).await.ok()? {
                (0x2, answer) => {
                    return match protocol::decode::<HubFrame>(&answer, usize::MAX).ok()? {
                        HubFrame::Welcome { credential } => Some((stream, credential)),
                        _ => None,
                    }
                }
                (0x9, ping) => stream.write_all(&super::ws::frame(0xA, &ping)).await.ok()?,
                (0x8, _) => return None,
                _ => {}
            }
        }
    }

    /// A simulated spoke's life: enroll, serve (answer pings) until the hub goes away,
    /// then reconnect with the credential after jittered backoff (200 ms doubling,
    /// +-50 %, as the link does), until `stop`.
    async fn spoke(port: u16, name: String, token: String, progress: Arc<Progress>) {
        let Some((mut socket, Some(credential))) = enroll(port, &name, Auth::Join { token }).await
        else {
            eprintln!("{name}: enrollment failed");
            return;
        };
        progress.enrolled.fetch_add(1, Ordering::SeqCst);
        let mut seed = name.bytes().fold(0x9e3779b97f4a7c15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        loop {
            // Serve until the connection ends.
            loop {
                if progress.stop.load(Ordering::Relaxed) {
                    return;
                }
                match tokio::time::timeout(Duration::from_millis(500), recv(&mut socket)).await {
                    Err(_) => {}
                    Ok(Ok((0x9, ping))) => {
                        let _ = socket.write_all(&super::ws::frame(0xA, &ping)).await;
                    }
                    Ok(Ok((0x8, _))) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                }
            }
            let mut delay = 200.0f64;
            loop {
                if progress.stop.load(Ordering::Relaxed) {
                    return;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let jitter = 0.5 + (seed % 1000) as f64 / 1000.0; // 0.5 .. 1.5
                tokio::time::sleep(Duration::from_millis((delay * jitter) as u64)).await;
                let auth = Auth::Credential {
                    credential: credential.clone(),
                };
                if let Some((s, _)) = enroll(port, &name, auth).await {
                    socket = s;
                    progress.reconnected.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                delay = (delay * 2.0).min(5000.0);
            }
        }
    }
}

/// The verb round trip, hub API -> spoke -> reply, beside the spoke's own API.
fn relay(
    bin: &Path,
    root: &Path,
    hub: &Warden,
    conn: &mut Conn,
    actors: usize,
) -> Result<(), String> {
    let join = create_token(hub, conn, "edge")?;
    let spoke_dir = root.join("spoke");
    std::fs::create_dir_all(&spoke_dir).map_err(|e| e.to_string())?;
    std::fs::write(spoke_dir.join("join.token"), &join).map_err(|e| e.to_string())?;
    let mut body = format!(
        "[spoke]\nhub = \"ws://127.0.0.1:{}{CONNECT}\"\nname = \"edge\"\njoin_token_file = \"join.token\"\n",
        hub.port
    );
    for i in 0..actors {
        body.push_str(&format!(
            "[[service]]\nname = \"s{i:04}\"\ncommand = [\"sleep\", \"1000000\"]\n"
        ));
    }
    let spoke = Warden::start(bin, &spoke_dir, &body)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, out) = spoke.get("/api/v1/actors")?;
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
        let running = v
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| x["state"] == "running").count());
        if running == actors + 1 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {running} of {} actors running", actors + 1));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "hub + spoke with {actors} services (+ /_hub) on loopback, {}",
        bin.display()
    );

    let token = hub.token();
    let spoke_token = spoke.token();
    let mut relayed = Conn::open(hub.port)?;
    let mut direct = Conn::open(spoke.port)?;
    let one = timed(
        &mut relayed,
        "/api/v1/spokes/edge/actors/s0000",
        &token,
        200,
        2000,
    )?;
    let one_direct = timed(&mut direct, "/api/v1/actors/s0000", &spoke_token, 200, 2000)?;
    let all = timed(&mut relayed, "/api/v1/spokes/edge/actors", &token, 20, 200)?;
    let all_direct = timed(&mut direct, "/api/v1/actors", &spoke_token, 20, 200)?;
    println!("actor   via hub   {}", percentiles(one));
    println!("actor   direct    {}", percentiles(one_direct));
    println!("actors  via hub   {}", percentiles(all));
    println!("actors  direct    {}", percentiles(all_direct));
    drop(spoke);
    Ok(())
}

fn run(bin: &Path, actors: usize, spokes: usize) -> Result<(), String> {
    let mut root = tempfile::Builder::new()
        .prefix("warden-bench-hub-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    if std::env::var_os("BENCH_HUB_DEBUG").is_some() {
        // The wardens' logs (warden.stderr) and the hub's store outlive the run.
        eprintln!("bench_hub: keeping {}", root.path().display());
        root.disable_cleanup(true);
    }
    let mut hub = Warden::start(bin, &root.path().join("hub"), "[hub]\nenabled = true\n")?;
    // The same HTTP server with nothing to do, probed beside the hub during the storm.
    let idle_server = Warden::start(bin, &root.path().join("idle"), "")?;
    let mut conn = Conn::open(hub.port)?;
    if actors > 0 {
        relay(bin, root.path(), &hub, &mut conn, actors)?;
    }

    // Simulated spokes.
    let mut tokens = Vec::with_capacity(spokes);
    for i in 0..spokes {
        tokens.push(create_token(&hub, &mut conn, &format!("sim{i:04}"))?);
    }
    let rss_before = hub.rss_kib();
    let progress = Arc::new(sim::Progress::default());
    let simulated = {
        let (port, progress) = (hub.port, progress.clone());
        std::thread::spawn(move || sim::run(port, tokens, progress))
    };
    let enrolled = &progress.enrolled;
    let reconnected = &progress.reconnected;
    let t0 = Instant::now();
    while enrolled.load(Ordering::SeqCst) < spokes {
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "only {} of {spokes} enrolled in 60 s",
                enrolled.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "{spokes} simulated spokes enrolled in {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "hub RSS: {:.1} MiB with {spokes} spokes connected ({:.1} MiB before)",
        hub.rss_kib() as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );

    // /healthz with every spoke connected and idle: the floor the storm is compared to
    // (on a busy machine this is mostly the scheduler's noise).
    let mut hc = Conn::open(hub.port)?;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(healthz_once(&mut hc)?);
    }
    println!("/healthz idle, all connected {}", percentiles(idle));

    // Reconnect storm.
    println!("load average before the storm: {}", load_average());
    let killed_at = Instant::now();
    hub.kill9_and_restart()?;
    hub.wait_healthy()?;
    // BENCH_HUB_PERF=FILE: `perf record` of the restarted hub until every spoke is back.
    let perf = std::env::var_os("BENCH_HUB_PERF").and_then(|file| {
        Command::new("perf")
            .args(["record", "-g", "-F", "4999", "-o"])
            .arg(file)
            .args(["-p", &hub.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    });
    let cpu_up = hub.cpu();
    let bench_cpu_up = own_cpu();
    let threads_up = hub.threads();
    let t_up = Instant::now();
    let back_at_first_answer = reconnected.load(Ordering::SeqCst);
    // The probers: the hub, and the idle warden beside it (same HTTP stack, no spokes),
    // each by a thread at the machine's normal priority and by one at a real-time one.
    let stop_probing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probers = [
        ("hub", hub.port, Priority::RealTime),
        ("hub", hub.port, Priority::Normal),
        ("idle", idle_server.port, Priority::RealTime),
        ("idle", idle_server.port, Priority::Normal),
    ]
    .map(|(what, port, priority)| {
        (
            what,
            priority,
            Prober::start(port, priority, stop_probing.clone()),
        )
    });
    while reconnected.load(Ordering::SeqCst) < spokes {
        if t_up.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "only {} of {spokes} reconnected in 60 s",
                reconnected.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let storm = t_up.elapsed();
    stop_probing.store(true, Ordering::SeqCst);
    if let Some(mut perf) = perf {
        let pid = nix::unistd::Pid::from_raw(perf.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = perf.wait();
    }
    stop_probing.store(true, Ordering::SeqCst);
    println!(
        "reconnect storm: the restarted hub answered {:.3} s after the SIGKILL ({back_at_first_answer} spokes back by then); all {spokes} reconnected {:.3} s after that",
        t_up.saturating_duration_since(killed_at).as_secs_f64(),
        storm.as_secs_f64()
    );
    for (what, priority, prober) in probers {
        let samples = prober.join()?;
        println!(
            "/healthz during the storm, {what:>4}, {:>9} prober {}",
            priority.to_string(),
            percentiles(samples.iter().map(|s| s.took).collect())
        );
        if std::env::var_os("BENCH_HUB_DEBUG").is_some() {
            let mut slow: Vec<_> = samples
                .iter()
                .filter(|s| s.took > Duration::from_millis(2))
                .collect();
            slow.sort_by_key(|s| s.at);
            for s in slow {
                eprintln!(
                    "  {what} {priority}: at +{:.1} ms took {:.3} ms",
                    s.at.saturating_duration_since(t_up).as_secs_f64() * 1e3,
                    s.took.as_secs_f64() * 1e3
                );
            }
        }
    }
    println!(
        "hub CPU during the storm: {:.3} s of {:.3} s",
        hub.cpu().saturating_sub(cpu_up).as_secs_f64(),
        storm.as_secs_f64()
    );
    println!(
        "this benchmark's CPU during the storm (spokes and probers): {:.3} s",
        own_cpu().saturating_sub(bench_cpu_up).as_secs_f64()
    );
    if std::env::var_os("BENCH_HUB_DEBUG").is_some() {
        for (name, (cpu, wait)) in hub.threads() {
            let (cpu0, wait0) = threads_up.get(&name).copied().unwrap_or_default();
            eprintln!(
                "  hub thread {name:<24} cpu {:>7.1} ms  waited for a core {:>7.1} ms",
                cpu.saturating_sub(cpu0).as_secs_f64() * 1e3,
                wait.saturating_sub(wait0).as_secs_f64() * 1e3
            );
        }
    }
    println!(
        "hub RSS after the storm: {:.1} MiB",
        hub.rss_kib() as f64 / 1024.0
    );
    progress.stop.store(true, Ordering::SeqCst);
    match simulated.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("simulated spokes: {e}")),
        Err(_) => return Err("the simulated spokes' thread panicked".into()),
    }

    // Revocation (on a connection to the restarted hub).
    let mut conn = Conn::open(hub.port)?;
    let mut closes = Vec::new();
    for i in 0..20 {
        let name = format!("rev{i:02}");
        let token = create_token(&hub, &mut conn, &name)?;
        let (mut socket, _) =
            enroll(hub.port, &name, Auth::Join { token }).ok_or("enroll for revocation")?;
        // The close is seen by a thread of its own, so the DELETE's own answer (which
        // follows a durable write of the store) is not counted.
        let watcher = std::thread::spawn(move || {
            let closed = socket.closed_within(Duration::from_secs(5));
            (closed, Instant::now())
        });
        // Measured once the enrollment has settled (its durable write done): 20 ms after
        // it, closes took ~20 ms; 50 ms after, well under 1 ms.
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let (status, _) = conn.call(
            "DELETE",
            &format!("/api/v1/spokes/{name}"),
            Some(&hub.token()),
            None,
        )?;
        if status != 204 {
            return Err(format!("DELETE: {status}"));
        }
        let answered = t.elapsed();
        let (closed, at) = watcher.join().map_err(|_| "watcher panicked")?;
        if std::env::var_os("BENCH_HUB_DEBUG").is_some() {
            eprintln!(
                "DELETE answered after {answered:?}, closed after {:?}",
                at.saturating_duration_since(t)
            );
        }
        if !closed {
            return Err("the revoked socket was not closed".into());
        }
        closes.push(at.saturating_duration_since(t));
    }
    println!(
        "revocation: DELETE -> socket closed {}",
        percentiles(closes)
    );
    Ok(())
}
