//! The supervisor actor: starts its children in order, restarts them by strategy,
//! backoff and intensity, stops them in reverse order, and escalates to its parent.
//!
//! Each child is a slot with a *target* (what the supervisor wants: up, or down for a
//! reason) and at most one live *run*. Every event (a start, a ready, an exit, a timer, an
//! operator command) changes targets or runs and then calls [`Supervisor::reconcile`],
//! which does the one thing that follows: stop the last live child whose target is down
//! (one stop at a time, so stops go in reverse order), start the next child whose target
//! is up (in order within its batch: the next starts once the previous is running), and
//! finish a shutdown or an escalation once nothing is live. Every run carries a
//! generation number, so a late exit, ready or timer of an old run never touches a new one.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix::fut::wrap_future;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::child::{ChildFactory, ChildSpec, RunningChild, StartContext, StopMode};
use crate::exit::Exit;
use crate::path::{ActorName, ActorPath};
use crate::policy::{intensity_reason, Backoff, Intensity, IntensityWindow, Strategy};
use crate::state::{ActorKind, ActorState};
use crate::tree::{ActorInfo, SharedTree, Timestamp};

/// A supervisor's own settings and its children, in start order.
#[derive(Debug, Clone, Default)]
pub struct SupervisorSpec {
    /// Which siblings are restarted with a failed child.
    pub strategy: Strategy,
    /// The supervisor's restart intensity (`None`: no limit).
    pub intensity: Option<Intensity>,
    /// The children, in start order.
    pub children: Vec<ChildSpec>,
}

/// What an operator can ask of an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    /// Start a stopped, exited or failed actor (resets its intensity and backoff).
    Start,
    /// Stop it (cancels a pending restart).
    Stop,
    /// Stop it if it runs, then start it again.
    Restart,
}

impl ControlOp {
    /// The verb as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlOp::Start => "start",
            ControlOp::Stop => "stop",
            ControlOp::Restart => "restart",
        }
    }
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No actor has that path.
    #[error("no actor at {0}")]
    NotFound(String),
    /// The actor's state does not allow the operation now.
    #[error("cannot {op} {path} while it is {state}")]
    Conflict {
        /// The actor.
        path: String,
        /// The refused operation.
        op: &'static str,
        /// Its state.
        state: ActorState,
    },
    /// The supervisor is shutting down or giving up.
    #[error("{0} is shutting down")]
    ShuttingDown(String),
}

/// Asks a supervisor to act on one of its children. The answer is a receiver that fires
/// when the transition is done (stopped, or settled after a start).
#[derive(Debug, Message)]
#[rtype(result = "Result<oneshot::Receiver<()>, ControlError>")]
pub struct Control {
    /// The child's name.
    pub name: String,
    /// What to do.
    pub op: ControlOp,
}

/// Replaces a supervisor's settings and children (a config reload). Children are matched
/// by name: a new name is added and started, a missing name is stopped and removed, a
/// child marked `changed` is restarted with its new spec, and every other child keeps
/// running untouched (its spec is replaced for future restarts). Children take the new
/// order.
#[derive(Debug, Message)]
#[rtype(result = "Result<ChildChanges, ControlError>")]
pub struct UpdateChildren {
    /// The new strategy.
    pub strategy: Strategy,
    /// The new intensity.
    pub intensity: Option<Intensity>,
    /// The new children, in order.
    pub children: Vec<ChildUpdate>,
}

/// One child of an [`UpdateChildren`].
#[derive(Debug)]
pub struct ChildUpdate {
    /// Its spec from now on.
    pub spec: ChildSpec,
    /// Whether it changed so that a running child must restart to apply it.
    pub changed: bool,
}

/// What an [`UpdateChildren`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildChanges {
    /// Children added (and started).
    pub added: Vec<ActorPath>,
    /// Children stopped and removed.
    pub removed: Vec<ActorPath>,
    /// Children restarted with a new spec.
    pub changed: Vec<ActorPath>,
}

impl ChildChanges {
    /// Adds another supervisor's changes to these.
    pub fn extend(&mut self, other: ChildChanges) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.changed.extend(other.changed);
    }
}

