//! Embedding warden: a supervision tree inside your own actix program, no config file.
//!
//! An OS service and an actix actor run side by side under one supervisor. The actor's
//! handler panics on `Crash`: warden restarts it (a fresh instance from the factory),
//! the service keeps running, and the `ActorHandle` reaches the new instance.
//!
//! `cargo run --example embedded`

use std::time::Duration;

use actix::prelude::*;
use warden::embed::{actor_child, service_child, RunningTree};
use warden::{ActorState, ServiceSpec, Strategy, SupervisorSpec};

/// A counter actor; `Crash` makes its handler panic.
#[derive(Default)]
struct Counter {
    count: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Bump;

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

impl Handler<Bump> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Bump, _: &mut Context<Self>) -> u64 {
        self.count += 1;
        self.count
    }
}

impl Handler<Crash> for Counter {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("the counter was asked to crash");
    }
}

fn main() {
    actix::System::new().block_on(async {
        let (counter, handle) = actor_child("counter", Counter::default).expect("name");
        let ticker = service_child(
            "ticker",
            ServiceSpec::new(["/bin/sh", "-c", "while true; do sleep 1; done"]).expect("command"),
        )
        .expect("name");
        let tree = RunningTree::start(&SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![counter, ticker],
        });
        assert!(
            tree.ready(Duration::from_secs(5)).await,
            "tree did not start"
        );
        let ticker_pid = tree.get("/ticker").and_then(|a| a.info.pid);
        println!("ticker running as pid {ticker_pid:?}");

        let addr = handle
            .wait(Duration::from_secs(1))
            .await
            .expect("counter runs");
        println!("bump -> {:?}", addr.send(Bump).await);
        addr.do_send(Crash);

        // Wait for the restart, then talk to the new instance through the same handle.
        let mut events = tree.events();
        loop {
            let ev = events.recv().await.expect("events");
            if ev.path.as_str() == "/counter" && ev.state == ActorState::Running {
                break;
            }
        }
        let counter = tree.get("/counter").expect("counter");
        println!(
            "counter restarted {} time(s), last exit: {:?}",
            counter.info.restarts,
            counter.info.last_exit.map(|e| e.reason)
        );
        let addr = handle
            .wait(Duration::from_secs(1))
            .await
            .expect("counter runs again");
        println!("bump on the new instance -> {:?}", addr.send(Bump).await);
        println!(
            "ticker still pid {:?}",
            tree.get("/ticker").and_then(|a| a.info.pid)
        );
        tree.shutdown().await;
        println!("stopped");
    });
}
