//! The HTTP request target parser, the typed `/launch` parameters, and `/pair` phases fed to
//! the pairing machine (a PIN is typed for every waiting pairing, so phases 2-4 are reached).
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::http::{LaunchRequest, Verb, parse_target};
use punktfunk_gamestream::pairing::{HostIdentity, PairStep, PairingHost, PairingPolicy};
use std::sync::{Arc, Mutex, OnceLock};

fn host() -> &'static Mutex<(PairingHost, u64)> {
    static HOST: OnceLock<Mutex<(PairingHost, u64)>> = OnceLock::new();
    HOST.get_or_init(|| {
        let id = Arc::new(HostIdentity::generate().expect("identity"));
        Mutex::new((PairingHost::new(id, PairingPolicy::default()), 0))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((verb, q)) = parse_target(target) else {
        return;
    };
    let _ = LaunchRequest::from_query(&q, false);
    let _ = LaunchRequest::from_query(&q, true);
    let _ = q.hex_bounded("clientcert", 4096);
    let Ok(mut guard) = host().lock() else {
        return;
    };
    let (host, now) = &mut *guard;
    *now += 1_000_000_000;
    match verb {
        Verb::Unpair => host.handle_unpair(*now, q.get("uniqueid").unwrap_or("")),
        _ => {
            if let PairStep::AwaitPin(id) = host.handle_pair(*now, &q, None) {
                let _ = host.submit_pin(*now, "1234");
                let _ = host.poll_pending(*now, id);
            }
        }
    }
    while host.poll_event().is_some() {}
});
