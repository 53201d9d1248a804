//! The durable state of a running tree: one small record per live child process in
//! `state_dir/children/`, so that a warden killed (even by SIGKILL) and started again
//! adopts its children instead of starting second instances.
//!
//! A record holds the actor path and the process's identity: pid, process group, start
//! time (field 22 of /proc/PID/stat), boot id and uid. It is written in one write to a file
//! named by the pid, on the `warden-records` thread ([`writer`]), queued right after the
//! spawn (the run reaps its process only once the record is written, so the identity read
//! is that of warden's own child), and removed (queued behind it) when the process is
//! gone. A torn record (a crash mid-write) does not parse and is deleted; its process is
//! then an orphan, found by its marker and killed, never a second instance. No fsync: a
//! warden crash keeps the page cache, and after a machine crash the boot id differs, so
//! such records are never trusted anyway.
//!
//! Nothing signals a stranger: a record whose pid is gone or now has another start time
//! (or whose boot id differs) is deleted and its pid never signalled. A record of the
//! right process that cannot be adopted (it does not lead its own process group, or its
//! group or uid changed) is deleted too, and its process, when it carries this
//! instance's marker, is killed with the orphans before anything starts: never a second
//! instance beside it. Adoption pins the process (pidfd, then the identity read again) at
//! the moment an actor takes it, since the process may have ended and its pid been
//! reused since the store was opened. The orphan sweep finds processes by
//! `WARDEN_INSTANCE=<this instance>` (not by a path another warden may share) and of
//! warden's own uid (any uid for a warden running as root, whose children may run as
//! other users), and kills each through such a pin. Records are read only from regular
//! files of at most `MAX_RECORD_BYTES` (a symbolic link, FIFO or oversized file is deleted
//! unread, naming it in the log) and written with `O_EXCL` (see `warden_actors::state_file`).

mod writer;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warden_actors::proc::{self, Identity, Pinned};
use warden_actors::state_file;
use warden_actors::{Adoptable, ProcessRecords, Written};
use warden_supervisors::ActorPath;

use crate::instance::{IdOrigin, InstanceId, INSTANCE_ENV};

use self::writer::RecordWriter;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    path: String,
    pid: u32,
    pgid: u32,
    start_time: u64,
    boot_id: String,
    uid: u32,
    output: Option<String>,
}

impl Record {
    fn identity(&self) -> Identity {
        Identity {
            pid: self.pid,
            start_time: self.start_time,
            pgid: self.pgid,
            uid: self.uid,
        }
    }
}

/// A verified record, waiting for its actor to take it.
#[derive(Debug)]
struct Waiting {
    identity: Identity,
    output: Option<String>,
    file: PathBuf,
}

/// The runs about to be adopted, as the orphan sweep sees them: a marked process belongs
/// to one when it is in its process group, in its cgroup (one of this instance's service
/// cgroups, `warden-<instance>/...`), or descends from its leader. The last two spare
/// what left the group (setsid): in a cgroup, wherever its parent went; without one, as
/// long as its parent chain still reaches the leader (a double-forked daemon whose
/// parent is gone was reparented away from it, and is swept as an orphan).
#[derive(Debug, Default)]
struct Adoptees {
    /// Each leader's pid and start time.
    leaders: HashMap<u32, u64>,
    groups: HashSet<u32>,
    cgroups: HashSet<String>,
}

/// How far up a parent chain the sweep looks for an adopted leader.
const MAX_ANCESTRY: usize = 64;

impl Adoptees {
    fn of(identities: impl Iterator<Item = Identity>, instance: &str) -> Self {
        let service_cgroup = format!("/warden-{instance}/");
        let mut adoptees = Self::default();
        for identity in identities {
            adoptees.leaders.insert(identity.pid, identity.start_time);
            adoptees.groups.insert(identity.pgid);
            if let Some(cgroup) =
                warden_actors::cgroup_of(identity.pid).filter(|c| c.contains(&service_cgroup))
            {
                adoptees.cgroups.insert(cgroup);
            }
        }
        adoptees
    }

