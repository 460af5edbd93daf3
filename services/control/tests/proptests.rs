//! Property tests: arbitrary client messages never break the host session's invariants.

use proptest::prelude::*;
use punktfunk_control::client::{ClientRequest, ClientSession};
use punktfunk_control::error::ProtocolError;
use punktfunk_control::framing::{FrameDecoder, MAX_CONTROL_MESSAGE, encode};
use punktfunk_control::host::{
    HostAction, HostPolicy, HostSession, MAX_BITRATE_KBPS, MAX_HEIGHT, MAX_PROBE_MS,
    MAX_REFRESH_MHZ, MAX_WIDTH, MIN_BITRATE_KBPS, MIN_PROBE_MS, MIN_WIDTH,
};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{
    AudioConfig, ClientMessage, ClockProbe, Goodbye, Hello, HostMessage, KeyframeRequest,
    PairConfirm, PairStart, ProbeRequest, Reconfigure, RefInvalidate, Stats, client_message,
};

fn policy() -> HostPolicy {
    HostPolicy::new("host", "192.0.2.1:9778", 7)
}

fn mode() -> impl Strategy<Value = Option<Mode>> {
    prop_oneof![
        Just(None),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(w, h, r)| Some(Mode {
            width: w,
            height: h,
            refresh_mhz: r
        })),
        (160u32..4000, 100u32..2200, 0u32..600_000).prop_map(|(w, h, r)| Some(Mode {
            width: w * 2,
            height: h * 2,
            refresh_mhz: r
        })),
    ]
}

fn hello() -> impl Strategy<Value = client_message::Msg> {
    (
        prop_oneof![Just(1u32), any::<u32>()],
        "[a-z\u{0}-\u{1f}]{0,4}|[a-z]{1,20}",
        mode(),
        proptest::collection::vec(-2i32..6, 0..5),
        any::<u32>(),
        proptest::option::of((any::<bool>(), any::<u32>(), any::<u32>())),
        "|gamescope|[ -~]{0,80}",
        prop_oneof![Just(5000u32), any::<u32>()],
        any::<bool>(),
        "|Test pattern|[ -~\u{0}\u{7f}]{0,300}",
    )
        .prop_map(
            |(version, name, mode, codecs, bitrate, audio, comp, port, probe_only, app)| {
                client_message::Msg::Hello(Hello {
                    version,
                    client_name: name,
                    mode,
                    codecs,
                    bitrate_kbps: bitrate,
                    audio: audio.map(|(enabled, channels, sample_rate)| AudioConfig {
                        enabled,
                        channels,
                        sample_rate,
                    }),
                    compositor: comp,
                    data_port: port,
                    probe_only,
                    gamepads: Vec::new(),
                    app,
                })
            },
        )
}

fn client_msg() -> impl Strategy<Value = ClientMessage> {
    let m = prop_oneof![
        3 => hello(),
        2 => (mode(), any::<u32>()).prop_map(|(mode, b)| client_message::Msg::Reconfigure(
            Reconfigure { mode, bitrate_kbps: b }
        )),
        1 => any::<u64>().prop_map(|f| client_message::Msg::KeyframeRequest(KeyframeRequest {
            lost_frame: f
        })),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| client_message::Msg::RefInvalidate(
            RefInvalidate { first_frame: a, last_frame: b }
        )),
        1 => (any::<u32>(), any::<u64>()).prop_map(|(r, t)| client_message::Msg::ClockProbe(
            ClockProbe { round: r, client_send_ns: t }
        )),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(k, d)| client_message::Msg::ProbeRequest(
            ProbeRequest { target_kbps: k, duration_ms: d }
        )),
        2 => any::<u64>().prop_map(|n| client_message::Msg::Stats(Stats {
            frames_received: n,
            ..Default::default()
        })),
        1 => "[ -~]{0,10}".prop_map(|r| client_message::Msg::Goodbye(Goodbye { reason: r })),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| client_message::Msg::PairStart(
            PairStart { client_name: "x".into(), spake_message: b }
        )),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| client_message::Msg::PairConfirm(
            PairConfirm { client_confirm: b }
        )),
    ];
    prop_oneof![
        1 => Just(ClientMessage { msg: None }),
        12 => m.prop_map(|m| ClientMessage { msg: Some(m) }),
    ]
}

