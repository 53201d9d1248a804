//! Model-based property test of the supervisor's state machine (design.md "Robustness
//! promises": the state machine is checked against a model).
//!
//! Under a random strategy (one_for_one, one_for_all, rest_for_one), random sequences of
//! child exits (normal, abnormal), operator stop/start/restart, an exit followed by a stop
//! during its backoff, reloads that add, remove and change children, a remove and re-add
//! while the old run is still in its slow stop, and waits that let timers fire, run against a real root supervisor of in-process children (the
//! probe kind of `common`, a real `ChildFactory`). After each step the tree must settle to
//! what a small model predicts: each child's state, its `restarts`, and how many runs of
//! it were started (so a timer that resurrects a stopped child, or a run started twice,
//! shows). Throughout: never two live runs of one path. At the end: a shutdown stops the
//! live children in the reverse of their start order.
//!
//! Cases: 16 by default (a few seconds); `WARDEN_MODEL_CASES=500` for a long run.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Event, Probe, Ready};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use proptest::test_runner::{Config, TestCaseError};
use warden_supervisors::{
    ActorPath, ActorState, ActorTree, BackoffConfig, ChildSpec, ChildUpdate, Control, ControlError,
    ControlOp, Exit, Intensity, RestartType, Strategy, Supervisor, SupervisorSpec, UpdateChildren,
};

const NAMES: [&str; 3] = ["a", "b", "c"];
/// Each child's intensity: this many restarts within a minute (the test is shorter).
const MAX_RESTARTS: u32 = 3;
/// Every restart waits this long: long enough for a stop to land inside the backoff.
const BACKOFF: Duration = Duration::from_millis(30);
/// A graceful stop of a probe takes this long (like a service that traps TERM).
const STOP_DELAY: Duration = Duration::from_millis(15);
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Op {
    Exit {
        child: usize,
        abnormal: bool,
    },
    ExitThenStop {
        child: usize,
    },
    Stop(usize),
    Start(usize),
    Restart(usize),
    Reload {
        present: [bool; 3],
        changed: [bool; 3],
    },
    Readd(usize),
    Wait(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Stopped,
    Exited,
    Failed,
}

#[derive(Debug, Clone)]
struct Child {
    present: bool,
    state: State,
    restarts: u64,
    /// Restarts recorded in the child's intensity window.
    window: u32,
    /// Runs started so far (for the path, across removals).
    starts: u32,
}

impl Child {
    fn fresh(starts: u32) -> Self {
        Child {
            present: true,
            state: State::Running,
            restarts: 0,
            window: 0,
            starts: starts + 1,
        }
    }
}

/// What the supervisor should do, step by step (no supervisor intensity).
#[derive(Debug, Clone)]
struct Model {
    strategy: Strategy,
    types: [RestartType; 3],
    children: [Child; 3],
}

impl Model {
    fn new(strategy: Strategy, types: [RestartType; 3]) -> Self {
        Model {
            strategy,
            types,
            children: [Child::fresh(0), Child::fresh(0), Child::fresh(0)],
        }
    }

    /// Whether an unexpected (`abnormal`) exit of child `i` leads to a restart.
    fn restarts_after(&self, i: usize, abnormal: bool) -> bool {
        self.types[i].restarts_after(abnormal) && self.children[i].window < MAX_RESTARTS
    }

    /// An unexpected exit of running child `i`; `stopped`: an operator stop lands while
    /// it waits for its restart.
    fn exit(&mut self, i: usize, abnormal: bool, stopped: bool) {
        if !self.types[i].restarts_after(abnormal) {
            self.children[i].state = State::Exited;
            return;
        }
        if self.children[i].window >= MAX_RESTARTS {
            self.children[i].state = State::Failed;
            return;
        }
        self.children[i].window += 1;
        // The siblings the strategy restarts with it: those that run.
        let group = match self.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::OneForAll => 0..3,
            Strategy::RestForOne => i..3,
        };
        for j in group {
            let c = &mut self.children[j];
            if j == i && stopped {
                c.state = State::Stopped;
            } else if j == i || (c.present && c.state == State::Running) {
                c.restarts += 1;
                c.starts += 1;
            }
        }
    }

    /// Whether the supervisor refuses `op` on child `i` (a conflict).
    fn refuses(&self, i: usize, op: ControlOp) -> bool {
        match op {
            ControlOp::Start => self.children[i].state == State::Running,
            ControlOp::Stop => self.children[i].state == State::Stopped,
            ControlOp::Restart => false,
        }
    }

    fn control(&mut self, i: usize, op: ControlOp) {
        let c = &mut self.children[i];
        match op {
            ControlOp::Stop => c.state = State::Stopped,
            ControlOp::Start => {
                c.window = 0;
                c.starts += 1;
                c.state = State::Running;
            }
            ControlOp::Restart => {
                if c.state == State::Failed {
                    c.window = 0;
                }
                c.restarts += 1;
                c.starts += 1;
                c.state = State::Running;
            }
        }
    }

    fn reload(&mut self, present: [bool; 3], changed: [bool; 3]) {
        for (i, c) in self.children.iter_mut().enumerate() {
            match (c.present, present[i]) {
                (true, true) if changed[i] => {
                    c.window = 0;
                    match c.state {
                        State::Running => {
                            c.restarts += 1;
                            c.starts += 1;
                        }
                        State::Exited | State::Failed => {
                            c.starts += 1;
                            c.state = State::Running;
                        }
                        State::Stopped => {}
                    }
                }
                (true, true) => {}
                (false, true) => *c = Child::fresh(c.starts),
                (_, false) => c.present = false,
            }
        }
    }
}

