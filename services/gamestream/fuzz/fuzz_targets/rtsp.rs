//! The RTSP request parser and the responder (DESCRIBE/SETUP/ANNOUNCE/PLAY), fed arbitrary
//! requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::rtsp::{RtspConfig, RtspSession, parse_request};
use punktfunk_gamestream::xml::CodecSupport;

fuzz_target!(|data: &[u8]| {
    let mut session = RtspSession::new(RtspConfig {
        audio_port: 48000,
        video_port: 47998,
        control_port: 47999,
        session_token: "DEADBEEFCAFE".into(),
        ping_payload: *b"0123456789ABCDEF",
        connect_data: 1,
        codecs: CodecSupport { hevc: true, hevc_main10: true, ..Default::default() },
        surround: true,
        encryption_supported: 7,
        encryption_requested: 1,
        encryption_mandatory: data.first().is_some_and(|b| b & 1 == 1),
        feature_flags: 3,
    });
    let mut rest = data;
    // Several requests back to back, as one connection's bytes could be.
    while let Ok(Some((req, used))) = parse_request(rest) {
        let _ = punktfunk_gamestream::rtsp::parse_ping(rest);
        let (resp, _) = session.handle(&req);
        let _ = resp.to_bytes();
        rest = &rest[used..];
        if used == 0 || rest.is_empty() {
            break;
        }
    }
});
