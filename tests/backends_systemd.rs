//! `backend = "systemd"`: a unit of a stand-in `org.freedesktop.systemd1` (on a private
//! `dbus-daemon`, with real `sleep` processes as the units' main processes) is driven by
//! warden's own supervision: start, stop and restart go over D-Bus, a unit that fails is
//! seen through its PropertiesChanged signal (never by polling), backed off and started
//! again through StartUnit, and given up on past its intensity.

mod support;

use std::time::Duration;

use support::events::EventStream;
use support::example_bin::example_bin;
use support::systemd::FakeSystemd;
use support::*;

const T: Duration = Duration::from_secs(20);

fn unit_config(intensity_max: u32) -> String {
    format!(
        "[[service]]\nname = \"web\"\nbackend = \"systemd\"\nunit = \"web.service\"\n\
         stop = {{ timeout = \"5s\" }}\n\
         restart = {{ backoff = {{ initial = \"200ms\", jitter = 0.0 }}, \
         intensity = {{ max = {intensity_max}, within = \"60s\" }} }}\n"
    )
}

fn start(intensity_max: u32) -> (FakeSystemd, Warden) {
    start_with(&unit_config(intensity_max), None)
}

/// A stand-in whose units run `unit_command` (else `sleep 600`), and warden with `config`.
fn start_with(config: &str, unit_command: Option<&str>) -> (FakeSystemd, Warden) {
    let dir = temp_dir();
    let fake = FakeSystemd::start_with_units_running(
        dir.path(),
        &example_bin("fake_systemd"),
        unit_command,
    );
    // A stand-in journalctl: prints its argv, so the logs route shows how it was asked.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let journalctl = bin.join("journalctl");
    std::fs::write(&journalctl, "#!/bin/sh\necho \"journal: $*\"\n").expect("journalctl");
    std::fs::set_permissions(
        &journalctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let w = start_warden(&fake, dir, config);
    (fake, w)
}

/// Starts warden in `dir` (made by [`start`]) on the stand-in's bus.
fn start_warden(fake: &FakeSystemd, dir: tempfile::TempDir, config: &str) -> Warden {
    let address = fake.address();
    let path = format!(
        "{}:{}",
        dir.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Warden::start_in_env(
        dir,
        config,
        &[
            ("DBUS_SYSTEM_BUS_ADDRESS", address.as_str()),
            ("PATH", path.as_str()),
        ],
    )
}

/// Each GetAll is part of a watch's single read after LoadUnit; nothing else reads
/// properties: every change after that came as a signal (no polling).
fn assert_no_polling(fake: &FakeSystemd) {
    let calls: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("Spawned "))
        .collect();
    assert!(
        !calls.iter().any(|c| c.starts_with("Get ")),
        "a Get call: {calls:?}"
    );
    for (i, call) in calls.iter().enumerate() {
        if call.starts_with("GetAll") {
            let before = &calls[..i];
            let ok = before
                .iter()
                .rev()
                .take_while(|c| c.starts_with("GetAll"))
                .count()
                < 2
                && before
                    .iter()
                    .rev()
                    .find(|c| !c.starts_with("GetAll"))
                    .is_some_and(|c| c.starts_with("LoadUnit"));
            assert!(ok, "GetAll #{i} is not a watch's first read: {calls:?}");
        }
    }
}

/// Every StartUnit, StopUnit and RestartUnit comes after the watch of its unit was set up:
/// the manager's Subscribe, the unit's LoadUnit and its first property read (the signal
/// subscriptions are made on the bus before Subscribe; the stand-in sees only its own
/// methods).
fn assert_watched_before_verbs(fake: &FakeSystemd) {
    let calls: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("Spawned "))
        .collect();
    assert_eq!(
        calls.first().map(String::as_str),
        Some("Subscribe "),
        "{calls:?}"
    );
    for (i, call) in calls.iter().enumerate() {
        let Some((verb, unit)) = call.split_once(' ') else {
            continue;
        };
        if !["StartUnit", "StopUnit", "RestartUnit"].contains(&verb) {
            continue;
        }
        let before = &calls[..i];
        let loaded = before
            .iter()
            .rposition(|c| *c == format!("LoadUnit {unit}"));
        assert!(
            loaded.is_some_and(|l| {
                before[..l].iter().any(|c| c.starts_with("Subscribe"))
                    && before[l..].iter().any(|c| c.starts_with("GetAll"))
            }),
            "{call} (#{i}) before its unit's watch: {calls:?}"
        );
    }
}

