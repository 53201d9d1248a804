//! The `warden-records` thread: every process record of the store is written and deleted
//! here, in the order asked (one FIFO queue), never on the supervision thread.
//!
//! Writing a record costs the spawn path more than its few hundred bytes suggest: it
//! reads the new child's `/proc/PID/stat` (its uid is the one it was started with), which
//! blocks until the child's exec has closed every descriptor it inherited from warden (up
//! to a quarter of a millisecond with 1,000 services: docs/benchmarks.md), then creates a
//! file in `state_dir`. Queued, that work overlaps the supervision thread's next spawn.
//!
//! What keeps a queued record true: the identity is read while the pid is still warden's
//! own unreaped child, because the run waits for its record ([`Written`]) before it reaps
//! the child; a removal is queued behind the record it removes; a reexec
//! and a stopping warden wait until the queue is empty ([`RecordWriter::flush`]). A warden
//! killed while a record is queued leaves that child unrecorded: the next warden kills it
//! as an orphan of the instance (its `WARDEN_INSTANCE` marker) and starts the service
//! afresh, as it did for a child spawned just before the crash: never two instances.
//! The queue is bounded ([`QUEUE`]); a full queue makes the caller wait for room.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

use tokio::sync::oneshot;
use warden_actors::proc;
use warden_actors::state_file;
use warden_actors::Written;

use super::Record;

/// How many record jobs may wait for the thread. 1,000 services spawned or restarted in
/// one burst queue at most 2,000 (a save and a removal each).
pub(crate) const QUEUE: usize = 4096;

/// One job of the records thread; small (a save is boxed), since the queue's slots are
/// allocated up front.
enum Job {
    /// Write a record.
    Save(Box<Save>),
    /// Delete `file`.
    Remove(PathBuf),
    /// Answer once every job queued before this one is done.
    Flush(mpsc::Sender<()>),
}

/// Write the record of `pid` (read its start time and group now) to `file`.
struct Save {
    file: PathBuf,
    path: String,
    pid: u32,
    /// The real uid it was started with.
    uid: u32,
    output: Option<String>,
    done: oneshot::Sender<()>,
}

/// The records thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the warden-records thread: {0}")]
pub(crate) struct WriterUnavailable(#[from] io::Error);

/// The sending side of the records thread; the thread ends once this is dropped and its
/// queue is empty.
#[derive(Debug)]
pub(crate) struct RecordWriter {
    jobs: SyncSender<Job>,
}

impl RecordWriter {
    /// Starts the thread; `boot_id` goes into every record.
    pub(crate) fn start(boot_id: String) -> Result<Self, WriterUnavailable> {
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("warden-records".into())
            .spawn(move || run(&queue, &boot_id))?;
        Ok(Self { jobs })
    }

    /// Queues the record of `pid`, now running as `path` with the real uid `uid` (its
    /// output on `output`).
    pub(crate) fn save(
        &self,
        file: PathBuf,
        path: String,
        pid: u32,
        uid: u32,
        output: Option<String>,
    ) -> Written {
        let (done, written) = oneshot::channel();
        let job = Job::Save(Box::new(Save {
            file,
            path,
            pid,
            uid,
            output,
            done,
        }));
        match self.jobs.send(job) {
            Ok(()) => Written::pending(written),
            Err(mpsc::SendError(_)) => {
                tracing::error!(
                    pid,
                    "the records thread is gone: a warden crash would lose this child"
                );
                Written::done()
            }
        }
    }

    /// Queues the deletion of `file` (after every record queued before).
    pub(crate) fn remove(&self, file: PathBuf) {
        if let Err(mpsc::SendError(Job::Remove(file))) = self.jobs.send(Job::Remove(file)) {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Waits, at most `within`, until every job queued so far is done; false when that
    /// did not happen in time. Blocking.
    pub(crate) fn flush(&self, within: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.jobs.send(Job::Flush(tx)).is_err() {
            return true;
        }
        rx.recv_timeout(within).is_ok()
    }
}

/// The thread: jobs one at a time, in order, until every sender is gone.
fn run(queue: &Receiver<Job>, boot_id: &str) {
    while let Ok(job) = queue.recv() {
        match job {
            Job::Save(save) => {
                let Save {
                    file,
                    path,
                    pid,
                    uid,
                    output,
                    done,
                } = *save;
                let span = tracing::debug_span!("record", %path, pid);
                let _entered = span.enter();
                write(&file, &path, pid, uid, output, boot_id);
                let _ = done.send(());
            }
            Job::Remove(file) => {
                let _ = std::fs::remove_file(file);
            }
            Job::Flush(answer) => {
                let _ = answer.send(());
            }
        }
    }
}

/// Reads the start time and group of `pid` (warden's own child, not reaped yet: the run
/// waits for this record before it reaps) and writes its record in one write of a new
/// file.
fn write(
    file: &std::path::Path,
    path: &str,
    pid: u32,
    uid: u32,
    output: Option<String>,
    boot_id: &str,
) {
    let stat = match proc::stat(pid) {
        Ok(stat) if !stat.zombie => stat,
        // Already exited: nothing to adopt later.
        _ => return,
    };
    let record = Record {
        path: path.to_owned(),
        pid,
        pgid: stat.pgid,
        start_time: stat.start_time,
        boot_id: boot_id.to_owned(),
        uid,
        output,
    };
    let written = serde_json::to_vec(&record)
        .map_err(io::Error::other)
        .and_then(|bytes| state_file::create_fresh(file, &bytes));
    if let Err(e) = written {
        tracing::error!(path, pid, error = %e, "cannot record a child: a warden crash would lose it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record is written from the identity of the live process, a removal queued after
    /// it wins, and `flush` answers only once both are done.
    #[test]
    fn saves_and_removals_are_done_in_order_and_flush_waits_for_them() {
        let temp = tempfile::tempdir().expect("a temp folder");
        let dir = temp.path();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let writer = RecordWriter::start("boot".into()).expect("the thread");
        let file = dir.join(format!("a@{pid}.json"));

        let uid = nix::unistd::getuid().as_raw();
        let _ = writer.save(file.clone(), "/a".into(), pid, uid, None);
        writer.remove(file.clone());
        assert!(writer.flush(Duration::from_secs(10)), "flushed in time");
        assert!(
            !file.exists(),
            "the removal queued after the save came last"
        );

        let _ = writer.save(file.clone(), "/a".into(), pid, uid, Some("pipe:[7]".into()));
        assert!(writer.flush(Duration::from_secs(10)), "flushed in time");
        let record: Record =
            serde_json::from_slice(&std::fs::read(&file).expect("the record")).expect("json");
        let identity = proc::Identity::of(pid).expect("the child's identity");
        assert_eq!(
            (record.pid, record.start_time, record.pgid, record.uid),
            (pid, identity.start_time, identity.pgid, identity.uid)
        );
        assert_eq!(record.path, "/a");
        assert_eq!(record.boot_id, "boot");
        assert_eq!(record.output.as_deref(), Some("pipe:[7]"));

        let _ = child.kill();
        let _ = child.wait();
    }
}
