//! The pids of warden's own spawned children, whose exit statuses tokio (or the code
//! that spawned them) waits for. An orphan reaper (warden as PID 1, or as a child
//! subreaper) reaps every other child of warden and never one of these.
//!
//! The set is changed under one lock held across the spawn itself, and the reaper holds
//! the same lock while it reaps: a child that exits at once is in the set before the
//! reaper can see it as an unknown zombie.
//!
//! Forgetting a reaped pid never waits for that lock (it is held across every spawn, on
//! the spawner thread, while the supervision thread forgets): the pid goes to a short
//! queue of its own, applied under the lock before the next spawn or reap. Each pid is
//! counted, not just present: a pid reused by a new child before the old one's forget is
//! applied stays registered (2 - 1 = 1).

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

static SPAWNED: Mutex<BTreeMap<u32, u32>> = Mutex::new(BTreeMap::new());
static FORGOTTEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The registry, locked, with the queued forgets applied.
fn locked() -> MutexGuard<'static, BTreeMap<u32, u32>> {
    let mut set = SPAWNED.lock().unwrap_or_else(PoisonError::into_inner);
    let forgotten = std::mem::take(&mut *FORGOTTEN.lock().unwrap_or_else(PoisonError::into_inner));
    for pid in forgotten {
        if let Some(count) = set.get_mut(&pid) {
            *count -= 1;
            if *count == 0 {
                set.remove(&pid);
            }
        }
    }
    set
}

/// Runs `spawn` with the set locked and adds the pid of what it spawned.
pub fn register<T>(
    spawn: impl FnOnce() -> io::Result<T>,
    pid_of: impl FnOnce(&T) -> Option<u32>,
) -> io::Result<T> {
    let mut set = locked();
    let child = spawn()?;
    if let Some(pid) = pid_of(&child) {
        *set.entry(pid).or_insert(0) += 1;
    }
    Ok(child)
}

/// `pid` was reaped by whoever spawned it: from now on the pid may name an orphan.
pub fn forget(pid: u32) {
    FORGOTTEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(pid);
}

/// Own children, as the reaper sees them (under the lock).
#[derive(Debug)]
pub struct OwnChildren<'a>(&'a BTreeMap<u32, u32>);

impl OwnChildren<'_> {
    /// Whether `pid` is a child warden spawned and has not reaped.
    pub fn contains(&self, pid: &u32) -> bool {
        self.0.contains_key(pid)
    }
}

/// Runs `reap` with the set of own children locked (no spawn happens meanwhile).
pub fn with_locked<R>(reap: impl FnOnce(&OwnChildren<'_>) -> R) -> R {
    let set = locked();
    reap(&OwnChildren(&set))
}

/// How a helper program run by [`run_to_end`] ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// The first bytes of its stdout (up to the cap).
    pub stdout: String,
    /// The first bytes of its stderr (up to the cap).
    pub stderr: String,
}

/// Runs `cmd`, a helper program of warden's own (`journalctl`, a preflight of a new
/// binary), registered as warden's child so the orphan reaper never takes its exit
/// status; its stdout and stderr are read on threads of their own, at most `max_output`
/// bytes of each kept (the rest is read and dropped, so the program never blocks on a
/// full pipe); it is killed at `deadline`. Blocking: call it off the supervision thread.
pub fn run_to_end(cmd: &mut Command, deadline: Duration, max_output: u64) -> io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = register(|| cmd.spawn(), |c| Some(c.id()))?;
    let read = |from: Option<Box<dyn io::Read + Send>>| {
        from.map(|mut from| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = from.by_ref().take(max_output).read_to_end(&mut bytes);
                let _ = io::copy(&mut from, &mut io::sink());
                String::from_utf8_lossy(&bytes).into_owned()
            })
        })
    };
    let readers = [
        read(
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn io::Read + Send>),
        ),
        read(
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn io::Read + Send>),
        ),
    ];
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    forget(child.id());
    let [stdout, stderr] = readers.map(|r| r.and_then(|r| r.join().ok()).unwrap_or_default());
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid reused by a new child (on the spawner thread) before the old child's forget
    /// (on the supervision thread) comes stays registered: the reaper must never take the
    /// new child's exit status. A set instead of counts fails here.
    #[test]
    fn a_reused_pid_stays_registered_until_each_run_is_forgotten() {
        // A pid no real child of the test process has.
        let pid = u32::MAX - 17;
        register(|| Ok(()), |_| Some(pid)).expect("register");
        // The old run is reaped and its pid spawned again before its forget comes.
        register(|| Ok(()), |_| Some(pid)).expect("register");
        forget(pid);
        assert!(
            with_locked(|own| own.contains(&pid)),
            "the new child is own"
        );
        forget(pid);
        assert!(!with_locked(|own| own.contains(&pid)), "both runs reaped");
    }
}
