//! Who is at the other end of a local socket, and whether it belongs to a child.
//!
//! [`PeerCred`] is what the kernel says of a peer: SO_PEERCRED on a stream (recorded at
//! `connect()`), SCM_CREDENTIALS on a datagram (with SO_PASSCRED on). It cannot be forged
//! by the peer (only root may claim another pid or uid). [`ChildProcesses`] says whether a
//! pid is one of a child's processes: a member of the child's process group (its leader's
//! pid), and, when the child runs in a cgroup of its own, also a member of that cgroup
//! (a process of warden's session could join the group with `setpgid`, but it cannot move
//! itself into a cgroup it cannot write to).

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;

use crate::service::proc;

/// The credentials of a peer process, as the kernel recorded them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Its pid (in warden's pid namespace).
    pub pid: u32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
}

impl PeerCred {
    /// The credentials of the process at the other end of `stream` (SO_PEERCRED).
    pub fn of_stream(stream: &Stream) -> io::Result<Self> {
        let creds = stream.peer_creds()?;
        let missing = || io::Error::new(io::ErrorKind::Unsupported, "no peer credentials");
        Ok(Self {
            pid: u32::try_from(creds.pid().ok_or_else(missing)?).map_err(|_| missing())?,
            uid: creds.euid().ok_or_else(missing)?,
            gid: creds.egid().ok_or_else(missing)?,
        })
    }

    /// Whether this peer runs as warden's own effective uid, or as root.
    pub fn is_warden_or_root(&self) -> bool {
        self.uid == 0 || self.uid == nix::unistd::geteuid().as_raw()
    }
}

/// Why a pid is not one of a child's processes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotTheChilds {
    /// The process is gone (or /proc does not show it).
    #[error("pid {0} is gone")]
    Gone(u32),
    /// Another process group.
    #[error("pid {pid} is not a process of the child's process group {pgid} (it is in {actual})")]
    OtherGroup {
        /// The peer.
        pid: u32,
        /// The child's group.
        pgid: u32,
        /// The peer's group.
        actual: u32,
    },
    /// Not in the child's cgroup.
    #[error("pid {pid} is not in the child's cgroup {}", cgroup.display())]
    OtherCgroup {
        /// The peer.
        pid: u32,
        /// The child's cgroup folder.
        cgroup: PathBuf,
    },
}

/// The processes of one child run: its process group and, when it has one, its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildProcesses {
    pgid: u32,
    cgroup: Option<PathBuf>,
}

impl ChildProcesses {
    /// The processes of the group led by `leader` (a service's pid: every service leads
    /// its own process group).
    pub fn led_by(leader: u32) -> Self {
        Self {
            pgid: leader,
            cgroup: None,
        }
    }

    /// Also requires membership of the cgroup at `dir` (its folder in the cgroup2
    /// hierarchy), for a child contained in a cgroup of its own.
    pub fn in_cgroup(mut self, dir: PathBuf) -> Self {
        self.cgroup = Some(dir);
        self
    }

    /// The child's process group.
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// `Ok` if the live process `pid` is one of the child's.
    pub fn check(&self, pid: u32) -> Result<(), NotTheChilds> {
        self.check_process(pid, false)
    }

    /// `Ok` if `pid`, the sender of a datagram already received, is one of the child's: its
    /// leader, or a process of its group that may have exited since (a zombie still shows
    /// its group). A sender that is gone entirely cannot be told apart from a stranger.
    pub fn check_sender(&self, pid: u32) -> Result<(), NotTheChilds> {
        if pid == self.pgid && self.cgroup.is_none() {
            return Ok(());
        }
        self.check_process(pid, true)
    }

    fn check_process(&self, pid: u32, zombie_ok: bool) -> Result<(), NotTheChilds> {
        let stat = proc::stat(pid).map_err(|_| NotTheChilds::Gone(pid))?;
        if stat.zombie && !zombie_ok {
            return Err(NotTheChilds::Gone(pid));
        }
        if stat.pgid != self.pgid || self.pgid <= 1 {
            return Err(NotTheChilds::OtherGroup {
                pid,
                pgid: self.pgid,
                actual: stat.pgid,
            });
        }
        if let Some(dir) = &self.cgroup {
            if !cgroup_holds(dir, pid) {
                return Err(NotTheChilds::OtherCgroup {
                    pid,
                    cgroup: dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// The live processes of the child right now (scans /proc: call it off the
    /// supervision thread).
    pub fn members(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| self.check(pid).is_ok())
            .collect()
    }
}

/// Whether `pid` is listed in the `cgroup.procs` of the cgroup folder `dir`.
fn cgroup_holds(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|procs| procs.lines().any(|l| l.trim().parse() == Ok(pid)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_belongs_to_its_own_group_only() {
        let me = std::process::id();
        let my_group = proc::process_group(me).expect("my group");
        assert_eq!(ChildProcesses::led_by(my_group).check(me), Ok(()));
        assert!(matches!(
            ChildProcesses::led_by(my_group + 1).check(me),
            Err(NotTheChilds::OtherGroup { .. })
        ));
        assert!(matches!(
            ChildProcesses::led_by(my_group)
                .in_cgroup(PathBuf::from("/nonexistent-cgroup"))
                .check(me),
            Err(NotTheChilds::OtherCgroup { .. })
        ));
        assert!(ChildProcesses::led_by(my_group).members().contains(&me));
    }
}