/// Stops every child in reverse order, then the supervisor itself. The answer fires
/// when all are stopped.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// Stopped by an operator or shutdown.
    Stopped,
    /// Finished, not to be restarted.
    Exited,
    /// Given up on (`failed_reason` says why).
    Failed,
    /// Stopping as part of a restart of `batch`; then up again at `at`.
    Restart { batch: u64, at: Option<Instant> },
    /// Removed from the supervisor (by a reload): stopped, then the slot goes away.
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Should run: start it at `at` (now if `None`) once the earlier children of `batch`
    /// are running. `restart` counts the start as a restart.
    Up {
        batch: u64,
        at: Option<Instant>,
        restart: bool,
    },
    Down(Down),
}

#[derive(Debug)]
struct Run {
    generation: u64,
    stop: Option<oneshot::Sender<StopMode>>,
    started: Instant,
    ready: bool,
    stopping: bool,
    not_ready: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Until {
    Down,
    Settled { after_generation: u64 },
}

#[derive(Debug)]
struct Waiter {
    until: Until,
    tx: oneshot::Sender<()>,
}

struct Slot {
    /// Stable while the slot exists, unlike its index (children can be added and removed).
    id: u64,
    spec: ChildSpec,
    info: ActorInfo,
    target: Target,
    run: Option<Run>,
    generation: u64,
    backoff: Backoff,
    window: IntensityWindow,
    timer: Option<SpawnHandle>,
    waiters: Vec<Waiter>,
}

impl Slot {
    fn is_live(&self) -> bool {
        self.run.is_some()
    }

    fn derive_state(&self, now: Instant) -> ActorState {
        if let Some(run) = &self.run {
            return if run.stopping {
                ActorState::Stopping
            } else if run.ready {
                ActorState::Running
            } else {
                ActorState::Starting
            };
        }
        match self.target {
            Target::Up { at: Some(t), .. } if t > now => ActorState::Backoff,
            Target::Up { restart: true, .. } => ActorState::Backoff,
            Target::Up { .. } => ActorState::Starting,
            Target::Down(Down::Stopped) => ActorState::Stopped,
            Target::Down(Down::Exited) => ActorState::Exited,
            Target::Down(Down::Failed) => ActorState::Failed,
            Target::Down(Down::Restart { .. }) => ActorState::Backoff,
            Target::Down(Down::Removed) => ActorState::Stopped,
        }
    }

