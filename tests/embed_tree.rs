//! Tests of the embedding API (no binary): a tree of OS services and the embedder's own
//! actix actors, started with `RunningTree` inside an actix System.
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;
use warden::embed::{actor_child, service_child, supervisor_child, RunningTree};
use warden::{
    ActorPath, ActorState, ActorTree, ActorView, BackoffConfig, ControlError, ControlOp,
    LifecycleEvent, ReadyCheck, RestartType, ServiceSpec, Strategy, SupervisorSpec,
};

/// An actor that says which instance it is, panics on `Boom` and stops on `Quit`.
struct Worker {
    id: usize,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "usize")]
struct Ping;

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

#[derive(Message)]
#[rtype(result = "()")]
struct Quit;

impl Handler<Ping> for Worker {
    type Result = usize;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> usize {
        self.id
    }
}

impl Handler<Boom> for Worker {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("boom on purpose (instance {})", self.id);
    }
}

impl Handler<Quit> for Worker {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A factory of `Worker`s numbered 1, 2, ... and the counter of its calls.
fn counted_factory() -> (
    Arc<AtomicUsize>,
    impl Fn() -> Worker + Send + Sync + 'static,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    (calls, move || Worker {
        id: counter.fetch_add(1, Ordering::SeqCst) + 1,
    })
}

fn sleeper() -> ServiceSpec {
    ServiceSpec::new(["sleep", "1000"]).expect("service spec")
}

fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        jitter: 0.0,
        ..BackoffConfig::default()
    }
}

fn view(tree: &RunningTree, path: &str) -> ActorView {
    tree.get(path)
        .unwrap_or_else(|| panic!("no actor at {path}"))
}

/// Polls `f` every 10 ms until it gives `Some`, at most `timeout`.
async fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_state(tree: &RunningTree, path: &str, state: ActorState) -> ActorView {
    until(
        &format!("{path} to be {state}"),
        Duration::from_secs(10),
        || tree.get(path).filter(|v| v.info.state == state),
    )
    .await
}

/// Every event received so far.
fn drain(rx: &mut Receiver<LifecycleEvent>) -> Vec<LifecycleEvent> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return out,
            Err(TryRecvError::Lagged(n)) => panic!("missed {n} events"),
        }
    }
}

