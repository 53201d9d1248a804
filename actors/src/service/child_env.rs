//! A child's environment: warden's own, read once (at the first spawn) and kept as the
//! `NAME=value` strings an exec takes, less what warden must not pass on, with each run's
//! own entries set over it.
//!
//! Copying warden's environment into a map, then into C strings, at every spawn cost
//! about a tenth of the supervision thread's time per spawn in a fan-out of 1,000
//! services (docs/benchmarks.md, "The spawn's own work"). The price: a change that warden
//! (or an embedding program) makes to its own environment after the first spawn is not
//! seen by children, which SEMANTICS.md states.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::OnceLock;

/// Variables of warden's own environment that its children must not inherit: the
/// sd_notify socket, watchdog and socket activation of warden's own unit (a notify child
/// gets its own `NOTIFY_SOCKET`), the state_dir marker of older wardens, and what a
/// reexec or a holder hands to warden itself.
pub(crate) const INHERITED_NOT_PASSED_ON: [&str; 9] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WARDEN_STATE_DIR",
    "WARDEN_REEXEC_FDS",
    "WARDEN_BOUND_FD",
];

/// warden's environment at the first spawn, less [`INHERITED_NOT_PASSED_ON`], sorted by
/// name: (name, `NAME=value`).
fn inherited() -> &'static [(OsString, CString)] {
    static INHERITED: OnceLock<Vec<(OsString, CString)>> = OnceLock::new();
    INHERITED.get_or_init(|| {
        let mut entries: Vec<(OsString, CString)> = std::env::vars_os()
            .filter(|(name, _)| {
                !INHERITED_NOT_PASSED_ON
                    .iter()
                    .any(|n| OsStr::new(n) == name)
            })
            .filter_map(|(name, value)| {
                let entry = exec_entry(&name, &value).ok()?;
                Some((name, entry))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    })
}

/// `name=value` as exec takes it.
fn exec_entry(name: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut entry = Vec::with_capacity(name.len() + value.len() + 1);
    entry.extend_from_slice(name.as_bytes());
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    CString::new(entry).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an environment entry holds a NUL byte",
        )
    })
}

/// The environment of one child.
#[derive(Debug, Default)]
pub(crate) struct ChildEnv {
    /// Whether warden's own environment is under the entries set.
    inherit: bool,
    /// The entries of this child, over the inherited ones.
    set: BTreeMap<OsString, OsString>,
}

impl ChildEnv {
    /// warden's environment (see the module doc), nothing set over it yet.
    pub(crate) fn inherited() -> Self {
        Self {
            inherit: true,
            set: BTreeMap::new(),
        }
    }

    /// Sets `name` to `value` for this child (over an inherited value).
    pub(crate) fn set(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) {
        self.set.insert(name.into(), value.into());
    }

    /// The value the child sees for `name`.
    pub(crate) fn get(&self, name: &OsStr) -> Option<&OsStr> {
        if let Some(value) = self.set.get(name) {
            return Some(value);
        }
        let inherited = self.inherited_entries();
        let at = inherited
            .binary_search_by(|(n, _)| n.as_os_str().cmp(name))
            .ok()?;
        let entry = inherited[at].1.as_bytes();
        Some(OsStr::from_bytes(&entry[name.len() + 1..]))
    }

    /// Every (name, value) the child sees (for std's `Command`).
    pub(crate) fn vars(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        let inherited = self
            .inherited_entries()
            .iter()
            .filter(|(name, _)| !self.set.contains_key(name))
            .map(|(name, entry)| {
                (
                    name.as_os_str(),
                    OsStr::from_bytes(&entry.as_bytes()[name.len() + 1..]),
                )
            });
        inherited.chain(self.set.iter().map(|(n, v)| (n.as_os_str(), v.as_os_str())))
    }

    /// The entries as exec takes them: the inherited ones borrowed (built once), the
    /// child's own built now.
    pub(crate) fn for_exec(&self) -> io::Result<ExecEnv> {
        let inherited = self
            .inherited_entries()
            .iter()
            .filter(|(name, _)| !self.set.contains_key(name))
            .map(|(_, entry)| entry.as_c_str())
            .collect();
        let own = self
            .set
            .iter()
            .map(|(name, value)| exec_entry(name, value))
            .collect::<io::Result<_>>()?;
        Ok(ExecEnv { inherited, own })
    }

    fn inherited_entries(&self) -> &'static [(OsString, CString)] {
        if self.inherit {
            inherited()
        } else {
            &[]
        }
    }
}

/// A child's environment ready for exec ([`ChildEnv::for_exec`]).
#[derive(Debug)]
pub(crate) struct ExecEnv {
    inherited: Vec<&'static CStr>,
    own: Vec<CString>,
}

impl ExecEnv {
    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &CStr> {
        self.inherited
            .iter()
            .copied()
            .chain(self.own.iter().map(CString::as_c_str))
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.inherited.len() + self.own.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_set_wins_over_warden_s_own_and_the_rest_is_inherited_as_is() {
        // The test's own PATH is inherited (every test runner has one).
        let path = std::env::var_os("PATH").expect("the test runner's PATH");
        let mut env = ChildEnv::inherited();
        assert_eq!(env.get(OsStr::new("PATH")), Some(path.as_os_str()));
        env.set("PATH", "/x");
        env.set("WARDEN_TEST_ONLY_HERE", "a=b");
        assert_eq!(env.get(OsStr::new("PATH")), Some(OsStr::new("/x")));
        let vars: Vec<_> = env.vars().collect();
        assert_eq!(
            vars.iter().filter(|(n, _)| *n == "PATH").count(),
            1,
            "one PATH"
        );
        assert!(vars.contains(&(OsStr::new("WARDEN_TEST_ONLY_HERE"), OsStr::new("a=b"))));
        let exec = env.for_exec().expect("no NUL");
        let entries: Vec<_> = exec.entries().map(|e| e.to_bytes().to_vec()).collect();
        assert_eq!(entries.len(), exec.len());
        assert_eq!(entries.len(), vars.len());
        assert!(entries.contains(&b"PATH=/x".to_vec()));
        assert!(entries.contains(&b"WARDEN_TEST_ONLY_HERE=a=b".to_vec()));
        assert!(!entries.iter().any(|e| e.starts_with(b"NOTIFY_SOCKET=")));
    }

    #[test]
    fn an_entry_with_a_nul_byte_is_refused() {
        let mut env = ChildEnv::default();
        env.set("A", OsStr::from_bytes(b"x\0y"));
        assert_eq!(
            env.for_exec().expect_err("refused").kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
