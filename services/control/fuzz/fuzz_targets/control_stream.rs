//! Arbitrary bytes as a client's session stream: FrameDecoder → HostSession.
//! The first byte picks the chunk size the stream is delivered in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_control::framing::FrameDecoder;
use punktfunk_control::host::{HostPolicy, HostSession};
use punktfunk_proto::control::ClientMessage;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let Ok(mut session) = HostSession::new(HostPolicy::new("host", "192.0.2.1:9778", 1)) else {
        return;
    };
    let mut dec = FrameDecoder::<ClientMessage>::new();
    let mut now = 0u64;
    for part in data.chunks(chunk) {
        let mut rest = part;
        loop {
            match dec.decode(&mut rest) {
                Ok(Some(msg)) => {
                    now += 7_000_000;
                    if let Err(e) = session.on_message(now, msg) {
                        let _ = HostSession::error_message(&e);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
});
