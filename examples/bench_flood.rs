//! Benchmark of "nothing blocks supervision" for child output: the restart latency of a
//! quiet crash-looping service, alone, then while other services flood their logs at full
//! speed (`yes` with a 200-byte line, GB/s), in the same tree.
//!
//! Restart latency is measured as in `bench_supervision`: the quiet service is SIGKILLed;
//! time until its supervisor has spawned the replacement (the `running` event with a new
//! pid). Backoff 0; one restart in flight at a time.
//!
//! `cargo run --release --example bench_flood [-- KILLS FLOODERS PAIRS]` (defaults 1000, 1
//! and 5: a p99 of 1,000 samples is the 10th worst, of 300 the 3rd). The goal is p99(flood) <= 2x p99(quiet) on the same machine in the same run.
//!
//! Design (why the figures are fair to both sides):
//! - Every phase (one quiet or one flood measurement) runs in a fresh process of this
//!   example (`--phase quiet|flood`), with a fresh tree and its own temporary folder: no
//!   warm threads, caches or queues of one phase reach the next. Each phase process raises
//!   its supervision thread as `warden up` does ([`warden::priority`]; where it may not,
//!   both phases run without), starts its tree, discards [`WARMUP`] restarts, then times
//!   KILLS restarts; a flood phase measures only once every flood has written 8 MiB. A
//!   phase flushes the log threads, then deletes its folder before it exits.
//! - Phases come in PAIRS pairs, the order alternating (quiet then flood, flood then
//!   quiet), so a slow drift of the shared machine's load lands on both sides alike.
//! - After a flood phase the machine settles before the next phase: `syncfs`, then a wait
//!   until the kernel's dirty and writeback pages are back to what they were before the
//!   first phase (+16 MiB) and until a probe (the p50 of spawning and reaping `true`) is
//!   back within 1.25x (+0.1 ms) of its value before the first phase, each bounded, with
//!   what it waited printed. A quiet phase right after a flood otherwise carries the
//!   flood's aftermath (page cache, writeback) and flatters the ratio.
//! - It prints every pair's p50/p99 for both sides, the load average, and the median of
//!   the per-pair p99 ratios (the verdict), not a ratio of pooled or cherry-picked rounds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warden::embed::{service_child, RunningTree};
use warden::{
    ActorState, BackoffConfig, ChildSpec, Intensity, LogSpec, Output, ServiceSpec, Strategy,
    SupervisorSpec,
};

/// Restarts of a phase that are not timed (its first spawns fault in code and memory).
const WARMUP: usize = 20;

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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}

/// One phase, in this process: restart latencies (ms, sorted) of `/quiet` over `kills`
/// kills after [`WARMUP`] untimed ones, with `flooders` floods running beside it.
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
    for n in 0..WARMUP + kills {
        let old = tree.get("/quiet").and_then(|v| v.info.pid).expect("pid");
        let t0 = Instant::now();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill");
        loop {
            let ev = events.recv().await.expect("event bus");
            if ev.path.as_str() == "/quiet"
                && ev.state == ActorState::Running
                && ev.pid != Some(old)
            {
                if n >= WARMUP {
                    samples.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                break;
            }
        }
    }
    tree.shutdown().await;
    // What the log threads still hold goes to disk now, not after the folder is removed
    // (a late write would create the log again).
    warden_actors::flush_logs(Duration::from_secs(5)).await;
    samples.sort_by(f64::total_cmp);
    samples
}

/// The phase process: measures, prints `p50 p99` (ms) on stdout, removes its folder.
fn run_phase(kind: &str, kills: usize, flooders: usize) {
    let flooders = if kind == "flood" { flooders } else { 0 };
    if let Err(reason) = warden::priority::raise_this_thread() {
        eprintln!("bench_flood: {reason}");
    }
    let dir = std::env::temp_dir().join(format!("warden-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let samples =
        actix::System::new().block_on(async { restart_latency(&dir, kills, flooders).await });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} {}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
}

/// Runs one phase in a fresh process of this example; its p50 and p99 (ms).
fn phase(kind: &str, kills: usize, flooders: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["--phase", kind, &kills.to_string(), &flooders.to_string()])
        .output()
        .expect("phase process");
    assert!(
        out.status.success(),
        "{kind} phase failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut figures = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    match (figures.next().flatten(), figures.next().flatten()) {
        (Some(p50), Some(p99)) => (p50, p99),
        _ => panic!("{kind} phase printed {text:?}"),
    }
}

