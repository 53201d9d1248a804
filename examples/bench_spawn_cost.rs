//! The bare cost of one spawn on this machine, from a plain `std::process::Command` loop
//! (no warden, no async runtime): the floor under every restart warden does. For each of N
//! spawns of a child that exits at once: the time inside `spawn()` (fork/exec through
//! posix_spawn or clone+exec, until the exec succeeded) and the time until the child is
//! reaped. Run as warden spawns: own process group, stdin from /dev/null, output to a
//! pipe-less /dev/null.
//!
//! `cargo run --release --example bench_spawn_cost [-- N]` (default 1,000). The child is
//! `$BENCH_CHILD crasher /dev/null x 0` when BENCH_CHILD names the static `bench-child` of
//! `benches/peers` (built by `benches/peers/run.sh` into `target/bench-peers/`), else
//! `/bin/true` (dynamically linked: its loader adds to the time until reaped).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000)
        .max(1);
    let (program, args): (String, Vec<&str>) = match std::env::var("BENCH_CHILD") {
        Ok(bin) => (bin, vec!["crasher", "/dev/null", "x", "0"]),
        Err(_) => ("/bin/true".to_owned(), vec![]),
    };
    let mut in_spawn = Vec::with_capacity(n);
    let mut to_reaped = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let t0 = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!("cannot spawn {program}: {e}");
                std::process::exit(1);
            }
        };
        let spawned = t0.elapsed();
        // The exit status does not matter (bench-child's crasher exits 1).
        match child.wait() {
            Ok(_) => {}
            Err(e) => {
                eprintln!("cannot wait for {program}: {e}");
                std::process::exit(1);
            }
        }
        in_spawn.push(spawned.as_secs_f64() * 1e3);
        to_reaped.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    in_spawn.sort_by(f64::total_cmp);
    to_reaped.sort_by(f64::total_cmp);
    println!(
        "{n} spawns of {program}: spawn() returns in p50 {:.3} ms, p99 {:.3} ms; spawn until reaped p50 {:.3} ms, p99 {:.3} ms",
        percentile(&in_spawn, 0.5),
        percentile(&in_spawn, 0.99),
        percentile(&to_reaped, 0.5),
        percentile(&to_reaped, 0.99)
    );
}
