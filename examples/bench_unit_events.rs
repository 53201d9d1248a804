//! Benchmark: how long a systemd unit's state change on the bus takes to show in
//! `GET /api/v1/events` (goal: <= 100 ms).
//!
//! A real `warden up` drives one `backend = "systemd"` unit of the stand-in
//! `org.freedesktop.systemd1` (examples/fake_systemd.rs) on a private `dbus-daemon`. Each
//! round kills the unit's MainPID and times from the kill to the actor's state event
//! (`backoff`, pid null) on the events stream; the time includes the stand-in noticing
//! the exit and sending PropertiesChanged, so it is an upper bound for warden's part.
//! It prints the median and p99 of the rounds.
//!
//! It builds nothing: it runs `target/debug/warden` (or `$WARDEN_BIN`) and
//! `target/debug/examples/fake_systemd` (`cargo build --bin warden --example fake_systemd`).
//! `BENCH_ROUNDS` sets the number of rounds (default 50).

#[path = "../tests/support/systemd.rs"]
mod systemd;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("WARDEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/debug/warden"));
    let fake = root.join("target/debug/examples/fake_systemd");
    for b in [&bin, &fake] {
        if !b.is_file() {
            eprintln!(
                "bench_unit_events: no {}: cargo build --bin warden --example fake_systemd",
                b.display()
            );
            std::process::exit(2);
        }
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    if let Err(e) = run(&bin, &fake, rounds) {
        eprintln!("bench_unit_events: {e}");
        std::process::exit(1);
    }
}

fn run(bin: &Path, fake: &Path, rounds: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bus = systemd::FakeSystemd::start(dir.path(), fake);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[service]]\nname = \"web\"\nbackend = \"systemd\"\nunit = \"web.service\"\n\
             restart = {{ backoff = {{ initial = \"20ms\", jitter = 0.0 }}, reset_after = \"10ms\", \
             intensity = {{ max = 100000, within = \"1s\" }} }}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut warden = Command::new(bin)
        .args(["up", "-c"])
        .arg(&config)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn warden: {e}"))?;
    let result = measure(dir.path(), port, rounds);
    let _ = Command::new("kill").arg(warden.id().to_string()).status();
    let _ = warden.wait();
    let mut times = result?;
    times.sort_by(f64::total_cmp);
    let pick = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "unit state change on the bus -> /api/v1/events: {} rounds, median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        pick(0.5),
        pick(0.99),
        times[times.len() - 1]
    );
    Ok(())
}

fn measure(dir: &Path, port: u16, rounds: usize) -> Result<Vec<f64>, String> {
    let token_file = dir.join("state/admin.token");
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(&token_file) {
            if !t.trim().is_empty() {
                break t.trim().to_owned();
            }
        }
        if Instant::now() > deadline {
            return Err("no admin token".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut events = Events::open(port, &token)?;
    let mut times = Vec::new();
    let mut pid = events
        .wait(|e| e.state == "running" && e.pid.is_some())?
        .pid;
    for _ in 0..rounds {
        let Some(p) = pid else { break };
        let t0 = Instant::now();
        let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
        events.wait(|e| e.state != "running" && e.pid.is_none())?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        pid = events
            .wait(|e| e.state == "running" && e.pid.is_some())?
            .pid;
    }
    if times.is_empty() {
        return Err("no round completed".into());
    }
    Ok(times)
}

struct Event {
    state: String,
    pid: Option<u64>,
}

/// The events stream, read as raw chunked text; yields `/web`'s state events in order.
struct Events {
    stream: TcpStream,
    buf: String,
}

impl Events {
    fn open(port: u16, token: &str) -> Result<Events, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        Ok(Events {
            stream,
            buf: String::new(),
        })
    }

    /// Waits (10 s at most) for the next `/web` event that `pick` accepts.
    fn wait(&mut self, pick: impl Fn(&Event) -> bool) -> Result<Event, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while let Some(at) = self.buf.find("data:") {
                let rest = &self.buf[at + 5..];
                let Some(end) = rest.find('\n') else { break };
                let data = rest[..end].trim().to_owned();
                self.buf.drain(..at + 5 + end);
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
                    continue;
                };
                if v["path"] != "/web" {
                    continue;
                }
                let e = Event {
                    state: v["state"].as_str().unwrap_or("").to_owned(),
                    pid: v["pid"].as_u64(),
                };
                if pick(&e) {
                    return Ok(e);
                }
            }
            if Instant::now() > deadline {
                return Err("no matching event within 10 s".into());
            }
            let mut chunk = [0u8; 4096];
            if let Ok(n) = self.stream.read(&mut chunk) {
                if n == 0 {
                    return Err("events stream closed".into());
                }
                self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        }
    }
}
