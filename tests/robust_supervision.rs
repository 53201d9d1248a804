//! Robustness promises of the supervision core (design.md "Robustness promises"), with the
//! real `warden` binary and real processes: nothing runs twice across a reload, a child
//! that fails its first start holds back its successors, bad durations are config errors,
//! and a reload cannot move state_dir or change `[logs]` under a running tree.
//!
//! (A nested supervisor whose parent is gone ends its children at once: that cannot be
//! triggered from outside, see `supervisors/tests/robust.rs`.)
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const T: Duration = Duration::from_secs(10);

/// Rewrites the config of `w` with `state_dir` ("state" is the one [`Warden::start`]
/// wrote), the same `[admin]`, then `body`.
fn rewrite(w: &Warden, state_dir: &str, body: &str) {
    let text = format!(
        "state_dir = \"{state_dir}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\n{body}",
        w.port
    );
    std::fs::write(&w.config, text).expect("rewrite config");
}

/// `POST /api/v1/reload` as (status, JSON body).
fn reload(w: &Warden) -> (u16, Value) {
    let r = w.req("POST", "/api/v1/reload");
    (r.status, r.json())
}

/// Whether `pid` leads its process group (a service's process does; a shell's fork that
/// has not exec'd yet still shows the shell's command line, but not as a leader).
fn leads_its_group(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
            == Some(pid)
    })
}

/// Live (not zombie) group leaders whose command line contains `marker`: the runs of one
/// service that were all alive at one moment. A scan of /proc is not atomic (a run that
/// ended right after it was read and its successor read later would both show), so the
/// pids found are read again after the scan: one still alive then was alive while every
/// later one was read.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let live = |pid: &u32| alive(*pid) && leads_its_group(*pid);
    let scanned: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .filter(live)
        .collect();
    let Some((&newest, earlier)) = scanned.split_last() else {
        return scanned;
    };
    let mut together: Vec<u32> = earlier.iter().copied().filter(live).collect();
    together.push(newest);
    together
}