/// Receives events of `path` until one in `state` arrives (at most `timeout`); returns
/// those events of `path`, that one included.
async fn events_until(
    rx: &mut Receiver<LifecycleEvent>,
    path: &str,
    state: ActorState,
    timeout: Duration,
) -> Vec<LifecycleEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {state} event for {path} in {timeout:?}: {seen:?}"))
            .expect("event bus open");
        if e.path.as_str() == path {
            let done = e.state == state;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

fn states(events: &[LifecycleEvent]) -> Vec<ActorState> {
    events.iter().map(|e| e.state).collect()
}

/// Index of the first event of `path` in `state`.
fn index_of(events: &[LifecycleEvent], path: &str, state: ActorState) -> usize {
    events
        .iter()
        .position(|e| e.path.as_str() == path && e.state == state)
        .unwrap_or_else(|| panic!("no {state} event for {path} in {events:?}"))
}

/// Index of the first event of `path`, whatever its state.
fn first_of(events: &[LifecycleEvent], path: &str) -> usize {
    events
        .iter()
        .position(|e| e.path.as_str() == path)
        .unwrap_or_else(|| panic!("no event for {path} in {events:?}"))
}

#[test]
fn a_panicking_actor_is_rebuilt_by_its_factory_while_its_sibling_service_keeps_its_pid() {
    actix::System::new().block_on(async {
        let (calls, make) = counted_factory();
        let (worker, handle) = actor_child("worker", make).expect("actor child");
        let sibling = service_child("sibling", sleeper()).expect("service child");
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![worker.backoff(fast_backoff()), sibling],
        };
        let tree = RunningTree::start(&spec);
        assert!(tree.ready(Duration::from_secs(10)).await, "tree ready");
        let first = handle.wait(Duration::from_secs(2)).await.expect("address");
        assert_eq!(first.send(Ping).await.expect("ping"), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let w = view(&tree, "/worker");
        assert_eq!(w.info.state, ActorState::Running);
        assert_eq!(w.info.restarts, 0);
        let sibling_pid = view(&tree, "/sibling").info.pid.expect("sibling pid");
        assert!(support::alive(sibling_pid));

        let mut events = tree.events();
        let answer = tokio::time::timeout(Duration::from_secs(5), first.send(Boom))
            .await
            .expect("the panicking send resolves");
        assert!(answer.is_err(), "a panicking handler gives no answer");

        let seen = events_until(
            &mut events,
            "/worker",
            ActorState::Running,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            states(&seen),
            [ActorState::Backoff, ActorState::Running],
            "{seen:?}"
        );
        let w = view(&tree, "/worker");
        assert_eq!(w.info.state, ActorState::Running);
        assert_eq!(w.info.restarts, 1);
        let exit = w.info.last_exit.as_ref().expect("last_exit");
        assert!(exit.reason.contains("boom on purpose"), "{exit:?}");
        assert_eq!((exit.code, exit.signal.as_deref()), (None, None));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a fresh instance");

        let second = handle
            .wait(Duration::from_secs(2))
            .await
            .expect("new address");
        assert_eq!(second.send(Ping).await.expect("ping the new run"), 2);
        assert!(!first.connected(), "the old address is dead");
        assert_eq!(handle.addr().map(|a| a == second), Some(true));

        let s = view(&tree, "/sibling");
        assert_eq!(
            s.info.pid,
            Some(sibling_pid),
            "one_for_one leaves the sibling"
        );
        assert_eq!(s.info.restarts, 0);
        assert_eq!(s.info.state, ActorState::Running);
        assert!(support::alive(sibling_pid));

        tree.shutdown().await;
        assert!(!support::alive(sibling_pid), "shutdown stops the service");
    });
}

#[test]
fn services_actors_and_a_nested_supervisor_start_in_order_and_shutdown_stops_all_in_reverse() {
    actix::System::new().block_on(async {
        let registry = Arc::new(ActorTree::new());
        let mut events = registry.subscribe();

        let mut first = sleeper();
        first.ready = Some(ReadyCheck::Delay(Duration::from_millis(300)));
        let first = service_child("first", first).expect("first");

        // The actor's factory checks that `/first` was running when it was called.
        let after_first = Arc::new(AtomicBool::new(false));
        let (second, handle) = {
            let registry = registry.clone();
            let after_first = after_first.clone();
            let first_path = ActorPath::parse("/first").expect("path");
            actor_child("second", move || {
                let running = registry
                    .get(&first_path)
                    .is_some_and(|i| i.state == ActorState::Running);
                after_first.store(running, Ordering::SeqCst);
                Worker { id: 7 }
            })
            .expect("second")
        };

        let group = supervisor_child(
            "group",
            SupervisorSpec {
                strategy: Strategy::OneForAll,
                intensity: None,
                children: vec![service_child("inner", sleeper()).expect("inner")],
            },
        )
        .expect("group");
        let last = service_child("last", sleeper()).expect("last");

        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![first, second, group, last],
        };
        let tree = RunningTree::start_in(registry.clone(), &spec);
        assert!(tree.ready(Duration::from_secs(10)).await, "tree ready");
        assert!(
            after_first.load(Ordering::SeqCst),
            "the actor was built before /first was running"
        );
        for path in ["/first", "/second", "/group", "/group/inner", "/last"] {
            assert_eq!(view(&tree, path).info.state, ActorState::Running, "{path}");
        }
        let addr = handle.wait(Duration::from_secs(2)).await.expect("address");
        assert_eq!(addr.send(Ping).await.expect("ping"), 7);
        let group_view = view(&tree, "/group");
        assert_eq!(
            group_view
                .children
                .iter()
                .map(ActorPath::as_str)
                .collect::<Vec<_>>(),
            ["/group/inner"]
        );

        let started = drain(&mut events);
        let first_running = index_of(&started, "/first", ActorState::Running);
        assert!(first_running < first_of(&started, "/second"), "{started:?}");
        let second_running = index_of(&started, "/second", ActorState::Running);
        assert!(
            second_running < first_of(&started, "/group/inner"),
            "{started:?}"
        );
        let group_running = index_of(&started, "/group", ActorState::Running);
        assert!(group_running < first_of(&started, "/last"), "{started:?}");

        let pids: Vec<u32> = ["/first", "/group/inner", "/last"]
            .iter()
            .map(|p| view(&tree, p).info.pid.expect("pid"))
            .collect();
        assert!(pids.iter().all(|&p| support::alive(p)));

        tokio::time::timeout(Duration::from_secs(20), tree.shutdown())
            .await
            .expect("shutdown finishes");
        for &pid in &pids {
            assert!(!support::alive(pid), "pid {pid} outlived the shutdown");
        }
        for path in ["/first", "/second", "/group", "/group/inner", "/last"] {
            let v = view(&tree, path);
            assert_eq!(v.info.state, ActorState::Stopped, "{path}");
            assert_eq!(v.info.pid, None, "{path}");
        }
        assert!(handle.addr().is_none(), "the actor is gone");
        assert!(!addr.connected());

        let stopped = drain(&mut events);
        let stopped_at = |p| index_of(&stopped, p, ActorState::Stopped);
        let stopping_at = |p| index_of(&stopped, p, ActorState::Stopping);
        assert!(stopped_at("/last") < stopping_at("/group"), "{stopped:?}");
        assert!(
            stopped_at("/group/inner") < stopped_at("/group"),
            "{stopped:?}"
        );
        assert!(stopped_at("/group") < stopping_at("/second"), "{stopped:?}");
        assert!(stopped_at("/second") < stopping_at("/first"), "{stopped:?}");
    });
}

