//! `backend = "launchd"`, driven through `launchctl`: a stand-in `launchctl` script first
//! on PATH records each call's argv and prints canned `launchctl print` output for the
//! state it keeps in a file, so the argv of each verb and the state warden parses from
//! `print` can be checked on Linux.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);

/// The stand-in: `print` answers from `state` (missing: not loaded, exit 113),
/// `bootstrap`/`kickstart` make the job run with pid 4242, `bootout` removes it.
const LAUNCHCTL: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/argv.log"
case "$1" in
print)
  [ -f "$dir/state" ] || { echo "Could not find service" >&2; exit 113; }
  state=$(cat "$dir/state")
  pid=""
  [ "$state" = running ] && pid="	pid = 4242"
  printf '%s = {\n\tactive count = 1\n\tpath = /Library/LaunchDaemons/x.plist\n\tstate = %s\n%s\n\truns = 3\n\tlast exit code = %s\n\tendpoints = {\n\t\tstate = nested\n\t}\n}\n' \
    "$2" "$state" "$pid" "$(cat "$dir/last_exit" 2>/dev/null || echo 0)"
  ;;
bootstrap) echo "not running" > "$dir/state" ;;
kickstart) echo running > "$dir/state" ;;
bootout) rm -f "$dir/state" ;;
esac
"#;

/// The stand-in's calls but `print` (the verbs).
fn verbs(argv: &[String]) -> Vec<&str> {
    argv.iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("print"))
        .collect()
}

#[test]
fn parse_print_reads_state_pid_and_last_exit() {
    let text = "system/com.example.app = {\n\tactive count = 1\n\tstate = running\n\tpid = 4242\n\
                \truns = 3\n\tlast exit code = 0\n\tendpoints = {\n\t\tstate = nested\n\t}\n}\n";
    let s = warden_actors::unit::launchd::parse_print(text);
    assert_eq!(s.active, Some(warden_actors::unit::ActiveState::Active));
    assert_eq!(s.pid(), Some(4242));
    assert_eq!(s.sub_state.as_deref(), Some("running"));
    let failed = "system/x = {\n\tstate = not running\n\tlast exit code = 3\n}\n";
    let s = warden_actors::unit::launchd::parse_print(failed);
    assert_eq!(s.active, Some(warden_actors::unit::ActiveState::Failed));
    assert_eq!(s.exec_main_status, Some(3));
}

// Promise: a launchd job is started with `bootstrap` (not loaded) then `kickstart`,
// restarted by an operator with one `kickstart -k`, stopped with `bootout`, and its state
// and pid come from `launchctl print`.
#[test]
fn verbs_run_launchctl_with_the_expected_argv() {
    let dir = temp_dir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let script = bin.join("launchctl");
    std::fs::write(&script, LAUNCHCTL).expect("write launchctl");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let w = Warden::start_in_env(
        dir,
        "[[service]]\nname = \"app\"\nbackend = \"launchd\"\nlabel = \"com.example.app\"\n",
        &[("PATH", path.as_str())],
    );
    w.wait_state("/app", "running", T);
    let a = wait_for("the pid from print", T, || {
        let a = w.actor("/app");
        (a["pid"] == 4242).then_some(a)
    });
    assert_eq!(a["kind"], "service", "{a}");
    let argv = lines(&bin.join("argv.log"));
    assert_eq!(
        verbs(&argv),
        [
            "bootstrap system /Library/LaunchDaemons/com.example.app.plist",
            "kickstart system/com.example.app",
        ],
        "{argv:?}"
    );
    assert!(
        argv.iter().any(|l| l == "print system/com.example.app"),
        "{argv:?}"
    );

    let r = w.req("POST", "/api/v1/actors/app/restart");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = w.wait_state("/app", "running", T);
    assert_eq!(a["restarts"], 1, "{a}");
    let argv = lines(&bin.join("argv.log"));
    assert_eq!(
        verbs(&argv)[2..],
        ["kickstart -k system/com.example.app"],
        "one kickstart -k, no bootout: {argv:?}"
    );

    let r = w.req("POST", "/api/v1/actors/app/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    let argv = lines(&bin.join("argv.log"));
    assert!(
        argv.iter().any(|l| l == "bootout system/com.example.app"),
        "{argv:?}"
    );
}

// Promise: a bad backend entry is refused before anything starts (exit 2) naming the key.
#[test]
fn bad_backend_entries_are_refused_naming_the_key() {
    let cases = [
        ("backend = \"systemd\"\n", "unit"),
        ("backend = \"launchd\"\n", "label"),
        ("backend = \"upstart\"\nunit = \"x\"\n", "backend"),
        (
            "backend = \"systemd\"\nunit = \"x.service\"\ncommand = [\"/bin/true\"]\n",
            "command",
        ),
        (
            "backend = \"systemd\"\nunit = \"x.service\"\nlabel = \"y\"\n",
            "label",
        ),
        ("unit = \"x.service\"\ncommand = [\"/bin/true\"]\n", "unit"),
    ];
    for (entry, key) in cases {
        let dir = temp_dir();
        std::fs::write(
            dir.path().join("warden.toml"),
            format!("[[service]]\nname = \"a\"\n{entry}"),
        )
        .expect("write config");
        let (code, _out, err) = run_warden(&["check", "-c", "warden.toml"], dir.path());
        assert_eq!(code, 2, "{entry}: {err}");
        assert!(err.contains(key), "{entry}: the error names {key}: {err}");
    }
}
