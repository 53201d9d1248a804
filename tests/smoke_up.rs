//! The smallest end-to-end check: `warden up` runs a service and stops on SIGTERM.
mod support;

use std::time::Duration;
use support::*;

#[test]
fn up_runs_a_service_and_sigterm_exits_zero_leaving_no_process() {
    let mut w = Warden::start(
        r#"
[[service]]
name = "sleeper"
command = ["sleep", "1000"]
"#,
    );
    let a = w.wait_state("sleeper", "running", Duration::from_secs(10));
    let pid = a["pid"].as_u64().expect("pid") as u32;
    assert!(alive(pid));
    let status = w.signal_and_wait(15, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", w.stderr_text());
    wait_until("service gone", Duration::from_secs(5), || !alive(pid));
}
