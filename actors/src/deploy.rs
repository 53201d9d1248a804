//! Deploys (docs/config.md, `deploy`): a service's `deploy` steps run one
//! after another, then the service restarts; `[self] deploy` ends with warden
//! re-executing itself instead.
//!
//! [`Deploys`] is the registry: one lane per service with a `deploy` (and one for warden,
//! key `/`). Latest wins: per lane at most one deploy runs and one waits; a newer request
//! replaces the waiting one (`superseded`). With `confirm`, a request waits for an
//! operator (`awaiting_confirmation`, in the waiting place) until it expires (`expired`).
//!
//! A running deploy is an actor of kind `deploy` under its service's supervisor
//! (`<supervisor>/_deploy.<service>`; `/_deploy` for warden), added when it starts and
//! removed when it ends; its pid is the running step's; stopping it cancels the deploy
//! (the running step's group is killed). The deploy itself runs on a thread of its own
//! (`warden-deploys`), its steps on blocking threads ([`step`]): nothing of it runs on
//! the supervision thread. Every state change is told to subscribers ([`DeployEvent`])
//! and written to `state_dir/deploys/` ([`history`]); a deploy that was pending or
//! running when warden stopped is `failed` ("interrupted") when the next warden starts.

pub mod history;
pub mod step;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, oneshot, watch};
use warden_supervisors::{
    ActorKind, ActorName, ActorPath, ActorState, ActorTree, AddChild, ChildFactory, ChildSpec,
    Control, ControlOp, Exit, PidReport, RemoveChild, RestartType, RunningChild, StartContext,
    StopMode, Timestamp,
};

pub use history::{DeployRecord, DeployState, HISTORY_KEPT};

/// The key of warden's own lane (`[self] deploy`).
pub const SELF_KEY: &str = "/";

/// Delivery ids of webhooks remembered (the newest), so a replay is recognised.
pub const DELIVERIES_KEPT: usize = 1024;

/// How long [`Deploys::durable`] waits for the history to be written.
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// What a deploy does, from a `deploy = {...}` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySpec {
    /// The repository whose pushes deploy it: `owner/name`.
    pub repo: String,
    /// The branch whose pushes deploy it.
    pub branch: String,
    /// The folder the steps run in.
    pub cwd: PathBuf,
    /// How long each step (and the restart) may take.
    pub timeout: Duration,
    /// The steps, each a program and its arguments; never empty.
    pub steps: Vec<Vec<String>>,
    /// How long a request waits for an operator's confirmation; `None`: none needed.
    pub confirm: Option<Duration>,
    /// Environment entries of the steps (the service's `env`).
    pub env: Vec<(String, String)>,
    /// The identity the steps run as: the service's `user`/`group` (`None`: warden's own,
    /// as for `[self]`).
    pub run_as: Option<crate::RunAs>,
}

/// Re-executes warden (the end of a `[self]` deploy): `Ok` once the new binary passed its
/// checks and the exec is under way.
pub type ReexecHook = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A deploy's transitions, for whoever listens (notifiers): see [`Deploys::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployEvent {
    /// Its first step starts.
    Started {
        /// The service's path (`/` for warden).
        path: String,
        /// The deploy's id.
        id: String,
        /// The commit, if a push asked for it.
        commit: Option<String>,
    },
    /// Every step passed and the service runs again (warden: the reexec is under way).
    Succeeded {
        /// The service's path (`/` for warden).
        path: String,
        /// The deploy's id.
        id: String,
        /// The commit, if a push asked for it.
        commit: Option<String>,
    },
    /// A step failed.
    Failed {
        /// The service's path (`/` for warden).
        path: String,
        /// The deploy's id.
        id: String,
        /// The commit, if a push asked for it.
        commit: Option<String>,
        /// The step that failed (a command line, `restart` or `reexec`), if one did.
        step: Option<String>,
        /// Why.
        reason: String,
        /// The end of the output (at most 64 KiB).
        output_tail: String,
    },
}

/// Why a deploy request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// No service with a `deploy` at that path.
    #[error("{0}")]
    NotFound(String),
    /// Not allowed now (a confirmation of a deploy that does not await one).
    #[error("{0}")]
    Conflict(String),
}

/// How a webhook push was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// The delivery id was seen before: nothing done.
    Duplicate,
    /// Deploys were asked for these paths (maybe none).
    Deploys(Vec<String>),
}