fn path(i: usize) -> ActorPath {
    ActorPath::parse(&format!("/{}", NAMES[i])).expect("path")
}

fn spec(probe: &Probe, i: usize, restart: RestartType) -> ChildSpec {
    probe
        .child(NAMES[i], Ready::AtStart, STOP_DELAY)
        .restart(restart)
        .backoff(BackoffConfig {
            initial: BACKOFF,
            max: BACKOFF,
            multiplier: 1.0,
            jitter: 0.0,
        })
        .reset_after(Duration::from_secs(3600))
        .intensity(Intensity {
            max: MAX_RESTARTS,
            within: Duration::from_secs(3600),
        })
}

/// Where the tree and the probe differ from the model ("" when they agree).
fn differences(model: &Model, tree: &ActorTree, probe: &Probe) -> String {
    let mut out = String::new();
    for (i, c) in model.children.iter().enumerate() {
        let p = path(i);
        let record = tree.get(&p);
        let starts = probe.starts(p.as_str());
        if starts != c.starts {
            out += &format!("{p}: {starts} runs started, model {}; ", c.starts);
        }
        if !c.present {
            if record.is_some() || probe.is_live(p.as_str()) {
                out += &format!("{p}: still there after its removal; ");
            }
            continue;
        }
        let Some(info) = record else {
            out += &format!("{p}: missing; ");
            continue;
        };
        let want = match c.state {
            State::Running => ActorState::Running,
            State::Stopped => ActorState::Stopped,
            State::Exited => ActorState::Exited,
            State::Failed => ActorState::Failed,
        };
        if info.state != want || info.restarts != c.restarts {
            out += &format!(
                "{p}: {} with {} restarts, model {want} with {}; ",
                info.state, info.restarts, c.restarts
            );
        }
        if probe.is_live(p.as_str()) != (c.state == State::Running) {
            out += &format!("{p}: live run does not match {want}; ");
        }
    }
    out
}

async fn settle(model: &Model, tree: &ActorTree, probe: &Probe) -> Result<(), TestCaseError> {
    let mut last = String::new();
    let agreed = eventually(SETTLE, || {
        last = differences(model, tree, probe);
        last.is_empty()
    })
    .await;
    let violations = probe.violations();
    if !violations.is_empty() {
        return Err(TestCaseError::fail(format!(
            "two live runs of one path: {violations:?}"
        )));
    }
    if !agreed {
        return Err(TestCaseError::fail(format!(
            "tree differs from the model {:?}: {last}",
            model.children
        )));
    }
    Ok(())
}

async fn control(
    root: &warden_supervisors::RootHandle,
    model: &mut Model,
    i: usize,
    op: ControlOp,
) -> Result<(), TestCaseError> {
    let answer = root
        .addr
        .send(Control {
            name: NAMES[i].to_owned(),
            op,
        })
        .await
        .map_err(|e| TestCaseError::fail(format!("mailbox: {e}")))?;
    let refused = matches!(answer, Err(ControlError::Conflict { .. }));
    if let Err(e) = &answer {
        if !refused {
            return Err(TestCaseError::fail(format!("{op:?} {}: {e}", NAMES[i])));
        }
    }
    if refused != model.refuses(i, op) {
        return Err(TestCaseError::fail(format!(
            "{op:?} {}: refused {refused}, model {:?}",
            NAMES[i], model.children[i]
        )));
    }
    if !refused {
        model.control(i, op);
    }
    Ok(())
}

async fn reload(
    root: &warden_supervisors::RootHandle,
    probe: &Probe,
    model: &mut Model,
    present: [bool; 3],
    changed: [bool; 3],
) -> Result<(), TestCaseError> {
    let children = (0..3)
        .filter(|&i| present[i])
        .map(|i| ChildUpdate {
            spec: spec(probe, i, model.types[i]),
            changed: changed[i],
        })
        .collect();
    root.addr
        .send(UpdateChildren {
            strategy: model.strategy,
            intensity: None,
            children,
        })
        .await
        .map_err(|e| TestCaseError::fail(format!("mailbox: {e}")))?
        .map_err(|e| TestCaseError::fail(format!("reload refused: {e}")))?;
    model.reload(present, changed);
    Ok(())
}

