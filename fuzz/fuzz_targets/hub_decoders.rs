//! The hub protocol's decoders on arbitrary bytes: the hub's hello decoder (enrollment,
//! limited to MAX_HELLO_BYTES) and reply decoder, and the spoke's request decoder. None
//! may panic, allocate past its limit, or accept a message that does not re-encode to an
//! equal value.
//!
//! cargo +nightly fuzz run hub_decoders      (from the repository root; not built by CI)
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_actors::link::protocol::{
    decode, encode, HubFrame, SpokeFrame, MAX_HELLO_BYTES, MAX_MESSAGE_BYTES,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = decode::<SpokeFrame>(data, MAX_HELLO_BYTES) {
        let again: SpokeFrame = decode(&encode(&hello), usize::MAX).expect("re-decodes");
        assert_eq!(again, hello);
    }
    if let Ok(reply) = decode::<SpokeFrame>(data, MAX_MESSAGE_BYTES) {
        let again: SpokeFrame = decode(&encode(&reply), usize::MAX).expect("re-decodes");
        assert_eq!(again, reply);
    }
    if let Ok(request) = decode::<HubFrame>(data, MAX_MESSAGE_BYTES) {
        let again: HubFrame = decode(&encode(&request), usize::MAX).expect("re-decodes");
        assert_eq!(again, request);
    }
});
