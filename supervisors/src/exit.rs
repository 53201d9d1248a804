//! Why a child stopped running: the one type every child kind reports.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tree::Timestamp;

/// How one run of a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// An OS process exited with this code.
    Code(i32),
    /// An OS process was ended by this signal.
    Signal(i32),
    /// An in-process child (an actor, a supervisor) stopped by itself without error.
    Normal,
    /// An in-process child panicked; the panic message.
    Panic(String),
    /// The child could not be started at all (e.g. the program does not exist).
    StartFailed(String),
    /// The ready check failed or timed out; the child was stopped.
    NotReady(String),
    /// A supervisor exceeded its restart intensity and gave up on its children.
    IntensityExceeded(String),
    /// The child was judged broken for another reason (e.g. a protocol violation).
    Fatal(String),
    /// The child must not run as it is (e.g. it reports another protocol or app
    /// version): it is stopped and `failed`, never restarted.
    Refused(String),
    /// A unit of the host's service manager went down (failed, or inactive even with
    /// result `success`) while warden wanted it up; what the manager said. Always
    /// abnormal: a `transient` unit is started again, since it was not warden that ended
    /// it and a unit is meant to stay up.
    UnitDown(String),
    /// An adopted process (started by an earlier warden) ended; its exit status went to
    /// its new parent, so it is unknown here.
    Lost,
}

impl Exit {
    /// Whether a `transient` child is restarted after this: non-zero codes, signals and
    /// every error are abnormal; code 0, a clean actor stop, and the unknown end of an
    /// adopted process ([`Exit::Lost`]: a transient job that may have completed is never
    /// re-run blindly) are normal.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Exit::Code(0) | Exit::Normal | Exit::Lost)
    }

    /// Whether the child is given up on at once, whatever its restart policy.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Exit::Refused(_))
    }

    /// The record shown as `last_exit` in the API.
    pub fn record(&self, at: Timestamp) -> LastExit {
        let (code, signal) = match self {
            Exit::Code(c) => (Some(*c), None),
            Exit::Signal(s) => (None, Some(signal_name(*s))),
            _ => (None, None),
        };
        LastExit {
            code,
            signal,
            at,
            reason: self.to_string(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "killed by {}", signal_name(*s)),
            Exit::Normal => f.write_str("stopped normally"),
            Exit::Panic(m) => write!(f, "panicked: {m}"),
            Exit::StartFailed(m) => write!(f, "could not start: {m}"),
            Exit::NotReady(m) => write!(f, "ready check failed: {m}"),
            Exit::IntensityExceeded(m) => write!(f, "gave up: {m}"),
            Exit::Fatal(m) => write!(f, "fatal: {m}"),
            Exit::Refused(m) => write!(f, "refused: {m}"),
            Exit::UnitDown(m) => f.write_str(m),
            Exit::Lost => f.write_str("exited, status unknown (adopted from an earlier warden)"),
        }
    }
}

/// The `last_exit` object of the API: exactly one of `code` and `signal` is set for an OS
/// process; both are null for in-process children, and `reason` always says what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// Exit code of a process that exited.
    pub code: Option<i32>,
    /// Signal name ("SIGKILL") of a process ended by a signal.
    pub signal: Option<String>,
    /// When the exit was seen.
    pub at: Timestamp,
    /// A sentence saying what happened.
    pub reason: String,
}

/// "SIGTERM" for 15, and so on; "SIG<n>" for numbers without a name.
pub fn signal_name(signal: i32) -> String {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match usize::try_from(signal).ok().and_then(|i| NAMES.get(i)) {
        Some(name) if !name.is_empty() => (*name).to_owned(),
        _ => format!("SIG{signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_end_of_an_adopted_process_does_not_rerun_a_transient_child() {
        assert!(!Exit::Lost.is_abnormal());
        assert!(Exit::UnitDown("web.service went down".into()).is_abnormal());
        assert!(!Exit::Code(0).is_abnormal());
        assert!(Exit::Signal(9).is_abnormal());
    }
}
