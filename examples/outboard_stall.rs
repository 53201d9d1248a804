//! A misbehaving outboard child for tests: it connects with `warden-child` (app version
//! 1), says ready, and then never reads its socket again, as a child whose handler
//! deadlocked would. Its socket fills up with whatever warden sends.
//!
//! `--ignore-term` makes it ignore SIGTERM too, so only SIGKILL ends it.

use std::process::ExitCode;

use warden_child::Outboard;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--ignore-term") {
        // SAFETY: setting a signal's disposition to SIG_IGN before any thread starts.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    let mut outboard = match Outboard::connect(1) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("outboard_stall: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = outboard.ready() {
        eprintln!("outboard_stall: {e}");
        return ExitCode::from(1);
    }
    println!(
        "outboard_stall: ready as {}; never reading again",
        outboard.actor()
    );
    // Keeps the connection open and unread for good.
    loop {
        std::thread::park();
    }
}