/// The registry of deploys (see the module doc).
pub struct Deploys {
    tree: Arc<ActorTree>,
    dir: PathBuf,
    writer: history::Writer,
    events: broadcast::Sender<DeployEvent>,
    runtime: tokio::runtime::Handle,
    cgroups: Option<Arc<crate::Cgroups>>,
    /// The orphan marker of this warden (`WARDEN_INSTANCE`) given to every step, so a step
    /// left running by a killed warden is swept by the next one.
    marker: Vec<(String, String)>,
    reexec: Mutex<Option<ReexecHook>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Deploys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deploys")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    lanes: BTreeMap<String, Lane>,
    deliveries: VecDeque<String>,
}

struct Lane {
    spec: DeploySpec,
    /// Newest first.
    history: VecDeque<DeployRecord>,
    running: Option<Arc<RunLink>>,
    /// The id of the deploy in the waiting place (pending or awaiting confirmation).
    waiting: Option<String>,
}

impl Lane {
    fn record(&mut self, id: &str) -> Option<&mut DeployRecord> {
        self.history.iter_mut().find(|r| r.id == id)
    }
}

/// What a run shares with its actor: whether it is over, its cancel flag, and where its
/// step's pid is reported.
struct RunLink {
    id: String,
    finished: watch::Sender<bool>,
    cancel: AtomicBool,
    pid: Mutex<(Option<u32>, Option<PidReport>)>,
}

impl RunLink {
    fn report_pid(&self, pid: Option<u32>) {
        let mut slot = self.pid.lock().unwrap_or_else(PoisonError::into_inner);
        slot.0 = pid;
        if let Some(report) = &slot.1 {
            report.report(pid);
        }
    }
}

