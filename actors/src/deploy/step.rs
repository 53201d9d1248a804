//! One step of a deploy: a program run to its end in its own process group (and its own
//! cgroup where warden runs services in cgroups: the deploy actor's), in the deploy's
//! folder and environment, with a deadline. Blocking: run it off the supervision
//! thread (`spawn_blocking`). Registered with the orphan reaper
//! ([`crate::spawned::register`]) so its exit status is ours; its stdout and stderr share
//! one pipe, read on a thread of its own, and the last [`OUTPUT_KEPT`] bytes are kept.
//! When the step's leader ends (or passes its deadline, or the deploy is cancelled) its
//! whole group (cgroup) is killed before the leader is reaped: nothing a step left behind outlives
//! it, and the group id cannot have been reused meanwhile (a zombie keeps its pid).

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::service::cgroup::RunContainment;

/// The most output of a deploy kept (its end).
pub const OUTPUT_KEPT: usize = 64 * 1024;

/// How long the output is still read after the step's group was killed (a process that
/// left the group may hold the pipe open: it is not waited for).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// How often the step's leader is looked at.
const POLL: Duration = Duration::from_millis(5);

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// Exit code 0.
    Succeeded,
    /// Anything else, said for people: "exited with code 2", "timed out after 10s".
    Failed(String),
}

/// What a step's run hands back.
#[derive(Debug)]
pub struct StepRun {
    /// How it ended.
    pub end: StepEnd,
    /// The end of what it wrote to stdout and stderr (at most [`OUTPUT_KEPT`] bytes).
    pub output: Vec<u8>,
}

/// What a step runs with.
pub struct StepContext<'a> {
    /// The folder it runs in.
    pub cwd: &'a Path,
    /// Environment entries added to warden's (minus what warden's own manager handed it).
    pub env: &'a [(String, String)],
    /// Its deadline.
    pub timeout: Duration,
    /// Set when the deploy is cancelled: the step's group is killed.
    pub cancel: &'a AtomicBool,
    /// Told the step's pid when it starts, and `None` when it ends.
    pub on_pid: &'a (dyn Fn(Option<u32>) + Send + Sync),
    /// warden's cgroups, when services run in cgroups.
    pub cgroups: Option<&'a crate::Cgroups>,
    /// The deploy's actor (names the step's cgroup).
    pub actor: &'a warden_supervisors::ActorPath,
    /// The identity the step runs as (the service's `user`/`group`), when warden is root.
    pub run_as: Option<&'a crate::RunAs>,
}

impl std::fmt::Debug for StepContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Runs `argv` to its end (see the module doc).
pub fn run(argv: &[String], cx: &StepContext<'_>) -> StepRun {
    let Some((program, args)) = argv.split_first() else {
        return failed("the step is empty");
    };
    let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => return failed(format!("cannot create the output pipe: {e}")),
    };
    let stderr = match write.try_clone() {
        Ok(fd) => fd,
        Err(e) => return failed(format!("cannot create the output pipe: {e}")),
    };
    let mut cmd = Command::new(program);
    for key in crate::service::child_env::INHERITED_NOT_PASSED_ON {
        cmd.env_remove(key);
    }
    cmd.args(args)
        .envs(cx.env.iter().map(|(k, v)| (k, v)))
        .current_dir(cx.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    // The service's identity (and the open files limit warden was started with), as for
    // the service's own runs.
    crate::service::launch::PreExec::new(
        false,
        crate::proc::children_open_files_limit(),
        cx.run_as.filter(|r| r.switches()),
    )
    .set_on(&mut cmd);
    let (containment, cgroup) = RunContainment::prepare(cx.cgroups, cx.actor);
    let spawned = crate::spawned::register(|| cmd.spawn(), |c| Some(c.id()));
    // The write ends live in `cmd`: dropped here, so the reader sees the end once the
    // step's processes are gone.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            containment.discard();
            return failed(format!(
                "cannot start `{program}` in {}: {e}",
                cx.cwd.display()
            ));
        }
    };
    let pid = child.id();
    let containment = containment.enter(cgroup, pid, crate::service::launch::Born::Outside);
    (cx.on_pid)(Some(pid));
    let reader = read_tail(read);
    let deadline = Instant::now() + cx.timeout;
    let end = loop {
        if exited_unreaped(pid) {
            break None;
        }
        if cx.cancel.load(Ordering::Acquire) {
            break Some("cancelled (its process group was killed)".to_owned());
        }
        if Instant::now() >= deadline {
            break Some(format!(
                "timed out after {} (its process group was killed)",
                humantime::format_duration(cx.timeout)
            ));
        }
        std::thread::sleep(POLL);
    };
    // The leader is alive or a zombie: its pid, hence its group id, is still ours.
    containment.kill_all(pid);
    crate::service::signal_group(pid, Signal::SIGKILL);
    let status = child.wait();
    containment.end_blocking();
    crate::spawned::forget(pid);
    (cx.on_pid)(None);
    let output = reader.recv_timeout(DRAIN_AFTER_EXIT).unwrap_or_else(|_| {
        b"\n[output of processes that left the step's group not read]\n".to_vec()
    });
    let end = match (end, status) {
        (Some(reason), _) => StepEnd::Failed(reason),
        (None, Ok(status)) if status.success() => StepEnd::Succeeded,
        (None, Ok(status)) => StepEnd::Failed(crate::service::exit_of(status).to_string()),
        (None, Err(e)) => StepEnd::Failed(format!("cannot wait for it: {e}")),
    };
    StepRun { end, output }
}

