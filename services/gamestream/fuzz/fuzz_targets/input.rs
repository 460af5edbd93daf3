//! Input packets (the payload of control message 0x0206).
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::input::decode_input;

fuzz_target!(|data: &[u8]| {
    let _ = decode_input(data);
});