    fn next_restart_at(&self, now: Instant) -> Option<Timestamp> {
        let at = match self.target {
            Target::Up { at, restart, .. } if self.run.is_none() && restart => at,
            Target::Down(Down::Restart { at, .. }) => at,
            _ => None,
        };
        at.map(|at| {
            let wall = std::time::SystemTime::now() + at.saturating_duration_since(now);
            Timestamp(wall)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Running,
    ShuttingDown,
    Escalating(String),
}

/// The supervisor actor. Start a tree with [`Supervisor::start_root`]; nested supervisors
/// are children built by [`ChildSpec::supervisor`].
pub struct Supervisor {
    path: ActorPath,
    tree: SharedTree,
    strategy: Strategy,
    intensity: Option<Intensity>,
    window: IntensityWindow,
    slots: Vec<Slot>,
    next_batch: u64,
    next_slot_id: u64,
    phase: Phase,
    is_root: bool,
    ready_tx: Option<oneshot::Sender<()>>,
    exit_tx: Option<oneshot::Sender<Exit>>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
}

const INITIAL_BATCH: u64 = 0;

/// Messages a supervisor queues before senders wait (operator requests are rare; this
/// only has to absorb bursts).
const MAILBOX_CAPACITY: usize = 4096;

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("path", &self.path)
            .field("strategy", &self.strategy)
            .field("children", &self.slots.len())
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    fn new(path: ActorPath, tree: SharedTree, spec: &SupervisorSpec, is_root: bool) -> Self {
        let slots = spec
            .children
            .iter()
            .zip(1..)
            .map(|(child, id)| {
                let child_path = path.child(&child.name);
                Slot {
                    id,
                    info: ActorInfo::new(child_path, child.factory.kind(), ActorState::Starting),
                    target: Target::Up {
                        batch: INITIAL_BATCH,
                        at: None,
                        restart: false,
                    },
                    run: None,
                    generation: 0,
                    backoff: Backoff::new(child.backoff),
                    window: IntensityWindow::default(),
                    timer: None,
                    waiters: Vec::new(),
                    spec: child.clone(),
                }
            })
            .collect();
        Self {
            path,
            tree,
            strategy: spec.strategy,
            intensity: spec.intensity,
            window: IntensityWindow::default(),
            slots,
            next_batch: INITIAL_BATCH + 1,
            next_slot_id: spec.children.len() as u64 + 1,
            phase: Phase::Running,
            is_root,
            ready_tx: None,
            exit_tx: None,
            shutdown_waiters: Vec::new(),
        }
    }

    /// Starts the root supervisor `/` of `tree` on the current actix arbiter. Its
    /// children start in order right away.
    pub fn start_root(tree: SharedTree, spec: &SupervisorSpec) -> RootHandle {
        let root = ActorPath::root();
        tree.declare_root(ActorInfo::new(
            root.clone(),
            ActorKind::Supervisor,
            ActorState::Running,
        ));
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut sup = Supervisor::new(root, tree, spec, true);
        sup.ready_tx = Some(ready_tx);
        let fut = Context::new().into_future(sup);
        let addr = fut.address();
        let join = actix_rt::spawn(fut);
        let (ready_watch_tx, ready_watch) = tokio::sync::watch::channel(false);
        actix_rt::spawn(async move {
            if ready_rx.await.is_ok() {
                let _ = ready_watch_tx.send(true);
            }
        });
        let (ended_tx, ended) = tokio::sync::watch::channel(None);
        actix_rt::spawn(async move {
            let end = match join.await {
                Ok(()) => Exit::Normal,
                Err(e) if e.is_panic() => Exit::Panic(panic_message(&*e.into_panic())),
                Err(_) => Exit::Fatal("root supervisor task was cancelled".to_owned()),
            };
            let _ = ended_tx.send(Some(end));
        });
        RootHandle {
            addr,
            ready: ready_watch,
            ended,
        }
    }

    /// Tells the tree which children this supervisor has now, in order.
    fn declare(&self) {
        self.tree.declare_children(
            &self.path,
            self.slots.iter().map(|s| s.info.clone()).collect(),
        );
    }

    fn slot_index(&self, id: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    fn new_batch(&mut self) -> u64 {
        self.next_batch += 1;
        self.next_batch
    }

    fn set_target(&mut self, i: usize, target: Target, ctx: &mut Context<Self>) {
        let slot = &mut self.slots[i];
        slot.target = target;
        if let Some(timer) = slot.timer.take() {
            ctx.cancel_future(timer);
        }
    }

    /// Recomputes the public record of child `i`, publishes it and wakes its waiters.
    fn publish(&mut self, i: usize) {
        let now = Instant::now();
        let slot = &mut self.slots[i];
        slot.info.state = slot.derive_state(now);
        slot.info.next_restart_at = slot.next_restart_at(now);
        slot.info.backoff = slot.backoff.info();
        if slot.target != Target::Down(Down::Failed) {
            slot.info.failed_reason = None;
        }
        self.tree.publish(&slot.info);
        let state = slot.info.state;
        let generation = slot.generation;
        let operator_down = matches!(slot.target, Target::Down(Down::Stopped));
        let mut k = 0;
        while k < slot.waiters.len() {
            let done = match slot.waiters[k].until {
                Until::Down => matches!(
                    state,
                    ActorState::Stopped | ActorState::Exited | ActorState::Failed
                ),
                Until::Settled { after_generation } => {
                    state == ActorState::Failed
                        || (state == ActorState::Stopped && operator_down)
                        || (generation > after_generation
                            && matches!(
                                state,
                                ActorState::Running | ActorState::Backoff | ActorState::Exited
                            ))
                }
            };
            if done {
                let _ = slot.waiters.swap_remove(k).tx.send(());
            } else {
                k += 1;
            }
        }
    }

    /// Does what follows from the current targets and runs; see the module doc.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        // 1. One stop at a time, the last live child first.
        let stopping = self
            .slots
            .iter()
            .any(|s| s.run.as_ref().is_some_and(|r| r.stopping));
        if !stopping {
            if let Some(i) = self
                .slots
                .iter()
                .rposition(|s| s.is_live() && matches!(s.target, Target::Down(_)))
            {
                self.begin_stop(i);
            }
        }

        // 2. Removed children that have stopped leave; a restart batch whose stops are
        // all done goes up again.
        let before = self.slots.len();
        self.slots
            .retain(|s| s.target != Target::Down(Down::Removed) || s.is_live());
        if self.slots.len() != before {
            self.declare();
        }
        let mut k = 0;
        while k < self.slots.len() {
            if let Target::Down(Down::Restart { batch, .. }) = self.slots[k].target {
                let busy = self.slots.iter().any(|s| {
                    s.is_live() && matches!(s.target, Target::Down(Down::Restart { batch: b, .. }) if b == batch)
                });
                if !busy {
                    for j in 0..self.slots.len() {
                        if let Target::Down(Down::Restart { batch: b, at }) = self.slots[j].target {
                            if b == batch {
                                self.slots[j].target = Target::Up {
                                    batch,
                                    at,
                                    restart: true,
                                };
                                self.publish(j);
                            }
                        }
                    }
                }
            }
            k += 1;
        }

        // 3. Starts, in order within each batch.
        if self.phase == Phase::Running {
            let now = Instant::now();
            let mut blocked: Vec<u64> = Vec::new();
            for i in 0..self.slots.len() {
                let Target::Up { batch, at, .. } = self.slots[i].target else {
                    continue;
                };
                if let Some(run) = &self.slots[i].run {
                    if !run.ready && !blocked.contains(&batch) {
                        blocked.push(batch);
                    }
                    continue;
                }
                if blocked.contains(&batch) {
                    continue;
                }
                if let Some(at) = at.filter(|at| *at > now) {
                    if self.slots[i].timer.is_none() {
                        // A target change cancels this timer, so when it fires it is current.
                        let id = self.slots[i].id;
                        let handle = ctx.run_later(at - now, move |act, ctx| {
                            if let Some(k) = act.slot_index(id) {
                                act.slots[k].timer = None;
                            }
                            act.reconcile(ctx);
                        });
                        self.slots[i].timer = Some(handle);
                    }
                    blocked.push(batch);
                    continue;
                }
                self.start_child(i, ctx);
                if !self.slots[i].run.as_ref().is_some_and(|r| r.ready) {
                    blocked.push(batch);
                }
            }
        }

        // 4. Completion of the initial start, a shutdown or an escalation.
        if self.ready_tx.is_some() && self.initial_start_done() {
            if let Some(tx) = self.ready_tx.take() {
                let _ = tx.send(());
            }
        }
        if self.phase != Phase::Running && !self.slots.iter().any(Slot::is_live) {
            self.finish(ctx);
        }
    }

    fn initial_start_done(&self) -> bool {
        self.slots.iter().all(|s| match s.target {
            Target::Up {
                batch: INITIAL_BATCH,
                ..
            } => s.run.as_ref().is_some_and(|r| r.ready),
            _ => true,
        })
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Running => {}
            Phase::ShuttingDown => {
                for tx in self.shutdown_waiters.drain(..) {
                    let _ = tx.send(());
                }
                if let Some(tx) = self.exit_tx.take() {
                    let _ = tx.send(Exit::Normal);
                }
                self.phase = Phase::ShuttingDown;
                ctx.stop();
            }
            Phase::Escalating(reason) => {
                if self.is_root {
                    tracing::error!(path = %self.path, %reason, "root supervisor gave up: its children are failed");
                    // The root stays: its children are failed, an operator may start them.
                    self.window.clear();
                } else {
                    if let Some(tx) = self.exit_tx.take() {
                        let _ = tx.send(Exit::IntensityExceeded(reason));
                    }
                    self.phase = Phase::ShuttingDown;
                    ctx.stop();
                }
            }
        }
    }

    fn start_child(&mut self, i: usize, ctx: &mut Context<Self>) {
        let path = self.slots[i].info.path.clone();
        let slot = &mut self.slots[i];
        let id = slot.id;
        slot.generation += 1;
        let generation = slot.generation;
        if let Target::Up { batch, at, restart } = slot.target {
            if restart {
                slot.info.restarts += 1;
            }
            slot.target = Target::Up {
                batch,
                at,
                restart: false,
            };
        }
        let cx = StartContext {
            path: path.clone(),
            tree: self.tree.clone(),
            generation,
        };
        let factory = slot.spec.factory.clone();
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| factory.start(cx)))
            .unwrap_or_else(|panic| Err(format!("start panicked: {}", panic_message(&*panic))));
        slot.info.started_at = Some(Timestamp::now());
        let now = Instant::now();
        match started {
            Ok(RunningChild {
                pid,
                ready,
                exit,
                stop,
                adopted,
                containment,
            }) => {
                if adopted {
                    tracing::info!(path = %path, pid, "adopted");
                }
                tracing::info!(path = %path, pid, generation, "started");
                slot.info.pid = pid;
                slot.info.containment = containment;
                slot.run = Some(Run {
                    generation,
                    stop: Some(stop),
                    started: now,
                    ready: ready.is_none(),
                    stopping: false,
                    not_ready: None,
                });
                // Watched by tasks of their own that message back: futures spawned in the
                // actor's context would all be polled on every event.
                let addr = ctx.address();
                actix_rt::spawn(async move {
                    let exit = exit.await;
                    addr.do_send(ChildExited {
                        id,
                        generation,
                        exit,
                    });
                });
                if let Some(ready) = ready {
                    let addr = ctx.address();
                    actix_rt::spawn(async move {
                        let result = ready.await;
                        addr.do_send(ChildReady {
                            id,
                            generation,
                            result,
                        });
                    });
                }
            }
            Err(reason) => {
                tracing::warn!(path = %path, %reason, "could not start");
                slot.info.pid = None;
                slot.run = Some(Run {
                    generation,
                    stop: None,
                    started: now,
                    ready: false,
                    stopping: false,
                    not_ready: None,
                });
                // Handled as an exit on a later turn, so a child that can never start
                // cannot spin this actor without letting messages in.
                ctx.address().do_send(ChildExited {
                    id,
                    generation,
                    exit: Exit::StartFailed(reason),
                });
            }
        }
        self.publish(i);
    }