    /// Whether `pid` (whose identity is `identity`) belongs to a run to adopt.
    fn claim(&self, pid: u32, identity: &Identity) -> bool {
        self.groups.contains(&identity.pgid)
            || (!self.cgroups.is_empty()
                && warden_actors::cgroup_of(pid).is_some_and(|c| self.cgroups.contains(&c)))
            || self.descends_from_a_leader(pid)
    }

    /// Whether a leader (the same process: same start time) is among `pid`'s ancestors.
    fn descends_from_a_leader(&self, pid: u32) -> bool {
        let mut at = pid;
        for _ in 0..MAX_ANCESTRY {
            let Some(parent) = parent_of(at).filter(|&p| p > 1) else {
                return false;
            };
            if let Some(&start) = self.leaders.get(&parent) {
                return proc::start_time(parent).is_ok_and(|s| s == start);
            }
            at = parent;
        }
        false
    }
}

/// The parent of `pid` (`PPid:` of /proc/PID/status; 0 for a process whose parent is
/// outside its pid namespace).
fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// The largest record read back (a record is a few hundred bytes): a bigger file is not
/// one warden wrote, and is deleted unread.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The record files of one state_dir.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    instance: InstanceId,
    adoptable: Mutex<HashMap<String, Waiting>>,
    /// The `warden-records` thread, which writes and deletes every record.
    writer: RecordWriter,
}

/// What opening the store found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Live processes left to adopt.
    pub adoptable: usize,
    /// Records of processes that are gone or were replaced (deleted, never signalled).
    pub stale: usize,
    /// Records of the right process that cannot be adopted (deleted; the process is
    /// killed with the orphans when it carries this instance's marker).
    pub unadoptable: usize,
    /// Marked processes without an adoptable record, killed (spawned just before a crash,
    /// or recorded in a way that cannot be adopted).
    pub orphans_killed: usize,
}