#[test]
fn a_transient_actor_that_stops_itself_normally_is_exited_not_restarted() {
    actix::System::new().block_on(async {
        let (quit_calls, make_quitter) = counted_factory();
        let (quitter, quitter_handle) = actor_child("quitter", make_quitter).expect("quitter");
        let (crash_calls, make_crasher) = counted_factory();
        let (crasher, crasher_handle) = actor_child("crasher", make_crasher).expect("crasher");
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![
                quitter
                    .restart(RestartType::Transient)
                    .backoff(fast_backoff()),
                crasher
                    .restart(RestartType::Transient)
                    .backoff(fast_backoff()),
            ],
        };
        let tree = RunningTree::start(&spec);
        assert!(tree.ready(Duration::from_secs(10)).await, "tree ready");

        let q = quitter_handle
            .wait(Duration::from_secs(2))
            .await
            .expect("quitter address");
        let _ = tokio::time::timeout(Duration::from_secs(5), q.send(Quit)).await;
        let v = until_state(&tree, "/quitter", ActorState::Exited).await;
        let exit = v.info.last_exit.as_ref().expect("last_exit");
        assert!(!exit.reason.is_empty());
        assert_eq!((exit.code, exit.signal.as_deref()), (None, None));

        // The contrast: an abnormal end of a transient actor is restarted.
        let c = crasher_handle
            .wait(Duration::from_secs(2))
            .await
            .expect("crasher address");
        let _ = tokio::time::timeout(Duration::from_secs(5), c.send(Boom)).await;
        until("crasher restarted", Duration::from_secs(10), || {
            tree.get("/crasher")
                .filter(|v| v.info.restarts == 1 && v.info.state == ActorState::Running)
        })
        .await;
        assert_eq!(crash_calls.load(Ordering::SeqCst), 2);

        // Well past the quitter's 50 ms backoff: still exited, never rebuilt.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = view(&tree, "/quitter");
        assert_eq!(v.info.state, ActorState::Exited);
        assert_eq!(v.info.restarts, 0);
        assert_eq!(quit_calls.load(Ordering::SeqCst), 1, "not rebuilt");
        assert!(quitter_handle.addr().is_none());
        tree.shutdown().await;
    });
}

