//! Where warden keeps things inside `state_dir`: one place for every file name.

use std::path::{Path, PathBuf};

use warden_supervisors::ActorPath;

/// The folders and files of a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Makes `state_dir` and the folders warden keeps in it private to warden (created
    /// 0700; an existing one is refused, naming it and the problem, when it is a symbolic
    /// link, owned by another uid, or group- or world-writable: see
    /// `warden_actors::state_file`). Called once at start, before anything in it is read.
    pub fn prepare(&self) -> std::io::Result<()> {
        use warden_actors::state_file::ensure_private_dir;
        ensure_private_dir(&self.root)?;
        for sub in ["logs", "children", "pools", "notify", "handoff"] {
            ensure_private_dir(&self.root.join(sub))?;
        }
        Ok(())
    }

    /// `state_dir` itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of the child log files.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The current log file of the actor at `path`: the tree mirrored in folders,
    /// `/app/api` -> `logs/app/api.log`.
    pub fn log_file(&self, path: &ActorPath) -> PathBuf {
        let mut file = self.logs_dir();
        let mut segments = path.segments().peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_some() {
                file.push(segment);
            } else {
                file.push(format!("{segment}.log"));
            }
        }
        file
    }

    /// Folder of the per-run sd_notify sockets.
    pub fn notify_dir(&self) -> PathBuf {
        self.root.join("notify")
    }

    /// The folder of files handed to the child at `path` alone (its token; an outboard
    /// child's config and socket): see `warden_actors::Handoff`.
    pub fn handoff_dir(&self, path: &ActorPath) -> PathBuf {
        self.root.join("handoff").join(flat_name(path))
    }

    /// The file an outboard child reads to connect (`$WARDEN_OUTBOARD_CONFIG`).
    pub fn outboard_config(&self, path: &ActorPath) -> PathBuf {
        self.handoff_dir(path).join(OUTBOARD_CONFIG_FILE)
    }

    /// The socket warden listens on for an outboard child.
    pub fn outboard_socket(&self, path: &ActorPath) -> PathBuf {
        self.handoff_dir(path).join(OUTBOARD_SOCKET_FILE)
    }

    /// The signed token file of a pool worker (`$WARDEN_WORKER_TOKEN_FILE`).
    pub fn worker_token(&self, path: &ActorPath) -> PathBuf {
        self.handoff_dir(path).join(WORKER_TOKEN_FILE)
    }

    /// The key that signs worker tokens (kept, so a restarted warden verifies old ones).
    pub fn token_key(&self) -> PathBuf {
        self.root.join("pool.key")
    }

    /// Folder of the pools' worker tables (what a restarted warden rebuilds its pools
    /// from).
    pub fn pool_tables_dir(&self) -> PathBuf {
        self.root.join("pools")
    }

    /// The local control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// The default admin token file.
    pub fn default_token_file(&self) -> PathBuf {
        self.root.join("admin.token")
    }
}

/// The name of an outboard child's config file in its handoff folder.
pub const OUTBOARD_CONFIG_FILE: &str = "outboard.json";
/// The name of an outboard child's socket in its handoff folder.
pub const OUTBOARD_SOCKET_FILE: &str = "outboard.sock";
/// The name of a pool worker's token file in its handoff folder.
pub const WORKER_TOKEN_FILE: &str = "token";

/// An actor path as one file name: `/app/api` -> `app~api` (`~` is not allowed in names).
pub fn flat_name(path: &ActorPath) -> String {
    path.segments().collect::<Vec<_>>().join("~")
}
