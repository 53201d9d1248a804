//! Containment of a service's processes: "no descendant survives its service".
//!
//! Where a writable cgroup v2 hierarchy exists, every service run lives in a cgroup of its
//! own, `<warden's cgroup>/warden-<instance>/<actor path>`, and every end of a run (after
//! the graceful signal and its timeout, or after the leader exited) writes `1` to its
//! `cgroup.kill`: every process in it gets SIGKILL, setsid ones too. The empty cgroup is
//! then removed. Elsewhere a run is contained by its process group, as before.
//!
//! A leader is born in its cgroup: warden clones it there (`CLONE_INTO_CGROUP`, see
//! [`super::launch`]), so nothing it forks can start outside. Where the kernel refuses
//! that (before Linux 5.7, or `clone3` denied), warden moves the leader into its cgroup
//! right after the spawn (posix_spawn returns once the child has exec'd), then every
//! child the leader already forked, recursively. That move is a write to `cgroup.procs`,
//! which waits for an RCU grace period in the kernel (5-35 ms per move measured on this
//! machine at a quiet restart), and leaves a window: of 60 runs of `cat
//! /proc/self/cgroup`, 18 read warden's cgroup (tests/robust_containment.rs). A
//! descendant forked in the window is moved by the sweep of the leader's children, unless
//! its parent already exited (a double fork within those microseconds: it is still in
//! the leader's process group, and reparented to warden). The write uses an fd that
//! warden opened: a child that drops to another user still gets in (Linux 5.16+ checks
//! the opener's credentials).

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use warden_supervisors::{ActorPath, Containment};

use super::launch::Born;

/// How long the end of a run waits for its cgroup to empty after `cgroup.kill` before it
/// leaves the cgroup behind (a process stuck in the kernel cannot be hurried).
const EMPTY_BOUND: Duration = Duration::from_secs(2);

/// Why runs are contained by process groups instead of cgroups.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CgroupUnavailable(String);

/// The cgroup v2 subtree of one warden instance: `<warden's cgroup>/warden-<instance>`.
#[derive(Debug)]
pub struct Cgroups {
    /// `<mount>/<warden's cgroup>/warden-<instance>`.
    base: PathBuf,
    /// `warden-<instance>`: the name an adopted process's cgroup must contain.
    base_name: String,
    /// Where the v2 hierarchy is mounted, and which of its cgroups the mount shows as its
    /// root.
    mount: PathBuf,
    mount_root: PathBuf,
    /// `base`, opened once (`O_PATH`): a service's folder and its `cgroup.events` are
    /// opened relative to it, a walk of its own path only.
    base_folder: Arc<OwnedFd>,
}