    fn begin_stop(&mut self, i: usize) {
        if let Some(run) = self.slots[i].run.as_mut() {
            run.stopping = true;
            if let Some(stop) = run.stop.take() {
                let _ = stop.send(StopMode::Graceful);
            }
        }
        tracing::debug!(path = %self.slots[i].info.path, "stopping");
        self.publish(i);
    }

    fn on_ready(
        &mut self,
        i: usize,
        generation: u64,
        res: Result<(), String>,
        ctx: &mut Context<Self>,
    ) {
        let path = self.slots[i].info.path.clone();
        let Some(run) = self.slots[i]
            .run
            .as_mut()
            .filter(|r| r.generation == generation && !r.stopping)
        else {
            return;
        };
        match res {
            Ok(()) => {
                run.ready = true;
                tracing::info!(path = %path, "ready");
                self.publish(i);
            }
            Err(reason) => {
                tracing::warn!(path = %path, %reason, "ready check failed");
                run.not_ready = Some(reason);
                self.begin_stop(i);
            }
        }
        self.reconcile(ctx);
    }

    fn on_exit(&mut self, i: usize, generation: u64, exit: Exit, ctx: &mut Context<Self>) {
        let slot = &mut self.slots[i];
        if slot.run.as_ref().map(|r| r.generation) != Some(generation) {
            return;
        }
        let Some(run) = slot.run.take() else { return };
        // A fatal exit (a refusal) says more than the ready check it cut short.
        let exit = match run.not_ready {
            Some(reason) if !exit.is_fatal() => Exit::NotReady(reason),
            _ => exit,
        };
        slot.info.last_exit = Some(exit.record(Timestamp::now()));
        slot.info.pid = None;
        let expected = matches!(slot.target, Target::Down(_));
        if expected {
            tracing::info!(path = %slot.info.path, %exit, "stopped");
        } else {
            tracing::warn!(path = %slot.info.path, %exit, "exited");
            self.handle_failure(i, &exit, run.started, ctx);
        }
        self.publish(i);
        self.reconcile(ctx);
    }