async fn step(
    op: &Op,
    root: &warden_supervisors::RootHandle,
    tree: &ActorTree,
    probe: &Probe,
    model: &mut Model,
) -> Result<(), TestCaseError> {
    let present = |model: &Model| model.children.each_ref().map(|c| c.present);
    match *op {
        Op::Exit { child, abnormal } => {
            let c = &model.children[child];
            if c.present && c.state == State::Running {
                let code = i32::from(abnormal);
                prop_assert!(probe.exit(path(child).as_str(), Exit::Code(code)));
                model.exit(child, abnormal, false);
            }
        }
        Op::ExitThenStop { child } => {
            let c = &model.children[child];
            if c.present && c.state == State::Running && model.restarts_after(child, true) {
                let mut events = tree.subscribe();
                prop_assert!(probe.exit(path(child).as_str(), Exit::Code(1)));
                loop {
                    let e = tokio::time::timeout(SETTLE, events.recv())
                        .await
                        .map_err(|_| TestCaseError::fail("no backoff event"))?
                        .map_err(|e| TestCaseError::fail(format!("events: {e}")))?;
                    if e.path == path(child) && e.state == ActorState::Backoff {
                        break;
                    }
                }
                // The exit is recorded (window) but its restart is cancelled by the stop.
                let answer = root
                    .addr
                    .send(Control {
                        name: NAMES[child].to_owned(),
                        op: ControlOp::Stop,
                    })
                    .await
                    .map_err(|e| TestCaseError::fail(format!("mailbox: {e}")))?;
                prop_assert!(answer.is_ok(), "stop during backoff: {:?}", answer.err());
                model.exit(child, true, true);
            }
        }
        Op::Stop(i) | Op::Start(i) | Op::Restart(i) if model.children[i].present => {
            let op = match *op {
                Op::Stop(_) => ControlOp::Stop,
                Op::Start(_) => ControlOp::Start,
                _ => ControlOp::Restart,
            };
            control(root, model, i, op).await?;
        }
        Op::Stop(_) | Op::Start(_) | Op::Restart(_) => {}
        Op::Reload { present, changed } => reload(root, probe, model, present, changed).await?,
        Op::Readd(i) if model.children[i].present => {
            // Removed and re-added at once: the old run is still in its slow stop.
            let mut without = present(model);
            without[i] = false;
            reload(root, probe, model, without, [false; 3]).await?;
            let mut with = without;
            with[i] = true;
            reload(root, probe, model, with, [false; 3]).await?;
        }
        Op::Readd(_) => {}
        Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
    }
    settle(model, tree, probe).await
}

fn run_case(strategy: Strategy, types: [RestartType; 3], ops: &[Op]) -> Result<(), TestCaseError> {
    actix::System::new().block_on(async move {
        let probe = Probe::default();
        let tree = Arc::new(ActorTree::new());
        let root_spec = SupervisorSpec {
            strategy,
            intensity: None,
            children: (0..3).map(|i| spec(&probe, i, types[i])).collect(),
        };
        let root = Supervisor::start_root(tree.clone(), &root_spec);
        root.wait_ready().await;
        let mut model = Model::new(strategy, types);
        settle(&model, &tree, &probe).await?;
        for op in ops {
            step(op, &root, &tree, &probe, &mut model).await?;
        }
        // No timer left over may start anything once the tree has settled.
        tokio::time::sleep(BACKOFF * 2).await;
        settle(&model, &tree, &probe).await?;
        // Shutdown stops the live children last-first.
        let before = probe.events().len();
        root.shutdown().await;
        let stops: Vec<String> = probe.events()[before..]
            .iter()
            .filter_map(|e| match e {
                Event::StopAsked(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let live: Vec<String> = (0..3)
            .rev()
            .filter(|&i| model.children[i].present && model.children[i].state == State::Running)
            .map(|i| path(i).to_string())
            .collect();
        prop_assert_eq!(stops, live, "stop order on shutdown");
        prop_assert!(probe.violations().is_empty(), "{:?}", probe.violations());
        Ok(())
    })
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    let child = 0..3usize;
    prop_oneof![
        4 => (child.clone(), any::<bool>()).prop_map(|(child, abnormal)| Op::Exit { child, abnormal }),
        1 => child.clone().prop_map(|child| Op::ExitThenStop { child }),
        2 => child.clone().prop_map(Op::Stop),
        2 => child.clone().prop_map(Op::Start),
        2 => child.clone().prop_map(Op::Restart),
        2 => (any::<[bool; 3]>(), any::<[bool; 3]>())
            .prop_map(|(present, changed)| Op::Reload { present, changed }),
        2 => child.prop_map(Op::Readd),
        1 => (0..40u64).prop_map(Op::Wait),
    ]
}

fn restart_type() -> impl proptest::strategy::Strategy<Value = RestartType> {
    prop_oneof![
        Just(RestartType::Permanent),
        Just(RestartType::Transient),
        Just(RestartType::Temporary),
    ]
}

fn config() -> Config {
    let cases = std::env::var("WARDEN_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_supervisor_agrees_with_its_model(
        strategy in prop_oneof![
            Just(Strategy::OneForOne),
            Just(Strategy::OneForAll),
            Just(Strategy::RestForOne),
        ],
        types in [restart_type(), restart_type(), restart_type()],
        ops in proptest::collection::vec(op(), 1..14),
    ) {
        run_case(strategy, types, &ops)?;
    }
}
