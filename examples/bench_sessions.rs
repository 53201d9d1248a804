//! Pool sessions: acquire + release pairs per second through the pool manager, with the
//! in-memory registry and (when `REDIS_URL` is set, e.g. `redis://127.0.0.1:6379`) the
//! Redis registry. The pool runs 4 `sleep` workers with 100 sessions each.
//!
//! `cargo run --release --example bench_sessions`
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example bench_sessions`

use std::sync::Arc;
use std::time::{Duration, Instant};

use warden::embed::RunningTree;
use warden::{ServiceSpec, Strategy, SupervisorSpec};
use warden_actors::{
    MemoryRegistry, PoolFactory, PoolHub, PoolSpec, RedisRegistry, ServiceFactory, SessionRegistry,
    WorkerBuilder, WorkerTemplate,
};
use warden_supervisors::{ActorKind, ActorName, ActorPath, ChildSpec};

const PAIRS: usize = 20_000;

async fn run(registry: Arc<dyn SessionRegistry>, label: &str) {
    let hub = Arc::new(PoolHub::new());
    let build: WorkerBuilder = Arc::new(
        |worker: &ActorPath, template: &WorkerTemplate, _port: u16| {
            let spec = ServiceSpec::new(template.command.clone()).map_err(|e| e.to_string())?;
            let name = ActorName::new(worker.name()).map_err(|e| e.to_string())?;
            Ok(ChildSpec::new(
                name,
                ServiceFactory::new(spec).with_kind(ActorKind::Worker),
            ))
        },
    );
    let spec = PoolSpec {
        template: WorkerTemplate {
            command: vec!["sleep".into(), "100000".into()],
            env: Vec::new(),
        },
        build,
        ports: 40000..=40003,
        min: 4,
        max: 4,
        sessions_per_worker: 100,
        idle_timeout: Duration::from_secs(3600),
        start_timeout: Duration::from_secs(10),
        tokens: None,
        rollout: warden_actors::RolloutPolicy::ConfigOnly,
    };
    let pool = ChildSpec::new(
        ActorName::new("pool").expect("name"),
        PoolFactory::new(spec, hub.clone(), registry),
    );
    let tree = RunningTree::start(&SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: None,
        children: vec![pool],
    });
    assert!(
        tree.ready(Duration::from_secs(10)).await,
        "pool did not start"
    );
    let path = ActorPath::parse("/pool").expect("path");
    for _ in 0..1_000 {
        let s = hub.acquire(&path).await.expect("acquire");
        hub.release(&path, &s.session_id).await.expect("release");
    }
    let t0 = Instant::now();
    for _ in 0..PAIRS {
        let s = hub.acquire(&path).await.expect("acquire");
        hub.release(&path, &s.session_id).await.expect("release");
    }
    let rate = PAIRS as f64 / t0.elapsed().as_secs_f64();
    println!("{label}: {rate:.0} acquire+release pairs/s ({PAIRS} pairs, one at a time)");
    tree.shutdown().await;
}

fn main() {
    actix::System::new().block_on(async {
        run(Arc::new(MemoryRegistry::default()), "memory registry").await;
        if let Ok(url) = std::env::var("REDIS_URL") {
            match RedisRegistry::connect(&url) {
                Ok(redis) => run(Arc::new(redis), "redis registry").await,
                Err(e) => eprintln!("skipping Redis: {e}"),
            }
        } else {
            println!("(set REDIS_URL to measure the Redis registry too)");
        }
    });
}