    /// An unexpected exit of child `i`: decides restart, give-up or escalation.
    fn handle_failure(&mut self, i: usize, exit: &Exit, started: Instant, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if exit.is_fatal() {
            tracing::error!(path = %self.slots[i].info.path, %exit, "giving up");
            self.slots[i].info.failed_reason = Some(exit.to_string());
            self.set_target(i, Target::Down(Down::Failed), ctx);
            return;
        }
        let slot = &self.slots[i];
        if !slot.spec.restart.restarts_after(exit.is_abnormal()) {
            self.set_target(i, Target::Down(Down::Exited), ctx);
            return;
        }
        if let Some(limit) = self.intensity {
            if !self.window.try_record(now, limit) {
                let reason = intensity_reason(limit);
                self.escalate(reason, ctx);
                return;
            }
        }
        let slot = &mut self.slots[i];
        if !slot.window.try_record(now, slot.spec.intensity) {
            let reason = intensity_reason(slot.spec.intensity);
            tracing::error!(path = %slot.info.path, %reason, "giving up");
            slot.info.failed_reason = Some(reason);
            self.set_target(i, Target::Down(Down::Failed), ctx);
            return;
        }
        if now.duration_since(started) >= slot.spec.reset_after {
            slot.backoff.reset();
        }
        let delay = slot.backoff.next_delay();
        let at = (!delay.is_zero()).then(|| now + delay);
        let batch = self.new_batch();
        match self.strategy {
            Strategy::OneForOne => self.set_target(
                i,
                Target::Up {
                    batch,
                    at,
                    restart: true,
                },
                ctx,
            ),
            Strategy::OneForAll => self.restart_group(0, i, batch, at, ctx),
            Strategy::RestForOne => self.restart_group(i, i, batch, at, ctx),
        }
    }

