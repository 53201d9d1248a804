//! `/metrics`: the tree and warden's own process in Prometheus text format.

use std::fmt::Write as _;
use std::time::SystemTime;

use warden_actors::notifier::NotifierCounts;
use warden_supervisors::{ActorPath, ActorState, ActorTree};

/// Renders every metric.
pub fn render(tree: &ActorTree, draining: bool, notifiers: &[(String, NotifierCounts)]) -> String {
    let actors = tree.descendants(&ActorPath::root());
    let mut out = String::with_capacity(256 + actors.len() * 700);
    let now = SystemTime::now();

    out.push_str("# HELP warden_actor_state Whether the actor is in this state (1) or not (0).\n");
    out.push_str("# TYPE warden_actor_state gauge\n");
    for a in &actors {
        let kind = serde_json::to_value(a.info.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for state in ActorState::ALL {
            let _ = writeln!(
                out,
                "warden_actor_state{{path=\"{}\",kind=\"{kind}\",state=\"{state}\"}} {}",
                a.info.path,
                u8::from(a.info.state == state)
            );
        }
    }
    out.push_str(
        "# HELP warden_actor_restarts_total Restarts of the actor since warden started.\n",
    );
    out.push_str("# TYPE warden_actor_restarts_total counter\n");
    for a in &actors {
        let _ = writeln!(
            out,
            "warden_actor_restarts_total{{path=\"{}\"}} {}",
            a.info.path, a.info.restarts
        );
    }
    out.push_str("# HELP warden_actor_uptime_seconds How long the current run has been up (0 when not running).\n");
    out.push_str("# TYPE warden_actor_uptime_seconds gauge\n");
    for a in &actors {
        let up = match (a.info.state, a.info.started_at) {
            (ActorState::Running, Some(at)) => now
                .duration_since(at.0)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            _ => 0.0,
        };
        let _ = writeln!(
            out,
            "warden_actor_uptime_seconds{{path=\"{}\"}} {up:.3}",
            a.info.path
        );
    }
    out.push_str("# HELP warden_actor_last_exit_code Exit code of the actor's last run (absent if none, or ended by a signal).\n");
    out.push_str("# TYPE warden_actor_last_exit_code gauge\n");
    for a in &actors {
        if let Some(code) = a.info.last_exit.as_ref().and_then(|e| e.code) {
            let _ = writeln!(
                out,
                "warden_actor_last_exit_code{{path=\"{}\"}} {code}",
                a.info.path
            );
        }
    }
    out.push_str("# HELP warden_actor_last_exit_signal Whether the actor's last run was ended by this signal.\n");
    out.push_str("# TYPE warden_actor_last_exit_signal gauge\n");
    for a in &actors {
        if let Some(signal) = a.info.last_exit.as_ref().and_then(|e| e.signal.as_deref()) {
            let _ = writeln!(
                out,
                "warden_actor_last_exit_signal{{path=\"{}\",signal=\"{signal}\"}} 1",
                a.info.path
            );
        }
    }
    out.push_str(
        "# HELP warden_actors Actors in the tree, the root excluded.\n# TYPE warden_actors gauge\n",
    );
    let _ = writeln!(out, "warden_actors {}", actors.len());
    out.push_str(
        "# HELP warden_draining Whether warden is draining.\n# TYPE warden_draining gauge\n",
    );
    let _ = writeln!(out, "warden_draining {}", u8::from(draining));
    if !notifiers.is_empty() {
        out.push_str(
            "# HELP warden_notifier_events_total Events of each notifier by outcome: delivered \
             (answered 2xx), failed (not delivered, not resent), dropped (its queue was full).\n\
             # TYPE warden_notifier_events_total counter\n",
        );
        for (name, counts) in notifiers {
            for (outcome, n) in [
                ("delivered", counts.delivered),
                ("failed", counts.failed),
                ("dropped", counts.dropped),
            ] {
                let _ = writeln!(
                    out,
                    "warden_notifier_events_total{{notifier=\"{name}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
    }
    process_metrics(&mut out);
    out
}

/// The standard `process_*` metrics of warden itself, read from /proc.
fn process_metrics(out: &mut String) {
    let ticks = 100.0; // CLK_TCK on Linux
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which may contain spaces and parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime, stime are fields 14 and 15 (1-based); index 11, 12 after the name.
        let cpu = fields
            .get(11)
            .zip(fields.get(12))
            .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?));
        if let Some(cpu) = cpu {
            out.push_str("# HELP process_cpu_seconds_total User and system CPU time spent.\n# TYPE process_cpu_seconds_total counter\n");
            let _ = writeln!(out, "process_cpu_seconds_total {:.2}", cpu / ticks);
        }
        let start = fields.get(19).and_then(|s| s.parse::<f64>().ok());
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let (Some(start), Some(btime)) = (start, btime) {
            out.push_str("# HELP process_start_time_seconds Start time of the process since the epoch.\n# TYPE process_start_time_seconds gauge\n");
            let _ = writeln!(
                out,
                "process_start_time_seconds {:.2}",
                btime + start / ticks
            );
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(kib) = kib {
            out.push_str("# HELP process_resident_memory_bytes Resident memory size.\n# TYPE process_resident_memory_bytes gauge\n");
            let _ = writeln!(out, "process_resident_memory_bytes {}", kib * 1024);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push_str(
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\n",
        );
        let _ = writeln!(out, "process_open_fds {}", dir.count());
    }
}
