//! The supervision thread's share of the CPU.
//!
//! Under load the supervision thread waits for a CPU longer than it runs (measured during
//! a 1,000-child crash loop on 2 shared cores: 1.7 s run, 4.0 s in the run queue over 8 s:
//! docs/benchmarks.md), and every restart waits behind it. `warden up` therefore raises
//! the thread that runs the supervisors to nice [`BOOST`], with `SCHED_RESET_ON_FORK`, so
//! nothing else inherits the raise: every child it spawns, and every thread created after
//! it, starts at nice 0 (the kernel resets a negative nice on fork), exactly as when warden
//! runs at nice 0. Only a warden started at nice 0 is raised (one started nicer or less
//! nice keeps what its operator chose, and its children inherit it as before), and only
//! where it may (root, or `CAP_SYS_NICE`, or an `RLIMIT_NICE` that allows it). The nice
//! value and the reset flag survive a reexec (same thread, same process). The raised
//! thread also gets the shortest time slice (100 us, SEMANTICS 88), reset on fork like
//! the nice value: on a busy CPU it is let in as soon as it wakes, instead of after the
//! running task's slice.

use std::io;

/// The nice value of the supervision thread when warden may raise it.
pub const BOOST: i32 = -10;

/// Why the supervision thread runs at the nice value it was started with.
#[derive(Debug, thiserror::Error)]
pub enum NotRaised {
    /// warden was started at another nice value than 0: kept, for its children's sake.
    #[error("warden was started at nice {0}: kept")]
    Chosen(i32),
    /// warden was started with another scheduling policy than `SCHED_OTHER` (batch,
    /// idle, real time): kept.
    #[error("warden runs under scheduling policy {0}: kept")]
    Policy(i32),
    /// The kernel refused (no `CAP_SYS_NICE`, or a policy that does not allow it).
    #[error("cannot raise the supervision thread's priority: {0}")]
    Refused(io::Error),
}

/// Raises the calling thread (the supervision thread) to nice [`BOOST`] with
/// `SCHED_RESET_ON_FORK` (see the module doc); answers the nice value it runs at.
pub fn raise_this_thread() -> Result<i32, NotRaised> {
    // SAFETY: gettid takes nothing and cannot fail.
    let tid = unsafe { libc::gettid() };
    let id =
        libc::id_t::try_from(tid).map_err(|_| NotRaised::Refused(io::Error::other("bad tid")))?;
    // getpriority may answer -1 as a nice value: errno tells an error apart.
    // SAFETY: errno is this thread's; getpriority takes plain integers.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, id)
    };
    if nice == -1 && io::Error::last_os_error().raw_os_error() != Some(0) {
        return Err(NotRaised::Refused(io::Error::last_os_error()));
    }
    if nice != 0 {
        return Err(NotRaised::Chosen(nice));
    }
    // SAFETY: sched_getscheduler of this thread takes a plain integer.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy != libc::SCHED_OTHER {
        return Err(NotRaised::Policy(policy));
    }
    // The reset first: from the raise on, nothing created by this thread inherits it.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on this thread with a valid param.
    if unsafe {
        libc::sched_setscheduler(tid, libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, &param)
    } != 0
    {
        return Err(NotRaised::Refused(io::Error::last_os_error()));
    }
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, id, BOOST) } != 0 {
        return Err(NotRaised::Refused(io::Error::last_os_error()));
    }
    // And the shortest slice (SEMANTICS 88), so that it is let in as soon as it wakes;
    // best effort (kernels before 6.12 ignore it). Reset on fork like the nice value.
    let _ =
        warden_actors::sched::set_this_thread(BOOST, Some(warden_actors::sched::SHORT_SLICE), true);
    Ok(BOOST)
}
