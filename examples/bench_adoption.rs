//! Adoption time: `warden up` with N services (default 1,000) all running, then warden is
//! killed with SIGKILL and started again on the same state_dir; the figure is the time from
//! the second start until every service is `running` again (adopted: same pids, checked).
//! Rounds are repeated and the median printed.
//!
//! `cargo build --release && cargo run --release --example bench_adoption [-- N ROUNDS]`
//! (uses `target/release/warden`, or `$WARDEN_BIN`).

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/sleep_tree.rs"]
mod sleep_tree;
use sleep_tree::{all_running, warden_bin, write_sleep_tree};

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
    let (config, _port) = write_sleep_tree(&dir, n);
    let socket = dir.join("state/control.sock");

    let mut warden = sleep_tree::start_warden(&config, &dir.join("first.log"));
    let pids = all_running(&socket, n, Duration::from_secs(60));
    let mut times = Vec::new();
    for round in 0..rounds {
        let _ = warden.kill();
        let _ = warden.wait();
        let t0 = Instant::now();
        warden = sleep_tree::start_warden(&config, &dir.join(format!("round{round}.log")));
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