impl Cgroups {
    /// Finds warden's own cgroup in the v2 hierarchy (`/proc/self/cgroup`, the `0::`
    /// line; the mount from `/proc/self/mountinfo`) and creates `warden-<instance>`
    /// below it. Fails when there is no v2 hierarchy, it is not writable, or the kernel
    /// has no `cgroup.kill` (before Linux 5.14).
    pub fn setup(instance: &str) -> Result<Self, CgroupUnavailable> {
        let unavailable = |what: String| CgroupUnavailable(what);
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| unavailable(format!("cannot read /proc/self/cgroup: {e}")))?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| {
                unavailable("no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)".into())
            })?
            .to_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| unavailable(format!("cannot read /proc/self/mountinfo: {e}")))?;
        let (mount, mount_root) = v2_mount(&mountinfo)
            .ok_or_else(|| unavailable("no cgroup v2 hierarchy is mounted".into()))?;
        let base_name = format!("warden-{instance}");
        let own_dir = under_mount(&mount, &mount_root, Path::new(own.trim())).ok_or_else(|| {
            unavailable(format!(
                "warden's cgroup {own} is not below the cgroup2 mount {}",
                mount.display()
            ))
        })?;
        let base = own_dir.join(&base_name);
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(unavailable(format!(
                    "cannot create {}: {e}",
                    base.display()
                )))
            }
        }
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return Err(unavailable(
                "the kernel has no cgroup.kill (Linux 5.14+)".into(),
            ));
        }
        let base_folder = open_folder(None, &base)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", base.display())))?;
        Ok(Self {
            base,
            base_name,
            mount,
            mount_root,
            base_folder: Arc::new(base_folder),
        })
    }

    /// `<warden's cgroup>/warden-<instance>`.
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// SIGKILLs every process of every service cgroup (one write).
    pub fn kill_all(&self) -> io::Result<()> {
        kill_cgroup(&self.base)
    }

    /// Removes every empty cgroup below and including `warden-<instance>` (children
    /// first); a populated one stays, with its parents.
    pub fn remove_empty(&self) {
        remove_empty_tree(&self.base);
    }

    /// Creates the cgroups of `paths`, in this order, on a thread of their own
    /// (`warden-cgroups`), ahead of the runs that need them: a first start then finds its
    /// cgroup made and only opens its `cgroup.procs` (a cgroup's mkdir is about a tenth of
    /// the supervision thread's time per spawn: docs/benchmarks.md). A path the thread
    /// has not reached yet is created by its run, as before; an empty cgroup made for a
    /// run that never comes is removed when warden exits ([`Cgroups::remove_empty`]).
    pub fn create_ahead(self: &std::sync::Arc<Self>, paths: Vec<ActorPath>) {
        if paths.is_empty() {
            return;
        }
        let cgroups = self.clone();
        let started = std::thread::Builder::new()
            .name("warden-cgroups".into())
            .spawn(move || {
                let span = tracing::debug_span!("cgroups_ahead", count = paths.len());
                let _entered = span.enter();
                for path in &paths {
                    // A failure is met again, and said, by the run itself.
                    let _ = std::fs::create_dir_all(cgroups.service_dir(path));
                }
            });
        if let Err(e) = started {
            tracing::debug!(error = %e, "cannot start the warden-cgroups thread: each run creates its own cgroup");
        }
    }

    /// The cgroup of the service at `path`.
    pub(crate) fn service_dir(&self, path: &ActorPath) -> PathBuf {
        let mut dir = self.base.clone();
        dir.extend(path.segments());
        dir
    }

    /// The cgroup that `pid` (an adopted process) lives in, when it is one of this
    /// instance's service cgroups.
    fn of_process(&self, pid: u32, path: &ActorPath) -> Option<ServiceCgroup> {
        let rel = cgroup_of(pid)?;
        let dir = under_mount(&self.mount, &self.mount_root, Path::new(&rel))?;
        let ours = dir
            .components()
            .any(|c| c.as_os_str() == self.base_name.as_str());
        if !(ours && dir.is_dir()) {
            return None;
        }
        let events = dir
            .strip_prefix(&self.base)
            .ok()
            .map(|relative| (self.base_folder.clone(), relative.join("cgroup.events")));
        Some(ServiceCgroup {
            dir,
            path: path.to_string(),
            events,
        })
    }
}

/// The cgroup v2 path of `pid` as /proc/PID/cgroup shows it (its `0::` line), if it has
/// one and is still there.
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    Some(rel.to_owned())
}

/// The mount point and mount root of the cgroup2 hierarchy in `mountinfo`.
fn v2_mount(mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((
            PathBuf::from(unescape(point)),
            PathBuf::from(unescape(root)),
        ))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Where cgroup `cgroup` (a path as /proc/PID/cgroup shows it) is in the file system.
fn under_mount(mount: &Path, mount_root: &Path, cgroup: &Path) -> Option<PathBuf> {
    let rel = cgroup.strip_prefix(mount_root).ok()?;
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(mount.join(rel))
}

/// The children of `pid` (of any of its threads).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Opens the folder `path` (relative to `at` when given) as a handle only (`O_PATH`):
/// what `clone3` takes to start a child in it, and what `cgroup.procs` is opened from.
fn open_folder(at: Option<&OwnedFd>, path: &Path) -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::empty();
    let fd = match at {
        Some(at) => nix::fcntl::openat(at, path, flags, mode)?,
        None => nix::fcntl::open(path, flags, mode)?,
    };
    Ok(fd)
}

