//! The unit child kind: a `[[service]]` that the host's own service manager owns
//! (`backend = "systemd"` or `"launchd"`) instead of a process warden spawns.
//!
//! Every backend is driven through one trait, [`UnitBackend`] (start, stop, restart,
//! status, logs), and one driver, [`UnitFactory`], which is an ordinary
//! [`ChildFactory`]: supervision (strategies, backoff, intensity, ordered start, the API)
//! is the same as for processes. A run subscribes to the unit's changes first, then asks
//! the manager to start it; it is `running` once the unit is active, shows the unit's main
//! pid as `pid`, and ends — an abnormal exit that warden's restart policy handles — when
//! the unit fails or goes inactive while warden wants it up. A stop asks the manager to
//! stop the unit and waits (at most the stop timeout) until it is down. An operator's
//! restart ([`StopMode::Restart`]) asks the manager to restart the unit (systemd's
//! RestartUnit) and hands its watch, with the restart job, to the next run, which waits
//! for that job instead of starting the unit again.

pub mod launchd;
pub mod systemd;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use warden_supervisors::{
    ActorKind, ActorPath, ChildFactory, Exit, PidReport, RunningChild, SharedTree, StartContext,
    StopMode,
};

/// A unit's activity, as the service manager reports it (systemd's `ActiveState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveState {
    /// Up (`active`, `reloading`, `refreshing`): warden shows `running`.
    Active,
    /// Starting (`activating`): warden shows `starting`.
    Activating,
    /// Stopping (`deactivating`): warden shows `stopping`.
    Deactivating,
    /// Down (`inactive`, `maintenance`): `stopped`, or an exit while warden wants it up.
    Inactive,
    /// Failed (`failed`): an abnormal exit.
    Failed,
}

impl ActiveState {
    /// Reads systemd's `ActiveState` strings; `None` for an unknown one.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" | "reloading" | "refreshing" => Self::Active,
            "activating" => Self::Activating,
            "deactivating" => Self::Deactivating,
            "inactive" | "maintenance" => Self::Inactive,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether the unit is down (inactive or failed).
    pub fn is_down(self) -> bool {
        matches!(self, Self::Inactive | Self::Failed)
    }
}

/// What warden knows of a unit: the fields a backend reports (others stay as they were).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStatus {
    /// `ActiveState`.
    pub active: Option<ActiveState>,
    /// `SubState` (e.g. `running`, `dead`, `exited`).
    pub sub_state: Option<String>,
    /// `MainPID` (0 is none).
    pub main_pid: Option<u32>,
    /// `NRestarts`: restarts the manager did itself.
    pub n_restarts: Option<u32>,
    /// `Result` (`success`, `exit-code`, `signal`, `core-dump`, `timeout`, ...).
    pub result: Option<String>,
    /// `ExecMainCode`: 1 exited, 2 killed, 3 dumped (CLD_*).
    pub exec_main_code: Option<i32>,
    /// `ExecMainStatus`: the main process's exit code or signal.
    pub exec_main_status: Option<i32>,
}

impl UnitStatus {
    /// Takes the fields `update` reports.
    pub fn merge(&mut self, update: UnitStatus) {
        fn take<T>(to: &mut Option<T>, from: Option<T>) {
            if from.is_some() {
                *to = from;
            }
        }
        take(&mut self.active, update.active);
        take(&mut self.sub_state, update.sub_state);
        take(&mut self.main_pid, update.main_pid);
        take(&mut self.n_restarts, update.n_restarts);
        take(&mut self.result, update.result);
        take(&mut self.exec_main_code, update.exec_main_code);
        take(&mut self.exec_main_status, update.exec_main_status);
    }

    /// The main pid, if there is one.
    pub fn pid(&self) -> Option<u32> {
        self.main_pid.filter(|p| *p != 0)
    }

    /// How a run that ended in this status exited: the main process's code or signal when
    /// the manager says it exited or was killed, else the manager's `Result`.
    pub fn exit(&self, unit: &str) -> Exit {
        let status = self.exec_main_status.unwrap_or(0);
        let result = self.result.as_deref().unwrap_or("unknown");
        match (self.active, result, self.exec_main_code) {
            (_, "signal" | "core-dump", _) | (_, _, Some(2 | 3)) if status > 0 => {
                Exit::Signal(status)
            }
            (_, "exit-code", _) => Exit::Code(status),
            // Down without an error (e.g. the main process exited 0): still not what
            // warden wanted, so abnormal.
            _ => Exit::UnitDown(format!(
                "{unit} {}: result {result}{}, restarts by the manager {}",
                if self.active == Some(ActiveState::Failed) {
                    "failed"
                } else {
                    "went inactive"
                },
                if self.exec_main_code == Some(1) {
                    format!(", main process exited with code {status}")
                } else {
                    String::new()
                },
                self.n_restarts.unwrap_or(0)
            )),
        }
    }
}

/// What a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitEvent {
    /// Some properties changed (the fields that are set).
    Changed(UnitStatus),
    /// A job the watch asked for ended with this result (`done`, `failed`, ...).
    JobDone {
        /// The job's id (systemd: its object path).
        job: String,
        /// `done` on success.
        result: String,
    },
}