// Promise: start and stop of a systemd-backed service go through StartUnit and StopUnit,
// an operator's restart through one RestartUnit (a new MainPID, no StopUnit/StartUnit);
// the actor's pid is the unit's MainPID, and a stop ends that process.
#[test]
fn start_stop_restart_go_over_dbus() {
    let (fake, w) = start(10);
    let a = w.wait_state("/web", "running", T);
    let pid = wait_for("web's MainPID as pid", T, || w.actor_pid("/web"));
    assert!(alive(pid), "MainPID {pid} is a live process: {a}");
    assert_eq!(
        fake.count("StartUnit"),
        1,
        "{:?} {} {}",
        fake.calls(),
        w.actor("/web"),
        w.stderr_text()
    );
    assert!(fake.calls().contains(&"StartUnit web.service".to_owned()));
    assert_eq!(a["details"]["backend"], "systemd", "{a}");
    assert_eq!(a["details"]["unit"], "web.service", "{a}");
    let logs = w.req("GET", "/api/v1/actors/web/logs?tail=7");
    assert_eq!(logs.status, 200, "{}", logs.text());
    assert_eq!(
        logs.text().trim(),
        "journal: -u web.service -n 7 -o cat --no-pager"
    );

    let r = w.req("POST", "/api/v1/actors/web/stop");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    assert_eq!(fake.count("StopUnit"), 1, "{:?}", fake.calls());
    wait_until("the unit's process ended", T, || !alive(pid));

    let r = w.req("POST", "/api/v1/actors/web/start");
    assert_eq!(r.status, 200, "{}", r.text());
    let second = wait_for("a new MainPID", T, || {
        w.actor_pid("/web").filter(|p| *p != pid)
    });
    assert_eq!(fake.count("StartUnit"), 2, "{:?}", fake.calls());

    let r = w.req("POST", "/api/v1/actors/web/restart");
    assert_eq!(r.status, 200, "{}", r.text());
    let third = wait_for("a third MainPID", T, || {
        w.actor_pid("/web").filter(|p| *p != second && *p != pid)
    });
    let a = w.wait_state("/web", "running", T);
    assert_eq!(a["pid"], third, "{a}");
    assert!(alive(third), "the restarted unit's MainPID {third} runs");
    wait_until("the old MainPID ended", T, || !alive(second));
    assert_eq!(fake.count("RestartUnit"), 1, "{:?}", fake.calls());
    assert_eq!(fake.count("StopUnit"), 1, "{:?}", fake.calls());
    assert_eq!(fake.count("StartUnit"), 2, "{:?}", fake.calls());
    assert_eq!(fake.count("Spawned"), 3, "{:?}", fake.calls());
    assert_no_polling(&fake);
    assert_watched_before_verbs(&fake);
}

// Promise: warden SIGKILLed while a systemd-backed unit is active, then started again on
// the same state_dir, shows the same unit running with the same MainPID as `pid`: the
// unit is not started a second time (the new run's StartUnit on the active unit is a
// job that changes nothing, as in systemd; the stand-in spawned one process).
#[test]
fn warden_killed_and_started_again_keeps_the_running_unit() {
    let (fake, mut w) = start(10);
    w.wait_state("/web", "running", T);
    let pid = wait_for("web's MainPID as pid", T, || w.actor_pid("/web"));
    w.crash();
    assert!(alive(pid), "the unit outlives warden's SIGKILL");
    let w = start_warden(&fake, w.into_dir(), &unit_config(10));
    let a = w.wait_state("/web", "running", T);
    assert_eq!(a["pid"], pid, "{a} {:?}", fake.calls());
    assert!(alive(pid), "MainPID {pid} still runs");
    assert_eq!(a["restarts"], 0, "{a}");
    holds_for(
        "the unit keeps its one process",
        Duration::from_millis(500),
        || w.actor_pid("/web") == Some(pid),
    );
    assert_eq!(
        fake.count("Spawned"),
        1,
        "one process for the unit: {:?}",
        fake.calls()
    );
    assert_eq!(fake.count("StopUnit"), 0, "{:?}", fake.calls());
    assert_eq!(fake.count("RestartUnit"), 0, "{:?}", fake.calls());
}

// Promise: a reload that changes a systemd-backed service's unit stops the old unit
// (StopUnit) and starts the new one (StartUnit): it is no restart in place.
#[test]
fn a_reload_that_changes_the_unit_stops_the_old_one() {
    let (fake, w) = start(10);
    w.wait_state("/web", "running", T);
    let pid = wait_for("web's MainPID as pid", T, || w.actor_pid("/web"));
    let text = std::fs::read_to_string(&w.config).expect("config");
    std::fs::write(&w.config, text.replace("web.service", "other.service")).expect("config");
    let r = w.req("POST", "/api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = wait_for("web runs other.service", T, || {
        let a = w.actor("/web");
        (a["state"] == "running" && a["details"]["unit"] == "other.service").then_some(a)
    });
    wait_until("the old unit's process ended", T, || !alive(pid));
    assert_ne!(a["pid"], pid, "{a}");
    let calls = fake.calls();
    assert!(
        calls.contains(&"StopUnit web.service".to_owned()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"StartUnit other.service".to_owned()),
        "{calls:?}"
    );
    assert_eq!(fake.count("RestartUnit"), 0, "{calls:?}");
}

