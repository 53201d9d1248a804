//! Fuzzes the IPC frame decoder: any byte stream read as frames and decoded as the
//! messages of either end must give frames or errors, never a panic, a hang or a huge
//! allocation (a length prefix over the maximum is refused before allocating).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_supervisors::ipc::{ChildMessage, SupervisorMessage};
use warden_supervisors::wire::{self, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    for _ in 0..64 {
        match wire::read_frame_blocking(&mut input, MAX_FRAME) {
            Ok(Some(payload)) => {
                let _ = wire::decode::<ChildMessage>(&payload);
                let _ = wire::decode::<SupervisorMessage>(&payload);
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The payload decoders alone, on the raw bytes.
    let _ = wire::decode::<ChildMessage>(data);
    let _ = wire::decode::<SupervisorMessage>(data);
});