/// Whether `repo` is `owner/name`.
pub fn valid_repo(repo: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(repo.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

impl Deploys {
    /// The registry of `lanes` (key: a service's path, or [`SELF_KEY`]), kept in
    /// `state_dir/deploys/`: histories are read back, and a deploy an earlier warden left
    /// pending or running is marked `failed` ("interrupted").
    /// With `cgroups`, each step runs in a cgroup of its own (the deploy actor's).
    pub fn start(
        tree: Arc<ActorTree>,
        state_dir: &std::path::Path,
        cgroups: Option<Arc<crate::Cgroups>>,
        marker: Vec<(String, String)>,
        lanes: Vec<(String, DeploySpec)>,
    ) -> std::io::Result<Arc<Self>> {
        let dir = state_dir.join("deploys");
        crate::state_file::ensure_private_dir(&dir)?;
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("warden-deploys".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(std::future::pending::<()>());
            })?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("the deploy thread ended at once"))??;
        let render: Arc<OnceLock<Weak<Deploys>>> = Arc::new(OnceLock::new());
        let source = render.clone();
        let writer = history::Writer::start(move |key: &str| source.get()?.upgrade()?.render(key))?;
        let deliveries: VecDeque<String> =
            history::read(&dir.join(history::DELIVERIES_FILE)).unwrap_or_default();
        let (events, _) = broadcast::channel(1024);
        let deploys = Arc::new(Self {
            tree,
            dir,
            writer,
            events,
            runtime,
            cgroups,
            marker,
            reexec: Mutex::new(None),
            inner: Mutex::new(Inner {
                lanes: BTreeMap::new(),
                deliveries,
            }),
        });
        let _ = render.set(Arc::downgrade(&deploys));
        deploys.configure(lanes);
        Ok(deploys)
    }

    /// Sets the lanes (at start and on a reload): new ones are added with their history,
    /// changed ones take the new spec (a deploy under way finishes with the old one),
    /// idle ones no longer configured are dropped.
    pub fn configure(self: &Arc<Self>, lanes: Vec<(String, DeploySpec)>) {
        let mut expiries = Vec::new();
        {
            let mut inner = self.lock();
            let keys: Vec<String> = lanes.iter().map(|(k, _)| k.clone()).collect();
            inner
                .lanes
                .retain(|key, lane| keys.contains(key) || lane.running.is_some());
            for (key, spec) in lanes {
                if let Some(lane) = inner.lanes.get_mut(&key) {
                    lane.spec = spec;
                    continue;
                }
                let mut history: VecDeque<DeployRecord> =
                    history::read(&self.dir.join(history::file_name(&key))).unwrap_or_default();
                let mut waiting = None;
                let mut changed = false;
                let now = Timestamp::now();
                for record in history.iter_mut() {
                    match record.state {
                        DeployState::Pending | DeployState::Running => {
                            record.state = DeployState::Failed;
                            record.reason = Some(
                                "interrupted: warden stopped while this deploy was under way"
                                    .to_owned(),
                            );
                            record.finished_at = Some(now);
                            changed = true;
                        }
                        DeployState::AwaitingConfirmation if waiting.is_none() => {
                            waiting = Some(record.id.clone());
                            expiries.push((key.clone(), record.id.clone(), record.expires_at));
                        }
                        DeployState::AwaitingConfirmation => {
                            record.state = DeployState::Superseded;
                            record.finished_at = Some(now);
                            changed = true;
                        }
                        _ => {}
                    }
                }
                trim(&mut history);
                inner.lanes.insert(
                    key.clone(),
                    Lane {
                        spec,
                        history,
                        running: None,
                        waiting,
                    },
                );
                if changed {
                    self.writer.mark(&key);
                }
            }
        }
        for (key, id, at) in expiries {
            self.arm_expiry(key, id, at);
        }
    }

    /// Where a `[self]` deploy's reexec is asked for (set once warden runs).
    pub fn set_reexec(&self, hook: ReexecHook) {
        *self.reexec.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// Every deploy transition from now on. A receiver more than 1024 events behind is
    /// told how many it missed (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<DeployEvent> {
        self.events.subscribe()
    }

    /// Whether `key` has a `deploy`.
    pub fn has_lane(&self, key: &str) -> bool {
        self.lock().lanes.contains_key(key)
    }

    /// A push of `branch` to `repo`, delivered as `delivery`: deploys every lane whose
    /// repository and branch match, unless that delivery was taken before.
    pub fn push(
        self: &Arc<Self>,
        delivery: Option<&str>,
        repo: &str,
        branch: &str,
        commit: Option<String>,
    ) -> Push {
        let keys = {
            let mut inner = self.lock();
            if let Some(delivery) = delivery {
                if inner.deliveries.iter().any(|d| d == delivery) {
                    return Push::Duplicate;
                }
                inner.deliveries.push_back(delivery.to_owned());
                while inner.deliveries.len() > DELIVERIES_KEPT {
                    inner.deliveries.pop_front();
                }
                self.writer.mark(history::DELIVERIES_KEY);
            }
            inner
                .lanes
                .iter()
                .filter(|(_, lane)| {
                    lane.spec.repo.eq_ignore_ascii_case(repo) && lane.spec.branch == branch
                })
                .map(|(key, _)| key.clone())
                .collect::<Vec<_>>()
        };
        for key in &keys {
            if let Err(e) = self.request(key, commit.clone(), "webhook") {
                tracing::warn!(path = %key, error = %e, "webhook: deploy not taken");
            }
        }
        Push::Deploys(keys)
    }

    /// Asks for a deploy of `key` (see the module doc for what waits and what runs).
    pub fn request(
        self: &Arc<Self>,
        key: &str,
        commit: Option<String>,
        source: &str,
    ) -> Result<DeployRecord, DeployError> {
        let id = crate::random_hex(8).map_err(DeployError::Conflict)?;
        let now = Timestamp::now();
        let (record, start, expiry) = {
            let mut inner = self.lock();
            let lane = inner
                .lanes
                .get_mut(key)
                .ok_or_else(|| not_configured(key))?;
            let confirm = lane.spec.confirm;
            let expires_at = confirm.map(|d| Timestamp(now.0 + d));
            let record = DeployRecord {
                id: id.clone(),
                state: if confirm.is_some() {
                    DeployState::AwaitingConfirmation
                } else {
                    DeployState::Pending
                },
                commit,
                requested_at: now,
                started_at: None,
                finished_at: None,
                failed_step: None,
                output: String::new(),
                reason: None,
                expires_at,
                source: Some(source.to_owned()),
            };
            supersede(lane, &id, now);
            lane.history.push_front(record.clone());
            trim(&mut lane.history);
            lane.waiting = Some(id.clone());
            let start = confirm.is_none() && lane.running.is_none();
            self.writer.mark(key);
            (record, start, expires_at)
        };
        tracing::info!(path = %key, id = %record.id, commit = ?record.commit, source, state = ?record.state, "deploy requested");
        if start {
            self.start_waiting(key);
        }
        if let Some(at) = expiry {
            self.arm_expiry(key.to_owned(), id, Some(at));
        }
        Ok(self.find(key, &record.id).unwrap_or(record))
    }

    /// Confirms the deploy `id` of `key`, which must await confirmation.
    pub fn confirm(self: &Arc<Self>, key: &str, id: &str) -> Result<DeployRecord, DeployError> {
        let start = {
            let mut inner = self.lock();
            let lane = inner
                .lanes
                .get_mut(key)
                .ok_or_else(|| not_configured(key))?;
            let running = lane.running.is_some();
            let record = lane
                .record(id)
                .ok_or_else(|| DeployError::NotFound(format!("no deploy {id} of {key}")))?;
            let expired = record
                .expires_at
                .is_some_and(|at| at.0 <= SystemTime::now());
            if record.state != DeployState::AwaitingConfirmation || expired {
                let state = if expired {
                    "expired".to_owned()
                } else {
                    state_name(record.state)
                };
                return Err(DeployError::Conflict(format!(
                    "deploy {id} of {key} is {state}: only a deploy awaiting confirmation can be confirmed"
                )));
            }
            record.state = DeployState::Pending;
            self.writer.mark(key);
            !running
        };
        tracing::info!(path = %key, id, "deploy confirmed");
        if start {
            self.start_waiting(key);
        }
        self.find(key, id)
            .ok_or_else(|| DeployError::NotFound(format!("no deploy {id} of {key}")))
    }

    /// The deploys of `key`, newest first.
    pub fn list(&self, key: &str) -> Result<Vec<DeployRecord>, DeployError> {
        let inner = self.lock();
        let lane = inner.lanes.get(key).ok_or_else(|| not_configured(key))?;
        Ok(lane.history.iter().cloned().collect())
    }

    fn find(&self, key: &str, id: &str) -> Option<DeployRecord> {
        self.lock()
            .lanes
            .get_mut(key)
            .and_then(|lane| lane.record(id).cloned())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bytes of the file of `key` as it is now (for the writer).
    fn render(&self, key: &str) -> Option<(PathBuf, Vec<u8>)> {
        let inner = self.lock();
        let bytes = if key == history::DELIVERIES_KEY {
            serde_json::to_vec(&inner.deliveries)
        } else {
            serde_json::to_vec(&inner.lanes.get(key)?.history)
        };
        let name = if key == history::DELIVERIES_KEY {
            history::DELIVERIES_FILE.to_owned()
        } else {
            history::file_name(key)
        };
        bytes.ok().map(|b| (self.dir.join(name), b))
    }

    fn arm_expiry(self: &Arc<Self>, key: String, id: String, at: Option<Timestamp>) {
        let this = Arc::downgrade(self);
        let wait = at
            .and_then(|at| at.0.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        self.runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(this) = this.upgrade() else { return };
            let mut inner = this.lock();
            let Some(lane) = inner.lanes.get_mut(&key) else {
                return;
            };
            if let Some(record) = lane.record(&id) {
                if record.state == DeployState::AwaitingConfirmation {
                    record.state = DeployState::Expired;
                    record.finished_at = Some(Timestamp::now());
                    record.reason = Some("nobody confirmed it in time".to_owned());
                    if lane.waiting.as_deref() == Some(id.as_str()) {
                        lane.waiting = None;
                    }
                    this.writer.mark(&key);
                    tracing::info!(path = %key, id, "deploy expired unconfirmed");
                }
            }
        });
    }

    /// Starts the pending deploy in the waiting place of `key`, if nothing runs there.
    fn start_waiting(self: &Arc<Self>, key: &str) {
        let link = {
            let mut inner = self.lock();
            let Some(lane) = inner.lanes.get_mut(key) else {
                return;
            };
            if lane.running.is_some() {
                return;
            }
            let Some(id) = lane.waiting.clone() else {
                return;
            };
            let Some(record) = lane.record(&id) else {
                lane.waiting = None;
                return;
            };
            if record.state != DeployState::Pending {
                return;
            }
            record.state = DeployState::Running;
            record.started_at = Some(Timestamp::now());
            let (finished, _) = watch::channel(false);
            let link = Arc::new(RunLink {
                id: id.clone(),
                finished,
                cancel: AtomicBool::new(false),
                pid: Mutex::new((None, None)),
            });
            lane.running = Some(link.clone());
            lane.waiting = None;
            self.writer.mark(key);
            link
        };
        let this = self.clone();
        let key = key.to_owned();
        self.runtime.spawn(async move { this.run(key, link).await });
    }

    /// One deploy, from its first step to its end.
    async fn run(self: Arc<Self>, key: String, link: Arc<RunLink>) {
        let Some((spec, commit)) = ({
            let mut inner = self.lock();
            inner.lanes.get_mut(&key).and_then(|lane| {
                let spec = lane.spec.clone();
                lane.record(&link.id).map(|r| (spec, r.commit.clone()))
            })
        }) else {
            return;
        };
        let id = link.id.clone();
        // `running` is on disk before the first step can change anything.
        self.durable().await;
        tracing::info!(path = %key, id, ?commit, "deploy started");
        let _ = self.events.send(DeployEvent::Started {
            path: key.clone(),
            id: id.clone(),
            commit: commit.clone(),
        });
        let Some((parent, name)) = actor_of(&key) else {
            let failure = Some((None, format!("{key} is no actor path")));
            self.finish(&key, &link, &[], failure).await;
            return;
        };
        let actor_path = parent.child(&name);
        let actor = self.attach(&key, &parent, name, &link).await;
        let mut output: Vec<u8> = Vec::new();
        let mut failure: Option<(Option<String>, String)> = None;
        for argv in &spec.steps {
            let name = argv.join(" ");
            output.extend_from_slice(format!("$ {name}\n").as_bytes());
            self.set_output(&key, &id, &output);
            let run = {
                let link = link.clone();
                let argv = argv.clone();
                let spec = spec.clone();
                let commit = commit.clone();
                let cgroups = self.cgroups.clone();
                let actor_path = actor_path.clone();
                let marker = self.marker.clone();
                tokio::task::spawn_blocking(move || {
                    let mut env = spec.env.clone();
                    env.extend(marker);
                    env.push(("WARDEN_DEPLOY_ID".into(), link.id.clone()));
                    if let Some(commit) = commit {
                        env.push(("WARDEN_DEPLOY_COMMIT".into(), commit));
                    }
                    let report = |pid| link.report_pid(pid);
                    step::run(
                        &argv,
                        &step::StepContext {
                            cwd: &spec.cwd,
                            env: &env,
                            timeout: spec.timeout,
                            cancel: &link.cancel,
                            on_pid: &report,
                            cgroups: cgroups.as_deref(),
                            actor: &actor_path,
                            run_as: spec.run_as.as_ref(),
                        },
                    )
                })
                .await
            };
            let run = match run {
                Ok(run) => run,
                Err(e) => step::StepRun {
                    end: step::StepEnd::Failed(format!("the step's thread failed: {e}")),
                    output: Vec::new(),
                },
            };
            output.extend_from_slice(&run.output);
            output = step::keep_end(output);
            self.set_output(&key, &id, &output);
            if let step::StepEnd::Failed(reason) = run.end {
                failure = Some((Some(name), reason));
                break;
            }
        }
        let cancelled = link.cancel.load(Ordering::Acquire);
        if failure.is_none() && cancelled {
            failure = Some((None, "cancelled".to_owned()));
        }
        if failure.is_none() && key != SELF_KEY {
            if let Err(reason) = self.restart(&key, spec.timeout).await {
                failure = Some((Some("restart".to_owned()), reason));
            }
        }
        // The actor leaves the tree before the deploy is told as ended: the next deploy
        // of this service finds its name free.
        let _ = link.finished.send(true);
        self.detach(actor).await;
        let reexec = failure.is_none() && key == SELF_KEY;
        // A `[self]` deploy is succeeded on disk before the exec: the next warden must not
        // find it running (it would call it interrupted).
        self.finish(&key, &link, &output, failure).await;
        if reexec {
            if let Err(reason) = self.reexec().await {
                self.fail_after_success(&key, &id, "reexec", &reason);
            }
            return;
        }
        self.start_waiting(&key);
    }

    fn set_output(&self, key: &str, id: &str, output: &[u8]) {
        let mut inner = self.lock();
        if let Some(record) = inner.lanes.get_mut(key).and_then(|l| l.record(id)) {
            record.output = String::from_utf8_lossy(output).into_owned();
        }
    }

    /// Records the end of the run of `link` and tells subscribers. Waits (off this
    /// thread) until the history is on disk.
    async fn finish(
        &self,
        key: &str,
        link: &RunLink,
        output: &[u8],
        failure: Option<(Option<String>, String)>,
    ) {
        let id = link.id.clone();
        let text = String::from_utf8_lossy(output).into_owned();
        let _ = link.finished.send(true);
        let commit = {
            let mut inner = self.lock();
            let Some(lane) = inner.lanes.get_mut(key) else {
                return;
            };
            if lane.running.as_ref().is_some_and(|r| r.id == id) {
                lane.running = None;
            }
            let Some(record) = lane.record(&id) else {
                return;
            };
            record.finished_at = Some(Timestamp::now());
            record.output = text.clone();
            match &failure {
                None => record.state = DeployState::Succeeded,
                Some((step, reason)) => {
                    record.state = DeployState::Failed;
                    record.failed_step = step.clone();
                    record.reason = Some(reason.clone());
                }
            }
            self.writer.mark(key);
            record.commit.clone()
        };
        let event = match failure {
            None => {
                tracing::info!(path = %key, id, "deploy succeeded");
                DeployEvent::Succeeded {
                    path: key.to_owned(),
                    id,
                    commit,
                }
            }
            Some((step, reason)) => {
                tracing::warn!(path = %key, id, step = ?step, %reason, "deploy failed");
                DeployEvent::Failed {
                    path: key.to_owned(),
                    id,
                    commit,
                    step,
                    reason,
                    output_tail: text,
                }
            }
        };
        let _ = self.events.send(event);
        self.durable().await;
    }

    /// Waits, off the caller's thread and at most [`DURABLE_WAIT`], until every change
    /// made so far is written to `state_dir/deploys/`. The routes that accept a deploy
    /// answer only after it, so a warden killed right after the answer still has the
    /// deploy on disk (the next warden shows it `failed`, "interrupted").
    pub async fn durable(&self) {
        let flushed = self.writer.flushed();
        let written = tokio::task::spawn_blocking(move || flushed.recv_timeout(DURABLE_WAIT)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!("the deploy history was not written within {DURABLE_WAIT:?}");
        }
    }

    /// A `[self]` deploy whose reexec was refused: failed at `step` after all.
    fn fail_after_success(&self, key: &str, id: &str, step: &str, reason: &str) {
        let (commit, output) = {
            let mut inner = self.lock();
            let Some(record) = inner.lanes.get_mut(key).and_then(|l| l.record(id)) else {
                return;
            };
            record.state = DeployState::Failed;
            record.failed_step = Some(step.to_owned());
            record.reason = Some(reason.to_owned());
            let found = (record.commit.clone(), record.output.clone());
            self.writer.mark(key);
            found
        };
        tracing::warn!(path = %key, id, step, %reason, "deploy failed");
        let _ = self.events.send(DeployEvent::Failed {
            path: key.to_owned(),
            id: id.to_owned(),
            commit,
            step: Some(step.to_owned()),
            reason: reason.to_owned(),
            output_tail: output,
        });
    }

    async fn reexec(&self) -> Result<(), String> {
        let hook = self
            .reexec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match hook {
            Some(hook) => hook().await,
            None => Err("this warden cannot re-execute itself".to_owned()),
        }
    }

    /// Restarts the service `key` and waits until it runs again.
    async fn restart(&self, key: &str, deadline: Duration) -> Result<(), String> {
        let path = ActorPath::parse(key).map_err(|e| e.to_string())?;
        let parent = path.parent().ok_or("the root is no service")?;
        let supervisor = self
            .tree
            .supervisor(&parent)
            .ok_or_else(|| format!("the supervisor {parent} is gone"))?;
        let done = supervisor
            .send(Control {
                name: path.name().to_owned(),
                op: ControlOp::Restart,
            })
            .await
            .map_err(|_| format!("the supervisor {parent} is gone"))?
            .map_err(|e| e.to_string())?;
        if tokio::time::timeout(deadline, done).await.is_err() {
            return Err(format!(
                "not running {} after the restart",
                humantime::format_duration(deadline)
            ));
        }
        match self.tree.get(&path).map(|i| i.state) {
            Some(ActorState::Running) => Ok(()),
            Some(state) => Err(format!("{path} is {state} after the restart, not running")),
            None => Err(format!("{path} left the tree")),
        }
    }

    /// Adds the deploy's actor `name` to the supervisor `parent`. `None` (logged) when the
    /// supervisor refuses or is gone: the deploy runs on.
    async fn attach(
        &self,
        key: &str,
        parent: &ActorPath,
        name: ActorName,
        link: &Arc<RunLink>,
    ) -> Option<(ActorPath, String)> {
        let supervisor = self.tree.supervisor(parent)?;
        let text = name.as_str().to_owned();
        let actor = parent.child(&name);
        let spec = ChildSpec::new(name, DeployActor { link: link.clone() })
            .restart(RestartType::Temporary);
        // A deploy actor left behind (its removal timed out) gives way first.
        if self.tree.get(&actor).is_some() {
            if let Ok(Ok(left)) = supervisor.send(RemoveChild { name: text.clone() }).await {
                let _ = tokio::time::timeout(Duration::from_secs(10), left).await;
            }
        }
        match supervisor.send(AddChild { spec }).await {
            Ok(Ok(_)) => Some((parent.clone(), text)),
            Ok(Err(e)) => {
                tracing::warn!(path = %key, error = %e, "the deploy's actor was not added to the tree");
                None
            }
            Err(_) => None,
        }
    }

    async fn detach(&self, actor: Option<(ActorPath, String)>) {
        let Some((parent, name)) = actor else { return };
        let Some(supervisor) = self.tree.supervisor(&parent) else {
            return;
        };
        if let Ok(Ok(left)) = supervisor.send(RemoveChild { name }).await {
            let _ = tokio::time::timeout(Duration::from_secs(10), left).await;
        }
    }
}

