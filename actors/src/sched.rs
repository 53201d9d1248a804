//! Time slices of warden's own work (SEMANTICS 87, 88): a new child's until its exec, so
//! that starting a process is not held behind whatever else holds the CPU while the
//! service it becomes is scheduled exactly as before; and [`set_this_thread`] for
//! warden's threads (the raised supervision thread, the log threads).
//!
//! The kernel (EEVDF, Linux 6.6+) lets a task that wakes preempt the running one only
//! once the running task has used its time slice (0.7 ms scaled by the CPU count: 1.4 ms
//! on 2 CPUs), and with a 250 Hz tick the switch waits for the next tick: up to 4 ms. A
//! task with a shorter slice than the running one is let in at once (`PREEMPT_SHORT`,
//! custom slices: Linux 6.12+). A restart's new child (a clone of the supervision thread
//! until it execs, and warden waits for that exec) was measured waiting a whole tick
//! behind a flood's writer or another program on the same CPU (docs/benchmarks.md, "The
//! flood benchmark made fair").
//!
//! So [`spawn_urgently`] spawns with [`SPAWN_SLICE`] and without `SCHED_RESET_ON_FORK`
//! (which would reset the slice), the calling thread keeping its nice value, then switches
//! the thread back; the child gives itself the nice value a plain spawn would have given
//! it and the kernel's default slice right before its exec
//! ([`ChildSched::apply_before_exec`], from a cloned child or std's `pre_exec` hook), and
//! [`settle_child`] is a backstop for the slice after a std spawn.
//! On kernels without custom slices the calls change nothing. Scheduling policies other
//! than `SCHED_OTHER` (an operator's batch, idle or real-time warden) are left alone.

use std::cell::Cell;
use std::io;
use std::time::Duration;

/// The shortest slice the kernel grants: a new child's until its exec, and that of
/// warden's threads that must get a CPU as soon as they wake (SEMANTICS 87, 88).
pub const SHORT_SLICE: Duration = Duration::from_micros(100);
/// A new child's slice until its exec.
pub const SPAWN_SLICE: Duration = SHORT_SLICE;

/// `struct sched_attr` of `sched_setattr(2)`, its first version (48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// `SCHED_FLAG_RESET_ON_FORK`.
const RESET_ON_FORK: u64 = 0x01;
/// The flags `sched_setattr` takes back as they are (reset on fork, and the utilisation
/// clamps, which this module does not set).
const FLAGS_KEPT: u64 = RESET_ON_FORK;

fn get(tid: i32) -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr writes at most `size` bytes (given) into a live struct of
    // that size.
    let done = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    if done == 0 {
        Ok(attr)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set(tid: i32, attr: &SchedAttr) -> io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        ..*attr
    };
    // SAFETY: sched_setattr reads `attr.size` bytes of a live, correctly laid out struct.
    let done = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const SchedAttr, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The time slice of thread `tid` (0: the calling thread) as the kernel reports it: the
/// default or a custom slice, zero on kernels before 6.12.
pub fn slice_of(tid: i32) -> io::Result<Duration> {
    get(tid).map(|attr| Duration::from_nanos(attr.runtime))
}

/// Puts the calling thread under `SCHED_OTHER` at `nice` with a time slice of `slice`
/// (`None`: the kernel's default) and, with `reset_on_fork`, `SCHED_RESET_ON_FORK`. For
/// warden's own threads; errors are the kernel's (`EPERM` below the current nice without
/// `CAP_SYS_NICE`, `ENOSYS` where `sched_setattr` is filtered). A kernel without custom
/// slices takes the rest and ignores the slice.
pub fn set_this_thread(nice: i32, slice: Option<Duration>, reset_on_fork: bool) -> io::Result<()> {
    set(
        0,
        &SchedAttr {
            policy: libc::SCHED_OTHER as u32,
            flags: if reset_on_fork { RESET_ON_FORK } else { 0 },
            nice,
            runtime: slice.map_or(0, |s| u64::try_from(s.as_nanos()).unwrap_or(u64::MAX)),
            ..SchedAttr::default()
        },
    )
}

/// What a child spawned by [`spawn_urgently`] gives itself right before its exec
/// ([`ChildSched::apply_before_exec`]): it was cloned with the spawning thread's nice
/// value (a raised supervision thread's -10) and the short slice, and takes the nice value
/// a plain spawn would have given it (0 under a raised thread) with the kernel's default
/// slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildSched {
    nice: i32,
}

impl ChildSched {
    /// What a child of the calling thread must do, while the thread is inside
    /// [`spawn_urgently`] with its switch made; `None` at any other time (a child then
    /// inherits as usual, the kernel resetting a raise).
    pub fn for_this_thread() -> Option<Self> {
        SWITCHED.get()
    }

