//! The pids of warden's own spawned children, whose exit statuses tokio (or the code
//! that spawned them) waits for. An orphan reaper (warden as PID 1, or as a child
//! subreaper) reaps every other child of warden and never one of these.
//!
//! The set is changed under one lock held across the spawn itself, and the reaper holds
//! the same lock while it reaps: a child that exits at once is in the set before the
//! reaper can see it as an unknown zombie.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Mutex, PoisonError};

static SPAWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Runs `spawn` with the set locked and adds the pid of what it spawned.
pub fn register<T>(
    spawn: impl FnOnce() -> io::Result<T>,
    pid_of: impl FnOnce(&T) -> Option<u32>,
) -> io::Result<T> {
    let mut set = SPAWNED.lock().unwrap_or_else(PoisonError::into_inner);
    let child = spawn()?;
    if let Some(pid) = pid_of(&child) {
        set.insert(pid);
    }
    Ok(child)
}

/// `pid` was reaped by whoever spawned it: from now on the pid may name an orphan.
pub fn forget(pid: u32) {
    SPAWNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&pid);
}

/// Runs `reap` with the set of own children locked (no spawn happens meanwhile).
pub fn with_locked<R>(reap: impl FnOnce(&BTreeSet<u32>) -> R) -> R {
    let set = SPAWNED.lock().unwrap_or_else(PoisonError::into_inner);
    reap(&set)
}
