//! The supervisor's robustness promises (design.md "Robustness promises"), checked with
//! in-process children (a real child kind built on `ChildFactory`, see `common`): a
//! supervisor whose parent is gone ends its children at once, a panicking exit future is
//! an abnormal exit, a ready check ends with its run, and a child that fails its first
//! start holds back its successors.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Event, Probe, Ready};
use warden_supervisors::{
    ActorPath, ActorState, ActorTree, BackoffConfig, ChildSpec, StartContext, Strategy, Supervisor,
    SupervisorSpec,
};

const SLOW_STOP: Duration = Duration::from_secs(2);

fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(20),
        multiplier: 1.0,
        jitter: 0.0,
    }
}

fn state(tree: &ActorTree, path: &str) -> Option<ActorState> {
    tree.get(&ActorPath::parse(path).expect("path"))
        .map(|i| i.state)
}

/// Promise (SEMANTICS 17, review finding 9): a supervisor whose own stop handle is dropped
/// (its parent died or panicked) ends every child at once, like a service run does, not
/// one by one with each child's graceful stop. Before the fix, the nested supervisor
/// stopped its children gracefully: 2 s each, so this waited 4 s and failed.
#[test]
fn a_nested_supervisor_whose_parent_is_gone_ends_its_children_at_once() {
    actix::System::new().block_on(async {
        let probe = Probe::default();
        let tree = Arc::new(ActorTree::new());
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![
                probe.child("first", Ready::AtStart, SLOW_STOP),
                probe.child("second", Ready::AtStart, SLOW_STOP),
            ],
        };
        let cx = StartContext {
            path: ActorPath::parse("/nested").expect("path"),
            tree: tree.clone(),
            generation: 1,
            pid_report: warden_supervisors::PidReport::none(),
        };
        let (run, _addr) = Supervisor::start_nested(cx, &spec);
        let both_up = eventually(Duration::from_secs(5), || {
            probe.is_live("/nested/first") && probe.is_live("/nested/second")
        })
        .await;
        assert!(both_up, "children started: {:?}", probe.events());
        let t0 = Instant::now();
        drop(run.stop);
        let exit = tokio::time::timeout(Duration::from_secs(1), run.exit).await;
        assert!(
            exit.is_ok(),
            "the nested supervisor ended within 1 s, not after its children's graceful stops: {:?}",
            probe.events()
        );
        assert!(t0.elapsed() < SLOW_STOP, "took {:?}", t0.elapsed());
        assert!(!probe.is_live("/nested/first") && !probe.is_live("/nested/second"));
        let events = probe.events();
        assert!(
            !events.iter().any(|e| matches!(e, Event::StopAsked(_))),
            "no graceful stop was asked: {events:?}"
        );
        assert!(events.contains(&Event::StopDropped("/nested/first".into())));
        assert!(events.contains(&Event::StopDropped("/nested/second".into())));
    });
}

/// Promise (review finding 21): a `ChildFactory` whose exit future panics gives an
/// abnormal exit that is restarted by policy, never a slot that stays live forever.
/// Before the fix the watcher task died with the panic, no exit was seen, and the child
/// stayed `running` with 0 restarts.
#[test]
fn a_panicking_exit_future_is_an_abnormal_exit_and_the_child_is_restarted() {
    actix::System::new().block_on(async {
        let probe = Probe::default();
        let tree = Arc::new(ActorTree::new());
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![probe
                .child("panicky", Ready::AtStart, Duration::ZERO)
                .backoff(fast_backoff())],
        };
        let root = Supervisor::start_root(tree.clone(), &spec);
        root.wait_ready().await;
        assert!(probe.panic("/panicky"), "the run was live");
        let restarted = eventually(Duration::from_secs(5), || {
            probe.starts("/panicky") == 2 && state(&tree, "/panicky") == Some(ActorState::Running)
        })
        .await;
        let info = tree.get(&ActorPath::parse("/panicky").expect("path"));
        assert!(restarted, "restarted after the panic: {info:?}");
        let info = info.expect("record");
        assert_eq!(info.restarts, 1);
        let reason = info.last_exit.expect("last exit").reason;
        assert!(reason.contains("panicked"), "{reason}");
        root.shutdown().await;
    });
}