fn failed(reason: impl Into<String>) -> StepRun {
    StepRun {
        end: StepEnd::Failed(reason.into()),
        output: Vec::new(),
    }
}

/// Whether `pid` (our child) has exited, without reaping it.
fn exited_unreaped(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with WNOWAIT leaves it to `Child::wait`.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            raw as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        // ECHILD: already reaped (never by us before `wait`): treat as ended.
        return true;
    }
    // SAFETY: filled in by waitid; 0 when no child has changed state.
    unsafe { info.si_pid() != 0 }
}

/// Reads `fd` to its end on a thread of its own and hands back the last [`OUTPUT_KEPT`]
/// bytes.
fn read_tail(fd: OwnedFd) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("warden-deploy-output".into())
        .spawn(move || {
            let mut file = std::fs::File::from(fd);
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        kept.extend_from_slice(&buf[..n]);
                        if kept.len() > 2 * OUTPUT_KEPT {
                            let cut = kept.len() - OUTPUT_KEPT;
                            kept.drain(..cut);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(keep_end(kept));
        });
    if spawned.is_err() {
        tracing::warn!("cannot start a thread to read a deploy step's output");
    }
    rx
}

/// The last [`OUTPUT_KEPT`] bytes of `bytes`.
pub fn keep_end(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() > OUTPUT_KEPT {
        let cut = bytes.len() - OUTPUT_KEPT;
        bytes.drain(..cut);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    static ACTOR: std::sync::LazyLock<warden_supervisors::ActorPath> =
        std::sync::LazyLock::new(|| warden_supervisors::ActorPath::parse("/_deploy.t").unwrap());

    fn cx<'a>(cancel: &'a AtomicBool, timeout: Duration) -> StepContext<'a> {
        StepContext {
            cwd: Path::new("/"),
            env: &[],
            timeout,
            cancel,
            on_pid: &|_| {},
            cgroups: None,
            actor: &ACTOR,
            run_as: None,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn output_of_both_streams_is_kept_and_the_code_is_named() {
        let cancel = AtomicBool::new(false);
        let run = run(
            &sh("echo out; echo err >&2; exit 3"),
            &cx(&cancel, Duration::from_secs(10)),
        );
        assert_eq!(run.end, StepEnd::Failed("exited with code 3".into()));
        let text = String::from_utf8_lossy(&run.output);
        assert!(text.contains("out") && text.contains("err"), "{text}");
    }

    #[test]
    fn a_step_past_its_deadline_is_killed_with_its_group() {
        let cancel = AtomicBool::new(false);
        let started = Instant::now();
        let run = run(
            &sh("sleep 30 & echo $!; sleep 30"),
            &cx(&cancel, Duration::from_millis(300)),
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(&run.end, StepEnd::Failed(r) if r.starts_with("timed out")));
        let grandchild: i32 = String::from_utf8_lossy(&run.output).trim().parse().unwrap();
        // Killed with the group (a zombie until init reaps it).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                break;
            }
            assert!(Instant::now() < deadline, "still alive: {state}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn only_the_end_of_a_long_output_is_kept() {
        let cancel = AtomicBool::new(false);
        let run = run(
            &sh("head -c 200000 /dev/zero | tr '\\0' a; echo END"),
            &cx(&cancel, Duration::from_secs(10)),
        );
        assert_eq!(run.end, StepEnd::Succeeded);
        assert_eq!(run.output.len(), OUTPUT_KEPT);
        assert!(run.output.ends_with(b"END\n"));
    }
}
