//! The durable state of a running tree: one small record per live child process in
//! `state_dir/children/`, so that a warden killed (even by SIGKILL) and started again
//! adopts its children instead of starting second instances.
//!
//! A record holds the actor path, pid, process group, the process start time (field 22 of
//! /proc/PID/stat) and the boot id; it is written in one write to a file named by the pid
//! right after the spawn, before the child is reported running, and removed when the
//! process is gone. A torn record (a crash mid-write) does not parse and is deleted; its
//! process is then an orphan, found by its marker and killed, never a second instance. No fsync: a warden crash keeps the page cache, and after a machine crash the boot
//! id differs, so such records are never trusted anyway. A record is adopted only when
//! its pid is alive with the same start time and boot id; any other record is deleted,
//! and its pid is never signalled.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use warden_actors::{proc, Adoptable, ProcessRecords};
use warden_supervisors::ActorPath;

/// The environment variable that marks a child (and its descendants) as belonging to the
/// warden of one state_dir.
pub const STATE_DIR_MARKER: &str = "WARDEN_STATE_DIR";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    path: String,
    pid: u32,
    pgid: u32,
    start_time: u64,
    boot_id: String,
    output: Option<String>,
}

/// The record files of one state_dir.
#[derive(Debug)]
pub struct StateStore {
    state_dir: PathBuf,
    dir: PathBuf,
    boot_id: String,
    adoptable: Mutex<HashMap<String, (Adoptable, PathBuf, u64)>>,
}

/// What opening the store found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Live processes left to adopt.
    pub adoptable: usize,
    /// Records of processes that are gone or were replaced (deleted, never signalled).
    pub stale: usize,
    /// Marked processes without a record, killed (spawned just before a crash).
    pub orphans_killed: usize,
}

impl StateStore {
    /// Opens the store of `state_dir`: reads every record, keeps the adoptable ones,
    /// deletes the stale ones, then kills this state_dir's marked processes that no record
    /// accounts for.
    pub fn open(state_dir: &Path) -> io::Result<(Self, Recovered)> {
        let dir = state_dir.join("children");
        std::fs::create_dir_all(&dir)?;
        let boot_id = proc::boot_id()?;
        let mut recovered = Recovered::default();
        let mut adoptable: HashMap<String, (Adoptable, PathBuf, u64)> = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let file = entry?.path();
            let record = std::fs::read(&file)
                .ok()
                .filter(|_| file.extension().is_some_and(|e| e == "json"))
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok());
            let Some(record) = record else {
                let _ = std::fs::remove_file(&file);
                continue;
            };
            let same_process = record.boot_id == boot_id
                && proc::start_time(record.pid).is_ok_and(|t| t == record.start_time);
            if !same_process {
                recovered.stale += 1;
                let _ = std::fs::remove_file(&file);
                continue;
            }
            let candidate = Adoptable {
                pid: record.pid,
                pgid: record.pgid,
                output: record.output.clone(),
            };
            // Two live records for one path cannot both be adopted: the newer wins, the
            // older is left to the orphan sweep.
            match adoptable.get(&record.path) {
                Some((_, old_file, t)) if *t >= record.start_time => {
                    let _ = old_file;
                    let _ = std::fs::remove_file(&file);
                }
                _ => {
                    if let Some((_, old_file, _)) = adoptable.remove(&record.path) {
                        let _ = std::fs::remove_file(old_file);
                    }
                    adoptable.insert(record.path.clone(), (candidate, file, record.start_time));
                }
            }
        }
        recovered.adoptable = adoptable.len();
        let store = Self {
            state_dir: state_dir.to_path_buf(),
            dir,
            boot_id,
            adoptable: Mutex::new(adoptable.into_iter().collect()),
        };
        recovered.orphans_killed = store.kill_orphans();
        Ok((store, recovered))
    }

    /// Kills processes marked with this state_dir whose process group is not one to
    /// adopt: children spawned by a warden that died before recording them.
    fn kill_orphans(&self) -> usize {
        let keep: Vec<u32> = self
            .adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(a, _, _)| a.pgid)
            .collect();
        let me = std::process::id();
        let marker = self.state_dir.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me
                || proc::environ_var(pid, STATE_DIR_MARKER).as_deref() != Some(marker.as_str())
            {
                continue;
            }
            let Ok(pgid) = proc::process_group(pid) else {
                continue;
            };
            if keep.contains(&pgid) {
                continue;
            }
            if let Ok(raw) = i32::try_from(pid) {
                tracing::warn!(pid, "killing an orphan of an earlier warden (no record)");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed += 1;
            }
        }
        killed
    }

    fn file_for(&self, path: &ActorPath, pid: u32) -> PathBuf {
        let name: String = path.segments().collect::<Vec<_>>().join("~");
        self.dir.join(format!("{name}@{pid}.json"))
    }

    /// One write of one new file (named by the pid, so never overwritten): a crash in
    /// the middle leaves a file that does not parse, which the next warden deletes, and
    /// the process it named is then an orphan, found by its marker and killed. So no
    /// temp file and rename are needed on the spawn path.
    fn write(&self, path: &ActorPath, record: &Record) -> io::Result<()> {
        use std::io::Write as _;
        let file = self.file_for(path, record.pid);
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&file)?;
        out.write_all(&bytes)
    }

    /// Kills the process groups of live records that no actor adopted once the tree has
    /// started (an actor removed from the config while warden was down, a pool worker
    /// beyond what the pool starts), checking each is still the recorded process, and
    /// deletes their records. Answers how many.
    pub fn kill_unclaimed(&self) -> usize {
        let unclaimed: Vec<(String, (Adoptable, PathBuf, u64))> = self
            .adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        let mut killed = 0;
        for (path, (adoptable, file, start_time)) in unclaimed {
            // The pidfd pins the process; the start time proves it is the recorded one.
            let pidfd = proc::pidfd_open(adoptable.pid)
                .ok()
                .filter(|_| proc::start_time(adoptable.pid).is_ok_and(|t| t == start_time));
            if let Some(pidfd) = pidfd {
                tracing::warn!(%path, pid = adoptable.pid, "no actor claims this process of an earlier warden: killing its group");
                let _ = proc::pidfd_send_signal(&pidfd, libc::SIGKILL);
                if let Ok(pgid) = i32::try_from(adoptable.pgid) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                killed += 1;
            }
            let _ = std::fs::remove_file(file);
        }
        killed
    }
}

