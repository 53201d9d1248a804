//! launchd through the `launchctl` CLI: `bootstrap` (when the job is not loaded) and
//! `kickstart` to start, `kickstart -k` to restart, `bootout` to stop, and `print`
//! parsed for the job's state and pid. launchd has no change signal that a CLI can
//! follow, so a watch reads `launchctl print` once a second (a child process awaited on
//! the runtime, never blocking the supervision thread).

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::process::Command;

use super::{ActiveState, UnitBackend, UnitError, UnitEvent, UnitStatus, UnitWatch};

/// How often a watch reads `launchctl print`.
pub const PRINT_EVERY: Duration = Duration::from_secs(1);
/// How long one `launchctl` call may take.
pub const LAUNCHCTL_DEADLINE: Duration = Duration::from_secs(10);

/// A launchd job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launchd {
    /// The job's label (`com.example.app`).
    pub label: String,
    /// The user's domain (`gui/UID`) instead of `system`.
    pub user_mode: bool,
}

impl Launchd {
    /// The domain the job lives in: `system` or `gui/UID`.
    pub fn domain(&self) -> String {
        if self.user_mode {
            format!("gui/{}", nix::unistd::getuid())
        } else {
            "system".to_owned()
        }
    }

    /// The service target: `DOMAIN/LABEL`.
    pub fn target(&self) -> String {
        format!("{}/{}", self.domain(), self.label)
    }

    /// Where the job's plist is, for `bootstrap`.
    pub fn plist(&self) -> PathBuf {
        if self.user_mode {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(format!("Library/LaunchAgents/{}.plist", self.label))
        } else {
            PathBuf::from(format!("/Library/LaunchDaemons/{}.plist", self.label))
        }
    }
}

/// Runs `launchctl ARGS` with a deadline; its stdout, or an error naming the call.
async fn launchctl(args: &[&str]) -> Result<String, UnitError> {
    let mut cmd = Command::new("launchctl");
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Registered as warden's own child, so the orphan reaper never takes its exit status.
    let child = crate::spawned::register(|| cmd.spawn(), tokio::process::Child::id)
        .map_err(|e| UnitError(format!("cannot run launchctl: {e}")))?;
    let pid = child.id();
    let out = tokio::time::timeout(LAUNCHCTL_DEADLINE, child.wait_with_output()).await;
    if let Some(pid) = pid {
        crate::spawned::forget(pid);
    }
    let out = out
        .map_err(|_| {
            UnitError(format!(
                "launchctl {} did not answer in time",
                args.join(" ")
            ))
        })?
        .map_err(|e| UnitError(format!("cannot run launchctl: {e}")))?;
    if !out.status.success() {
        return Err(UnitError(format!(
            "launchctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads `launchctl print` output: `state = running`, `pid = N`, `last exit code = N`,
/// `runs = N` at the job's top level.
pub fn parse_print(text: &str) -> UnitStatus {
    let mut status = UnitStatus::default();
    let mut last_exit: Option<i32> = None;
    let mut depth = 0usize;
    for line in text.lines() {
        let line = line.trim();
        if line.ends_with('{') {
            depth += 1;
            continue;
        }
        if line.starts_with('}') {
            depth = depth.saturating_sub(1);
            continue;
        }
        // Keys of the job itself (one level in), not of nested dictionaries.
        if depth > 1 {
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        match key.trim() {
            "state" => status.sub_state = Some(value.trim().to_owned()),
            "pid" => status.main_pid = value.trim().parse().ok(),
            "runs" => status.n_restarts = value.trim().parse().ok(),
            "last exit code" => last_exit = value.trim().parse().ok(),
            _ => {}
        }
    }
    let failed = last_exit.is_some_and(|c| c != 0);
    status.active = Some(match status.sub_state.as_deref() {
        Some("running") => ActiveState::Active,
        Some("spawn scheduled" | "xpcproxy") => ActiveState::Activating,
        Some("exiting") => ActiveState::Deactivating,
        _ if failed => ActiveState::Failed,
        _ => ActiveState::Inactive,
    });
    if let Some(code) = last_exit {
        status.exec_main_code = Some(1);
        status.exec_main_status = Some(code);
        status.result = Some(if code == 0 { "success" } else { "exit-code" }.to_owned());
    }
    status
}

impl UnitBackend for Launchd {
    fn describe(&self) -> String {
        format!("launchd job {}", self.label)
    }

    fn watch(&self) -> BoxFuture<'static, Result<Box<dyn UnitWatch>, UnitError>> {
        let this = self.clone();
        Box::pin(async move {
            let status = match launchctl(&["print", &this.target()]).await {
                Ok(text) => Some(parse_print(&text)),
                // Not loaded: the start bootstraps it.
                Err(_) => None,
            };
            Ok(Box::new(LaunchdWatch {
                loaded: status.is_some(),
                status: status.unwrap_or_default(),
                job: this,
                ticks: None,
            }) as Box<dyn UnitWatch>)
        })
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        map.insert("backend".into(), "launchd".into());
        map.insert("label".into(), self.label.clone().into());
        map.insert("user_mode".into(), self.user_mode.into());
        map
    }

    fn logs(&self, _tail: usize) -> Result<String, UnitError> {
        Err(UnitError(format!(
            "{}: launchd keeps no log of its own; see the job's StandardOutPath",
            self.describe()
        )))
    }
}

struct LaunchdWatch {
    job: Launchd,
    loaded: bool,
    status: UnitStatus,
    ticks: Option<tokio::time::Interval>,
}

impl UnitWatch for LaunchdWatch {
    fn status(&self) -> UnitStatus {
        self.status.clone()
    }

    fn start(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>> {
        Box::pin(async move {
            let target = self.job.target();
            if !self.loaded {
                let plist = self.job.plist();
                launchctl(&["bootstrap", &self.job.domain(), &plist.to_string_lossy()]).await?;
                self.loaded = true;
            }
            launchctl(&["kickstart", &target]).await?;
            // The next print is reported whatever it says.
            self.status = UnitStatus::default();
            Ok(None)
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>> {
        Box::pin(async move {
            launchctl(&["bootout", &self.job.target()]).await?;
            self.loaded = false;
            Ok(None)
        })
    }

    fn restart(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>> {
        Box::pin(async move {
            launchctl(&["kickstart", "-k", &self.job.target()]).await?;
            // The next print is reported whatever it says (the next run waits for it).
            self.status = UnitStatus::default();
            Ok(None)
        })
    }

    fn next(&mut self) -> BoxFuture<'_, Option<UnitEvent>> {
        Box::pin(async move {
            let ticks = self
                .ticks
                .get_or_insert_with(|| tokio::time::interval(PRINT_EVERY));
            loop {
                ticks.tick().await;
                let status = match launchctl(&["print", &self.job.target()]).await {
                    Ok(text) => parse_print(&text),
                    // Booted out: down.
                    Err(_) => UnitStatus {
                        active: Some(ActiveState::Inactive),
                        main_pid: Some(0),
                        ..UnitStatus::default()
                    },
                };
                if status != self.status {
                    self.status = status.clone();
                    return Some(UnitEvent::Changed(status));
                }
            }
        })
    }
}
