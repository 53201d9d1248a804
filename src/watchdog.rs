//! `on_exit = "stop"` for a warden that dies without stopping its tree (SIGKILL, a
//! crash): a small process that outlives warden and then kills every process of every
//! service, not only the leaders.
//!
//! Why a process: nothing inside warden runs after a SIGKILL, and `PR_SET_PDEATHSIG`
//! reaches only the leader (it is cleared in the leader's own children). Why warden
//! re-executed (`warden __watchdog`, hidden) rather than a forked copy: after a fork of a
//! multi-threaded process only async-signal-safe calls are allowed, and the fallback
//! sweep below needs to read /proc; a fresh exec costs one spawn at start.
//!
//! Warden holds the write end of a pipe whose read end is the watchdog's stdin; the
//! kernel closes it when warden dies, however it dies. On end-of-file without the clean
//! word [`CLEAN_EXIT`] first, the watchdog writes `1` to `warden-<instance>/cgroup.kill`
//! (every service cgroup at once, setsid descendants included), then SIGKILLs, until none
//! is left (bounded), every process that carries warden's marker in its environment (the
//! process-group fallback, and any descendant that was never in a cgroup), then removes
//! the empty cgroups. The watchdog runs in a process group of its own, so a terminal's
//! Ctrl-C reaches warden (which stops its tree) but not the watchdog.

use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use warden_actors::{proc, spawned};

/// What warden writes before closing the pipe when it stopped its tree itself.
pub const CLEAN_EXIT: &[u8] = b"exit\n";

/// How long the watchdog keeps sweeping marked processes (a fork loop cannot outrun it
/// for longer).
const SWEEP_BOUND: Duration = Duration::from_secs(2);

/// warden's side of a running watchdog. Dropping it without [`Watchdog::disarm`] (a
/// panic unwinding) arms it: the watchdog kills the services.
#[derive(Debug)]
pub struct Watchdog {
    pipe: Option<std::fs::File>,
    pid: u32,
    /// `None` for a watchdog inherited across a re-exec (reaped by pid).
    child: Option<Child>,
}

impl Watchdog {
    /// Starts `binary __watchdog`: it will kill every process of `cgroup` (the
    /// `warden-<instance>` cgroup, if services run in cgroups) and every process marked
    /// with one of `markers` (`KEY=VALUE` environment entries) once warden is gone.
    pub fn start(
        binary: &Path,
        cgroup: Option<&Path>,
        markers: &[(String, String)],
    ) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let (read, write): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let mut cmd = Command::new(binary);
        cmd.arg("__watchdog");
        if let Some(dir) = cgroup {
            cmd.arg("--cgroup").arg(dir);
        }
        for (key, value) in markers {
            cmd.arg("--marker").arg(format!("{key}={value}"));
        }
        cmd.stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0);
        let child = spawned::register(|| cmd.spawn(), |c| Some(c.id()))?;
        Ok(Self {
            pipe: Some(std::fs::File::from(write)),
            pid: child.id(),
            child: Some(child),
        })
    }

    /// The watchdog a warden that re-executed itself handed over: the write end of its
    /// pipe and its pid (still this process's child).
    pub fn inherit(pipe: std::fs::File, pid: u32) -> Self {
        // Its exit status is ours to wait for, not the orphan reaper's.
        let _ = spawned::register(|| Ok(pid), |pid| Some(*pid));
        Self {
            pipe: Some(pipe),
            pid,
            child: None,
        }
    }

    /// The watchdog's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The write end of the pipe, to hand over across an exec (the watchdog must not see
    /// it close).
    pub fn pipe_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// warden stopped its tree itself: tells the watchdog to exit without killing, and
    /// reaps it (waiting at most 1 s).
    pub fn disarm(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(CLEAN_EXIT);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let running = match self.child.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(None)),
                None => i32::try_from(self.pid).is_ok_and(|pid| {
                    matches!(
                        nix::sys::wait::waitpid(
                            nix::unistd::Pid::from_raw(pid),
                            Some(nix::sys::wait::WaitPidFlag::WNOHANG)
                        ),
                        Ok(nix::sys::wait::WaitStatus::StillAlive)
                    )
                }),
            };
            if !running {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        spawned::forget(self.pid);
    }
}

/// The watchdog process itself (`warden __watchdog`): see the module doc.
pub fn run(cgroup: Option<PathBuf>, markers: &[String]) -> ExitCode {
    // Hang-ups and Ctrl-C are for warden; the watchdog ends with the pipe.
    // SAFETY: setting the disposition of two signals to ignore.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut said = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
        if said.len() > CLEAN_EXIT.len() {
            break;
        }
    }
    if said == CLEAN_EXIT {
        return ExitCode::SUCCESS;
    }
    tracing::warn!(
        "warden is gone without stopping its tree (on_exit = \"stop\"): killing its services"
    );
    if let Some(dir) = &cgroup {
        if let Err(e) = warden_actors::kill_cgroup(dir) {
            tracing::warn!(cgroup = %dir.display(), error = %e, "cannot write cgroup.kill");
        }
    }
    let markers: Vec<(&str, &str)> = markers.iter().filter_map(|m| m.split_once('=')).collect();
    let killed = sweep(&markers);
    if let Some(dir) = &cgroup {
        warden_actors::remove_when_empty(dir, SWEEP_BOUND);
    }
    tracing::warn!(killed, "killed the processes of a dead warden");
    ExitCode::SUCCESS
}

/// SIGKILLs every process marked with one of `markers` until a pass finds none (or
/// [`SWEEP_BOUND`] passed); answers how many it killed.
fn sweep(markers: &[(&str, &str)]) -> usize {
    if markers.is_empty() {
        return 0;
    }
    let me = std::process::id();
    let deadline = Instant::now() + SWEEP_BOUND;
    let mut killed = 0;
    loop {
        let mut found = 0;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return killed;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            if pid == me || proc::start_time(pid).is_err() {
                // Itself, or a zombie (already dead).
                continue;
            }
            let marked = markers
                .iter()
                .any(|(k, v)| proc::environ_var(pid, k).as_deref() == Some(*v));
            if !marked {
                continue;
            }
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
                found += 1;
            }
        }
        killed += found;
        if found == 0 || Instant::now() >= deadline {
            return killed;
        }
    }
}