    /// Restarts children `from..` (and the failed one, `failed`) as one batch: those still
    /// running are stopped in reverse order first.
    fn restart_group(
        &mut self,
        from: usize,
        failed: usize,
        batch: u64,
        at: Option<Instant>,
        ctx: &mut Context<Self>,
    ) {
        for j in from..self.slots.len() {
            let meant_to_run = matches!(
                self.slots[j].target,
                Target::Up { .. } | Target::Down(Down::Restart { .. })
            );
            if j == failed || meant_to_run {
                self.set_target(j, Target::Down(Down::Restart { batch, at }), ctx);
                self.publish(j);
            }
        }
    }

    fn escalate(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::error!(path = %self.path, %reason, "supervisor gave up: stopping its children");
        self.phase = Phase::Escalating(reason.clone());
        for i in 0..self.slots.len() {
            if self.slots[i].target == Target::Down(Down::Removed) {
                continue;
            }
            self.slots[i].info.failed_reason =
                Some(format!("supervisor {} gave up: {reason}", self.path));
            self.set_target(i, Target::Down(Down::Failed), ctx);
            self.publish(i);
        }
    }

    fn update_children(
        &mut self,
        update: UpdateChildren,
        ctx: &mut Context<Self>,
    ) -> Result<ChildChanges, ControlError> {
        if self.phase != Phase::Running {
            return Err(ControlError::ShuttingDown(self.path.to_string()));
        }
        self.strategy = update.strategy;
        self.intensity = update.intensity;
        let added_batch = self.new_batch();
        let mut old = std::mem::take(&mut self.slots);
        let mut changes = ChildChanges::default();
        let mut to_restart = Vec::new();
        for ChildUpdate { spec, changed } in update.children {
            let existing = old
                .iter()
                .position(|s| s.spec.name == spec.name && s.target != Target::Down(Down::Removed));
            match existing {
                Some(pos) => {
                    let mut slot = old.remove(pos);
                    slot.spec = spec;
                    if changed {
                        changes.changed.push(slot.info.path.clone());
                        slot.info.kind = slot.spec.factory.kind();
                        slot.window.clear();
                        slot.backoff = Backoff::new(slot.spec.backoff);
                        to_restart.push(slot.id);
                    }
                    self.slots.push(slot);
                }
                None => {
                    let path = self.path.child(&spec.name);
                    changes.added.push(path.clone());
                    let id = self.next_slot_id;
                    self.next_slot_id += 1;
                    self.slots.push(Slot {
                        id,
                        info: ActorInfo::new(path, spec.factory.kind(), ActorState::Starting),
                        target: Target::Up {
                            batch: added_batch,
                            at: None,
                            restart: false,
                        },
                        run: None,
                        generation: 0,
                        backoff: Backoff::new(spec.backoff),
                        window: IntensityWindow::default(),
                        timer: None,
                        waiters: Vec::new(),
                        spec,
                    });
                }
            }
        }
        // What is left was removed: it stops after everything else has its place, last
        // in the list, so it is the first to be stopped.
        let first_removed = self.slots.len();
        for slot in old {
            if slot.target != Target::Down(Down::Removed) {
                changes.removed.push(slot.info.path.clone());
            }
            self.slots.push(slot);
        }
        for i in first_removed..self.slots.len() {
            self.set_target(i, Target::Down(Down::Removed), ctx);
        }
        for id in to_restart {
            let Some(i) = self.slot_index(id) else {
                continue;
            };
            let batch = self.new_batch();
            if self.slots[i].is_live() {
                self.set_target(i, Target::Down(Down::Restart { batch, at: None }), ctx);
            } else if self.slots[i].target != Target::Down(Down::Stopped) {
                let target = Target::Up {
                    batch,
                    at: None,
                    restart: false,
                };
                self.set_target(i, target, ctx);
            }
        }
        tracing::info!(
            path = %self.path,
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed.len(),
            "children updated"
        );
        self.declare();
        for i in 0..self.slots.len() {
            self.publish(i);
        }
        self.reconcile(ctx);
        Ok(changes)
    }