/// The `cgroup.procs` of the open cgroup folder `folder`, for writing (with warden's
/// credentials: a child that drops to another user still gets in, Linux 5.16+ checks the
/// opener's).
fn openat_procs(folder: &OwnedFd) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        folder,
        "cgroup.procs",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(File::from(fd))
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(bytes)
}

/// Writes `1` to `cgroup.kill` of the cgroup at `dir`: SIGKILL to every process in it
/// and in its descendants.
pub fn kill_cgroup(dir: &Path) -> io::Result<()> {
    write_file(&dir.join("cgroup.kill"), b"1")
}

/// Waits (up to `bound`) until the cgroup at `dir` has no process left, then removes it
/// and every empty cgroup below it.
pub fn remove_when_empty(dir: &Path, bound: Duration) {
    let deadline = Instant::now() + bound;
    while populated(dir).unwrap_or(false) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    remove_empty_tree(dir);
}

/// Whether the cgroup at `dir` (or one below it) holds a process.
fn populated(dir: &Path) -> io::Result<bool> {
    let events = std::fs::read(dir.join("cgroup.events"))?;
    Ok(says_populated(&events))
}

/// [`populated`] for the `cgroup.events` at `relative` below the open folder `base`: one
/// short walk and one read into a stack buffer, since it runs on the supervision thread
/// after every crash (the path from the mount and a heap string cost ~50 us there).
fn populated_at(base: &OwnedFd, relative: &Path) -> io::Result<bool> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        base,
        relative,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // "populated 0|1\nfrozen 0|1\n": far below the buffer.
    let mut buf = [0u8; 256];
    let len = nix::unistd::read(&fd, &mut buf)?;
    Ok(says_populated(&buf[..len]))
}

/// Whether a `cgroup.events` text has the line `populated 1`.
fn says_populated(events: &[u8]) -> bool {
    events.split(|b| *b == b'\n').any(|l| l == b"populated 1")
}

fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&entry.path());
            }
        }
    }
    // EBUSY (still populated, or has children) is expected: it stays.
    let _ = std::fs::remove_dir(dir);
}

/// The cgroup of one service run.
#[derive(Debug)]
pub(crate) struct ServiceCgroup {
    dir: PathBuf,
    /// The actor path, for log lines.
    path: String,
    /// Warden's open cgroup folder and this one's `cgroup.events` relative to it (for a
    /// cgroup below it: all but an adopted one in another view of the hierarchy).
    events: Option<(Arc<OwnedFd>, PathBuf)>,
}

