//! What is kept of deploys: a record per deploy (the JSON of `GET .../deploys`), the last
//! [`HISTORY_KEPT`] of each service in a file of `state_dir/deploys/`, and the ids of
//! recent webhook deliveries. Files are written whole (a temp file renamed over the old
//! one, [`crate::state_file::replace`]) by a thread of their own: a change hands the new
//! bytes over and returns at once; a burst of changes to one file writes its last version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use warden_supervisors::Timestamp;

/// Deploys kept per service (the newest).
pub const HISTORY_KEPT: usize = 50;

/// The most bytes a history file may hold when read back.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// Where a deploy is (exact strings of the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// Waits for an operator's confirmation (`confirm`), until it expires.
    AwaitingConfirmation,
    /// Waits for the running deploy of its service to end.
    Pending,
    /// Its steps run.
    Running,
    /// Every step passed and the service runs again (or warden re-executed itself).
    Succeeded,
    /// A step failed (`failed_step`), or warden stopped during it ("interrupted").
    Failed,
    /// Nobody confirmed it in time.
    Expired,
    /// A newer request replaced it before it ran.
    Superseded,
}

impl DeployState {
    /// Whether nothing more happens to a deploy in this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeployState::Succeeded
                | DeployState::Failed
                | DeployState::Expired
                | DeployState::Superseded
        )
    }
}

/// One deploy, as `GET /api/v1/actors/{path}/deploys` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// Its id (16 hex digits).
    pub id: String,
    /// Where it is.
    pub state: DeployState,
    /// The commit asked for (a push's `after`); `None` for a manual deploy.
    pub commit: Option<String>,
    /// When it was asked for.
    pub requested_at: Timestamp,
    /// When its first step started.
    pub started_at: Option<Timestamp>,
    /// When it reached a final state.
    pub finished_at: Option<Timestamp>,
    /// The step that failed: a step's command line, `restart` or `reexec`.
    pub failed_step: Option<String>,
    /// The end of its steps' output (at most 64 KiB), each step headed by `$ command`.
    pub output: String,
    /// Why it failed, expired or was superseded, for people.
    #[serde(default)]
    pub reason: Option<String>,
    /// Until when it may be confirmed (`awaiting_confirmation`).
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// Who asked: `webhook` or `manual`.
    #[serde(default)]
    pub source: Option<String>,
}

/// The key of the file of recent webhook delivery ids (no actor path looks like it).
pub const DELIVERIES_KEY: &str = "deliveries";

/// The file of recent webhook delivery ids.
pub const DELIVERIES_FILE: &str = "_deliveries.json";

/// What a writer asks for the current bytes of a key's file: its path and content, or
/// `None` when there is nothing to write.
pub type Render = dyn Fn(&str) -> Option<(PathBuf, Vec<u8>)> + Send + Sync;

/// Files written whole off the caller's thread: a change marks its key, and the writer's
/// thread renders and writes each marked key once (a burst of changes is one write).
#[derive(Clone)]
pub struct Writer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    dirty: std::collections::BTreeSet<String>,
    /// Told once every key marked before them is written.
    acks: Vec<std::sync::mpsc::SyncSender<()>>,
}

impl Writer {
    /// A writer with its thread, which renders a marked key with `render`.
    pub fn start(
        render: impl Fn(&str) -> Option<(PathBuf, Vec<u8>)> + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("warden-deploy-history".into())
            .spawn(move || loop {
                let (dirty, acks) = {
                    let mut queue = worker.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    while queue.dirty.is_empty() && queue.acks.is_empty() {
                        queue = worker
                            .wake
                            .wait(queue)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    (
                        std::mem::take(&mut queue.dirty),
                        std::mem::take(&mut queue.acks),
                    )
                };
                for key in dirty {
                    let Some((path, bytes)) = render(&key) else {
                        continue;
                    };
                    if let Err(e) = crate::state_file::replace(&path, &bytes, None, false) {
                        tracing::error!(file = %path.display(), error = %e, "cannot write the deploy history");
                    }
                }
                for ack in acks {
                    let _ = ack.try_send(());
                }
            })?;
        Ok(Self { shared })
    }

    /// Marks `key`'s file to be written.
    pub fn mark(&self, key: &str) {
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !queue.dirty.contains(key) {
            queue.dirty.insert(key.to_owned());
        }
        self.shared.wake.notify_one();
    }

    /// A receiver told once everything marked so far is on disk (blocking: call it off
    /// the supervision thread).
    pub fn flushed(&self) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut queue = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queue.acks.push(tx);
        self.shared.wake.notify_one();
        rx
    }
}

/// Reads a JSON file written by a [`Writer`]; a missing file is `None`, a bad one is
/// logged and `None`.
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    match crate::state_file::read_bounded(path, MAX_FILE) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable deploy history: starting afresh");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the deploy history: starting afresh");
            None
        }
    }
}

/// The file name for the deploys of `key` (an actor path, `/` for warden itself).
pub fn file_name(key: &str) -> String {
    if key == "/" {
        // No actor name starts with `_`.
        return "_warden.json".to_owned();
    }
    // Names are [A-Za-z0-9_.-]: `/` becomes `+`, which no name holds.
    format!("{}.json", key.trim_start_matches('/').replace('/', "+"))
}
