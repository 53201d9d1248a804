//! The supervisor actor: starts its children in order, restarts them by strategy,
//! backoff and intensity, stops them in reverse order, and escalates to its parent.
//!
//! Each child is a slot with a *target* (what the supervisor wants: up, or down for a
//! reason) and at most one live *run*. Every event (a start, a ready, an exit, a timer, an
//! operator command) changes targets or runs and then calls [`Supervisor::reconcile`],
//! which does the one thing that follows: stop the last live child whose target is down
//! (one stop at a time, so stops go in reverse order), start the next child whose target
//! is up (in order within its batch: the next starts once the previous is running; and a
//! child that has never been running holds back every later child that has not run
//! either), and finish a shutdown or an escalation once nothing is live. Every run carries
//! a generation number, so a late exit, ready or timer of an old run never touches a new
//! one. A slot has at most one live run, and a path at most one slot: a removed child that
//! a reload brings back while its run is still stopping gets its old slot back.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt as _;
use tokio::sync::oneshot;

use crate::child::{ChildSpec, PidReport, RunningChild, StartContext, StopMode};
use crate::exit::Exit;
use crate::path::ActorPath;
use crate::policy::{intensity_reason, Backoff, Intensity, IntensityWindow, Strategy};
use crate::state::{ActorKind, ActorState};
use crate::tree::{ActorInfo, SharedTree, Timestamp};

mod handle;
mod messages;
mod operator;

pub use handle::{panic_message, RootHandle};
pub use messages::{
    AddChild, ChildChanges, ChildUpdate, Control, ControlError, ControlOp, RemoveChild, Shutdown,
    UpdateChildren,
};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// Stopped by an operator or shutdown.
    Stopped,
    /// Finished, not to be restarted.
    Exited,
    /// Given up on (`failed_reason` says why).
    Failed,
    /// Stopping as part of a restart of `batch`; then up again at `at`. `counts` says
    /// whether that start counts as a restart (not for a removed child that a reload
    /// brought back while its old run was still stopping). `in_place`: an operator's
    /// restart of this child alone, with the same spec, which a child that can restart
    /// in place may carry out so ([`StopMode::Restart`]).
    Restart {
        batch: u64,
        at: Option<Instant>,
        counts: bool,
        in_place: bool,
    },
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
    /// The task watching the ready check: it ends with the run (see `Drop`).
    ready_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Run {
    /// A ready check never outlives its run: a crash-looping child does not pile up
    /// checks (and their sockets) until each times out.
    fn drop(&mut self) {
        if let Some(task) = self.ready_task.take() {
            task.abort();
        }
    }
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
    /// Whether a run of this slot has been `running` once. Until then the slot holds
    /// back every later slot that has not run either (start order, SEMANTICS 1).
    has_run: bool,
}

impl Slot {
    /// A slot for `spec` under `parent` that is to start in `batch`.
    fn new(id: u64, parent: &ActorPath, spec: ChildSpec, batch: u64) -> Self {
        let path = parent.child(&spec.name);
        Slot {
            id,
            info: ActorInfo::new(path, spec.factory.kind(), ActorState::Starting),
            target: Target::Up {
                batch,
                at: None,
                restart: false,
            },
            run: None,
            generation: 0,
            backoff: Backoff::new(spec.backoff),
            window: IntensityWindow::default(),
            timer: None,
            waiters: Vec::new(),
            has_run: false,
            spec,
        }
    }

    /// Whether the supervisor means this child to run (now, or after a stop or a delay).
    fn meant_to_run(&self) -> bool {
        matches!(
            self.target,
            Target::Up { .. } | Target::Down(Down::Restart { .. })
        )
    }