/// A backend failed to do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub String);

/// A live subscription to one unit's changes: created before any verb, so no change that
/// a verb causes can be missed.
pub trait UnitWatch: Send {
    /// The status when the watch was opened.
    fn status(&self) -> UnitStatus;
    /// Asks the manager to start the unit; the id of the job to wait for, if any.
    fn start(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>>;
    /// Asks the manager to stop the unit; the id of the job, if any.
    fn stop(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>>;
    /// Asks the manager to restart the unit; the id of the job, if any.
    fn restart(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>>;
    /// The next change; `None` when the watch is lost (the bus went away).
    fn next(&mut self) -> BoxFuture<'_, Option<UnitEvent>>;
}

/// A service manager that owns units (systemd, launchd).
pub trait UnitBackend: fmt::Debug + Send + Sync + 'static {
    /// The unit, as named in messages (`systemd unit nginx.service`).
    fn describe(&self) -> String;
    /// Subscribes to the unit's changes and reads its status once.
    fn watch(&self) -> BoxFuture<'static, Result<Box<dyn UnitWatch>, UnitError>>;
    /// Who runs the unit, as the actor's `details` show it (`{"backend","unit","user_mode"}`).
    fn details(&self) -> serde_json::Map<String, serde_json::Value>;
    /// The last `tail` lines of the unit's logs. Blocking, bounded by a deadline: call it
    /// off the supervision thread.
    fn logs(&self, tail: usize) -> Result<String, UnitError>;
}

/// Starts runs of a unit through its backend.
#[derive(Debug, Clone)]
pub struct UnitFactory {
    backend: Arc<dyn UnitBackend>,
    stop_timeout: Duration,
    handover: Arc<RestartHandover>,
}

/// A watch whose run asked the manager to restart the unit, with the restart's job: the
/// next run carries on with it (no second start, no change missed in between).
struct Handover {
    watch: Box<dyn UnitWatch>,
    status: UnitStatus,
    job: Option<String>,
}

/// The slot a restarting run leaves its [`Handover`] in, for the factory's next run.
#[derive(Default)]
struct RestartHandover(Mutex<Option<Handover>>);

impl RestartHandover {
    fn put(&self, handover: Handover) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(handover);
    }

    fn take(&self) -> Option<Handover> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl fmt::Debug for RestartHandover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestartHandover")
    }
}

impl UnitFactory {
    /// Drives the unit of `backend`; a stop waits at most `stop_timeout` for it to go down.
    pub fn new(backend: Arc<dyn UnitBackend>, stop_timeout: Duration) -> Self {
        Self {
            backend,
            stop_timeout,
            handover: Arc::default(),
        }
    }

    /// The backend (for logs).
    pub fn backend(&self) -> Arc<dyn UnitBackend> {
        self.backend.clone()
    }
}

impl ChildFactory for UnitFactory {
    fn kind(&self) -> ActorKind {
        ActorKind::Service
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let run = UnitRun {
            backend: self.backend.clone(),
            stop_timeout: self.stop_timeout,
            handover: self.handover.clone(),
            pids: cx.pid_report.clone(),
            path: cx.path.to_string(),
            tree: cx.tree.clone(),
            actor: cx.path.clone(),
        };
        actix_rt::spawn(async move {
            let exit = run.drive(ready_tx, stop_rx).await;
            let _ = exit_tx.send(exit);
        });
        Ok(RunningChild {
            pid: None,
            ready: Some(Box::pin(async move {
                ready_rx
                    .await
                    .unwrap_or_else(|_| Err("the unit's run ended before it was up".into()))
            })),
            exit: Box::pin(async move {
                exit_rx
                    .await
                    .unwrap_or_else(|_| Exit::Fatal("the unit's driver ended".into()))
            }),
            stop: stop_tx,
            adopted: false,
            containment: None,
        })
    }
}

/// One run of a unit.
struct UnitRun {
    backend: Arc<dyn UnitBackend>,
    stop_timeout: Duration,
    handover: Arc<RestartHandover>,
    pids: PidReport,
    path: String,
    tree: SharedTree,
    actor: ActorPath,
}

