//! An outboard child written with `warden-child`: reports app version 1, says ready, and
//! answers every call with `{"echo": <the request>}` until warden asks it to stop.
//!
//! Build it (`cargo build --release --example outboard_echo`) and run it under warden:
//!
//! ```toml
//! [[outboard]]
//! name = "echo"
//! command = ["./target/release/examples/outboard_echo"]
//! ready = { ipc = true }
//! ```
//!
//! then `curl -X POST -d '{"hi":1}' -H "Authorization: Bearer $TOKEN"
//! http://127.0.0.1:7700/api/v1/actors/echo/call` answers `{"echo":{"hi":1}}`.

use std::process::ExitCode;

use warden_child::Outboard;

fn main() -> ExitCode {
    let mut outboard = match Outboard::connect(1) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("outboard_echo: {e}");
            return ExitCode::from(2);
        }
    };
    println!("outboard_echo: connected as {}", outboard.actor());
    if let Err(e) = outboard.ready() {
        eprintln!("outboard_echo: {e}");
        return ExitCode::from(1);
    }
    match outboard.serve(|request| Ok(serde_json::json!({ "echo": request }))) {
        Ok(()) => {
            println!("outboard_echo: asked to stop, bye");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outboard_echo: {e}");
            ExitCode::from(1)
        }
    }
}