    /// In the child, before its exec (still warden's code, still root's where warden is
    /// root): `SCHED_OTHER` at its nice value with the default slice; where
    /// `sched_setattr` is refused, the nice value alone (`setpriority`, which may always
    /// lower a priority). Raw syscalls only, nothing allocated: safe in a cloned child. Answers the errno
    /// when the nice value could not be set: the child must not exec raised.
    pub(crate) fn apply_before_exec(self) -> Result<(), libc::c_int> {
        let attr = SchedAttr {
            policy: libc::SCHED_OTHER as u32,
            nice: self.nice,
            ..SchedAttr::default()
        };
        if set(0, &attr).is_ok() {
            return Ok(());
        }
        // SAFETY: a raw syscall with plain integers.
        if unsafe { libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, 0, self.nice) } == 0 {
            return Ok(());
        }
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EPERM))
    }
}

/// What the calling thread does around spawns, worked out on its first spawn.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Spawn with `spawning`, then go back to `own`; the child then applies `child`.
    Switch {
        own: SchedAttr,
        spawning: SchedAttr,
        child: ChildSched,
    },
    /// Leave the thread as it is (another policy, no `sched_getattr`, or a switch back
    /// that failed once).
    Leave,
}

thread_local! {
    static PLAN: Cell<Option<Plan>> = const { Cell::new(None) };
    /// Set while the thread spawns with its switch made (inside [`spawn_urgently`]).
    static SWITCHED: Cell<Option<ChildSched>> = const { Cell::new(None) };
}

fn plan() -> Plan {
    if let Some(plan) = PLAN.get() {
        return plan;
    }
    let plan = match get(0) {
        Ok(own) if own.policy == libc::SCHED_OTHER as u32 => {
            // What a child of this thread gets: a negative nice is reset on fork when the
            // thread asked for it (the raised supervision thread).
            let child_nice = if own.flags & RESET_ON_FORK != 0 {
                own.nice.max(0)
            } else {
                own.nice
            };
            Plan::Switch {
                own: SchedAttr {
                    flags: own.flags & FLAGS_KEPT,
                    // sched_getattr does not tell a custom slice from the default one:
                    // the only custom slice warden gives a thread is SHORT_SLICE (the
                    // raised supervision thread), any other goes back to the default.
                    runtime: if own.runtime == SHORT_SLICE.as_nanos() as u64 {
                        own.runtime
                    } else {
                        0
                    },
                    ..own
                },
                // The thread keeps its nice value: dropping it to its children's for the
                // spawn let any thread it had just woken on its CPU (the reaper, the
                // records) run first, up to a slice, while the restart waited
                // (docs/benchmarks.md, "The restart's tail"). Only the reset on fork is
                // off, so that the child starts with the short slice; the child takes
                // its own nice value before its exec.
                spawning: SchedAttr {
                    policy: libc::SCHED_OTHER as u32,
                    nice: own.nice,
                    runtime: SPAWN_SLICE.as_nanos() as u64,
                    ..SchedAttr::default()
                },
                child: ChildSched { nice: child_nice },
            }
        }
        Ok(_) => Plan::Leave,
        Err(e) => {
            tracing::debug!(error = %e, "sched_getattr refused: children spawn with the thread's slice");
            Plan::Leave
        }
    };
    PLAN.set(Some(plan));
    plan
}

/// Runs `spawn` (which creates one process) so that the process starts with
/// [`SPAWN_SLICE`]: the thread keeps its nice value and turns its reset on fork off for
/// the spawn, and is switched back before this returns. The process inherits the
/// thread's nice value, so it must give itself the one a plain spawn would have given it
/// before its exec: `spawn` reads [`ChildSched::for_this_thread`] and has the child apply
/// it ([`ChildSched::apply_before_exec`]; a cloned child and std's `pre_exec` hook both
/// can). [`settle_child`] afterwards is a backstop for the slice alone.
pub fn spawn_urgently<T>(spawn: impl FnOnce() -> T) -> T {
    let Plan::Switch {
        own,
        spawning,
        child,
    } = plan()
    else {
        return spawn();
    };
    if set(0, &spawning).is_err() {
        return spawn();
    }
    SWITCHED.set(Some(child));
    let spawned = spawn();
    SWITCHED.set(None);
    if let Err(e) = set(0, &own) {
        // Back to the child's nice with the default slice and the reset on fork, and no
        // more switching: the thread could not get its own attributes back.
        tracing::warn!(error = %e, "cannot restore the supervision thread's priority after a spawn; it runs at its children's from now on");
        let _ = set(
            0,
            &SchedAttr {
                nice: child.nice,
                runtime: 0,
                flags: own.flags,
                ..spawning
            },
        );
        PLAN.set(Some(Plan::Leave));
    }
    spawned
}