// Promise: a unit whose main process dies is an abnormal exit seen through the signal
// (no Get/GetAll between events), backed off and started again through StartUnit;
// past its intensity it is `failed`; each state change reaches /api/v1/events.
#[test]
fn killed_main_process_is_restarted_then_failed_past_intensity() {
    let (fake, w) = start(2);
    w.wait_state("/web", "running", T);
    let mut events = EventStream::open(w.port, &w.token());
    let mut pid = wait_for("MainPID", T, || w.actor_pid("/web"));
    for round in 1..=2u64 {
        let reads = fake.count("GetAll");
        kill(pid, 9);
        let a = wait_for("a restarted unit", T, || {
            let a = w.actor("/web");
            (a["state"] == "running"
                && a["restarts"] == round
                && a["pid"].as_u64().is_some_and(|p| p as u32 != pid))
            .then_some(a)
        });
        assert_eq!(a["last_exit"]["signal"], "SIGKILL", "{a}");
        assert_eq!(
            fake.count("StartUnit") as u64,
            round + 1,
            "{:?}",
            fake.calls()
        );
        // The new run's watch read the properties once (Unit and Service); nothing else.
        assert_eq!(fake.count("GetAll"), reads + 2, "{:?}", fake.calls());
        pid = a["pid"].as_u64().expect("pid") as u32;
    }
    let reads = fake.count("GetAll");
    holds_for(
        "no reads while nothing happens",
        Duration::from_millis(500),
        || fake.count("GetAll") == reads,
    );
    kill(pid, 9);
    let a = w.wait_state("/web", "failed", T);
    assert!(a["failed_reason"].is_string(), "{a}");
    assert_eq!(
        fake.count("StartUnit"),
        3,
        "no start past the intensity: {:?}",
        fake.calls()
    );
    assert_no_polling(&fake);
    assert_watched_before_verbs(&fake);

    let seen = wait_for("the failed event", T, || {
        events.read_some();
        let states: Vec<String> = events
            .state_events()
            .iter()
            .filter(|e| e["path"] == "/web")
            .map(|e| e["state"].as_str().unwrap_or("").to_owned())
            .collect();
        states.contains(&"failed".to_owned()).then_some(states)
    });
    assert!(seen.contains(&"backoff".to_owned()), "{seen:?}");
    assert!(seen.contains(&"running".to_owned()), "{seen:?}");
}

// Promise (SEMANTICS 49): a unit that goes inactive while warden wants it up is an
// abnormal exit even when its result is `success` (its main process exited 0): a
// `transient` unit is started again, with the manager's result in the reason.
#[test]
fn a_transient_unit_that_goes_inactive_with_success_is_started_again() {
    let config = "[[service]]\nname = \"job\"\nbackend = \"systemd\"\nunit = \"job.service\"\n\
                  restart = { policy = \"transient\", backoff = { initial = \"100ms\", jitter = 0.0 }, \
                  intensity = { max = 100, within = \"60s\" } }\n";
    let (fake, w) = start_with(config, Some("sleep 0.3"));
    let a = wait_for("a restart after the unit went inactive", T, || {
        let a = w.actor("/job");
        (a["restarts"].as_u64().unwrap_or(0) >= 2).then_some(a)
    });
    let reason = a["last_exit"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("job.service went inactive: result success")
            && reason.contains("main process exited with code 0"),
        "{a}"
    );
    assert_eq!(a["last_exit"]["code"], serde_json::Value::Null, "{a}");
    wait_until("started again through StartUnit each time", T, || {
        fake.count("StartUnit") >= 3
    });
    assert_no_polling(&fake);
    assert_watched_before_verbs(&fake);
}

// Promise: the bus going away ends the run (an abnormal exit: the unit's state is no
// longer known); once the bus is back warden's restart reconnects and starts the unit.
#[test]
fn bus_going_away_and_coming_back() {
    let (mut fake, w) = start(100);
    w.wait_state("/web", "running", T);
    let pid = wait_for("MainPID", T, || w.actor_pid("/web"));
    fake.down();
    wait_until("warden saw the bus go", T, || w.state("/web") != "running");
    let a = w.actor("/web");
    assert!(
        a["last_exit"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lost the connection") || r.contains("D-Bus")),
        "{a}"
    );
    fake.up();
    let a = wait_for("running again on the new bus", T, || {
        let a = w.actor("/web");
        (a["state"] == "running" && a["pid"].as_u64().is_some_and(|p| p as u32 != pid)).then_some(a)
    });
    assert!(alive(a["pid"].as_u64().expect("pid") as u32), "{a}");
}
