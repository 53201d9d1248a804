//! How glibc's malloc serves warden, set once at start before much is allocated.
//!
//! Two settings keep warden's resident memory from growing with what it served once
//! (docs/benchmarks.md, "The promises' own cost, and memory after the API is used"):
//! - A block of 128 KiB or more (an API answer listing 1,000 actors, a log tail) is
//!   mapped on its own and returned to the kernel when freed. glibc's default raises
//!   that threshold to the size of the last such block freed, after which big answers
//!   are carved from a thread's arena and stay resident there.
//! - At most two arenas: warden's threads (the supervision thread, the records, log
//!   and event threads, the API workers, the blocking pool) share them instead of one
//!   arena each, each keeping its own free memory. They allocate little and rarely at
//!   the same moment, so they seldom wait for each other.

/// Blocks of at least this many bytes are mapped on their own.
const OWN_MAPPING_FROM: i32 = 128 * 1024;
/// The most arenas malloc may make.
const ARENAS: i32 = 2;

/// Applies the settings above (glibc only; elsewhere the allocator's defaults stay).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; called first thing in main,
    // before warden starts a thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_FROM);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}