impl UnitRun {
    async fn drive(
        self,
        ready: oneshot::Sender<Result<(), String>>,
        mut stop: oneshot::Receiver<StopMode>,
    ) -> Exit {
        let unit = self.backend.describe();
        let mut ready = Some(ready);
        let (mut watch, mut status, mut job) = match self.handover.take() {
            Some(h) => {
                tracing::info!(path = %self.path, %unit, job = ?h.job, "carrying on with the manager's restart of the unit");
                (h.watch, h.status, h.job)
            }
            None => {
                let mut watch = match self.backend.watch().await {
                    Ok(w) => w,
                    Err(e) => return Exit::StartFailed(format!("{unit}: {e}")),
                };
                let status = watch.status();
                let job = match watch.start().await {
                    Ok(job) => job,
                    Err(e) => return Exit::StartFailed(format!("{unit}: {e}")),
                };
                tracing::info!(path = %self.path, %unit, ?job, "asked the manager to start the unit");
                (watch, status, job)
            }
        };
        self.show(&status);
        if job.is_none() {
            // No job to wait for: the status read before the start is stale; the next
            // report is this run's.
            status.active = None;
        }
        loop {
            // The start job ended: the unit's state from now on is this run's.
            if job.is_none() {
                if status.active == Some(ActiveState::Active) {
                    self.pids.report(status.pid());
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                } else if status.active.is_some_and(ActiveState::is_down) {
                    self.pids.report(None);
                    let exit = status.exit(&unit);
                    tracing::info!(path = %self.path, %unit, %exit, "the unit went down");
                    return exit;
                }
            }
            tokio::select! {
                event = watch.next() => match event {
                    None => {
                        self.pids.report(None);
                        return Exit::Fatal(format!("{unit}: lost the connection to the service manager"));
                    }
                    Some(UnitEvent::Changed(update)) => {
                        status.merge(update);
                        self.show(&status);
                    }
                    Some(UnitEvent::JobDone { job: done, result }) => {
                        if job.as_deref() == Some(done.as_str()) {
                            if result != "done" {
                                return Exit::StartFailed(format!("{unit}: start job {result}"));
                            }
                            job = None;
                        }
                    }
                },
                mode = &mut stop => {
                    if mode == Ok(StopMode::Restart) {
                        return self.restart(watch, status, &unit).await;
                    }
                    return self.stop(watch.as_mut(), status, &unit).await;
                }
            }
        }
    }

    /// Shows who runs the unit and what its manager last said in the actor's `details`.
    fn show(&self, status: &UnitStatus) {
        let mut details = self.backend.details();
        let state = status.active.map(|a| format!("{a:?}").to_lowercase());
        details.insert("active_state".into(), state.into());
        details.insert("sub_state".into(), status.sub_state.clone().into());
        details.insert("n_restarts".into(), status.n_restarts.into());
        details.insert("result".into(), status.result.clone().into());
        self.tree
            .set_details(&self.actor, serde_json::Value::Object(details));
    }

    /// Asks the manager to restart the unit and leaves the watch, with the restart's job,
    /// to the next run; this run ends at once.
    async fn restart(&self, mut watch: Box<dyn UnitWatch>, status: UnitStatus, unit: &str) -> Exit {
        let job = match watch.restart().await {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(path = %self.path, %unit, error = %e, "could not restart the unit");
                return Exit::Fatal(format!("{unit}: restart refused: {e}"));
            }
        };
        tracing::info!(path = %self.path, %unit, ?job, "asked the manager to restart the unit");
        self.pids.report(None);
        self.handover.put(Handover { watch, status, job });
        Exit::Normal
    }

    /// Asks the manager to stop the unit and waits until it is down, at most the timeout.
    async fn stop(&self, watch: &mut dyn UnitWatch, mut status: UnitStatus, unit: &str) -> Exit {
        if let Err(e) = watch.stop().await {
            tracing::warn!(path = %self.path, %unit, error = %e, "could not stop the unit");
            return Exit::Fatal(format!("{unit}: stop refused: {e}"));
        }
        let down = async {
            while !status.active.is_some_and(ActiveState::is_down) {
                match watch.next().await {
                    Some(UnitEvent::Changed(update)) => status.merge(update),
                    Some(UnitEvent::JobDone { .. }) => {}
                    None => break,
                }
            }
        };
        if tokio::time::timeout(self.stop_timeout, down).await.is_err() {
            tracing::warn!(path = %self.path, %unit, "the unit did not stop within the stop timeout");
        }
        self.pids.report(None);
        Exit::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(active: ActiveState, result: &str, code: i32, status: i32) -> UnitStatus {
        UnitStatus {
            active: Some(active),
            result: Some(result.to_owned()),
            exec_main_code: Some(code),
            exec_main_status: Some(status),
            n_restarts: Some(0),
            ..UnitStatus::default()
        }
    }

    /// A unit that goes inactive with result `success` while wanted up (its main process
    /// exited 0) is abnormal, so a `transient` unit is started again.
    #[test]
    fn a_unit_gone_inactive_with_success_is_an_abnormal_exit() {
        let exit = down(ActiveState::Inactive, "success", 1, 0).exit("web.service");
        assert!(exit.is_abnormal(), "{exit}");
        assert_eq!(
            exit.to_string(),
            "web.service went inactive: result success, main process exited with code 0, \
             restarts by the manager 0"
        );
    }

    #[test]
    fn the_main_process_code_or_signal_is_the_exit_when_the_manager_has_it() {
        let killed = down(ActiveState::Failed, "signal", 2, 9).exit("web.service");
        assert_eq!(killed, Exit::Signal(9));
        let code = down(ActiveState::Failed, "exit-code", 1, 3).exit("web.service");
        assert_eq!(code, Exit::Code(3));
        let timeout = down(ActiveState::Failed, "timeout", 0, 0).exit("web.service");
        assert!(
            matches!(&timeout, Exit::UnitDown(m) if m.contains("failed: result timeout")),
            "{timeout:?}"
        );
    }
}