impl ServiceCgroup {
    /// Creates the cgroup of `path` (and its parents) unless it exists (made ahead, or
    /// left empty by the previous run), and opens its folder (a child is cloned into it,
    /// or moved through its `cgroup.procs`).
    fn create(cgroups: &Cgroups, path: &ActorPath) -> io::Result<(Self, OwnedFd)> {
        let dir = cgroups.service_dir(path);
        let relative: PathBuf = path.segments().collect();
        let open = || open_folder(Some(&*cgroups.base_folder), &relative);
        let folder = match open() {
            Ok(folder) => folder,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                open()?
            }
            Err(e) => return Err(e),
        };
        let events = Some((cgroups.base_folder.clone(), relative.join("cgroup.events")));
        Ok((
            Self {
                dir,
                path: path.to_string(),
                events,
            },
            folder,
        ))
    }

    fn kill(&self) -> io::Result<()> {
        kill_cgroup(&self.dir)
    }

    fn populated(&self) -> io::Result<bool> {
        match &self.events {
            Some((base, relative)) => populated_at(base, relative),
            None => populated(&self.dir),
        }
    }

    /// Kills whatever is left, waits (up to [`EMPTY_BOUND`]) until it is gone and
    /// removes the cgroup. Blocking: runs on the blocking pool.
    fn end(&self) {
        let path = self.path.as_str();
        if self.populated().unwrap_or(true) {
            if let Err(e) = self.kill() {
                tracing::warn!(path, cgroup = %self.dir.display(), error = %e, "cannot write cgroup.kill");
            }
            let deadline = Instant::now() + EMPTY_BOUND;
            let mut pause = Duration::from_micros(200);
            while self.populated().unwrap_or(false) {
                if Instant::now() >= deadline {
                    tracing::warn!(path, cgroup = %self.dir.display(), "processes of a stopped service are still dying: its cgroup is left");
                    return;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
        // The next run of this actor starts only after this run's exit is reported,
        // which comes after this: the cgroup is ours to remove.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// How one run's processes are held together.
#[derive(Debug)]
pub(crate) enum RunContainment {
    /// Its own cgroup.
    Cgroup(ServiceCgroup),
    /// Its own process group (the leader's pid).
    Group,
}

impl RunContainment {
    /// The containment of a new run of `path`: its cgroup (created now, with its open
    /// folder, see [`RunContainment::enter`]) where `cgroups` is set up, else its process
    /// group. A cgroup that cannot be created falls back to the process group, with a
    /// warning.
    pub(crate) fn prepare(cgroups: Option<&Cgroups>, path: &ActorPath) -> (Self, Option<OwnedFd>) {
        let Some(cgroups) = cgroups else {
            return (Self::Group, None);
        };
        match ServiceCgroup::create(cgroups, path) {
            Ok((cgroup, folder)) => (Self::Cgroup(cgroup), Some(folder)),
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot create the service's cgroup: contained by its process group");
                (Self::Group, None)
            }
        }
    }

    /// The containment of an adopted process: the cgroup it lives in when that is one of
    /// this instance's, else its process group.
    pub(crate) fn of_adopted(cgroups: Option<&Cgroups>, pid: u32, path: &ActorPath) -> Self {
        match cgroups.and_then(|c| c.of_process(pid, path)) {
            Some(cgroup) => Self::Cgroup(cgroup),
            None => Self::Group,
        }
    }

    /// The run's containment once its leader `pid` is spawned: a leader born in the
    /// cgroup (cloned into `folder`) is there already; else it is moved
    /// in, then every descendant it already forked (see the module doc for the window
    /// this closes). A leader that cannot be moved leaves the run contained by its
    /// process group, with a warning.
    pub(crate) fn enter(self, folder: Option<OwnedFd>, pid: u32, born: Born) -> Self {
        let (Self::Cgroup(cgroup), Some(folder)) = (self, folder) else {
            return Self::Group;
        };
        if born == Born::InCgroup {
            return Self::Cgroup(cgroup);
        }
        let procs = openat_procs(&folder);
        let moved = procs.and_then(|mut procs| {
            procs.write_all(pid.to_string().as_bytes())?;
            Ok(procs)
        });
        let mut procs = match moved {
            Ok(procs) => procs,
            Err(e) => {
                tracing::warn!(path = %cgroup.path, pid, error = %e, "cannot move the service into its cgroup: contained by its process group");
                let _ = std::fs::remove_dir(&cgroup.dir);
                return Self::Group;
            }
        };
        let mut pending = children_of(pid);
        let mut moved = 0;
        while let Some(child) = pending.pop() {
            // Bounded: a fork bomb in its first microseconds is not chased forever.
            if moved >= 64 {
                break;
            }
            if procs.write_all(child.to_string().as_bytes()).is_ok() {
                moved += 1;
                pending.extend(children_of(child));
            }
        }
        Self::Cgroup(cgroup)
    }

    /// [`RunContainment::end`] of a run that was asked to end, on the caller's thread
    /// (blocking: a deploy step's thread).
    pub(crate) fn end_blocking(self) {
        if let Self::Cgroup(cgroup) = self {
            cgroup.end();
        }
    }

    /// A run that never started: its (empty) cgroup is removed.
    pub(crate) fn discard(self) {
        if let Self::Cgroup(cgroup) = self {
            let _ = std::fs::remove_dir(&cgroup.dir);
        }
    }

    /// As the API shows it.
    pub(crate) fn kind(&self) -> Containment {
        match self {
            Self::Cgroup(_) => Containment::Cgroup,
            Self::Group => Containment::ProcessGroup,
        }
    }

    /// SIGKILL to every process of the run's cgroup; false when the run has no cgroup or
    /// the kill failed (the caller then signals the process group).
    pub(crate) fn kill_cgroup(&self) -> bool {
        match self {
            Self::Cgroup(cgroup) => cgroup.kill().is_ok(),
            Self::Group => false,
        }
    }

    /// SIGKILL to every process of the run, the leader included (stop timeout, or the
    /// supervisor went away). `pgid` is the run's process group, whose leader is not
    /// reaped yet.
    pub(crate) fn kill_all(&self, pgid: u32) {
        if !self.kill_cgroup() {
            super::signal_group(pgid, Signal::SIGKILL);
        }
    }

    /// After the leader is gone and its process group has had its SIGKILL (the caller
    /// sends it while the leader still holds the group's number): a cgroup is killed,
    /// waited for and removed on the blocking pool (never on the supervision thread), so
    /// descendants that left the group (setsid) go too. When the run ended by itself
    /// (`requested` false, e.g. a crash) and left nothing behind, the empty cgroup is kept
    /// for the restart that usually follows (saves a rmdir and a mkdir on the restart
    /// path); an actor that is not restarted leaves it until warden exits.
    pub(crate) async fn end(self, requested: bool) {
        if let Self::Cgroup(cgroup) = self {
            if !requested && cgroup.populated().is_ok_and(|p| !p) {
                return;
            }
            let _ = tokio::task::spawn_blocking(move || cgroup.end()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_events_say_populated_only_with_that_exact_line() {
        assert!(says_populated(b"populated 1\nfrozen 0\n"));
        assert!(says_populated(b"frozen 0\npopulated 1"));
        assert!(!says_populated(b"populated 0\nfrozen 1\n"));
        assert!(!says_populated(b"populated 10\n"));
        assert!(!says_populated(b""));
    }

    /// The open-folder read and the path read agree, on a real cgroup where warden may
    /// make one (root with cgroup v2 writable), populated or not.
    #[test]
    fn the_relative_read_of_cgroup_events_agrees_with_the_path_read() {
        let Ok(cgroups) = Cgroups::setup(&format!("test-events-{}", std::process::id())) else {
            return; // no writable cgroup v2 here
        };
        let name = warden_supervisors::ActorName::new("events-probe").expect("a name");
        let path = ActorPath::root().child(&name);
        let Ok((cgroup, folder)) = ServiceCgroup::create(&cgroups, &path) else {
            return;
        };
        assert_eq!(cgroup.populated().ok(), Some(false), "empty");
        assert_eq!(populated(&cgroup.dir).ok(), Some(false));
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        openat_procs(&folder)
            .and_then(|mut procs| procs.write_all(sleeper.id().to_string().as_bytes()))
            .expect("the sleeper moved into the cgroup");
        assert_eq!(cgroup.populated().ok(), Some(true), "a process in it");
        assert_eq!(populated(&cgroup.dir).ok(), Some(true));
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        cgroup.end();
        cgroups.remove_empty();
        assert!(!cgroups.dir().exists(), "the test's cgroups are removed");
    }

    #[test]
    fn finds_the_v2_mount_in_a_hybrid_layout() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v2_mount(info),
            Some(("/sys/fs/cgroup/unified".into(), "/".into()))
        );
        assert_eq!(v2_mount("31 23 0:28 / /sys rw - tmpfs tmpfs rw\n"), None);
    }

    #[test]
    fn maps_a_cgroup_below_the_mount_and_refuses_escapes() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(
            under_mount(mount, Path::new("/"), Path::new("/user.slice/a")),
            Some(PathBuf::from("/sys/fs/cgroup/user.slice/a"))
        );
        assert_eq!(
            under_mount(mount, Path::new("/ns"), Path::new("/ns/x")),
            Some(PathBuf::from("/sys/fs/cgroup/x"))
        );
        assert_eq!(
            under_mount(mount, Path::new("/"), Path::new("/a/../../etc")),
            None
        );
        assert_eq!(
            under_mount(mount, Path::new("/ns"), Path::new("/other")),
            None
        );
    }
}