/// Promise "Nothing runs twice" (review finding 4): a reload removes a child whose stop is
/// slow (it traps TERM and takes 2 s), and a second reload re-adds it 200 ms later, while
/// that run is still stopping. At no moment do two processes of it exist, and it ends
/// running once. Before the fix the re-added child started at once beside the stopping
/// one (two processes for ~2 s).
#[test]
fn a_child_re_added_while_its_removed_run_still_stops_never_runs_twice() {
    let dir = temp_dir();
    let marker = format!("slowstop-{}", dir.path().display());
    let body = format!(
        "[[service]]\nname = \"keep\"\ncommand = [\"sleep\", \"1000\"]\n\n\
         [[service]]\nname = \"db\"\ncommand = {}\nstop = {{ timeout = \"10s\" }}\n",
        sh(&format!(
            ": {marker}; trap 'sleep 2; exit 0' TERM; while :; do sleep 0.05; done"
        ))
    );
    let without = "[[service]]\nname = \"keep\"\ncommand = [\"sleep\", \"1000\"]\n";
    let w = Warden::start_in(dir, &body);
    let old = w.wait_state("/db", "running", T)["pid"]
        .as_u64()
        .expect("db pid") as u32;
    assert_eq!(processes_with(&marker), vec![old]);

    rewrite(&w, "state", without);
    let (status, answer) = reload(&w);
    assert_eq!(status, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    rewrite(&w, "state", &body);
    let (status, answer) = reload(&w);
    assert_eq!(status, 200, "{answer}");

    // Watch every 10 ms until the child runs again with a new process (or 10 s pass).
    let deadline = Instant::now() + T;
    let new = loop {
        let live = processes_with(&marker);
        assert!(live.len() <= 1, "two processes of /db at once: {live:?}");
        let a = w.actor("/db");
        if let Some(pid) = a["pid"].as_u64().map(|p| p as u32) {
            if a["state"] == "running" && pid != old {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "db never ran again: {a}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!alive(old), "the removed run has ended");
    // It stays one.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_with(&marker), vec![new]);
    let a = w.actor("/db");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["pid"].as_u64(), Some(u64::from(new)), "{a}");
}

/// Promise SEMANTICS 1 (review finding 11), one_for_one: `db` fails its first ready
/// check (it does not listen the first time), then `api`: `api` does not start until `db`
/// has been `running`. Before the fix `api` started as soon as db's first run failed,
/// while db waited in backoff.
#[test]
fn a_child_that_fails_its_first_ready_check_holds_back_the_next_one() {
    let dir = temp_dir();
    let port = free_port();
    let flag = abs(&dir, "db-ran-once");
    let db = sh(&format!(
        "if [ -e '{flag}' ]; then exec python3 -c 'import socket,time\n\
         s=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind((\"127.0.0.1\",{port}))\ns.listen()\ntime.sleep(1000)'; \
         else touch '{flag}'; exec sleep 1000; fi"
    ));
    let body = format!(
        "[[service]]\nname = \"db\"\ncommand = {db}\n\
         ready = {{ tcp = \"127.0.0.1:{port}\", timeout = \"2s\" }}\n\
         restart = {{ backoff = {{ initial = \"500ms\", max = \"500ms\", jitter = 0.0 }} }}\n\n\
         [[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1000\"]\n"
    );
    let w = Warden::start_in(dir, &body);
    // Until db runs, api has not started (api is read first: db stays running once it
    // runs, so an api that started before this read finds db running in the next one).
    let deadline = Instant::now() + T;
    loop {
        let api = w.actor("/api");
        let db = w.actor("/db");
        if db["state"] == "running" {
            break;
        }
        assert!(
            api["pid"].is_null() && api["started_at"].is_null(),
            "api started while db is {}: {api}",
            db["state"]
        );
        assert!(Instant::now() < deadline, "db never ran: {db}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let api = w.wait_state("/api", "running", T);
    let db = w.actor("/db");
    assert!(
        db["restarts"].as_u64() >= Some(1),
        "db failed its first check: {db}"
    );
    assert!(
        diff_ms(rfc3339(&api["started_at"]), rfc3339(&db["started_at"])) >= 0.0,
        "api started after db's run that passed: {api} {db}"
    );
}

/// Promise "Bad values are refused before anything starts" (review finding 24): a
/// duration that cannot be added to a clock is a config error naming the key. Before the
/// fix `warden check` accepted it and the supervisor panicked at the first crash.
#[test]
fn check_refuses_a_duration_that_cannot_be_added_to_a_clock_naming_the_key() {
    let dir = temp_dir();
    let text = "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\n\
                restart = { backoff = { initial = \"300000000000y\", max = \"300000000000y\" } }\n";
    std::fs::write(dir.path().join("warden.toml"), text).expect("write config");
    let (code, _, stderr) = run_warden(&["check", "-c", "warden.toml"], dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("warden.toml:4"), "names the line: {stderr}");
    assert!(
        stderr.contains("restart.backoff"),
        "names the key: {stderr}"
    );
    assert!(
        stderr.contains("300000000000y"),
        "quotes the value: {stderr}"
    );
    assert!(stderr.contains("maximum"), "says why: {stderr}");

    let ok = "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1\"]\n\
              stop = { timeout = \"3650days\" }\n";
    std::fs::write(dir.path().join("warden.toml"), ok).expect("write config");
    let (code, _, stderr) = run_warden(&["check", "-c", "warden.toml"], dir.path());
    assert_eq!(code, 0, "ten years is still a duration: {stderr}");
}

/// Promise SEMANTICS 22 with review finding 25: a reload that changes `state_dir` or
/// `[logs]` is refused whole (400, naming what changed) and the tree keeps running
/// untouched, nothing is created in the new state_dir. Before the fix the reload was
/// applied (200) and later starts used the new directory.
#[test]
fn a_reload_that_changes_state_dir_or_logs_is_refused_and_changes_nothing() {
    let body = "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"1000\"]\n";
    let w = Warden::start(body);
    let pid = w.wait_state("/api", "running", T)["pid"].clone();

    let added = format!("{body}\n[[service]]\nname = \"extra\"\ncommand = [\"sleep\", \"1001\"]\n");
    rewrite(&w, "elsewhere", &added);
    let (status, answer) = reload(&w);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("state_dir"), "{answer}");
    assert!(
        !w.path("elsewhere").exists(),
        "nothing in the new state_dir"
    );

    rewrite(&w, "state", &format!("[logs]\nmax_bytes = 4096\n\n{added}"));
    let (status, answer) = reload(&w);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("[logs]"), "{answer}");

    let r = w.req("GET", "/api/v1/actors/extra");
    assert_eq!(r.status, 404, "no child was added: {}", r.text());
    let a = w.actor("/api");
    assert_eq!(a["pid"], pid, "untouched: {a}");

    // The same file with the running state_dir and [logs] reloads.
    rewrite(&w, "state", &added);
    let (status, answer) = reload(&w);
    assert_eq!(status, 200, "{answer}");
    w.wait_state("/extra", "running", T);
}
