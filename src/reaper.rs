//! Reaping of orphans: "no zombie accumulates" (SEMANTICS.md).
//!
//! As a container's PID 1 every orphan of the container is reparented to warden; elsewhere
//! warden makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so the orphans of its
//! services (a daemon that double-forked, grandchildren left by a killed leader) are
//! reparented to warden instead of escaping to init. Either way warden must reap them.
//!
//! It does so on a thread of its own (never the supervision thread), woken by SIGCHLD and
//! every few seconds as a backstop, without ever stealing an exit status that tokio (or
//! other code of warden) waits for: it lists warden's children (`/proc/self/task/*/
//! children`), keeps the zombies that are not in [`warden_actors::spawned`] (the pids
//! warden spawned itself, registered under a lock held across each spawn), and reaps
//! exactly those pids with `waitid(P_PID, ..)` while holding the same lock. Never
//! `waitpid(-1)`. A scan first asks whether any child is a zombie at all (`waitid` with
//! `WNOWAIT`, which reaps nothing) and lists nothing when none is.

use std::io::Read as _;
use std::time::Duration;

use warden_actors::spawned;

/// How warden came to be the parent of orphans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaperRole {
    /// warden is PID 1 of its pid namespace.
    Init,
    /// warden is a child subreaper.
    Subreaper,
}

/// A scan also runs this often without a SIGCHLD (a listing of children is not atomic).
const BACKSTOP: Duration = Duration::from_secs(5);

/// At most one scan per this long: under a crash loop SIGCHLD comes hundreds of times a
/// second, and a scan reads a /proc file per warden thread. An orphan is a zombie for at
/// most this long (plus a scan).
const MIN_PAUSE: Duration = Duration::from_millis(50);

/// A scan waits at least this long after the SIGCHLD that woke it: the signal usually
/// comes with a restart, and a scan run at once took the CPU from that restart (up to
/// 0.2 ms of the supervision thread's, in every slow restart traced: docs/benchmarks.md,
/// "The restart's tail"). Within [`MIN_PAUSE`], so an orphan waits no longer than before.
const AFTER_SIGNAL: Duration = Duration::from_millis(10);

/// Makes warden the reaper of its descendants' orphans (a subreaper unless it is PID 1)
/// and starts the reaping thread.
pub fn start() -> std::io::Result<ReaperRole> {
    let role = if std::process::id() == 1 {
        ReaperRole::Init
    } else {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        ReaperRole::Subreaper
    };
    let (mut wake, waker) = std::os::unix::net::UnixStream::pair()?;
    signal_hook::low_level::pipe::register(libc::SIGCHLD, waker)?;
    wake.set_read_timeout(Some(BACKSTOP))?;
    std::thread::Builder::new()
        .name("warden-reaper".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                let scanned = std::time::Instant::now();
                let reaped = reap_orphans();
                if reaped > 0 {
                    tracing::debug!(reaped, "reaped orphans");
                }
                match wake.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => return,
                }
                // SIGCHLDs that come meanwhile wait in the pipe and make one scan.
                std::thread::sleep(
                    MIN_PAUSE
                        .saturating_sub(scanned.elapsed())
                        .max(AFTER_SIGNAL),
                );
            }
        })?;
    Ok(role)
}

/// Reaps every zombie child of warden that warden did not spawn itself; answers how many.
///
/// warden's own children (most of the list, often all of it) are dropped before any of
/// their /proc files is read: under a crash loop SIGCHLD comes hundreds of times a second,
/// and reading the stat of 1,000 children each time cost more CPU than the restarts. A
/// child spawned after the listing is not in it; one spawned before it is in the set by
/// the time the lock is ours (the lock is held across each spawn and its registration).
pub fn reap_orphans() -> usize {
    if !any_zombie_child() {
        return 0;
    }
    let listed = children();
    if listed.is_empty() {
        return 0;
    }
    spawned::with_locked(|own| {
        listed
            .into_iter()
            .filter(|pid| !own.contains(pid))
            .filter(|pid| is_zombie(*pid))
            .filter(|pid| reap(*pid))
            .count()
    })
}

/// Whether any child of warden (of any of its threads) is a zombie, asked without
/// reaping it (`WNOWAIT`). Mostly the answer is no: the SIGCHLD that woke the reaper came
/// from a service's leader, which the supervision thread reaped in the meantime. Then
/// the listing (a /proc file per warden thread, ~0.3 ms of CPU per scan under a crash
/// loop) is skipped; a zombie that appears later sends its own SIGCHLD.
fn any_zombie_child() -> bool {
    // WNOWAIT leaves the zombie as it is.
    match exited(libc::P_ALL, 0, libc::WNOWAIT | libc::__WALL) {
        Ok(found) => found,
        // ECHILD: no children at all. Anything else: scan, as before the question.
        Err(e) => e.raw_os_error() != Some(libc::ECHILD),
    }
}

/// Reaps `pid` if it has exited (never waits).
fn reap(pid: u32) -> bool {
    matches!(exited(libc::P_PID, pid, 0), Ok(true))
}

/// `waitid(idtype, id, WEXITED | WNOHANG | extra)`: whether it found an exited child
/// (never waits).
fn exited(idtype: libc::idtype_t, id: libc::id_t, extra: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: an all-zero siginfo_t is valid; waitid writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with a valid out-pointer and plain integers.
    let r = unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | libc::WNOHANG | extra) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: si_pid is set by waitid (0 when no child has exited).
    let pid = unsafe { info.si_pid() };
    Ok(pid != 0)
}

/// The pids of warden's children (of any of its threads).
fn children() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    let mut listed = false;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            listed = true;
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    if !listed {
        // A kernel without CONFIG_PROC_CHILDREN: every process whose parent is warden.
        let me = std::process::id();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            out.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| stat_field(*pid, 4) == Some(me.to_string())),
            );
        }
    }
    out
}

fn is_zombie(pid: u32) -> bool {
    stat_field(pid, 3).as_deref() == Some("Z")
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat, for `n >= 3`.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(n - 3).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The question that lets a scan be skipped sees a zombie, and leaves it in place:
    /// an orphan is still reaped, and an exit status that its parent waits for is not
    /// taken by the question.
    #[test]
    fn a_zombie_child_is_seen_without_being_reaped() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(std::time::Instant::now() < deadline, "{pid} never exited");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(any_zombie_child(), "the zombie {pid} is seen");
        assert!(is_zombie(pid), "the question reaped {pid}");
        let status = child.wait().expect("the exit status is still there");
        assert!(status.success(), "{status}");
    }
}