/// Where the actor of a deploy of `key` lives: `<supervisor>/_deploy.<service>`, or
/// `/_deploy` for warden's own.
fn actor_of(key: &str) -> Option<(ActorPath, ActorName)> {
    let path = ActorPath::parse(key).ok()?;
    let (parent, name) = match path.parent() {
        None => (ActorPath::root(), "_deploy".to_owned()),
        Some(parent) => (parent, format!("_deploy.{}", path.name())),
    };
    Some((parent, ActorName::new(&name).ok()?))
}

/// Drops the oldest finished deploys past [`HISTORY_KEPT`] (newest first); one that runs
/// or waits is never dropped.
fn trim(history: &mut VecDeque<DeployRecord>) {
    let mut k = history.len();
    while history.len() > HISTORY_KEPT && k > 0 {
        k -= 1;
        if history[k].state.is_final() {
            history.remove(k);
        }
    }
}

/// Marks the deploy in `lane`'s waiting place superseded by `by`.
fn supersede(lane: &mut Lane, by: &str, now: Timestamp) {
    let Some(old) = lane.waiting.take() else {
        return;
    };
    if let Some(record) = lane.record(&old) {
        if matches!(
            record.state,
            DeployState::Pending | DeployState::AwaitingConfirmation
        ) {
            record.state = DeployState::Superseded;
            record.finished_at = Some(now);
            record.reason = Some(format!("superseded by {by}"));
        }
    }
}

