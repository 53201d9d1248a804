//! What a service tells the state store about its processes, so that a later warden can
//! adopt them. The store itself (files in `state_dir`) lives in the `warden` crate.

use std::fmt;
use std::time::Duration;

use tokio::sync::oneshot;
use warden_supervisors::ActorPath;

use super::proc::Pinned;

/// A live process a later warden may adopt: pinned (a pidfd, or the /proc fallback) and
/// checked to be the process that was recorded (pid, start time, boot id, process group
/// it leads, uid), so that every signal to it reaches it or nothing.
#[derive(Debug)]
pub struct Adoptable {
    /// The process.
    pub process: Pinned,
    /// The pipe its output went to (`pipe:[inode]`), to reattach the log.
    pub output: Option<String>,
}

/// Resolves once a record asked for with [`ProcessRecords::saved`] is written (or given
/// up on: the process had already exited, or the write failed and was logged).
#[derive(Debug)]
pub struct Written(Option<oneshot::Receiver<()>>);

impl Written {
    /// A record written already.
    pub fn done() -> Self {
        Self(None)
    }

    /// A record that is written once `written` resolves (or its sender is dropped).
    pub fn pending(written: oneshot::Receiver<()>) -> Self {
        Self(Some(written))
    }

    /// Until the record is written. Cancel-safe: a wait dropped half-way is resumed by
    /// the next call.
    pub async fn wait(&mut self) {
        if let Some(written) = self.0.as_mut() {
            let _ = written.await;
            self.0 = None;
        }
    }
}

/// The durable record of a service's live processes.
pub trait ProcessRecords: Send + Sync + fmt::Debug + 'static {
    /// `pid` now runs as `path`, with the real uid `uid` it was started with (its output
    /// on `output`). The store may write the record later, off the caller's thread (it
    /// reads the start time and group of `pid` from /proc then): the caller must not reap
    /// `pid` before the answer resolves, so that the pid is still its process's when the
    /// record reads it.
    fn saved(&self, path: &ActorPath, pid: u32, uid: u32, output: Option<String>) -> Written;
    /// `pid` of `path` is gone. May be done later, but after every record asked for
    /// before; never blocks on a disk (it may wait for room in a bounded queue).
    fn removed(&self, path: &ActorPath, pid: u32);
    /// Waits, at most `within`, until every record and removal asked for so far is on
    /// disk (before a reexec, and before a stopping warden exits); false when that did
    /// not happen in time. Blocking.
    fn flush(&self, _within: Duration) -> bool {
        true
    }
    /// A live, verified and pinned process left for `path` by an earlier warden; each is
    /// handed out once.
    fn take_adoptable(&self, path: &ActorPath) -> Option<Adoptable>;
    /// Whether a live process recorded for `path` waits to be adopted (answered from what
    /// was read at startup: no I/O).
    fn is_adoptable(&self, _path: &ActorPath) -> bool {
        false
    }
    /// Environment variables that mark a child as this warden's (for finding orphans):
    /// `WARDEN_INSTANCE=<id>`, never a path.
    fn marker(&self) -> Vec<(String, String)>;
}
