//! An in-process child kind for the supervisor's own tests: a [`ChildFactory`] whose runs
//! live in a shared [`Probe`] registry. A run ends when the test makes it exit, when it is
//! asked to stop (after its stop delay, like a service that traps TERM) or at once when
//! its stop handle is dropped. The registry records every start, stop request and end, and
//! notes a violation whenever a path gets a second live run.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use tokio::sync::oneshot;
use warden_supervisors::{
    ActorKind, ActorName, ChildFactory, ChildSpec, Exit, RunningChild, StartContext, StopMode,
};

/// What happened to a run, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A run of the path started.
    Started(String),
    /// A run was asked to stop gracefully.
    StopAsked(String),
    /// A run's stop handle was dropped (its supervisor is gone).
    StopDropped(String),
    /// A run ended.
    Ended(String),
}

/// How a probe's ready check behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Ready as soon as it starts (no check).
    AtStart,
    /// The first `n` runs fail their check after `after`; later runs pass it after `after`.
    FailFirst { n: u32, after: Duration },
    /// The check never resolves (until the run ends and the check is dropped).
    Never,
}

#[derive(Default)]
struct Registry {
    live: HashMap<String, u64>,
    violations: Vec<String>,
    events: Vec<Event>,
    triggers: HashMap<String, oneshot::Sender<Exit>>,
    panics: HashMap<String, bool>,
    starts: HashMap<String, u32>,
    ready_checks_alive: usize,
}

/// The shared record of every probe run.
#[derive(Clone, Default)]
pub struct Probe {
    reg: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Probe {
    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.reg.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A child spec named `name` whose runs this probe records.
    pub fn child(&self, name: &str, ready: Ready, stop_delay: Duration) -> ChildSpec {
        ChildSpec::new(
            ActorName::new(name).expect("child name"),
            ProbeFactory {
                probe: self.clone(),
                ready,
                stop_delay,
            },
        )
    }

    /// Makes the live run of `path` end with `exit`; false if it has none.
    pub fn exit(&self, path: &str, exit: Exit) -> bool {
        self.with(|r| r.triggers.remove(path))
            .is_some_and(|tx| tx.send(exit).is_ok())
    }

    /// Makes the live run of `path` end by panicking in its exit future.
    pub fn panic(&self, path: &str) -> bool {
        self.with(|r| r.panics.insert(path.to_owned(), true));
        self.exit(path, Exit::Normal)
    }

    /// Every "two live runs of one path" seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.with(|r| r.violations.clone())
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.with(|r| r.events.clone())
    }

    /// How many runs of `path` were started.
    pub fn starts(&self, path: &str) -> u32 {
        self.with(|r| r.starts.get(path).copied().unwrap_or(0))
    }

    /// Whether `path` has a live run.
    pub fn is_live(&self, path: &str) -> bool {
        self.with(|r| r.live.contains_key(path))
    }

    /// How many ready checks are still held by some task.
    pub fn ready_checks_alive(&self) -> usize {
        self.with(|r| r.ready_checks_alive)
    }
}

struct ProbeFactory {
    probe: Probe,
    ready: Ready,
    stop_delay: Duration,
}

/// Counts a ready check as alive until it is dropped (finished or aborted).
struct ReadyGuard(Probe);

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        self.0.with(|r| r.ready_checks_alive -= 1);
    }
}

impl ChildFactory for ProbeFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Actor
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let path = cx.path.to_string();
        let (exit_tx, exit_rx) = oneshot::channel::<Exit>();
        let (stop_tx, stop_rx) = oneshot::channel::<StopMode>();
        let run_number = self.probe.with(|r| {
            if let Some(other) = r.live.get(&path) {
                r.violations.push(format!(
                    "{path}: run {} started while run {other} is live",
                    cx.generation
                ));
            }
            r.live.insert(path.clone(), cx.generation);
            r.events.push(Event::Started(path.clone()));
            r.triggers.insert(path.clone(), exit_tx);
            let n = r.starts.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        });
        let probe = self.probe.clone();
        let stop_delay = self.stop_delay;
        let generation = cx.generation;
        let run_path = path.clone();
        let exit = async move {
            let exit = tokio::select! {
                exit = async {
                    match exit_rx.await {
                        Ok(exit) => exit,
                        // The trigger was replaced by a later run's: this run waits on.
                        Err(_) => std::future::pending().await,
                    }
                } => exit,
                stop = stop_rx => {
                    match stop {
                        Ok(StopMode::Graceful | StopMode::Restart) => {
                            probe.with(|r| r.events.push(Event::StopAsked(run_path.clone())));
                            tokio::time::sleep(stop_delay).await;
                        }
                        Err(_) => {
                            probe.with(|r| r.events.push(Event::StopDropped(run_path.clone())));
                        }
                    }
                    Exit::Normal
                }
            };
            let panic = probe.with(|r| {
                if r.live.get(&run_path) == Some(&generation) {
                    r.live.remove(&run_path);
                }
                r.events.push(Event::Ended(run_path.clone()));
                r.panics.remove(&run_path).unwrap_or(false)
            });
            if panic {
                panic!("probe exit future of {run_path} panicked on purpose");
            }
            exit
        };
        let ready: Option<LocalBoxFuture<'static, Result<(), String>>> = match self.ready {
            Ready::AtStart => None,
            Ready::FailFirst { n, after } => Some(Box::pin(async move {
                tokio::time::sleep(after).await;
                if run_number <= n {
                    Err(format!("run {run_number} is not ready on purpose"))
                } else {
                    Ok(())
                }
            })),
            Ready::Never => {
                self.probe.with(|r| r.ready_checks_alive += 1);
                let guard = ReadyGuard(self.probe.clone());
                Some(Box::pin(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                    Ok(())
                }))
            }
        };
        Ok(RunningChild {
            pid: None,
            ready,
            exit: Box::pin(exit),
            stop: stop_tx,
            adopted: false,
            containment: None,
        })
    }
}

/// Polls `cond` every 2 ms (yielding to the actors) until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
