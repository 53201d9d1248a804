//! Robustness promise for bound holders (SEMANTICS 26): a holder stops its tree and exits
//! within 2 s of its parent's death even while a request of that parent is in flight.
//! The parent asks `Wait` for an actor that never becomes running (a tcp ready check on a
//! port nobody listens on, with a 10 min timeout) and is SIGKILLed while it waits.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use warden::control::protocol::Request;
use warden::holder::BoundHolder;

const T: Duration = Duration::from_secs(10);

/// Set (to a config path) only in the re-executed test binary that plays the parent.
const PARENT_ENV: &str = "WARDEN_TEST_WAITING_PARENT";
/// Where that parent writes the holder's pid.
const PID_FILE_ENV: &str = "WARDEN_TEST_WAITING_PID_FILE";
/// Where that parent writes that it is about to send its `Wait`.
const ASKING_FILE_ENV: &str = "WARDEN_TEST_WAITING_ASKING_FILE";

/// Not a test of its own: the parent of the holder, re-executed by the test below. Does
/// nothing unless `WARDEN_TEST_WAITING_PARENT` is set.
#[test]
fn waiting_parent_helper() {
    let Ok(config) = std::env::var(PARENT_ENV) else {
        return;
    };
    let pid_file = PathBuf::from(std::env::var(PID_FILE_ENV).expect("pid file env"));
    let asking_file = PathBuf::from(std::env::var(ASKING_FILE_ENV).expect("asking file env"));
    let mut holder = BoundHolder::spawn(
        Path::new(env!("CARGO_BIN_EXE_warden")),
        Path::new(&config),
        Duration::from_secs(20),
    )
    .expect("bound holder");
    let tmp = pid_file.with_extension("tmp");
    std::fs::write(&tmp, holder.pid().to_string()).expect("write pid");
    std::fs::rename(&tmp, &pid_file).expect("rename pid file");
    std::fs::write(&asking_file, b"asking").expect("write asking file");
    // Blocks for 10 minutes, unless the test kills this process first.
    let answer = holder.ask(Request::Wait {
        paths: vec!["/never".to_owned()],
        timeout_ms: 600_000,
    });
    eprintln!("the Wait answered: {answer:?}");
}

/// Kills and reaps the parent on drop; SIGKILLs the holder and the children if a failing
/// test left them.
struct Cleanup {
    parent: Child,
    others: Vec<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.parent.kill();
        let _ = self.parent.wait();
        for pid in &self.others {
            if alive(*pid) {
                kill(*pid, 9);
            }
        }
    }
}

fn actors(port: u16, state: &Path) -> Option<Vec<Value>> {
    let token = std::fs::read_to_string(state.join("admin.token")).ok()?;
    let r = http(port, "GET", "/api/v1/actors", Some(token.trim()), None).ok()?;
    (r.status == 200).then(|| r.json().as_array().cloned().unwrap_or_default())
}

#[test]
fn a_bound_holder_exits_within_2s_of_its_parents_sigkill_while_a_wait_is_in_flight() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let port = free_port();
    let nobody_listens = free_port();
    let config = dir.path().join("warden.toml");
    let text = format!(
        "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[service]]\nname = \"a\"\ncommand = [\"sleep\", \"1000\"]\n\n\
         [[service]]\nname = \"never\"\ncommand = [\"sleep\", \"1000\"]\n\
         ready = {{ tcp = \"127.0.0.1:{nobody_listens}\", timeout = \"10m\" }}\n"
    );
    std::fs::write(&config, text).expect("write config");
    let pid_file = dir.path().join("holder.pid");
    let asking_file = dir.path().join("asking");
    let log_path = dir.path().join("parent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let parent = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "waiting_parent_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PARENT_ENV, &config)
        .env(PID_FILE_ENV, &pid_file)
        .env(ASKING_FILE_ENV, &asking_file)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn the parent");
    let parent_pid = parent.id();
    let mut cleanup = Cleanup {
        parent,
        others: Vec::new(),
    };
    let holder = wait_for("the holder's pid", Duration::from_secs(30), || {
        if let Ok(Some(status)) = cleanup.parent.try_wait() {
            panic!(
                "the parent exited early ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    });
    cleanup.others.push(holder);
    let members = wait_for("/a running and /never starting", T, || {
        actors(port, &state).filter(|list| {
            list.len() == 2 && list[0]["state"] == "running" && list[1]["state"] == "starting"
        })
    });
    let children: Vec<u32> = members
        .iter()
        .filter_map(|a| a["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(children.len(), 2, "{members:?}");
    cleanup.others.extend(&children);
    wait_until("the parent is about to ask Wait", T, || {
        asking_file.exists()
    });
    // The request leaves the parent microseconds after the file; give it ample time to be
    // read by the holder, so that it is surely in flight when the parent dies.
    std::thread::sleep(Duration::from_millis(500));

    let killed = Instant::now();
    kill(parent_pid, 9);
    let _ = cleanup.parent.wait();
    wait_until(
        "the holder and its children gone after the parent's SIGKILL",
        T,
        || !alive(holder) && children.iter().all(|p| !alive(*p)),
    );
    let took = killed.elapsed();
    eprintln!("holder gone {took:?} after its parent's SIGKILL with a Wait in flight");
    assert!(
        took < Duration::from_secs(3),
        "the holder must exit within 2 s of its parent's death; took {took:?}"
    );
}
