//! Outboard children for tests: config entries running the `outboard_echo` and
//! `outboard_stall` examples, and calls in flight on threads of their own (to fill a
//! stalled child's socket and see every call answered).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::example_bin::example_bin;
use super::{http, toml_str, Warden};

/// An `[[outboard]]` entry running `outboard_stall` (with `args`: it says ready over IPC,
/// then never reads its socket again), with extra keys.
pub fn stall_entry(name: &str, args: &[&str], extra: &str) -> String {
    let mut command = vec![toml_str(&example_bin("outboard_stall").to_string_lossy())];
    command.extend(args.iter().map(|a| toml_str(a)));
    format!(
        "[[outboard]]\nname = \"{name}\"\ncommand = [{}]\nready = {{ ipc = true }}\n{extra}\n\n",
        command.join(", ")
    )
}

/// An `[[outboard]]` entry running `outboard_echo`, ready over IPC, with extra keys.
pub fn echo_entry(name: &str, extra: &str) -> String {
    format!(
        "[[outboard]]\nname = \"{name}\"\ncommand = [{}]\nready = {{ ipc = true }}\n{extra}\n\n",
        toml_str(&example_bin("outboard_echo").to_string_lossy())
    )
}

/// Calls sent to fill a stalled child's socket (about 200 KiB fit in its buffer).
pub const FILLING_CALLS: usize = 8;

/// A call running on its own thread: its status (or the client's error) and how long it
/// took arrive on `answer`.
pub struct CallInFlight {
    answer: mpsc::Receiver<(Result<u16, String>, Duration)>,
}

impl CallInFlight {
    pub fn start(w: &Warden, path: &str, body: Vec<u8>) -> Self {
        let (tx, answer) = mpsc::channel();
        let port = w.port;
        let token = w.token();
        let route = format!("/api/v1/actors/{path}/call");
        std::thread::spawn(move || {
            let began = Instant::now();
            let status = http(port, "POST", &route, Some(&token), Some(&body))
                .map(|r| r.status)
                .map_err(|e| e.to_string());
            let _ = tx.send((status, began.elapsed()));
        });
        Self { answer }
    }

    /// The answer, or a failure if it takes longer than `bound`.
    pub fn wait(self, bound: Duration, what: &str) -> (Result<u16, String>, Duration) {
        self.answer
            .recv_timeout(bound)
            .unwrap_or_else(|_| panic!("{what}: no answer within {bound:?}: the call hangs"))
    }
}

/// A JSON body of 64 KiB minus a little (the admin API takes at most 64 KiB).
pub fn big_body() -> Vec<u8> {
    serde_json::to_vec(&"x".repeat(64 * 1024 - 64)).expect("json")
}

/// Sends [`FILLING_CALLS`] 64 KiB calls to `path` (a child that stopped reading): once
/// its socket buffer is full, any write to it waits for good. Returns them in flight.
pub fn fill_socket(w: &Warden, path: &str) -> Vec<CallInFlight> {
    (0..FILLING_CALLS)
        .map(|_| CallInFlight::start(w, path, big_body()))
        .collect()
}
