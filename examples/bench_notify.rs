//! Benchmark of the notifiers' promise that `publish` never blocks its caller: two
//! notifiers, one posting to a local receiver (answers 200 at once) and one to a black
//! hole (a listener that never accepts), so that its queue is full for the whole run.
//! 10,000 `publish` calls, 100 µs apart; printed: the call's p50 / p99 / max (median of
//! 5 runs), the events the receiver got within 0.5 s and those each queue dropped (10,000
//! events a second is far more than one HTTP post each can follow).
//!
//! ```text
//! cargo run --release --example bench_notify
//! ```

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_actors::notifier::{EventKinds, NotifierSpec, Notifiers, NotifyEvent, Platform};
use warden_supervisors::ActorPath;

const CALLS: usize = 10_000;
const RUNS: usize = 5;

/// A receiver answering 200 to every request; counts them.
fn receiver() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut data = Vec::new();
                let mut buf = [0u8; 16384];
                loop {
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            break;
                        }
                    }
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::Relaxed);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (url, count)
}

fn spec(name: &str, url: String) -> NotifierSpec {
    NotifierSpec {
        name: name.into(),
        platform: Platform::Webhook,
        url,
        events: EventKinds::ALL,
        timeout: Duration::from_secs(30),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let path = ActorPath::parse("/app/api").expect("path");
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut maxes = Vec::new();
    for run in 0..RUNS {
        let (url, received) = receiver();
        let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
        let hole_url = format!("http://{}/hook", hole.local_addr().expect("addr"));
        let notifiers = Notifiers::start(vec![spec("good", url), spec("hole", hole_url)])
            .expect("start the notifiers");
        let mut calls = Vec::with_capacity(CALLS);
        for id in 0..CALLS {
            let event = NotifyEvent::DeployFailed {
                path: path.clone(),
                id: id.to_string(),
                commit: Some("9fceb02".into()),
                step: "build".into(),
                reason: "exit code 101".into(),
                output_tail: "error: something went wrong\n".repeat(20),
            };
            let started = Instant::now();
            notifiers.publish(event);
            calls.push(started.elapsed());
            std::thread::sleep(Duration::from_micros(100));
        }
        calls.sort();
        let (p50, p99, max) = (
            percentile(&calls, 0.5),
            percentile(&calls, 0.99),
            calls[CALLS - 1],
        );
        std::thread::sleep(Duration::from_millis(500));
        let counts = notifiers.counts();
        println!(
            "run {run}: publish p50 {p50:?} p99 {p99:?} max {max:?}; receiver got {} (its queue dropped {}), black hole dropped {}",
            received.load(Ordering::Relaxed),
            counts[0].1.dropped,
            counts[1].1.dropped
        );
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(max);
    }
    p50s.sort();
    p99s.sort();
    maxes.sort();
    println!(
        "publish (median of {RUNS} runs of {CALLS} calls, one notifier black-holed): p50 {:?} p99 {:?} max {:?}",
        p50s[RUNS / 2],
        p99s[RUNS / 2],
        maxes[RUNS / 2]
    );
}