    fn begin_shutdown(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::ShuttingDown {
            return;
        }
        tracing::info!(path = %self.path, "shutting down");
        self.phase = Phase::ShuttingDown;
        for i in 0..self.slots.len() {
            if !matches!(
                self.slots[i].target,
                Target::Down(Down::Exited | Down::Failed | Down::Removed)
            ) {
                self.set_target(i, Target::Down(Down::Stopped), ctx);
            }
            self.publish(i);
        }
        self.reconcile(ctx);
    }

    fn control(
        &mut self,
        name: &str,
        op: ControlOp,
        ctx: &mut Context<Self>,
    ) -> Result<oneshot::Receiver<()>, ControlError> {
        let Some(i) = self.slots.iter().position(|s| s.spec.name.as_str() == name) else {
            let path = ActorName::new(name)
                .map(|n| self.path.child(&n).to_string())
                .unwrap_or_else(|_| format!("{}/{name}", self.path));
            return Err(ControlError::NotFound(path));
        };
        if self.phase != Phase::Running {
            return Err(ControlError::ShuttingDown(self.path.to_string()));
        }
        let state = self.slots[i].info.state;
        let conflict = match op {
            ControlOp::Start => matches!(
                state,
                ActorState::Starting
                    | ActorState::Running
                    | ActorState::Backoff
                    | ActorState::Stopping
            ),
            ControlOp::Stop => matches!(state, ActorState::Stopped | ActorState::Stopping),
            ControlOp::Restart => state == ActorState::Stopping,
        };
        if conflict {
            return Err(ControlError::Conflict {
                path: self.slots[i].info.path.to_string(),
                op: op.as_str(),
                state,
            });
        }
        tracing::info!(path = %self.slots[i].info.path, op = op.as_str(), "operator request");
        let (tx, rx) = oneshot::channel();
        let after_generation = self.slots[i].generation;
        let batch = self.new_batch();
        let until = match op {
            ControlOp::Stop => {
                self.set_target(i, Target::Down(Down::Stopped), ctx);
                Until::Down
            }
            ControlOp::Start | ControlOp::Restart => {
                let slot = &mut self.slots[i];
                if op == ControlOp::Start || state == ActorState::Failed {
                    slot.window.clear();
                    slot.backoff.reset();
                }
                let restart = op == ControlOp::Restart;
                let target = if slot.is_live() {
                    Target::Down(Down::Restart { batch, at: None })
                } else {
                    Target::Up {
                        batch,
                        at: None,
                        restart,
                    }
                };
                self.set_target(i, target, ctx);
                Until::Settled { after_generation }
            }
        };
        self.slots[i].waiters.push(Waiter { until, tx });
        self.publish(i);
        self.reconcile(ctx);
        Ok(rx)
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.tree.register_supervisor(&self.path, ctx.address());
        self.declare();
        self.reconcile(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if std::thread::panicking() {
            tracing::error!(path = %self.path, "supervisor panicked: its children are killed");
        }
        // Dropping the slots drops every run's stop sender: live children end at once.
    }
}

impl Handler<Control> for Supervisor {
    type Result = Result<oneshot::Receiver<()>, ControlError>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!("supervisor", path = %self.path);
        let _enter = span.enter();
        self.control(&msg.name, msg.op, ctx)
    }
}

