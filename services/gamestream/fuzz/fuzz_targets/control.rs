//! ENet-carried control payloads: the encrypted framing (arbitrary datagrams, v2 and legacy)
//! and, behind it, the message decoder on arbitrary plaintexts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::control::{ControlCrypto, ControlSession, Direction, decode_client_message};

fuzz_target!(|data: &[u8]| {
    let key = [7u8; 16];
    for v2 in [true, false] {
        let mut s = ControlSession::new(&key, v2, 0);
        let _ = s.handle_packet(1, data);
    }
    if data.len() >= 2 {
        let t = u16::from_le_bytes([data[0], data[1]]);
        let _ = decode_client_message(t, &data[2..]);
        // The same plaintext sealed properly, through the whole receive path.
        if let Ok(p) = ControlCrypto::new(&key, true).seal(Direction::ClientToHost, 0, t, &data[2..]) {
            let mut s = ControlSession::new(&key, true, 0);
            let _ = s.handle_packet(1, &p);
        }
    }
});