impl ProcessRecords for StateStore {
    fn saved(&self, path: &ActorPath, pid: u32, output: Option<String>) {
        let Ok(start_time) = proc::start_time(pid) else {
            // Already gone: nothing to adopt later.
            return;
        };
        let record = Record {
            path: path.to_string(),
            pid,
            pgid: pid,
            start_time,
            boot_id: self.boot_id.clone(),
            output,
        };
        if let Err(e) = self.write(path, &record) {
            tracing::error!(%path, pid, error = %e, "cannot record a child: a warden crash would lose it");
        }
    }

    fn removed(&self, path: &ActorPath, pid: u32) {
        let _ = std::fs::remove_file(self.file_for(path, pid));
    }

    fn take_adoptable(&self, path: &ActorPath) -> Option<Adoptable> {
        let (adoptable, _file, _start) = self
            .adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path.as_str())?;
        // Checked again now: the process may have ended since the store was opened.
        let alive = proc::start_time(adoptable.pid).is_ok();
        alive.then_some(adoptable)
    }

    fn is_adoptable(&self, path: &ActorPath) -> bool {
        self.adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(path.as_str())
    }

    fn marker(&self) -> Vec<(String, String)> {
        vec![(
            STATE_DIR_MARKER.to_owned(),
            self.state_dir.to_string_lossy().into_owned(),
        )]
    }
}

/// Exclusive ownership of a state_dir by one running warden: an advisory lock on
/// `state_dir/warden.lock` (released by the kernel when warden dies, even by SIGKILL) and
/// its pid in `state_dir/warden.pid`.
#[derive(Debug)]
pub struct StateLock {
    _lock: std::fs::File,
    pidfile: PathBuf,
}

impl StateLock {
    /// Takes the lock, or says which warden holds it.
    pub fn acquire(state_dir: &Path) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create state_dir {}: {e}", state_dir.display()))?;
        let lock_path = state_dir.join("warden.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        // SAFETY: flock on a valid fd.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let pidfile = state_dir.join("warden.pid");
        if r != 0 {
            let holder = std::fs::read_to_string(&pidfile).unwrap_or_default();
            return Err(format!(
                "another warden is running on state_dir {} (pid {})",
                state_dir.display(),
                holder.trim()
            ));
        }
        std::fs::write(&pidfile, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write {}: {e}", pidfile.display()))?;
        Ok(Self {
            _lock: lock,
            pidfile,
        })
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pidfile);
    }
}