/// One run of a child ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ChildExited {
    id: u64,
    generation: u64,
    exit: Exit,
}

/// One run of a child passed (or failed) its ready check.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ChildReady {
    id: u64,
    generation: u64,
    result: Result<(), String>,
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        if let Some(i) = self.slot_index(msg.id) {
            self.on_exit(i, msg.generation, msg.exit, ctx);
        }
    }
}

impl Handler<ChildReady> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildReady, ctx: &mut Self::Context) {
        if let Some(i) = self.slot_index(msg.id) {
            self.on_ready(i, msg.generation, msg.result, ctx);
        }
    }
}

impl Handler<UpdateChildren> for Supervisor {
    type Result = Result<ChildChanges, ControlError>;

    fn handle(&mut self, msg: UpdateChildren, ctx: &mut Self::Context) -> Self::Result {
        self.update_children(msg, ctx)
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = MessageResult<Shutdown>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.shutdown_waiters.push(tx);
        self.begin_shutdown(ctx);
        MessageResult(rx)
    }
}

/// The running root of a tree.
#[derive(Debug)]
pub struct RootHandle {
    /// The root supervisor.
    pub addr: Addr<Supervisor>,
    ready: tokio::sync::watch::Receiver<bool>,
    ended: tokio::sync::watch::Receiver<Option<Exit>>,
}

impl RootHandle {
    /// Waits until the root supervisor has ended (after a shutdown, or by a bug: a panic)
    /// and says how.
    pub async fn ended(&self) -> Exit {
        let mut ended = self.ended.clone();
        let end = match ended.wait_for(Option::is_some).await {
            Ok(end) => end.clone().unwrap_or(Exit::Normal),
            Err(_) => Exit::Normal,
        };
        end
    }

    /// Waits until every child has been started in order (and is ready, or has left the
    /// initial start by failing).
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Stops the whole tree in reverse order and waits until every child is gone.
    pub async fn shutdown(&self) {
        if let Ok(done) = self.addr.send(Shutdown).await {
            let _ = done.await;
        }
    }
}

/// Starts nested supervisors: the child kind behind [`ChildSpec::supervisor`].
#[derive(Debug)]
struct SupervisorFactory {
    spec: SupervisorSpec,
}

impl ChildFactory for SupervisorFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Supervisor
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        Ok(Supervisor::start_nested(cx, &self.spec).0)
    }
}

impl Supervisor {
    /// Starts a supervisor of `spec` as the run of a child at `cx.path`, for child kinds
    /// built on a supervisor (nested supervisors, pools). Returns the run and the
    /// supervisor's address (to change its children).
    pub fn start_nested(
        cx: StartContext,
        spec: &SupervisorSpec,
    ) -> (RunningChild, Addr<Supervisor>) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<StopMode>();
        let mut sup = Supervisor::new(cx.path, cx.tree, spec, false);
        sup.ready_tx = Some(ready_tx);
        sup.exit_tx = Some(exit_tx);
        let mut ctx = Context::new();
        ctx.spawn(wrap_future(stop_rx).map(|_, act: &mut Supervisor, ctx| act.begin_shutdown(ctx)));
        let fut = ctx.into_future(sup);
        let addr = fut.address();
        let join = actix_rt::spawn(fut);
        let exit = async move {
            match join.await {
                Ok(()) => exit_rx.await.unwrap_or(Exit::Normal),
                Err(e) if e.is_panic() => Exit::Panic(panic_message(&*e.into_panic())),
                Err(_) => Exit::Fatal("supervisor task was cancelled".to_owned()),
            }
        };
        let run = RunningChild {
            pid: None,
            ready: Some(Box::pin(async move {
                ready_rx
                    .await
                    .map_err(|_| "supervisor ended before its children started".to_owned())
            })),
            exit: Box::pin(exit),
            stop: stop_tx,
            adopted: false,
            containment: None,
        };
        (run, addr)
    }
}

impl ChildSpec {
    /// A nested supervisor child (permanent, with the built-in backoff and intensity).
    pub fn supervisor(name: ActorName, spec: SupervisorSpec) -> Self {
        ChildSpec::new(name, SupervisorFactory { spec })
    }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}
