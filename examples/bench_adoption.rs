//! Adoption time: `warden up` with N services (default 1,000) all running, then warden is
//! killed with SIGKILL and started again on the same state_dir; the figure is the time from
//! the second start until every service is `running` again (adopted: same pids, checked).
//! Rounds are repeated and the median printed.
//!
//! `cargo build --release && cargo run --release --example bench_adoption [-- N ROUNDS]`
//! (uses `target/release/warden`, or `$WARDEN_BIN`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warden::control::client::Client;
use warden::control::protocol::{Request, Response};
use warden::ActorState;

fn warden_bin() -> PathBuf {
    std::env::var_os("WARDEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/warden"))
}

fn start(config: &Path, log: &Path) -> Child {
    Command::new(warden_bin())
        .arg("up")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start warden (cargo build --release first)")
}

/// Polls the control socket until every actor runs; returns their pids.
fn all_running(socket: &Path, n: usize, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut client = None;
    while Instant::now() < deadline {
        if client.is_none() {
            client = Client::connect_socket(socket).ok();
        }
        if let Some(c) = client.as_mut() {
            match c.ask(Request::Status) {
                Ok(Ok(Response::Actors(actors))) => {
                    if actors.len() == n
                        && actors.iter().all(|a| a.info.state == ActorState::Running)
                    {
                        let mut pids: Vec<u32> = actors.iter().filter_map(|a| a.info.pid).collect();
                        pids.sort_unstable();
                        return pids;
                    }
                }
                _ => client = None,
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("not all {n} services running within {timeout:?}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    if !warden_bin().exists() {
        eprintln!(
            "no {}: run `cargo build --release` first",
            warden_bin().display()
        );
        std::process::exit(2);
    }
    let dir = std::env::temp_dir().join(format!("warden-bench-adoption-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut toml = format!("state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[[service]]\nname = \"s{i:04}\"\ncommand = [\"sleep\", \"1000000\"]\n"
        ));
    }
    let config = dir.join("warden.toml");
    std::fs::write(&config, toml).expect("config");
    let socket = dir.join("state/control.sock");

    let mut warden = start(&config, &dir.join("first.log"));
    let pids = all_running(&socket, n, Duration::from_secs(60));
    let mut times = Vec::new();
    for round in 0..rounds {
        let _ = warden.kill();
        let _ = warden.wait();
        let t0 = Instant::now();
        warden = start(&config, &dir.join(format!("round{round}.log")));
        let adopted = all_running(&socket, n, Duration::from_secs(60));
        let took = t0.elapsed();
        assert_eq!(
            adopted, pids,
            "round {round}: pids changed: adoption started new processes"
        );
        times.push(took.as_secs_f64());
        println!(
            "round {round}: {n} services adopted and running in {:.3} s",
            took.as_secs_f64()
        );
    }
    times.sort_by(f64::total_cmp);
    println!(
        "adoption after kill -9: {n} services running again in {:.3} s (median of {rounds}; same pids)",
        times[rounds / 2]
    );
    let _ = Command::new("kill").arg(warden.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && warden.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