/// Dirty plus writeback memory, KiB (`/proc/meminfo`).
fn dirty_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .filter(|l| l.starts_with("Dirty:") || l.starts_with("Writeback:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// p50 (ms) of 30 spawns of `true`, each until reaped: how fast this machine starts a
/// process right now.
fn probe() -> f64 {
    let mut samples: Vec<f64> = (0..30)
        .map(|_| {
            let t0 = Instant::now();
            let _ = Command::new("true").status();
            t0.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    percentile(&samples, 0.5)
}

/// What the machine looked like before the first phase.
struct Baseline {
    dirty_kib: u64,
    probe_ms: f64,
}

/// After a flood: flush what the filesystem holds, then wait (bounded) until dirty pages
/// and the spawn probe are back to the baseline. Answers how long it waited.
fn settle(dir: &Path, base: &Baseline) -> Duration {
    let t0 = Instant::now();
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = nix::unistd::syncfs(&folder);
    }
    while dirty_kib() > base.dirty_kib + 16 * 1024 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let t1 = Instant::now();
    while probe() > base.probe_ms * 1.25 + 0.1 && t1.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    if args.get(1).map(String::as_str) == Some("--phase") {
        let kind = args.get(2).map_or("quiet", String::as_str);
        run_phase(kind, number(3, 1000), number(4, 1));
        return;
    }
    let (kills, flooders, pairs) = (number(1, 1000), number(2, 1), number(3, 5).max(1));
    let tmp = std::env::temp_dir();
    let base = Baseline {
        dirty_kib: dirty_kib(),
        probe_ms: probe(),
    };
    println!(
        "restart latency (kill -> replacement spawned), {kills} timed kills per phase, {flooders} flooding child(ren), {pairs} pairs; each phase a fresh process"
    );
    println!(
        "baseline: dirty+writeback {} MiB, spawn probe p50 {:.3} ms, load {}",
        base.dirty_kib / 1024,
        base.probe_ms,
        load()
    );
    let mut ratios = Vec::new();
    for pair in 0..pairs {
        let load_before = load();
        let mut quiet = (0.0, 0.0);
        let mut flood = (0.0, 0.0);
        let mut settled = Vec::new();
        let order = if pair % 2 == 0 {
            ["quiet", "flood"]
        } else {
            ["flood", "quiet"]
        };
        for kind in order {
            if kind == "quiet" {
                quiet = phase(kind, kills, flooders);
            } else {
                flood = phase(kind, kills, flooders);
                settled.push(settle(&tmp, &base));
            }
        }
        let ratio = flood.1 / quiet.1;
        ratios.push(ratio);
        println!(
            "pair {} ({} first, load {load_before}->{}): quiet p50 {:.3} p99 {:.3} ms | flood p50 {:.3} p99 {:.3} ms | p99 ratio {ratio:.2}x (settled in {:.1} s)",
            pair + 1,
            order[0],
            load(),
            quiet.0,
            quiet.1,
            flood.0,
            flood.1,
            settled.iter().map(Duration::as_secs_f64).sum::<f64>()
        );
    }
    let verdict = median(ratios.clone());
    ratios.sort_by(f64::total_cmp);
    println!(
        "p99 ratio flood/quiet: median {verdict:.2}x of {pairs} pairs (range {:.2}-{:.2}x); goal <= 2x: {}",
        ratios[0],
        ratios[ratios.len() - 1],
        if verdict <= 2.0 { "met" } else { "missed" }
    );
}
