//! Benchmark of "nothing blocks supervision" for child output: the restart latency of a
//! quiet crash-looping service, alone, then while other services flood their logs at full
//! speed (`yes` with a 200-byte line, GB/s), in the same tree.
//!
//! Restart latency is measured as in `bench_supervision`: the quiet service is SIGKILLed;
//! time until its supervisor has spawned the replacement (the `running` event with a new
//! pid). Backoff 0; one restart in flight at a time.
//!
//! `cargo run --release --example bench_flood [-- KILLS FLOODERS]` (defaults 300 and 1).
//! Prints p50/p99 of each phase (medians of 3 rounds) and the flood/quiet ratios; the goal
//! is p99(flood) <= 2x p99(quiet). The machine is shared and noisy: run it several times.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warden::embed::{service_child, RunningTree};
use warden::{
    ActorState, BackoffConfig, ChildSpec, Intensity, LogSpec, Output, ServiceSpec, Strategy,
    SupervisorSpec,
};

const ROUNDS: usize = 3;

/// The tree: the quiet service `/quiet` (a sleeper, restarted at once when killed) and
/// `flooders` services `/flood<i>` running `yes` into `dir/flood<i>.log` (rotated at 64 MiB,
/// one rotated file kept).
fn spec(dir: &Path, flooders: usize) -> SupervisorSpec {
    let restart_at_once = |child: ChildSpec| {
        child
            .backoff(BackoffConfig {
                initial: Duration::ZERO,
                max: Duration::ZERO,
                multiplier: 1.0,
                jitter: 0.0,
            })
            .intensity(Intensity {
                max: u32::MAX,
                within: Duration::from_secs(1),
            })
    };
    let quiet = ServiceSpec::new(["sleep", "1000000"]).expect("command");
    let mut children = vec![restart_at_once(
        service_child("quiet", quiet).expect("name"),
    )];
    for i in 0..flooders {
        let mut flood = ServiceSpec::new(["yes".to_owned(), "y".repeat(200)]).expect("command");
        flood.output = Output::Log(LogSpec {
            path: flood_log(dir, i),
            max_bytes: 64 << 20,
            keep: 1,
        });
        children.push(restart_at_once(
            service_child(&format!("flood{i}"), flood).expect("name"),
        ));
    }
    SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: None,
        children,
    }
}

fn flood_log(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("flood{i}.log"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Restart latencies (ms, sorted) of `/quiet` over `kills` kills, with `flooders` floods
/// running beside it.
async fn restart_latency(dir: &Path, kills: usize, flooders: usize) -> Vec<f64> {
    let tree = RunningTree::start(&spec(dir, flooders));
    assert!(
        tree.ready(Duration::from_secs(10)).await,
        "children did not start"
    );
    // Measure only once every flood is writing.
    let t0 = Instant::now();
    while (0..flooders)
        .any(|i| std::fs::metadata(flood_log(dir, i)).map_or(true, |m| m.len() < (8 << 20)))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the floods did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut events = tree.events();
    let mut samples = Vec::with_capacity(kills);
    for _ in 0..kills {
        let old = tree.get("/quiet").and_then(|v| v.info.pid).expect("pid");
        let t0 = Instant::now();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill");
        loop {
            let ev = events.recv().await.expect("event bus");
            if ev.path.as_str() == "/quiet"
                && ev.state == ActorState::Running
                && ev.pid != Some(old)
            {
                samples.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    tree.shutdown().await;
    samples.sort_by(f64::total_cmp);
    samples
}

/// Median p50 and median p99 over [`ROUNDS`] rounds.
async fn phase(dir: &Path, kills: usize, flooders: usize) -> (f64, f64) {
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for _ in 0..ROUNDS {
        let s = restart_latency(dir, kills, flooders).await;
        p50s.push(percentile(&s, 0.5));
        p99s.push(percentile(&s, 0.99));
        for i in 0..flooders {
            let _ = std::fs::remove_file(flood_log(dir, i));
            let _ = std::fs::remove_file(dir.join(format!("flood{i}.log.1")));
        }
    }
    p50s.sort_by(f64::total_cmp);
    p99s.sort_by(f64::total_cmp);
    (p50s[ROUNDS / 2], p99s[ROUNDS / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kills: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let flooders: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("warden-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    actix::System::new().block_on(async {
        let (q50, q99) = phase(&dir, kills, 0).await;
        let (f50, f99) = phase(&dir, kills, flooders).await;
        println!(
            "restart latency (kill -> replacement spawned), {kills} kills x {ROUNDS} rounds, medians of rounds:"
        );
        println!("  quiet:                      p50 {q50:.3} ms, p99 {q99:.3} ms");
        println!("  beside {flooders} flooding child(ren): p50 {f50:.3} ms, p99 {f99:.3} ms");
        println!(
            "  ratio flood/quiet:          p50 {:.2}x, p99 {:.2}x (goal: p99 <= 2x)",
            f50 / q50,
            f99 / q99
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
