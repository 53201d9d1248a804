//! Self-upgrade in place: `warden up` with N services (default 1,000) all running, then
//! `POST /api/v1/admin/reexec`, ROUNDS times. Each round checks that every child kept its
//! pid (none restarted) and measures the admin API's unavailable window: a client asks
//! `GET /healthz` back to back (a fresh connection each time) and the window is the
//! longest time between two answers, around the exec. The median of the rounds is printed,
//! with the time until every service is `running` again in the new process.
//!
//! `cargo build --release && cargo run --release --example bench_reexec [-- N ROUNDS]`
//! (uses `target/release/warden`, or `$WARDEN_BIN`).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/sleep_tree.rs"]
mod sleep_tree;
use sleep_tree::{all_running, warden_bin, write_sleep_tree};

/// One HTTP/1.0 request on a fresh connection: the status code, or None.
fn request(port: u16, method: &str, path: &str, token: Option<&str>) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Asks `/healthz` back to back until `stop`; answers the longest time between two
/// answers (or from the start to the first one).
fn longest_gap(port: u16, stop: Arc<AtomicBool>) -> Duration {
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        if request(port, "GET", "/healthz", None) == Some(200) {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    longest
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    if !warden_bin().exists() {
        eprintln!(
            "no {}: run `cargo build --release` first",
            warden_bin().display()
        );
        std::process::exit(2);
    }
    let dir = std::env::temp_dir().join(format!("warden-bench-reexec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (config, port) = write_sleep_tree(&dir, n);
    let socket = dir.join("state/control.sock");
    let log = dir.join("warden.log");

    let mut warden: Child = sleep_tree::start_warden(&config, &log);
    let pids = all_running(&socket, n, Duration::from_secs(120));
    let token = std::fs::read_to_string(dir.join("state/admin.token")).expect("token");
    let token = token.trim();
    let mut windows = Vec::new();
    let mut settled = Vec::new();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let stop = stop.clone();
            std::thread::spawn(move || longest_gap(port, stop))
        };
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        let answer = request(port, "POST", "/api/v1/admin/reexec", Some(token));
        assert_eq!(answer, Some(200), "round {round}: reexec refused");
        let done = round + 1;
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("re-executed in place")
            .count()
            < done
        {
            assert!(Instant::now() < deadline, "round {round}: no reexec");
            std::thread::sleep(Duration::from_millis(2));
        }
        let adopted = all_running(&socket, n, Duration::from_secs(120));
        let took = t0.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        let window = poller.join().expect("poller");
        assert_eq!(adopted, pids, "round {round}: pids changed");
        assert!(
            warden.try_wait().ok().flatten().is_none(),
            "round {round}: warden exited"
        );
        println!(
            "round {round}: API unavailable {:.1} ms; {n} services adopted and running in {:.3} s (same pids)",
            window.as_secs_f64() * 1000.0,
            took.as_secs_f64()
        );
        windows.push(window.as_secs_f64() * 1000.0);
        settled.push(took.as_secs_f64());
    }
    windows.sort_by(f64::total_cmp);
    settled.sort_by(f64::total_cmp);
    println!(
        "reexec with {n} services: API unavailable {:.1} ms (median of {rounds}), every service running again in {:.3} s, every pid kept",
        windows[rounds / 2],
        settled[rounds / 2]
    );
    let _ = Command::new("kill").arg(warden.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && warden.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
