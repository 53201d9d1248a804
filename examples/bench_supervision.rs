//! Repo-local benchmark of the supervision core, without the peers:
//!
//! - restart latency: a service is SIGKILLed; time until its supervisor has spawned the
//!   replacement (the `running` event with a new pid). Backoff initial 0. 10 services,
//!   kills rotate over them, one restart in flight at a time.
//! - fan-out: a tree of N services (default 1,000) from start until all are `running`,
//!   then warden's RSS, then a graceful stop of all.
//!
//! `cargo run --release --example bench_supervision [-- KILLS N]`; set `BENCH_CHILD` to the
//! path of the static `bench-child` that `benches/peers/run.sh` builds (`target/bench-peers/bench-child`) to use it as the child.
//! Figures are medians of several rounds; the machine is shared and noisy.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warden::embed::{service_child, RunningTree};
use warden::{ActorState, BackoffConfig, Intensity, ServiceSpec, Strategy, SupervisorSpec};

/// The child: `$BENCH_CHILD sleeper /dev/null x` when BENCH_CHILD names the peer
/// harness's static `bench-child` (cheaper to exec), else `sleep 1000000`.
fn child_command() -> Vec<String> {
    match std::env::var("BENCH_CHILD") {
        Ok(bin) => vec![bin, "sleeper".into(), "/dev/null".into(), "x".into()],
        Err(_) => vec!["sleep".into(), "1000000".into()],
    }
}

fn sleeper_spec(count: usize) -> SupervisorSpec {
    let children = (0..count)
        .map(|i| {
            let spec = ServiceSpec::new(child_command()).expect("command");
            service_child(&format!("s{i:04}"), spec)
                .expect("name")
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
        })
        .collect();
    SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: None,
        children,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn restart_latency(kills: usize) -> Vec<f64> {
    let tree = RunningTree::start(&sleeper_spec(10));
    assert!(
        tree.ready(Duration::from_secs(10)).await,
        "children did not start"
    );
    let mut events = tree.events();
    let mut samples = Vec::with_capacity(kills);
    for k in 0..kills {
        let path = format!("/s{:04}", k % 10);
        let old = tree.get(&path).and_then(|v| v.info.pid).expect("pid");
        let t0 = Instant::now();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill");
        loop {
            let ev = events.recv().await.expect("event bus");
            if ev.path.as_str() == path && ev.state == ActorState::Running && ev.pid != Some(old) {
                samples.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    tree.shutdown().await;
    samples.sort_by(f64::total_cmp);
    samples
}

async fn fan_out(n: usize) -> (f64, u64, f64) {
    let spec = sleeper_spec(n);
    let t0 = Instant::now();
    let tree = RunningTree::start(&spec);
    assert!(
        tree.ready(Duration::from_secs(60)).await,
        "children did not start"
    );
    let up = t0.elapsed().as_secs_f64();
    let rss = rss_kib();
    let t1 = Instant::now();
    tree.shutdown().await;
    let down = t1.elapsed().as_secs_f64();
    (up, rss, down)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kills: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds = 3;
    actix::System::new().block_on(async move {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..rounds {
            let s = restart_latency(kills).await;
            p50s.push(percentile(&s, 0.5));
            p99s.push(percentile(&s, 0.99));
        }
        p50s.sort_by(f64::total_cmp);
        p99s.sort_by(f64::total_cmp);
        println!(
            "restart latency (kill -> replacement spawned), {kills} kills x {rounds} rounds: p50 {:.3} ms, p99 {:.3} ms (medians of rounds)",
            p50s[rounds / 2],
            p99s[rounds / 2]
        );
        let mut ups = Vec::new();
        let mut downs = Vec::new();
        let mut rss = 0;
        for _ in 0..rounds {
            let (up, r, down) = fan_out(n).await;
            ups.push(up);
            downs.push(down);
            rss = rss.max(r);
        }
        ups.sort_by(f64::total_cmp);
        downs.sort_by(f64::total_cmp);
        println!(
            "fan-out: {n} services all running in {:.3} s (median of {rounds}); RSS with them running {:.1} MiB (max); graceful stop {:.3} s",
            ups[rounds / 2],
            rss as f64 / 1024.0,
            downs[rounds / 2]
        );
    });
}
