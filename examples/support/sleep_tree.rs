//! Shared by the benchmarks that run a release `warden up` with N idle services
//! (`bench_adoption`, `bench_reexec`, `bench_ui`): where the binary is, how it is started,
//! the tree's config, and the wait until every service runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warden::control::client::Client;
use warden::control::protocol::{Request, Response};
use warden::ActorState;

/// `target/release/warden`, or `$WARDEN_BIN`.
pub fn warden_bin() -> PathBuf {
    std::env::var_os("WARDEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/warden"))
}

/// Starts `warden up -c config` (the release binary), its stderr into `log`.
pub fn start_warden(config: &Path, log: &Path) -> Child {
    Command::new(warden_bin())
        .arg("up")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start warden (cargo build --release first)")
}

/// Writes `dir/warden.toml`: state_dir `dir/state`, the admin API on a free loopback port,
/// and `n` services that sleep. Answers the config file and the port.
pub fn write_sleep_tree(dir: &Path, n: usize) -> (PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut toml = format!("state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[[service]]\nname = \"s{i:04}\"\ncommand = [\"sleep\", \"1000000\"]\n"
        ));
    }
    let config = dir.join("warden.toml");
    std::fs::write(&config, toml).expect("config");
    (config, port)
}

/// Polls the control socket until every actor runs; returns their pids.
pub fn all_running(socket: &Path, n: usize, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut client = None;
    while Instant::now() < deadline {
        if client.is_none() {
            client = Client::connect_socket(socket).ok();
        }
        if let Some(c) = client.as_mut() {
            match c.ask(Request::Status) {
                Ok(Ok(Response::Actors(actors))) => {
                    if actors.len() == n
                        && actors.iter().all(|a| a.info.state == ActorState::Running)
                    {
                        let mut pids: Vec<u32> = actors.iter().filter_map(|a| a.info.pid).collect();
                        pids.sort_unstable();
                        return pids;
                    }
                }
                _ => client = None,
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("not all {n} services running within {timeout:?}");
}
