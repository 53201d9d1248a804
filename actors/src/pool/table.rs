//! The worker table of each pool, kept in `state_dir/pools/<pool>.json` so that a warden
//! killed (even by SIGKILL) and started again rebuilds its pools with the same workers
//! (names, ports, templates) and their sessions, and the worker services adopt their live
//! processes by path. Tables are read once at startup (before anything runs) and written
//! by a writer thread (temp file + rename, so a crash leaves the old or the new table,
//! never a torn one), at most one pending write per pool: the supervision thread only
//! hands over the bytes.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use warden_supervisors::ActorPath;

use super::{Session, WorkerTemplate};
use crate::state_file;

/// What a pool persists: its workers and their sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Table {
    /// The highest worker number handed out.
    pub(crate) next_worker: u64,
    /// The template new workers run (a rollout changes it).
    pub(crate) template: Option<WorkerTemplate>,
    /// The template of the config when this table was written: when the config changed
    /// since, the config wins over `template`.
    pub(crate) config_template: Option<WorkerTemplate>,
    /// The workers.
    pub(crate) workers: Vec<TableWorker>,
}

/// One worker of a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TableWorker {
    /// Its name (`w3`).
    pub(crate) id: String,
    /// Its run nonce (in its tokens); empty in a table of an older warden.
    #[serde(default)]
    pub(crate) nonce: String,
    /// Its number.
    pub(crate) number: u64,
    /// Its port.
    pub(crate) port: u16,
    /// What it runs.
    pub(crate) template: WorkerTemplate,
    /// Whether a rollout replaced it.
    pub(crate) draining: bool,
    /// The sessions this warden placed on it.
    pub(crate) sessions: Vec<Session>,
}

/// The worker tables of one state_dir (or none, e.g. for `warden check`).
#[derive(Debug, Default)]
pub struct PoolTables {
    dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Table>>,
    writer: Option<Arc<Writer>>,
}

/// A table waiting to be written, and who waits for it to be on disk.
type Pending = (Vec<u8>, Vec<tokio::sync::oneshot::Sender<()>>);

#[derive(Debug, Default)]
struct Writer {
    pending: Mutex<HashMap<PathBuf, Pending>>,
    wake: Condvar,
}

impl PoolTables {
    /// No tables: pools start afresh and persist nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// The tables in `dir` (created if missing), all read now; unreadable tables are
    /// skipped with a warning (their workers are then orphans of the earlier warden).
    pub fn open(dir: &Path) -> io::Result<Self> {
        state_file::ensure_private_dir(dir)?;
        let mut loaded = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let file = entry?.path();
            if file.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let table = state_file::read_bounded(&file, MAX_TABLE_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<(String, Table)>(&b).map_err(|e| e.to_string())
                });
            match table {
                Ok((pool, table)) => {
                    loaded.insert(pool, table);
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "skipping an unreadable pool table");
                }
            }
        }
        let writer = Arc::new(Writer::default());
        let thread_writer = writer.clone();
        std::thread::Builder::new()
            .name("warden-pool-tables".into())
            .spawn(move || thread_writer.run())?;
        Ok(Self {
            dir: Some(dir.to_path_buf()),
            loaded: Mutex::new(loaded),
            writer: Some(writer),
        })
    }

    /// The table an earlier warden left for `pool` (handed out once).
    pub(crate) fn take(&self, pool: &ActorPath) -> Option<Table> {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(pool.as_str())
    }

    /// Queues `table` of `pool` for writing (a later save of the same pool replaces it);
    /// the answer resolves once it (or a later one) is written, or could not be.
    pub(crate) fn save(
        &self,
        pool: &ActorPath,
        table: &Table,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        let (Some(dir), Some(writer)) = (&self.dir, &self.writer) else {
            let _ = done.send(());
            return written;
        };
        let bytes = match serde_json::to_vec(&(pool.as_str(), table)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%pool, error = %e, "cannot encode a pool table");
                let _ = done.send(());
                return written;
            }
        };
        let name: String = pool.segments().collect::<Vec<_>>().join("~");
        let file = dir.join(format!("{name}.json"));
        {
            let mut pending = writer
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let entry = pending.entry(file).or_default();
            entry.0 = bytes;
            entry.1.push(done);
        }
        writer.wake.notify_one();
        written
    }
}

impl Writer {
    fn run(&self) {
        loop {
            let batch: Vec<(PathBuf, Pending)> = {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                while pending.is_empty() {
                    pending = self
                        .wake
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                pending.drain().collect()
            };
            for (file, (bytes, waiting)) in batch {
                if let Err(e) = write_atomically(&file, &bytes) {
                    tracing::error!(file = %file.display(), error = %e, "cannot write a pool table: a warden crash would lose its workers");
                }
                for done in waiting {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// The largest pool table read back (a table of 1,000 workers with 100 sessions each
/// is a few MiB).
const MAX_TABLE_BYTES: u64 = 64 << 20;

/// Writes `bytes` to `file` through a temp file and a rename.
fn write_atomically(file: &Path, bytes: &[u8]) -> io::Result<()> {
    state_file::replace(file, bytes, None, false)
}