impl StateStore {
    /// Opens the store of `state_dir`: loads (or creates) the instance id, reads every
    /// record, keeps the adoptable ones, deletes the others, then kills this instance's
    /// marked processes that no adoptable record accounts for. Probes pidfd support (and
    /// says in the log when warden falls back to /proc).
    pub fn open(state_dir: &Path) -> io::Result<(Self, Recovered)> {
        let dir = state_dir.join("children");
        state_file::ensure_private_dir(&dir)?;
        let (instance, origin) = InstanceId::load_or_create(state_dir)?;
        let boot_id = proc::boot_id()?;
        proc::pidfds_available();
        let mut recovered = Recovered::default();
        let mut adoptable: HashMap<String, Waiting> = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let file = entry?.path();
            // Only regular files of at most MAX_RECORD_BYTES are read (a planted symbolic
            // link or FIFO is never followed nor waited on).
            let record = if file.extension().is_some_and(|e| e == "json") {
                state_file::read_bounded(&file, MAX_RECORD_BYTES)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        serde_json::from_slice::<Record>(&bytes)
                            .map_err(|e| format!("{}: {e}", file.display()))
                    })
            } else {
                Err(format!("{}: not a record", file.display()))
            };
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(error = %e, "deleting a record that cannot be read (torn by a crash, or not warden's)");
                    let _ = std::fs::remove_file(&file);
                    continue;
                }
            };
            let now = Identity::of(record.pid).ok();
            let same_process =
                record.boot_id == boot_id && now.is_some_and(|n| n.start_time == record.start_time);
            if !same_process {
                recovered.stale += 1;
                let _ = std::fs::remove_file(&file);
                continue;
            }
            let recorded = record.identity();
            if now != Some(recorded) || !recorded.leads_its_group() {
                tracing::warn!(path = %record.path, ?recorded, ?now, "a record that cannot be adopted (its process does not lead the recorded group, or its uid changed): deleted; its process is killed if it is marked as this warden's");
                recovered.unadoptable += 1;
                let _ = std::fs::remove_file(&file);
                continue;
            }
            // Two live records for one path cannot both be adopted: the newer wins, the
            // older is left to the orphan sweep.
            let older = adoptable
                .get(&record.path)
                .is_some_and(|w| w.identity.start_time >= record.start_time);
            if older {
                let _ = std::fs::remove_file(&file);
                continue;
            }
            let waiting = Waiting {
                identity: recorded,
                output: record.output,
                file,
            };
            if let Some(replaced) = adoptable.insert(record.path, waiting) {
                let _ = std::fs::remove_file(replaced.file);
            }
        }
        recovered.adoptable = adoptable.len();
        let writer = RecordWriter::start(boot_id).map_err(io::Error::other)?;
        let store = Self {
            dir,
            instance,
            adoptable: Mutex::new(adoptable),
            writer,
        };
        // An id made just now marks no process yet: there is nothing to sweep (a scan of
        // /proc that costs warden's start ~5 ms on an idle machine, more on a busy one).
        recovered.orphans_killed = match origin {
            IdOrigin::Kept => store.kill_orphans(),
            IdOrigin::New => 0,
        };
        Ok((store, recovered))
    }

    /// This installation's id (what children carry as `WARDEN_INSTANCE`).
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Kills processes marked with this instance, of warden's own uid (any uid when warden
    /// runs as root), that belong to no run to adopt (see [`Adoptees::claim`]): children
    /// spawned by a warden that died before recording them, and processes of records that
    /// cannot be adopted. Each is pinned (identity read,
    /// marker read, pidfd opened, identity read again and compared) before the SIGKILL, so
    /// a pid reused in between is never hit.
    fn kill_orphans(&self) -> usize {
        let keep = Adoptees::of(
            self.adoptable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .map(|w| w.identity),
            self.instance.as_str(),
        );
        let me = std::process::id();
        // SAFETY: getuid cannot fail.
        let my_uid = unsafe { libc::getuid() };
        // A warden running as root starts children as other users (`user = ...`): their
        // orphans carry the marker too. One that does not run as root has only its own.
        let any_uid = state_file::euid() == 0;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let marked = |pid: u32| {
            proc::environ_var(pid, INSTANCE_ENV).as_deref() == Some(self.instance.as_str())
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
            // Unmarked processes are passed over at the cost of one read (refused at once
            // for another user's, without root): most of /proc on a busy machine.
            if pid == me || !marked(pid) {
                continue;
            }
            // Identity first: if it is the same when pinned, the marker read in between
            // was this process's (the read above only spares the others).
            let Ok(identity) = Identity::of(pid) else {
                continue;
            };
            // A process in an adopted group is spared whatever its marker: asked first,
            // it spares reading the environment of every adopted child.
            if keep.groups.contains(&identity.pgid)
                || (identity.uid != my_uid && !any_uid)
                || !marked(pid)
                || keep.claim(pid, &identity)
            {
                continue;
            }
            let Ok(process) = Pinned::pin(identity) else {
                continue;
            };
            tracing::warn!(
                pid,
                "killing an orphan of an earlier warden (no adoptable record)"
            );
            if process.signal(libc::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        killed
    }

    /// The record file of `pid` running as `path`: one write of one new file (named by
    /// the pid, so never overwritten): a crash in the middle leaves a file that does not
    /// parse, which the next warden deletes, and the process it named is then an orphan,
    /// found by its marker and killed. So no temp file and rename are needed.
    fn file_for(&self, path: &ActorPath, pid: u32) -> PathBuf {
        let name: String = path.segments().collect::<Vec<_>>().join("~");
        self.dir.join(format!("{name}@{pid}.json"))
    }

    /// Kills the process groups of live records that no actor adopted once the tree has
    /// started (an actor removed from the config while warden was down, a pool worker
    /// beyond what the pool starts), each pinned and checked to be the recorded process,
    /// and deletes their records. Answers how many.
    pub fn kill_unclaimed(&self) -> usize {
        let unclaimed: Vec<(String, Waiting)> = self
            .adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        let mut killed = 0;
        for (path, waiting) in unclaimed {
            if let Ok(process) = Pinned::pin(waiting.identity) {
                tracing::warn!(%path, pid = waiting.identity.pid, "no actor claims this process of an earlier warden: killing its group");
                if process.signal_group(libc::SIGKILL) {
                    killed += 1;
                }
            }
            let _ = std::fs::remove_file(waiting.file);
        }
        killed
    }
}

impl ProcessRecords for StateStore {
    fn saved(&self, path: &ActorPath, pid: u32, uid: u32, output: Option<String>) -> Written {
        self.writer
            .save(self.file_for(path, pid), path.to_string(), pid, uid, output)
    }

    fn removed(&self, path: &ActorPath, pid: u32) {
        self.writer.remove(self.file_for(path, pid));
    }

    fn flush(&self, within: Duration) -> bool {
        self.writer.flush(within)
    }

    fn take_adoptable(&self, path: &ActorPath) -> Option<Adoptable> {
        let waiting = self
            .adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path.as_str())?;
        // Pinned now, not when the store was opened: the process may have ended and its
        // pid been reused since (a child behind a slow start order).
        match Pinned::pin(waiting.identity) {
            Ok(process) => Some(Adoptable {
                process,
                output: waiting.output,
            }),
            Err(e) => {
                tracing::info!(%path, error = %e, "the recorded process is gone: starting afresh (nothing signalled)");
                let _ = std::fs::remove_file(waiting.file);
                None
            }
        }
    }

    fn is_adoptable(&self, path: &ActorPath) -> bool {
        self.adoptable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(path.as_str())
    }

    fn marker(&self) -> Vec<(String, String)> {
        vec![(INSTANCE_ENV.to_owned(), self.instance.as_str().to_owned())]
    }
}

