//! The HTTP request target parser and the typed `/launch` parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::http::{LaunchRequest, parse_target};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((_, q)) = parse_target(target) {
        let _ = LaunchRequest::from_query(&q, false);
        let _ = LaunchRequest::from_query(&q, true);
        let _ = q.hex_bounded("clientcert", 4096);
    }
});
