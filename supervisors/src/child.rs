//! What a supervisor needs from a child kind: a factory that starts one run of the child,
//! and the handles of that run (its pid, its readiness, its exit, a way to stop it).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use tokio::sync::oneshot;

use crate::exit::Exit;
use crate::path::{ActorName, ActorPath};
use crate::policy::{BackoffConfig, Intensity, RestartType};
use crate::state::ActorKind;
use crate::tree::{Containment, SharedTree};

/// What a factory learns about the run it starts.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// The child's path.
    pub path: ActorPath,
    /// The tree it lives in.
    pub tree: SharedTree,
    /// Counts the runs of this child; a fresh number for every start.
    pub generation: u64,
    /// Tells the supervisor this run's pid when the run learns it after its start (a
    /// unit of the host's service manager reports its MainPID once it is active).
    pub pid_report: PidReport,
}

/// Reports a pid that a run learns after its start to the run's supervisor, which shows
/// it as the actor's `pid` (and announces the change) while that run lasts.
#[derive(Clone)]
pub struct PidReport(Option<Arc<dyn Fn(Option<u32>) + Send + Sync>>);

impl PidReport {
    /// A report that goes to `sink`.
    pub fn new(sink: impl Fn(Option<u32>) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(sink)))
    }

    /// A report that goes nowhere (a run started outside a supervisor).
    pub fn none() -> Self {
        Self(None)
    }

    /// Reports the run's current pid (`None`: it has none now).
    pub fn report(&self, pid: Option<u32>) {
        if let Some(sink) = &self.0 {
            sink(pid);
        }
    }
}

impl fmt::Debug for PidReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PidReport").field(&self.0.is_some()).finish()
    }
}

/// How a stop request ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// The child's stop procedure (a signal, then SIGKILL after its timeout).
    Graceful,
    /// The operator restarts this child alone, with its spec unchanged, and it starts
    /// again at once: a child that can restart in place (a unit: the manager's
    /// RestartUnit) may do so and hand the restarted unit to its next run; any other
    /// child stops as for `Graceful`.
    Restart,
}

/// One live run of a child, as handed to its supervisor.
///
/// Dropping `stop` without sending means "your supervisor is gone": the run must end at
/// once (a process group gets SIGKILL), so nothing outlives a supervisor that died.
pub struct RunningChild {
    /// OS process id, for process children.
    pub pid: Option<u32>,
    /// Resolves when the child is ready; `None` means ready as soon as it is started.
    /// An `Err` (or the factory's own timeout, or a panic) is an abnormal exit: the child
    /// is stopped. It is dropped when the run ends, resolved or not.
    pub ready: Option<LocalBoxFuture<'static, Result<(), String>>>,
    /// Resolves once the run is over, however it ended. If it panics, the run counts as
    /// ended with [`Exit::Panic`].
    pub exit: LocalBoxFuture<'static, Exit>,
    /// Asks the run to stop; `exit` resolves when it has.
    pub stop: oneshot::Sender<StopMode>,
    /// Whether this run took over a process left by an earlier warden instead of
    /// starting one.
    pub adopted: bool,
    /// What holds the run's processes together (`None` for kinds that are no process).
    pub containment: Option<Containment>,
}

impl fmt::Debug for RunningChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningChild")
            .field("pid", &self.pid)
            .field("has_ready_check", &self.ready.is_some())
            .finish_non_exhaustive()
    }
}

/// Starts runs of one child. Built once per child spec and called for every (re)start.
pub trait ChildFactory: Send + Sync + 'static {
    /// What kind of actor the child is.
    fn kind(&self) -> ActorKind;

    /// Starts one run. Called on the supervisor's thread inside its actix System; an
    /// `Err` is an abnormal exit that the restart policy handles like any other.
    fn start(&self, cx: StartContext) -> Result<RunningChild, String>;
}

/// A run this long resets the backoff, unless a child says otherwise.
pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(30);

/// A child of a supervisor: its name, how it is restarted, and how it is started.
#[derive(Clone)]
pub struct ChildSpec {
    /// Name among its siblings.
    pub name: ActorName,
    /// When it is restarted.
    pub restart: RestartType,
    /// Delays between restarts.
    pub backoff: BackoffConfig,
    /// A run this long resets the backoff to `initial`.
    pub reset_after: Duration,
    /// The child's own restart intensity.
    pub intensity: Intensity,
    /// Starts its runs.
    pub factory: Arc<dyn ChildFactory>,
}

impl ChildSpec {
    /// A permanent child with the built-in backoff (100 ms doubling to 30 s), a 30 s
    /// reset and an intensity of 10 restarts in 60 s.
    pub fn new(name: ActorName, factory: impl ChildFactory) -> Self {
        Self {
            name,
            restart: RestartType::Permanent,
            backoff: BackoffConfig::default(),
            reset_after: DEFAULT_RESET_AFTER,
            intensity: Intensity::DEFAULT,
            factory: Arc::new(factory),
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how long a run must last to reset the backoff.
    pub fn reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// Sets the child's own restart intensity.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.factory.kind())
            .field("restart", &self.restart)
            .field("backoff", &self.backoff)
            .field("reset_after", &self.reset_after)
            .field("intensity", &self.intensity)
            .finish()
    }
}