    /// Whether readiness waits for this child: meant to run, or a `permanent` child that
    /// was given up on (a `transient` or `temporary` one that failed is done with).
    fn awaited(&self) -> bool {
        self.meant_to_run()
            || (self.target == Target::Down(Down::Failed)
                && self.spec.restart == crate::RestartType::Permanent)
    }

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
        let at = at?;
        let wall = std::time::SystemTime::now().checked_add(at.saturating_duration_since(now))?;
        Some(Timestamp(wall))
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

/// The instant `delay` after `now`; a delay past what the clock can hold (the config
/// refuses those, a `ChildFactory` user might not) waits as long as the clock allows
/// rather than panicking.
fn later(now: Instant, delay: Duration) -> Instant {
    let mut delay = delay;
    loop {
        if let Some(at) = now.checked_add(delay) {
            return at;
        }
        delay /= 2;
    }
}

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
            .map(|(child, id)| Slot::new(id, &path, child.clone(), INITIAL_BATCH))
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
        let (stop_on_drop, dropped) = oneshot::channel::<()>();
        let mut sup = Supervisor::new(root, tree, spec, true);
        sup.ready_tx = Some(ready_tx);
        let mut ctx = Context::new();
        // The handle was dropped without a shutdown: nothing else can stop this tree.
        ctx.spawn(
            actix::fut::wrap_future(dropped)
                .map(|_, act: &mut Supervisor, ctx| act.end_at_once(ctx)),
        );
        let fut = ctx.into_future(sup);
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
            _stop_on_drop: stop_on_drop,
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
        slot.info.awaited = slot.awaited();
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
                        if let Target::Down(Down::Restart {
                            batch: b,
                            at,
                            counts,
                            ..
                        }) = self.slots[j].target
                        {
                            if b == batch {
                                self.slots[j].target = Target::Up {
                                    batch,
                                    at,
                                    restart: counts,
                                };
                                self.publish(j);
                            }
                        }
                    }
                }
            }
            k += 1;
        }

        // 3. Starts, in order within each batch; and a child that has never been running
        // holds back every later child that has not run either, whatever their batches
        // (a child that fails its first start does not let its successors start).
        if self.phase == Phase::Running {
            let now = Instant::now();
            let mut blocked: Vec<u64> = Vec::new();
            let mut first_run_pending = false;
            for i in 0..self.slots.len() {
                let held_back = first_run_pending && !self.slots[i].has_run;
                self.start_if_due(i, held_back, now, &mut blocked, ctx);
                first_run_pending |= self.slots[i].meant_to_run() && !self.slots[i].has_run;
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

    /// Step 3 of [`Self::reconcile`] for child `i`: starts it if its target is up, its
    /// time has come and nothing earlier holds it back (`held_back`: an earlier child has
    /// never run; `blocked`: batches with an earlier child not running yet).
    fn start_if_due(
        &mut self,
        i: usize,
        held_back: bool,
        now: Instant,
        blocked: &mut Vec<u64>,
        ctx: &mut Context<Self>,
    ) {
        let (batch, at) = match self.slots[i].target {
            Target::Up { batch, at, .. } => (batch, at),
            // Still stopping before it comes back up: the rest of its batch waits.
            Target::Down(Down::Restart { batch, .. }) => {
                if !blocked.contains(&batch) {
                    blocked.push(batch);
                }
                return;
            }
            Target::Down(_) => return,
        };
        if let Some(run) = &self.slots[i].run {
            if !run.ready && !blocked.contains(&batch) {
                blocked.push(batch);
            }
            return;
        }
        if blocked.contains(&batch) || held_back {
            return;
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
            return;
        }
        self.start_child(i, ctx);
        if !self.slots[i].run.as_ref().is_some_and(|r| r.ready) {
            blocked.push(batch);
        }
    }

    /// Whether every child meant to run has been `running` once (one that failed its
    /// first start keeps the initial start open until it has run, or is given up on).
    fn initial_start_done(&self) -> bool {
        self.slots.iter().all(|s| s.has_run || !s.meant_to_run())
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
        let pid_addr = ctx.address();
        let cx = StartContext {
            path: path.clone(),
            tree: self.tree.clone(),
            generation,
            pid_report: PidReport::new(move |pid| {
                pid_addr.do_send(ChildPid {
                    id,
                    generation,
                    pid,
                })
            }),
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
                slot.has_run |= ready.is_none();
                slot.info.containment = containment;
                // Watched by tasks of their own that message back: futures spawned in the
                // actor's context would all be polled on every event. A factory's future
                // that panics is an abnormal exit (or a failed check), never a slot that
                // waits forever for its run to end.
                let addr = ctx.address();
                actix_rt::spawn(async move {
                    let exit = AssertUnwindSafe(exit)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| Exit::Panic(panic_message(&*panic)));
                    addr.do_send(ChildExited {
                        id,
                        generation,
                        exit,
                    });
                });
                let ready_task = ready.map(|ready| {
                    let addr = ctx.address();
                    actix_rt::spawn(async move {
                        let result =
                            AssertUnwindSafe(ready)
                                .catch_unwind()
                                .await
                                .unwrap_or_else(|panic| {
                                    Err(format!("ready check panicked: {}", panic_message(&*panic)))
                                });
                        addr.do_send(ChildReady {
                            id,
                            generation,
                            result,
                        });
                    })
                });
                slot.run = Some(Run {
                    generation,
                    stop: Some(stop),
                    started: now,
                    ready: ready_task.is_none(),
                    stopping: false,
                    not_ready: None,
                    ready_task,
                });
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
                    ready_task: None,
                });
                // Handled as an exit on a later turn of the runtime (a task that yields
                // once, not a message to self: the actor's context would handle that in
                // the same poll), so a child that can never start, restarted without
                // backoff, cannot keep this thread from signals, the API or its other
                // actors.
                let addr = ctx.address();
                actix_rt::spawn(async move {
                    tokio::task::yield_now().await;
                    addr.do_send(ChildExited {
                        id,
                        generation,
                        exit: Exit::StartFailed(reason),
                    });
                });
            }
        }
        self.publish(i);
    }

    fn begin_stop(&mut self, i: usize) {
        let mode = self.stop_mode(i);
        if let Some(run) = self.slots[i].run.as_mut() {
            run.stopping = true;
            if let Some(stop) = run.stop.take() {
                let _ = stop.send(mode);
            }
        }
        tracing::debug!(path = %self.slots[i].info.path, "stopping");
        self.publish(i);
    }

    /// [`StopMode::Restart`] when child `i` stops for an operator's restart of it alone
    /// (its spec unchanged: a reload's restart is a stop and a start of the new spec).
    fn stop_mode(&self, i: usize) -> StopMode {
        match self.slots[i].target {
            Target::Down(Down::Restart { in_place: true, .. }) => StopMode::Restart,
            _ => StopMode::Graceful,
        }
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
                self.slots[i].has_run = true;
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
        let Some(mut run) = slot.run.take() else {
            return;
        };
        // A fatal exit (a refusal) says more than the ready check it cut short.
        let exit = match run.not_ready.take() {
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
        let at = (!delay.is_zero()).then(|| later(now, delay));
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
                self.set_target(
                    j,
                    Target::Down(Down::Restart {
                        batch,
                        at,
                        counts: true,
                        in_place: false,
                    }),
                    ctx,
                );
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

    /// The parent is gone (it dropped this supervisor's stop handle; at the root: the
    /// [`RootHandle`] was dropped without a shutdown): every live run ends
    /// at once, as [`RunningChild::stop`] promises for a run whose supervisor died (its
    /// stop handle is dropped, not sent), and then this supervisor ends. A run already in
    /// its graceful stop finishes that stop (its handle was spent on it).
    fn end_at_once(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(path = %self.path, "stop handle dropped (parent gone): ending every child at once");
        self.phase = Phase::ShuttingDown;
        for i in 0..self.slots.len() {
            if !matches!(
                self.slots[i].target,
                Target::Down(Down::Exited | Down::Failed | Down::Removed)
            ) {
                self.set_target(i, Target::Down(Down::Stopped), ctx);
            }
            if let Some(run) = self.slots[i].run.as_mut() {
                run.stopping = true;
                drop(run.stop.take());
            }
            self.publish(i);
        }
        self.reconcile(ctx);
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

/// A run learned its pid after its start (see [`PidReport`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ChildPid {
    id: u64,
    generation: u64,
    pid: Option<u32>,
}

impl Handler<ChildPid> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildPid, _ctx: &mut Self::Context) {
        let Some(i) = self.slot_index(msg.id) else {
            return;
        };
        let slot = &mut self.slots[i];
        let current = slot.run.as_ref().map(|run| run.generation);
        if current == Some(msg.generation) && slot.info.pid != msg.pid {
            slot.info.pid = msg.pid;
            self.publish(i);
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
