//! Arbitrary PairStart / PairConfirm bytes into a PairingHost (the host's attack surface):
//! 1. the input as a framed pairing stream (length-prefixed ClientMessages);
//! 2. the input as one PairStart body, then as one PairConfirm body, on a fresh host;
//! 3. a real client's PairStart, then the input as the PairConfirm body (confirm path with a
//!    real SPAKE2 key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use punktfunk_control::framing::FrameDecoder;
use punktfunk_control::pairing::{PairingClient, PairingHost};
use punktfunk_proto::control::{ClientMessage, PairConfirm, PairStart};

fuzz_target!(|data: &[u8]| {
    let Ok(mut host) = PairingHost::new("123456", [1; 32], [2; 32], "host") else {
        return;
    };
    // 1. The raw bytes as a framed pairing stream.
    let mut dec = FrameDecoder::<ClientMessage>::new();
    if let Ok(msgs) = dec.push(data) {
        for m in msgs {
            if let Err(e) = host.on_message(m) {
                let _ = e.to_host_message(host.host_name());
            }
        }
    }
    // 2. The raw bytes as one PairStart body, then as one PairConfirm body.
    let Ok(mut host) = PairingHost::new("654321", [1; 32], [2; 32], "host") else {
        return;
    };
    if let Ok(start) = PairStart::decode(data) {
        let _ = host.on_pair_start(start);
    }
    if let Ok(confirm) = PairConfirm::decode(data) {
        let _ = host.on_pair_confirm(confirm);
    }
    // 3. A real exchange, then a fuzzed confirmation.
    let Ok(mut host) = PairingHost::new("123456", [1; 32], [2; 32], "host") else {
        return;
    };
    let Ok((_client, start)) = PairingClient::start("123456", "c", [2; 32], [1; 32]) else {
        return;
    };
    if host.on_pair_start(start).is_ok()
        && let Ok(confirm) = PairConfirm::decode(data)
    {
        let _ = host.on_pair_confirm(confirm);
    }
});
