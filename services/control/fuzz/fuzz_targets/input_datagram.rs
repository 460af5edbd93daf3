//! Arbitrary bytes as a client's input datagrams: decode_input → InputMapper → seat event.
//! The first 8 bytes are the host's receive time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_control::input::{InputMapper, decode_input};

fuzz_target!(|data: &[u8]| {
    let Some((now, data)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now = u64::from_le_bytes(*now);
    let mut mapper = InputMapper::new((1920, 1080));
    for (i, chunk) in data.chunks(64).enumerate() {
        if let Ok(ev) = decode_input(chunk) {
            let _ = mapper.map(&ev, now.wrapping_add(i as u64 * 1000));
        }
    }
    if let Ok(ev) = decode_input(data) {
        let _ = mapper.map(&ev, now);
    }
});