/// Checks the host's answer to one message against the invariants every answer must keep.
fn check_host_step(
    s: &mut HostSession,
    now: u64,
    msg: ClientMessage,
    was_closed: bool,
) -> Result<Vec<HostAction>, ProtocolError> {
    let before = s.messages_received();
    let r = s.on_message(now, msg);
    assert_eq!(s.messages_received(), before + 1);
    if was_closed {
        assert_eq!(r, Err(ProtocolError::Closed), "closed sessions stay closed");
    }
    match &r {
        Err(e) => {
            assert!(s.is_closed(), "an error ends the session");
            let m = HostSession::error_message(e);
            assert!(m.msg.is_some());
        }
        Ok(actions) => {
            let closes = actions
                .iter()
                .any(|a| matches!(a, HostAction::Close { .. }));
            assert_eq!(closes, s.is_closed());
            for a in actions {
                match a {
                    HostAction::StartStream(r) | HostAction::StartProbeSession(r) => {
                        assert!((MIN_BITRATE_KBPS..=MAX_BITRATE_KBPS).contains(&r.bitrate_kbps));
                        assert!(r.mode.width <= MAX_WIDTH && r.mode.height <= MAX_HEIGHT);
                        assert!(r.mode.refresh_mhz > 0 && r.mode.refresh_mhz <= MAX_REFRESH_MHZ);
                        assert!(r.data_port != 0);
                        r.data_plane.validate().unwrap();
                    }
                    HostAction::Reconfigure { mode, bitrate_kbps } => {
                        assert!((MIN_BITRATE_KBPS..=MAX_BITRATE_KBPS).contains(bitrate_kbps));
                        assert!(mode.width >= MIN_WIDTH && mode.width <= MAX_WIDTH);
                    }
                    HostAction::StartProbe { kbps, duration_ms } => {
                        assert!((MIN_BITRATE_KBPS..=MAX_BITRATE_KBPS).contains(kbps));
                        assert!((MIN_PROBE_MS..=MAX_PROBE_MS).contains(duration_ms));
                    }
                    HostAction::RefInvalidate {
                        first_frame,
                        last_frame,
                    } => assert!(first_frame <= last_frame),
                    HostAction::Send(m) => {
                        let mut out = Vec::new();
                        encode(m, &mut out).unwrap();
                    }
                    _ => {}
                }
            }
        }
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_message_sequences_progress_or_error(
        msgs in proptest::collection::vec(client_msg(), 0..24),
        steps in proptest::collection::vec(0u64..300_000_000, 24),
    ) {
        let mut s = HostSession::new(policy()).unwrap();
        let mut now = 1_000_000_000u64;
        for (i, m) in msgs.into_iter().enumerate() {
            now += steps[i];
            let was_closed = s.is_closed();
            let _ = check_host_step(&mut s, now, m, was_closed);
        }
    }

    #[test]
    fn arbitrary_bytes_into_decoder_and_host_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(1usize..64, 1..32),
    ) {
        let mut dec = FrameDecoder::<ClientMessage>::new();
        let mut s = HostSession::new(policy()).unwrap();
        let mut rest = &bytes[..];
        let mut i = 0;
        'outer: while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            let mut chunk = &rest[..n];
            rest = &rest[n..];
            i += 1;
            loop {
                match dec.decode(&mut chunk) {
                    Ok(Some(m)) => {
                        let was_closed = s.is_closed();
                        let _ = check_host_step(&mut s, i as u64, m, was_closed);
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
                prop_assert!(dec.buffered() <= MAX_CONTROL_MESSAGE);
            }
        }
    }

    #[test]
    fn valid_message_streams_survive_any_split(
        msgs in proptest::collection::vec(client_msg(), 0..12),
        cuts in proptest::collection::vec(1usize..40, 1..16),
    ) {
        let mut bytes = Vec::new();
        for m in &msgs {
            encode(m, &mut bytes).unwrap();
        }
        let mut dec = FrameDecoder::<ClientMessage>::new();
        let mut got = Vec::new();
        let mut rest = &bytes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            got.extend(dec.push(&rest[..n]).unwrap());
            rest = &rest[n..];
            i += 1;
        }
        dec.finish().unwrap();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_into_client_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        start in any::<bool>(),
    ) {
        let mut c = ClientSession::new(ClientRequest {
            name: "c".into(),
            mode: Mode { width: 1920, height: 1080, refresh_mhz: 60_000 },
            codecs: vec![Codec::H264],
            bitrate_kbps: 0,
            audio: None,
            data_port: 1,
            compositor: None,
            app: None,
            probe_only: false,
            gamepads: Vec::new(),
        });
        if start {
            let _ = c.hello();
        }
        let mut dec = FrameDecoder::<HostMessage>::new();
        if let Ok(msgs) = dec.push(&bytes) {
            for (i, m) in msgs.into_iter().enumerate() {
                let closed = c.is_closed();
                let r = c.on_message(i as u64, m);
                if closed {
                    prop_assert_eq!(r, Err(ProtocolError::Closed));
                }
            }
        }
    }
}
