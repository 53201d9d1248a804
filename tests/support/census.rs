//! A census of the processes of one warden: every live (not zombie) process whose
//! environment carries `WARDEN_INSTANCE=<the id in state_dir/instance>`, with the actor path it was started
//! for (`WARDEN_ACTOR`) and its process group, so tests can count the instances of each
//! actor independently of what warden's API says.

use std::path::Path;

use super::alive;

/// One live process marked as a child of the warden of a state_dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub pid: u32,
    pub pgid: u32,
    /// `WARDEN_ACTOR`: the actor path the process (or its ancestor) was started for.
    pub actor: Option<String>,
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat, parsed after the command name.
pub fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// Every live process marked with the instance id of the warden of `state_dir`.
pub fn marked(state_dir: &Path) -> Vec<Marked> {
    let mut found = Vec::new();
    let Some(wanted) = super::instance_of(state_dir) else {
        return found;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut is_marked = false;
        let mut actor = None;
        for var in environ.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if let Some(v) = var.strip_prefix("WARDEN_INSTANCE=") {
                is_marked = v == wanted;
            } else if let Some(v) = var.strip_prefix("WARDEN_ACTOR=") {
                actor = Some(v.to_owned());
            }
        }
        if !is_marked || !alive(pid) {
            continue;
        }
        let Some(pgid) = stat_field(pid, 5) else {
            continue;
        };
        found.push(Marked {
            pid,
            pgid: pgid as u32,
            actor,
        });
    }
    found
}

/// The live instances (distinct process groups) of each actor path in a census.
pub fn instances_by_actor(census: &[Marked]) -> std::collections::BTreeMap<String, Vec<u32>> {
    let mut by_actor: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    for m in census {
        let groups = by_actor
            .entry(m.actor.clone().unwrap_or_default())
            .or_default();
        if !groups.contains(&m.pgid) {
            groups.push(m.pgid);
        }
    }
    by_actor
}

/// SIGKILLs, by pid, whatever is still marked with `state_dir` when dropped (only needed
/// when a test fails while no warden runs). Declare it before the `Warden`, so that
/// warden's own graceful stop comes first.
pub struct Reaper(pub std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for m in marked(&self.0) {
            super::kill(m.pid, 9);
        }
    }
}