#[test]
fn control_by_path_stops_and_starts_an_actor_and_refuses_what_is_not_allowed() {
    actix::System::new().block_on(async {
        let (calls, make) = counted_factory();
        let (worker, handle) = actor_child("worker", make).expect("worker");
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![
                worker,
                supervisor_child(
                    "grp",
                    SupervisorSpec {
                        children: vec![service_child("svc", sleeper()).expect("svc")],
                        ..SupervisorSpec::default()
                    },
                )
                .expect("grp"),
            ],
        };
        let tree = RunningTree::start(&spec);
        assert!(tree.ready(Duration::from_secs(10)).await, "tree ready");
        let first = handle.wait(Duration::from_secs(2)).await.expect("address");

        let v = tree
            .control("/worker", ControlOp::Stop)
            .await
            .expect("stop");
        assert_eq!(v.info.state, ActorState::Stopped);
        assert!(handle.addr().is_none(), "no address while stopped");
        assert!(!first.connected());
        assert_eq!(
            tree.control("/worker", ControlOp::Stop).await.err(),
            Some(ControlError::Conflict {
                path: "/worker".to_owned(),
                op: "stop",
                state: ActorState::Stopped
            }),
            "stop of a stopped actor"
        );

        let v = tree
            .control("/worker", ControlOp::Start)
            .await
            .expect("start");
        assert_eq!(v.info.state, ActorState::Running);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "start builds a new instance"
        );
        let again = handle.wait(Duration::from_secs(2)).await.expect("address");
        assert_eq!(again.send(Ping).await.expect("ping"), 2);
        assert!(matches!(
            tree.control("/worker", ControlOp::Start).await,
            Err(ControlError::Conflict { .. })
        ));
        assert!(matches!(
            tree.control("/nope", ControlOp::Start).await,
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            tree.control("/grp/nope", ControlOp::Stop).await,
            Err(ControlError::NotFound(_))
        ));

        // A nested service by path: restart gives a new pid and counts a restart.
        let old = view(&tree, "/grp/svc").info.pid.expect("pid");
        let v = tree
            .control("/grp/svc", ControlOp::Restart)
            .await
            .expect("restart");
        assert_eq!(v.info.state, ActorState::Running);
        let new = v.info.pid.expect("new pid");
        assert_ne!(new, old);
        assert_eq!(v.info.restarts, 1);
        assert!(!support::alive(old));
        tree.shutdown().await;
        assert!(!support::alive(new));
    });
}

/// SEMANTICS #18 "operator requests by path always reach the current incarnation": after
/// a panic rebuilt the actor, Stop by path ends that rebuilt instance (its address goes
/// dead, the handle has none), and Start and Restart by path each reach a new instance.
#[test]
fn ops_by_path_reach_the_instance_rebuilt_after_a_panic() {
    actix::System::new().block_on(async {
        let (calls, make) = counted_factory();
        let (worker, handle) = actor_child("worker", make).expect("worker");
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![worker.backoff(fast_backoff())],
        };
        let tree = RunningTree::start(&spec);
        assert!(tree.ready(Duration::from_secs(10)).await, "tree ready");
        let first = handle.wait(Duration::from_secs(2)).await.expect("address");
        let _ = tokio::time::timeout(Duration::from_secs(5), first.send(Boom)).await;
        until(
            "the factory builds instance 2",
            Duration::from_secs(5),
            || (calls.load(Ordering::SeqCst) == 2).then_some(()),
        )
        .await;
        until_state(&tree, "/worker", ActorState::Running).await;
        let second = handle
            .wait(Duration::from_secs(2))
            .await
            .expect("address 2");
        assert_eq!(second.send(Ping).await.expect("ping"), 2);

        let v = tree
            .control("/worker", ControlOp::Stop)
            .await
            .expect("stop");
        assert_eq!(v.info.state, ActorState::Stopped);
        assert!(
            !second.connected(),
            "Stop by path ended the rebuilt instance"
        );
        assert!(handle.addr().is_none(), "no address while stopped");

        let v = tree
            .control("/worker", ControlOp::Start)
            .await
            .expect("start");
        assert_eq!(v.info.state, ActorState::Running);
        let third = handle
            .wait(Duration::from_secs(2))
            .await
            .expect("address 3");
        assert_eq!(
            third.send(Ping).await.expect("ping"),
            3,
            "Start built instance 3"
        );

        let v = tree
            .control("/worker", ControlOp::Restart)
            .await
            .expect("restart");
        assert_eq!(v.info.state, ActorState::Running);
        let fourth = handle
            .wait(Duration::from_secs(2))
            .await
            .expect("address 4");
        assert_eq!(fourth.send(Ping).await.expect("ping"), 4, "Restart built 4");
        assert!(!third.connected(), "Restart by path ended instance 3");
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one instance per run");
        tree.shutdown().await;
        assert!(!fourth.connected());
    });
}

