//! Who a child runs as (`user = "name"`, `group = "name"`): the uid, gid and supplementary
//! groups a warden running as root gives the child before it executes its program, read
//! from the system's user and group databases when the config is loaded (so an unknown
//! name is a config error, not a failed start).
//!
//! Only a warden running as root can start a child as another user or group; one that
//! does not refuses such a child when the config is checked ([`RunAs::allowed_for`]).

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

use crate::state_file::FileOwner;

/// A child's user, group and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunAs {
    /// The user as written (or warden's own uid, as a number, when only `group` is given).
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// Its gid: `group`'s, else the user's primary group.
    pub gid: u32,
    /// Supplementary groups: the user's groups (as `initgroups` gives them, with `gid`);
    /// just `gid` when only `group` is given.
    pub groups: Vec<u32>,
}

/// Why `user` or `group` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunAsError {
    /// No such user in the system's user database.
    #[error("unknown user {0:?} (not in the system's user database)")]
    UnknownUser(String),
    /// No such group in the system's group database.
    #[error("unknown group {0:?} (not in the system's group database)")]
    UnknownGroup(String),
    /// The database could not be read.
    #[error("cannot look up {name:?}: {reason}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// Why it failed.
        reason: String,
    },
    /// warden is not root and cannot become another user or group.
    #[error("{wanted}: warden runs as uid {euid} (gid {egid}), not root, so it cannot start a child as another user or group; run warden as root, or remove `user`/`group`")]
    NotRoot {
        /// What was asked for.
        wanted: String,
        /// warden's effective uid.
        euid: u32,
        /// warden's effective gid.
        egid: u32,
    },
}

impl RunAs {
    /// Resolves `user` and `group` (either may be absent; `None` when both are).
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Self>, RunAsError> {
        let lookup = |name: &str, e: nix::Error| RunAsError::Lookup {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        let group_gid = match group {
            Some(name) => Some(
                Group::from_name(name)
                    .map_err(|e| lookup(name, e))?
                    .ok_or_else(|| RunAsError::UnknownGroup(name.to_owned()))?
                    .gid
                    .as_raw(),
            ),
            None => None,
        };
        match (user, group_gid) {
            (None, None) => Ok(None),
            (None, Some(gid)) => {
                let uid = Uid::effective().as_raw();
                Ok(Some(Self {
                    user: uid.to_string(),
                    uid,
                    gid,
                    groups: vec![gid],
                }))
            }
            (Some(name), gid) => {
                let found = User::from_name(name)
                    .map_err(|e| lookup(name, e))?
                    .ok_or_else(|| RunAsError::UnknownUser(name.to_owned()))?;
                let gid = gid.unwrap_or(found.gid.as_raw());
                let c_name =
                    CString::new(name).map_err(|_| RunAsError::UnknownUser(name.to_owned()))?;
                let mut groups: Vec<u32> = nix::unistd::getgrouplist(&c_name, Gid::from_raw(gid))
                    .map_err(|e| lookup(name, e))?
                    .into_iter()
                    .map(Gid::as_raw)
                    .collect();
                groups.sort_unstable();
                groups.dedup();
                Ok(Some(Self {
                    user: name.to_owned(),
                    uid: found.uid.as_raw(),
                    gid,
                    groups,
                }))
            }
        }
    }

    /// Whether a warden of effective uid `euid` and gid `egid` may start a child as this:
    /// root may start any; any other only its own uid and gid (then nothing changes at
    /// spawn).
    pub fn allowed_for(&self, euid: u32, egid: u32) -> Result<(), RunAsError> {
        if euid == 0 || (self.uid == euid && self.gid == egid) {
            return Ok(());
        }
        let wanted = if self.uid != euid {
            format!("user {:?} (uid {})", self.user, self.uid)
        } else {
            format!("group gid {}", self.gid)
        };
        Err(RunAsError::NotRoot { wanted, euid, egid })
    }

    /// Whether starting a child as this changes anything for the calling process (a root
    /// warden switching to another identity).
    pub(crate) fn switches(&self) -> bool {
        Uid::effective().is_root()
    }

    /// The owner of a file handed to the child (its token): its uid and gid.
    pub fn file_owner(&self) -> FileOwner {
        FileOwner {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// warden's effective uid and gid.
pub fn effective_ids() -> (u32, u32) {
    (Uid::effective().as_raw(), Gid::effective().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_unknown_ones_are_named() {
        let root = RunAs::resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(RunAs::resolve(None, None).unwrap(), None);
        assert_eq!(
            RunAs::resolve(Some("no-such-user-xyz"), None),
            Err(RunAsError::UnknownUser("no-such-user-xyz".into()))
        );
        assert_eq!(
            RunAs::resolve(Some("root"), Some("no-such-group-xyz")),
            Err(RunAsError::UnknownGroup("no-such-group-xyz".into()))
        );
        // Root may start anyone; another uid only itself.
        assert!(root.allowed_for(0, 0).is_ok());
        let e = root.allowed_for(1000, 1000).unwrap_err().to_string();
        assert!(e.contains("\"root\"") && e.contains("not root"), "{e}");
    }
}