/// Promise (review finding 21): a ready check never outlives its run. Before the fix the
/// check's task went on after the run ended (here: forever), one per run.
#[test]
fn a_ready_check_ends_with_its_run() {
    actix::System::new().block_on(async {
        let probe = Probe::default();
        let tree = Arc::new(ActorTree::new());
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![probe.child("slow", Ready::Never, Duration::ZERO).backoff(
                BackoffConfig {
                    initial: Duration::from_secs(60),
                    max: Duration::from_secs(60),
                    multiplier: 1.0,
                    jitter: 0.0,
                },
            )],
        };
        let root = Supervisor::start_root(tree.clone(), &spec);
        let started = eventually(Duration::from_secs(5), || probe.ready_checks_alive() == 1).await;
        assert!(started, "the check runs");
        assert!(probe.exit("/slow", warden_supervisors::Exit::Code(1)));
        let dropped = eventually(Duration::from_secs(2), || probe.ready_checks_alive() == 0).await;
        assert!(dropped, "the ready check was dropped with its run");
        root.shutdown().await;
    });
}

/// Promise (SEMANTICS 1, review finding 11): with one_for_one, a child that fails its
/// first ready check holds back the next child until it has been `running` once, and the
/// initial start (`wait_ready`) completes only then. Before the fix `api` started while
/// `db` waited in backoff, and `wait_ready` returned at once.
#[test]
fn a_child_that_fails_its_first_start_holds_back_its_successors() {
    actix::System::new().block_on(async {
        let probe = Probe::default();
        let tree = Arc::new(ActorTree::new());
        let db: ChildSpec = probe
            .child(
                "db",
                Ready::FailFirst {
                    n: 2,
                    after: Duration::from_millis(10),
                },
                Duration::ZERO,
            )
            .backoff(fast_backoff());
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![db, probe.child("api", Ready::AtStart, Duration::ZERO)],
        };
        let root = Supervisor::start_root(tree.clone(), &spec);
        tokio::time::timeout(Duration::from_secs(5), root.wait_ready())
            .await
            .expect("initial start done");
        assert_eq!(
            probe.starts("/db"),
            3,
            "db failed twice, ran the third time"
        );
        assert_eq!(state(&tree, "/db"), Some(ActorState::Running));
        let events = probe.events();
        let api_started = events
            .iter()
            .position(|e| *e == Event::Started("/api".into()))
            .expect("api started");
        let db_third = events
            .iter()
            .enumerate()
            .filter(|(_, e)| **e == Event::Started("/db".into()))
            .nth(2)
            .map(|(k, _)| k)
            .expect("db's third run");
        assert!(
            db_third < api_started,
            "api started only after db's run that passed its check: {events:?}"
        );
        root.shutdown().await;
    });
}

/// Promise "a duration that cannot be added to a clock" (review finding 24), for library
/// users who build specs without the config's cap: a backoff longer than the clock can
/// hold waits (as long as the clock allows) instead of panicking the supervisor. Before
/// the fix `now + delay` panicked and took the root down at the first crash.
#[test]
fn a_backoff_longer_than_the_clock_holds_does_not_panic_the_supervisor() {
    actix::System::new().block_on(async {
        let probe = Probe::default();
        let tree = Arc::new(ActorTree::new());
        let forever = Duration::from_secs(u64::MAX);
        let spec = SupervisorSpec {
            strategy: Strategy::OneForOne,
            intensity: None,
            children: vec![probe
                .child("patient", Ready::AtStart, Duration::ZERO)
                .backoff(BackoffConfig {
                    initial: forever,
                    max: forever,
                    multiplier: 1.0,
                    jitter: 0.0,
                })],
        };
        let root = Supervisor::start_root(tree.clone(), &spec);
        root.wait_ready().await;
        assert!(probe.exit("/patient", warden_supervisors::Exit::Code(1)));
        let waiting = eventually(Duration::from_secs(2), || {
            state(&tree, "/patient") == Some(ActorState::Backoff)
        })
        .await;
        assert!(
            waiting,
            "{:?}",
            tree.get(&ActorPath::parse("/patient").expect("path"))
        );
        let ended = tokio::time::timeout(Duration::from_millis(100), root.ended()).await;
        assert!(ended.is_err(), "the root supervisor is alive: {ended:?}");
        root.shutdown().await;
    });
}