/// Exclusive ownership of a state_dir by one running warden: an advisory lock on
/// `state_dir/warden.lock` (released by the kernel when warden dies, even by SIGKILL) and
/// its pid in `state_dir/warden.pid`.
#[derive(Debug)]
pub struct StateLock {
    lock: std::fs::File,
    pidfile: PathBuf,
}

impl StateLock {
    /// Takes the lock, or says which warden holds it.
    pub fn acquire(state_dir: &Path) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        state_file::ensure_private_dir(state_dir).map_err(|e| format!("state_dir {e}"))?;
        let lock_path = state_dir.join("warden.lock");
        let lock = state_file::open(&lock_path, state_file::Access::Lock)
            .map_err(|e| format!("cannot open the lock: {e}"))?;
        // SAFETY: flock on a valid fd.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let pidfile = state_dir.join("warden.pid");
        if r != 0 {
            let holder = state_file::read_bounded(&pidfile, 64)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "another warden is running on state_dir {} (pid {})",
                state_dir.display(),
                holder.trim()
            ));
        }
        state_file::create_fresh(&pidfile, format!("{}\n", std::process::id()).as_bytes())
            .map_err(|e| format!("cannot write the pid file: {e}"))?;
        Ok(Self { lock, pidfile })
    }
}

impl StateLock {
    /// The lock a warden that re-executed itself handed over (`lock`, its open file):
    /// checked to be `state_dir/warden.lock` and held. The pid is the same, so the pidfile
    /// is rewritten only if it says otherwise.
    pub fn inherit(state_dir: &Path, lock: std::fs::File) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let lock_path = state_dir.join("warden.lock");
        let on_disk = std::fs::symlink_metadata(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        let held = lock
            .metadata()
            .map_err(|e| format!("the inherited lock: {e}"))?;
        if (held.dev(), held.ino()) != (on_disk.dev(), on_disk.ino()) {
            return Err(format!(
                "the inherited lock is not {}: refusing it",
                lock_path.display()
            ));
        }
        // SAFETY: flock on a valid fd; the open file already holds the lock, so this
        // only confirms it.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "the inherited lock of {} is not held: {}",
                state_dir.display(),
                io::Error::last_os_error()
            ));
        }
        let pidfile = state_dir.join("warden.pid");
        let me = format!("{}\n", std::process::id());
        let current = state_file::read_bounded(&pidfile, 64).unwrap_or_default();
        if current != me.as_bytes() {
            let _ = std::fs::remove_file(&pidfile);
            state_file::create_fresh(&pidfile, me.as_bytes())
                .map_err(|e| format!("cannot write the pid file: {e}"))?;
        }
        Ok(Self { lock, pidfile })
    }

    /// The open file that holds the lock (to hand over across an exec).
    pub fn file(&self) -> &std::fs::File {
        &self.lock
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pidfile);
    }
}
