//! What a service tells the state store about its processes, so that a later warden can
//! adopt them. The store itself (files in `state_dir`) lives in the `warden` crate.

use std::fmt;

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

/// The durable record of a service's live processes.
pub trait ProcessRecords: Send + Sync + fmt::Debug + 'static {
    /// `pid` now runs as `path` (its output on `output`). Must be durable when this returns.
    fn saved(&self, path: &ActorPath, pid: u32, output: Option<String>);
    /// `pid` of `path` is gone.
    fn removed(&self, path: &ActorPath, pid: u32);
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