/// Gives process `pid`, spawned by [`spawn_urgently`] and exec'd, the kernel's default
/// slice, its nice value and policy as they are: for a child that could not do it itself
/// before its exec (spawned by std, where `clone3` is refused). A process that already
/// chose another slice or policy for itself is left alone. Best effort.
pub fn settle_child(pid: u32) {
    let Ok(tid) = i32::try_from(pid) else {
        return;
    };
    match get(tid) {
        Ok(attr)
            if attr.policy == libc::SCHED_OTHER as u32
                && attr.runtime == SPAWN_SLICE.as_nanos() as u64 =>
        {
            let _ = set(
                tid,
                &SchedAttr {
                    runtime: 0,
                    flags: attr.flags & FLAGS_KEPT,
                    ..attr
                },
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    /// `se.slice` of `/proc/PID/sched` (ns): the kernel's own account.
    fn slice_in_proc(text: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.rsplit(':').next()?.trim().parse().ok())
    }

    fn custom_slices() -> bool {
        // A kernel with custom slices reports the slice; older ones report 0.
        slice_of(0).is_ok_and(|s| !s.is_zero())
    }

    /// Each test runs on its own thread: what it sets on that thread ends with it.
    fn on_own_thread(test: impl FnOnce() + Send + 'static) {
        std::thread::spawn(test).join().expect("test thread");
    }

    #[test]
    fn a_child_runs_with_the_short_slice_until_settled_and_the_thread_keeps_its_own() {
        if !custom_slices() {
            return;
        }
        on_own_thread(|| {
            let before = get(0).expect("own attributes");
            let out = spawn_urgently(|| Command::new("cat").arg("/proc/self/sched").output())
                .expect("cat");
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                slice_in_proc(&text),
                Some(SPAWN_SLICE.as_nanos() as u64),
                "the new process starts with the short slice: {text}"
            );
            let after = get(0).expect("own attributes");
            assert_eq!(after, before, "the thread is switched back");
        });
    }

    #[test]
    fn settling_gives_the_default_slice_and_keeps_the_nice_value() {
        if !custom_slices() {
            return;
        }
        on_own_thread(|| {
            let default = get(0).expect("own").runtime;
            // SAFETY: setpriority of this thread with plain integers.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 3) };
            let mut child = spawn_urgently(|| {
                Command::new("sleep")
                    .arg("30")
                    .stdout(Stdio::null())
                    .spawn()
            })
            .expect("sleep");
            let pid = child.id() as i32;
            let spawned = get(pid).expect("child");
            assert_eq!(spawned.runtime, SPAWN_SLICE.as_nanos() as u64);
            assert_eq!(spawned.nice, 3, "the child has the thread's nice");
            settle_child(child.id());
            let settled = get(pid).expect("child");
            assert_eq!(settled.runtime, default, "the kernel's default slice");
            assert_eq!(settled.nice, 3, "its nice is kept");
            let _ = child.kill();
            let _ = child.wait();
        });
    }

    #[test]
    fn a_child_that_chose_its_own_slice_is_left_alone() {
        if !custom_slices() {
            return;
        }
        let mut child = spawn_urgently(|| Command::new("sleep").arg("30").spawn()).expect("sleep");
        let pid = child.id() as i32;
        let chosen = SchedAttr {
            policy: libc::SCHED_OTHER as u32,
            runtime: 500_000,
            ..SchedAttr::default()
        };
        set(pid, &chosen).expect("a slice for the child");
        settle_child(child.id());
        assert_eq!(get(pid).expect("child").runtime, 500_000);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_raised_thread_keeps_its_nice_across_a_spawn_and_its_child_takes_nice_zero() {
        if !custom_slices() {
            return;
        }
        on_own_thread(|| {
            let raised = SchedAttr {
                policy: libc::SCHED_OTHER as u32,
                flags: RESET_ON_FORK,
                nice: -10,
                runtime: SHORT_SLICE.as_nanos() as u64,
                ..SchedAttr::default()
            };
            if set(0, &raised).is_err() {
                return; // no CAP_SYS_NICE here
            }
            assert_eq!(ChildSched::for_this_thread(), None, "outside a spawn");
            let mut during = None;
            let mut child = spawn_urgently(|| {
                during = Some(get(0).expect("own"));
                let sched = ChildSched::for_this_thread().expect("inside a spawn");
                let mut cmd = Command::new("sleep");
                cmd.arg("30");
                // SAFETY: raw syscalls only, as in warden's own hook.
                unsafe {
                    cmd.pre_exec(move || {
                        sched
                            .apply_before_exec()
                            .map_err(io::Error::from_raw_os_error)
                    });
                }
                cmd.spawn()
            })
            .expect("sleep");
            let during = during.expect("the spawn ran");
            assert_eq!(
                during.nice, -10,
                "the thread keeps its nice value while it spawns (nothing it woke runs first)"
            );
            assert_eq!(during.flags & RESET_ON_FORK, 0, "without the reset on fork");
            let spawned = get(child.id() as i32).expect("child");
            assert_eq!(spawned.nice, 0, "the child took nice 0 before its exec");
            assert_eq!(spawned.flags & RESET_ON_FORK, 0);
            assert_ne!(
                spawned.runtime,
                SPAWN_SLICE.as_nanos() as u64,
                "and the default slice"
            );
            let own = get(0).expect("own");
            assert_eq!(own.nice, -10, "the thread is switched back");
            assert_ne!(own.flags & RESET_ON_FORK, 0, "with its reset on fork");
            assert_eq!(
                own.runtime,
                SHORT_SLICE.as_nanos() as u64,
                "and its short slice"
            );
            let _ = child.kill();
            let _ = child.wait();
        });
    }
}
