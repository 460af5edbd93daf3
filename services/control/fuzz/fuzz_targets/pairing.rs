//! Arbitrary PairStart / PairConfirm bytes into a PairingHost (and the host's challenge into
//! nothing: this is the host's attack surface). The input is a sequence of length-prefixed
//! ClientMessages, as on the pairing stream; also one fixed honest client is run against the
//! fuzzer's confirmation bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use punktfunk_control::framing::FrameDecoder;
use punktfunk_control::pairing::PairingHost;
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
});