/// SEMANTICS #17: dropping a running tree without `shutdown()` SIGKILLs every process
/// child with its group: leaders and their background grandchildren, nested or not, even
/// when they ignore SIGTERM and their stop timeout is long.
#[test]
fn dropping_a_running_tree_without_shutdown_kills_every_childs_process_group() {
    let dir = support::temp_dir();
    actix::System::new().block_on(async {
        let service = |name: &str| {
            let file = dir.path().join(name);
            let script = format!(
                "trap '' TERM; sleep 1000 & echo $! > {}; wait",
                file.to_str().expect("utf-8 path")
            );
            let mut spec = ServiceSpec::new(["/bin/sh", "-c", &script]).expect("spec");
            spec.stop_timeout = Duration::from_secs(60);
            service_child(name, spec).expect("service")
        };
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![
                service("outer"),
                supervisor_child(
                    "grp",
                    SupervisorSpec {
                        children: vec![service("inner")],
                        ..SupervisorSpec::default()
                    },
                )
                .expect("grp"),
            ],
        };
        let tree = RunningTree::start(&spec);
        assert!(tree.ready(Duration::from_secs(10)).await, "tree ready");
        let mut pids = Vec::new();
        for (path, file) in [("/outer", "outer"), ("/grp/inner", "inner")] {
            pids.push(view(&tree, path).info.pid.expect("pid"));
            let grandchild = until("the grandchild's pid", Duration::from_secs(5), || {
                std::fs::read_to_string(dir.path().join(file))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
            })
            .await;
            pids.push(grandchild);
        }
        assert!(pids.iter().all(|&p| support::alive(p)), "{pids:?}");

        drop(tree);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while pids.iter().any(|&p| support::alive(p)) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| support::alive(p))
            .collect();
        for &p in &left {
            support::kill(p, 9);
        }
        assert!(
            left.is_empty(),
            "3 s after the tree was dropped, {left:?} of [outer, its grandchild, \
             inner, its grandchild] = {pids:?} still run (want: SIGKILLed at once)"
        );
    });
}

#[test]
fn the_event_bus_announces_backoff_starting_and_running_for_a_restart() {
    actix::System::new().block_on(async {
        let mut spec = sleeper();
        spec.ready = Some(ReadyCheck::Delay(Duration::from_millis(100)));
        let svc = service_child("svc", spec)
            .expect("svc")
            .backoff(BackoffConfig {
                initial: Duration::from_millis(200),
                jitter: 0.0,
                ..BackoffConfig::default()
            });
        let tree = RunningTree::start(&SupervisorSpec {
            children: vec![svc],
            ..SupervisorSpec::default()
        });
        let mut events = tree.events();
        let boot = events_until(
            &mut events,
            "/svc",
            ActorState::Running,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            states(&boot),
            [ActorState::Starting, ActorState::Running],
            "{boot:?}"
        );
        let old = boot[1].pid.expect("pid in the running event");
        assert_eq!(boot[0].pid, Some(old), "starting carries the pid");

        support::kill(old, 9);
        let seen = events_until(
            &mut events,
            "/svc",
            ActorState::Running,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            states(&seen),
            [
                ActorState::Backoff,
                ActorState::Starting,
                ActorState::Running
            ],
            "{seen:?}"
        );
        assert_eq!(seen[0].pid, None, "no pid in backoff");
        let new = seen[2].pid.expect("new pid");
        assert_eq!(seen[1].pid, Some(new));
        assert_ne!(new, old);
        assert!(
            seen.windows(2).all(|w| w[0].at <= w[1].at),
            "events in time order"
        );
        let waited = seen[1]
            .at
            .0
            .duration_since(seen[0].at.0)
            .unwrap_or_default();
        assert!(
            waited >= Duration::from_millis(150),
            "backoff lasted {waited:?}, expected about 200ms"
        );
        let v = view(&tree, "/svc");
        assert_eq!(v.info.restarts, 1);
        assert_eq!(
            v.info.last_exit.as_ref().and_then(|e| e.signal.as_deref()),
            Some("SIGKILL")
        );
        tree.shutdown().await;
        assert!(!support::alive(new));
    });
}