fn not_configured(key: &str) -> DeployError {
    DeployError::NotFound(if key == SELF_KEY {
        "warden has no [self] deploy".to_owned()
    } else {
        format!("no service with a deploy at {key}")
    })
}

fn state_name(state: DeployState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The actor of a running deploy (see the module doc).
struct DeployActor {
    link: Arc<RunLink>,
}

impl ChildFactory for DeployActor {
    fn kind(&self) -> ActorKind {
        ActorKind::Deploy
    }

    fn start(&self, cx: StartContext) -> Result<RunningChild, String> {
        let current = {
            let mut slot = self.link.pid.lock().unwrap_or_else(PoisonError::into_inner);
            slot.1 = Some(cx.pid_report.clone());
            slot.0
        };
        let mut finished = self.link.finished.subscribe();
        let (stop, stopped) = oneshot::channel::<StopMode>();
        let link = self.link.clone();
        // The run ends with the deploy, or at once on a stop (or a supervisor gone), which
        // cancels the deploy: its step's group is killed on the deploy's thread. Never
        // waiting for the deploy here keeps a stop from waiting on a restart of a sibling
        // that waits on this stop.
        let exit = async move {
            tokio::select! {
                _ = finished.wait_for(|done| *done) => {}
                _ = stopped => {
                    if !*link.finished.borrow() {
                        tracing::warn!(id = %link.id, "deploy cancelled: its actor was stopped");
                        link.cancel.store(true, Ordering::Release);
                    }
                }
            }
            Exit::Normal
        };
        Ok(RunningChild {
            pid: current,
            ready: None,
            exit: Box::pin(exit),
            stop,
            adopted: false,
            containment: None,
        })
    }
}
