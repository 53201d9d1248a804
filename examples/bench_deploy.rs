//! Benchmark of deploys through the GitHub webhook, against a release `warden up`
//! (`cargo build --release && cargo run --release --example bench_deploy`):
//!
//! 1. the webhook's answer: 300 signed pushes one after another (a fresh connection each),
//!    p50 / p99 of the time to the whole 202 answer (goal: p99 <= 5 ms);
//! 2. the deploy's actor started: 10 rounds of one push on an idle service, the time from
//!    sending the push to the `event: state` of `/_deploy.api` `running` on
//!    `/api/v1/events` (goal: <= 50 ms), median and worst;
//! 3. 100 pushes within 1 s (10 ms apart): then one deploy runs and one waits, and once
//!    all is done the steps ran exactly twice (0 duplicate runs).

#[path = "support/sleep_tree.rs"]
mod sleep_tree;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "bench secret";

fn main() {
    let dir = std::env::temp_dir().join(format!("warden-bench-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret = dir.join("github.secret");
    std::fs::write(&secret, SECRET).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (config, port) = sleep_tree::write_sleep_tree(&dir, 0);
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml.push_str(
        "[webhooks]\ngithub_secret_file = \"github.secret\"\n\n\
         [[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1000000\"]\n\
         [service.deploy]\nrepo = \"acme/api\"\nsteps = [[\"/bin/sh\", \"-c\", \"echo $WARDEN_DEPLOY_COMMIT >> runs.log; if [ -e slow ]; then sleep 2; fi\"]]\n",
    );
    std::fs::write(&config, toml).expect("config");
    let mut warden = sleep_tree::start_warden(&config, &dir.join("warden.stderr"));
    let token = wait_token(&dir, port);
    sleep_tree::all_running(&dir.join("state/control.sock"), 1, Duration::from_secs(20));

    // 1. The webhook's answer, under a deploy that keeps running (latest wins).
    std::fs::write(dir.join("slow"), "").expect("slow");
    let mut answers = Vec::new();
    for k in 0..300 {
        let started = Instant::now();
        let status = push(port, &format!("a-{k}"), &format!("a{k}"));
        answers.push(started.elapsed());
        assert_eq!(status, 202, "push {k}");
    }
    answers.sort();
    let at = |q: f64| answers[((answers.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "webhook answered (202): p50 {:.2} ms, p99 {:.2} ms over {} pushes (goal p99 <= 5 ms)",
        ms(at(0.5)),
        ms(at(0.99)),
        answers.len()
    );
    wait_idle(port, &token);

    // 2. The deploy's actor started after the push was sent.
    let _ = std::fs::remove_file(dir.join("slow"));
    let events = subscribe(port, &token);
    let mut starts = Vec::new();
    for k in 0..10 {
        while events.try_recv().is_ok() {}
        let sent = Instant::now();
        assert_eq!(push(port, &format!("b-{k}"), &format!("b{k}")), 202);
        let deadline = sent + Duration::from_secs(10);
        loop {
            let (at, line) = events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the deploy actor's event");
            if line.contains("\"/_deploy.api\"") && line.contains("\"running\"") {
                starts.push(at - sent);
                break;
            }
        }
        wait_idle(port, &token);
    }
    starts.sort();
    println!(
        "deploy actor running after the push: median {:.1} ms, worst {:.1} ms over {} rounds (goal <= 50 ms)",
        ms(starts[starts.len() / 2]),
        ms(starts[starts.len() - 1]),
        starts.len()
    );

    // 3. 100 pushes in 1 s.
    std::fs::write(dir.join("slow"), "").expect("slow");
    let _ = std::fs::remove_file(dir.join("runs.log"));
    let begun = Instant::now();
    for k in 0..100u64 {
        let due = begun + Duration::from_millis(10 * k);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert_eq!(push(port, &format!("c-{k}"), &format!("c{k:03}")), 202);
    }
    let spent = begun.elapsed();
    let list = deploys(port, &token);
    let count = |state: &str| list.iter().filter(|d| d["state"] == state).count();
    let (running, pending) = (count("running"), count("pending"));
    let _ = std::fs::remove_file(dir.join("slow"));
    wait_idle(port, &token);
    let runs = std::fs::read_to_string(dir.join("runs.log")).unwrap_or_default();
    let lines: Vec<&str> = runs.lines().collect();
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    println!(
        "100 pushes in {:.2} s: {running} running + {pending} waiting; steps ran {} times ({}), {} duplicate runs",
        spent.as_secs_f64(),
        lines.len(),
        lines.join(", "),
        lines.len() - unique.len()
    );
    assert_eq!((running, pending), (1, 1));
    assert_eq!(lines.len(), 2);

    let _ = Command::new("kill").arg(warden.id().to_string()).status();
    let _ = warden.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn wait_token(dir: &Path, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(token) = std::fs::read_to_string(dir.join("state/admin.token")) {
            if request(port, "GET", "/healthz", &[], b"").0 == 200 {
                return token.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "warden did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on a fresh connection: (status, body).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Vec::new());
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| raw[at + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

fn push(port: u16, delivery: &str, commit: &str) -> u16 {
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "after": commit,
        "repository": { "full_name": "acme/api" },
    }))
    .expect("json");
    let signature = warden::admin::sign(SECRET.as_bytes(), &body);
    request(
        port,
        "POST",
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", &signature),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .0
}

fn deploys(port: u16, token: &str) -> Vec<serde_json::Value> {
    let auth = format!("Bearer {token}");
    let (_, body) = request(
        port,
        "GET",
        "/api/v1/actors/api/deploys",
        &[("Authorization", &auth)],
        b"",
    );
    serde_json::from_slice(&body).unwrap_or_default()
}

/// Waits until no deploy of `/api` runs or waits.
fn wait_idle(port: u16, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while deploys(port, token)
        .iter()
        .any(|d| d["state"] == "running" || d["state"] == "pending")
    {
        assert!(Instant::now() < deadline, "deploys did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines of `/api/v1/events`, each with when it was read.
fn subscribe(port: u16, token: &str) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("events");
    let head = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("events request");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}
