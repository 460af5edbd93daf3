//! The sans-IO control sessions: Hello/Welcome negotiation, limits, refusals with their codes,
//! reconfigure, probes and clock sync, host and client together.

use punktfunk_control::client::{ClientAction, ClientRequest, ClientSession};
use punktfunk_control::error::{
    CODE_PROTOCOL, CODE_UNSUPPORTED_CODEC, CODE_UNSUPPORTED_MODE, CODE_UNSUPPORTED_VERSION,
    ProtocolError,
};
use punktfunk_control::framing::{FrameDecoder, encode};
use punktfunk_control::host::{HostAction, HostPolicy, HostSession, MAX_PROBE_MS, PROBE_ONLY_MODE};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{
    AudioConfig, ClientMessage, ClockProbe, Goodbye, Hello, HostMessage, KeyframeRequest,
    PairStart, ProbeRequest, ProbeResult, Reconfigure, RefInvalidate, Stats, Welcome,
    client_message, host_message,
};

const MODE_4K: Mode = Mode {
    width: 3840,
    height: 2160,
    refresh_mhz: 120_000,
};

fn policy() -> HostPolicy {
    HostPolicy::new("gaming-pc", "192.0.2.1:9778", 0x1234_5678)
}

fn hello_with(f: impl FnOnce(&mut Hello)) -> ClientMessage {
    let mut h = Hello {
        version: 1,
        client_name: "tv".into(),
        mode: Some(MODE_4K),
        codecs: vec![Codec::Av1 as i32, Codec::Hevc as i32, Codec::H264 as i32],
        bitrate_kbps: 50_000,
        audio: Some(AudioConfig {
            enabled: true,
            channels: 6,
            sample_rate: 44_100,
        }),
        compositor: String::new(),
        data_port: 50_000,
        probe_only: false,
        gamepads: Vec::new(),
        app: String::new(),
    };
    f(&mut h);
    ClientMessage {
        msg: Some(client_message::Msg::Hello(h)),
    }
}

fn cm(m: client_message::Msg) -> ClientMessage {
    ClientMessage { msg: Some(m) }
}

fn welcome_of(actions: &[HostAction]) -> Welcome {
    match &actions[0] {
        HostAction::Send(HostMessage {
            msg: Some(host_message::Msg::Welcome(w)),
        }) => w.clone(),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

fn error_code_of(actions: &[HostAction]) -> (String, String) {
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(matches!(actions[1], HostAction::Close { .. }));
    match &actions[0] {
        HostAction::Send(HostMessage {
            msg: Some(host_message::Msg::Error(e)),
        }) => (e.code.clone(), e.message.clone()),
        other => panic!("expected Error, got {other:?}"),
    }
}

fn started(h: Hello) -> HostSession {
    let mut s = HostSession::new(policy()).unwrap();
    s.on_message(0, cm(client_message::Msg::Hello(h))).unwrap();
    assert!(s.resolved().is_some());
    s
}

fn hello_msg(f: impl FnOnce(&mut Hello)) -> Hello {
    match hello_with(f).msg {
        Some(client_message::Msg::Hello(h)) => h,
        _ => unreachable!(),
    }
}

#[test]
fn hello_welcome_happy_path() {
    let mut s = HostSession::new(policy()).unwrap();
    let actions = s.on_message(1, hello_with(|_| {})).unwrap();
    assert_eq!(actions.len(), 2);
    let w = welcome_of(&actions);
    assert_eq!(w.version, 1);
    assert_eq!(w.host_name, "gaming-pc");
    assert_eq!(w.mode, Some(MODE_4K));
    assert_eq!(
        w.codec,
        Codec::Hevc as i32,
        "the host's first codec the client offers"
    );
    assert_eq!(w.bitrate_kbps, 50_000);
    assert_eq!(
        w.audio,
        Some(AudioConfig {
            enabled: true,
            channels: 2,
            sample_rate: 48_000
        })
    );
    assert_eq!(w.data_addr, "192.0.2.1:9778");
    assert_eq!(w.session_id, 0x1234_5678);
    assert_eq!(w.fec, Some(policy().fec));
    let HostAction::StartStream(r) = &actions[1] else {
        panic!("expected StartStream")
    };
    assert_eq!(r.data_port, 50_000);
    assert_eq!(r.codec, Codec::Hevc);
    assert_eq!(r.data_plane.frame_interval_ns, 8_333_333);
    assert!(!r.probe_only);
    assert_eq!(r.compositor, None);
}

#[test]
fn bitrate_is_clamped() {
    for (asked, got) in [
        (100, 500),
        (5_000_000, 2_000_000),
        (0, 20_000),
        (500, 500),
        (2_000_000, 2_000_000),
    ] {
        let mut s = HostSession::new(policy()).unwrap();
        let a = s
            .on_message(0, hello_with(|h| h.bitrate_kbps = asked))
            .unwrap();
        assert_eq!(welcome_of(&a).bitrate_kbps, got, "asked {asked}");
    }
    // A lower configured max.
    let mut p = policy();
    p.max_bitrate_kbps = 100_000;
    let mut s = HostSession::new(p).unwrap();
    let a = s
        .on_message(0, hello_with(|h| h.bitrate_kbps = 5_000_000))
        .unwrap();
    assert_eq!(welcome_of(&a).bitrate_kbps, 100_000);
}

#[test]
fn invalid_policies_are_refused() {
    let mut p = policy();
    p.max_bitrate_kbps = 3_000_000;
    assert!(HostSession::new(p).is_err());
    let mut p = policy();
    p.codecs.clear();
    assert!(HostSession::new(p).is_err());
    let mut p = policy();
    p.fec.shard_bytes = 3;
    assert!(HostSession::new(p).is_err());
    let mut p = policy();
    p.max_mode.width = 10_000;
    assert!(HostSession::new(p).is_err());
}

#[test]
fn messages_before_hello_are_errors() {
    let before = [
        client_message::Msg::Stats(Stats::default()),
        client_message::Msg::ClockProbe(ClockProbe::default()),
        client_message::Msg::Goodbye(Goodbye::default()),
        client_message::Msg::KeyframeRequest(KeyframeRequest::default()),
    ];
    for m in before {
        let mut s = HostSession::new(policy()).unwrap();
        let e = s.on_message(0, cm(m)).unwrap_err();
        assert_eq!(e, ProtocolError::ExpectedHelloFirst);
        assert_eq!(e.to_string(), "expected Hello first");
        let Some(host_message::Msg::Error(em)) = HostSession::error_message(&e).msg else {
            panic!()
        };
        assert_eq!(em.code, CODE_PROTOCOL);
        assert_eq!(em.message, "expected Hello first");
        assert!(s.is_closed());
        // Closed afterwards, even for a Hello.
        assert_eq!(
            s.on_message(0, hello_with(|_| {})).unwrap_err(),
            ProtocolError::Closed
        );
    }
}

#[test]
fn second_hello_is_an_error() {
    let mut s = started(hello_msg(|_| {}));
    assert_eq!(
        s.on_message(5, hello_with(|_| {})).unwrap_err(),
        ProtocolError::DuplicateHello
    );
}

#[test]
fn empty_and_pairing_messages_are_errors() {
    let mut s = HostSession::new(policy()).unwrap();
    assert_eq!(
        s.on_message(0, ClientMessage { msg: None }).unwrap_err(),
        ProtocolError::EmptyMessage
    );
    // Unknown oneof case (tag 99) decodes to an empty oneof.
    let mut dec = FrameDecoder::<ClientMessage>::new();
    let unknown = [3u8, 0x9a, 0x06, 0x00]; // field 99, length-delimited, empty
    let msgs = dec.push(&unknown).unwrap();
    assert_eq!(msgs, vec![ClientMessage { msg: None }]);
    let mut s = started(hello_msg(|_| {}));
    assert_eq!(
        s.on_message(0, msgs[0].clone()).unwrap_err(),
        ProtocolError::EmptyMessage
    );
    for started_first in [false, true] {
        let mut s = if started_first {
            started(hello_msg(|_| {}))
        } else {
            HostSession::new(policy()).unwrap()
        };
        assert_eq!(
            s.on_message(0, cm(client_message::Msg::PairStart(PairStart::default())))
                .unwrap_err(),
            ProtocolError::PairingOnSessionStream
        );
    }
}

#[test]
fn version_mismatch_is_refused() {
    let mut s = HostSession::new(policy()).unwrap();
    let a = s.on_message(0, hello_with(|h| h.version = 2)).unwrap();
    let (code, msg) = error_code_of(&a);
    assert_eq!(code, CODE_UNSUPPORTED_VERSION);
    assert!(msg.contains("punktfunk/1"), "{msg}");
    assert!(s.is_closed());
}

#[test]
fn the_hosts_codec_order_decides() {
    // A software-only host prefers H.264 even when the client lists HEVC first.
    let mut p = policy();
    p.codecs = vec![Codec::H264, Codec::Hevc];
    let mut s = HostSession::new(p).unwrap();
    let actions = s.on_message(1, hello_with(|_| {})).unwrap();
    assert_eq!(welcome_of(&actions).codec, Codec::H264 as i32);
    // A codec the client cannot decode is skipped.
    let mut p = policy();
    p.codecs = vec![Codec::Av1, Codec::Hevc];
    let mut s = HostSession::new(p).unwrap();
    let actions = s
        .on_message(
            1,
            hello_with(|h| h.codecs = vec![Codec::H264 as i32, Codec::Hevc as i32]),
        )
        .unwrap();
    assert_eq!(welcome_of(&actions).codec, Codec::Hevc as i32);
}

#[test]
fn no_common_codec_is_refused() {
    let mut s = HostSession::new(policy()).unwrap();
    let a = s
        .on_message(0, hello_with(|h| h.codecs = vec![Codec::Av1 as i32, 0, 77]))
        .unwrap();
    let (code, msg) = error_code_of(&a);
    assert_eq!(code, CODE_UNSUPPORTED_CODEC);
    assert!(
        msg.contains("CODEC_HEVC") && msg.contains("CODEC_H264"),
        "{msg}"
    );
}

#[test]
fn modes_are_refused_or_refresh_clamped() {
    let mut p = policy();
    p.max_mode = Mode {
        width: 3840,
        height: 2160,
        refresh_mhz: 144_000,
    };
    for bad in [
        None,
        Some(Mode {
            width: 7680,
            height: 4320,
            refresh_mhz: 60_000,
        }),
        Some(Mode {
            width: 318,
            height: 200,
            refresh_mhz: 60_000,
        }),
        Some(Mode {
            width: 1921,
            height: 1080,
            refresh_mhz: 60_000,
        }),
        Some(Mode {
            width: 1920,
            height: 1080,
            refresh_mhz: 0,
        }),
    ] {
        let mut s = HostSession::new(p.clone()).unwrap();
        let a = s.on_message(0, hello_with(|h| h.mode = bad)).unwrap();
        assert_eq!(error_code_of(&a).0, CODE_UNSUPPORTED_MODE, "{bad:?}");
    }
    let mut s = HostSession::new(p).unwrap();
    let a = s
        .on_message(
            0,
            hello_with(|h| {
                h.mode = Some(Mode {
                    width: 1920,
                    height: 1080,
                    refresh_mhz: 360_000,
                })
            }),
        )
        .unwrap();
    assert_eq!(welcome_of(&a).mode.unwrap().refresh_mhz, 144_000);
}

#[test]
fn bad_hello_fields_are_refused() {
    for f in [
        (|h: &mut Hello| h.data_port = 0) as fn(&mut Hello),
        |h| h.data_port = 70_000,
        |h| h.client_name = String::new(),
        |h| h.client_name = "n".repeat(200),
        |h| h.compositor = "../../bin/sh".into(),
        |h| h.app = "a".repeat(257),
        |h| h.app = "Test\npattern".into(),
    ] {
        let mut s = HostSession::new(policy()).unwrap();
        let a = s.on_message(0, hello_with(f)).unwrap();
        assert_eq!(error_code_of(&a).0, CODE_PROTOCOL);
    }
    let mut s = HostSession::new(policy()).unwrap();
    let a = s
        .on_message(0, hello_with(|h| h.compositor = "gamescope".into()))
        .unwrap();
    let HostAction::StartStream(r) = &a[1] else {
        panic!()
    };
    assert_eq!(r.compositor.as_deref(), Some("gamescope"));
    assert_eq!(r.app, None, "no app asked: the desktop");
    let mut s = HostSession::new(policy()).unwrap();
    let a = s
        .on_message(0, hello_with(|h| h.app = "Test pattern".into()))
        .unwrap();
    let HostAction::StartStream(r) = &a[1] else {
        panic!()
    };
    assert_eq!(r.app.as_deref(), Some("Test pattern"));
}

#[test]
fn audio_resolution() {
    let mut s = HostSession::new(policy()).unwrap();
    let a = s.on_message(0, hello_with(|h| h.audio = None)).unwrap();
    assert_eq!(welcome_of(&a).audio.map(|a| a.enabled), Some(false));
    let mut p = policy();
    p.audio = None;
    let mut s = HostSession::new(p).unwrap();
    let a = s.on_message(0, hello_with(|_| {})).unwrap();
    let HostAction::StartStream(r) = &a[1] else {
        panic!()
    };
    assert_eq!(r.audio, None);
}

#[test]
fn probe_bounds() {
    let mut s = started(hello_msg(|_| {}));
    let probe = |kbps, ms| {
        cm(client_message::Msg::ProbeRequest(ProbeRequest {
            target_kbps: kbps,
            duration_ms: ms,
        }))
    };
    let a = s.on_message(0, probe(u32::MAX, u32::MAX)).unwrap();
    assert_eq!(
        a,
        vec![HostAction::StartProbe {
            kbps: 2_000_000,
            duration_ms: MAX_PROBE_MS
        }]
    );
    // While it runs: refused.
    assert_eq!(
        s.clone()
            .on_message(1_000_000_000, probe(1000, 1000))
            .unwrap_err(),
        ProtocolError::ProbeInProgress
    );
    // The shell reports; the next one may start at once.
    let m = s.probe_finished(ProbeResult {
        packets_sent: 10,
        ..Default::default()
    });
    assert!(matches!(m.msg, Some(host_message::Msg::ProbeResult(_))));
    let a = s.on_message(2_000_000_000, probe(0, 0)).unwrap();
    assert_eq!(
        a,
        vec![HostAction::StartProbe {
            kbps: 500,
            duration_ms: 100
        }]
    );
    // After its duration has passed, a new one is allowed even without probe_finished.
    assert!(s.on_message(2_100_000_000, probe(9_000, 500)).is_ok());
}

#[test]
fn session_control_messages() {
    let mut s = started(hello_msg(|_| {}));
    assert_eq!(
        s.on_message(
            1,
            cm(client_message::Msg::KeyframeRequest(KeyframeRequest {
                lost_frame: 42
            }))
        )
        .unwrap(),
        vec![HostAction::Keyframe { lost_frame: 42 }]
    );
    assert_eq!(
        s.on_message(
            1,
            cm(client_message::Msg::RefInvalidate(RefInvalidate {
                first_frame: 3,
                last_frame: 7
            }))
        )
        .unwrap(),
        vec![HostAction::RefInvalidate {
            first_frame: 3,
            last_frame: 7
        }]
    );
    assert!(
        s.clone()
            .on_message(
                1,
                cm(client_message::Msg::RefInvalidate(RefInvalidate {
                    first_frame: 8,
                    last_frame: 7
                }))
            )
            .is_err()
    );
    // Clock echo.
    let a = s
        .on_message(
            777,
            cm(client_message::Msg::ClockProbe(ClockProbe {
                round: 4,
                client_send_ns: 55,
            })),
        )
        .unwrap();
    let HostAction::Send(HostMessage {
        msg: Some(host_message::Msg::ClockEcho(e)),
    }) = &a[0]
    else {
        panic!()
    };
    assert_eq!(
        (e.round, e.client_send_ns, e.host_recv_ns, e.host_send_ns),
        (4, 55, 777, 777)
    );
    // Stats rate bound: 100 ms.
    let st = || cm(client_message::Msg::Stats(Stats::default()));
    assert_eq!(s.on_message(1_000_000_000, st()).unwrap().len(), 1);
    assert!(s.on_message(1_050_000_000, st()).unwrap().is_empty());
    assert_eq!(s.on_message(1_100_000_000, st()).unwrap().len(), 1);
    assert_eq!(s.stats_dropped(), 1);
    // Goodbye closes.
    let a = s
        .on_message(
            2,
            cm(client_message::Msg::Goodbye(Goodbye {
                reason: "done".into(),
            })),
        )
        .unwrap();
    assert_eq!(
        a,
        vec![HostAction::Close {
            reason: "done".into()
        }]
    );
    assert_eq!(s.on_message(3, st()).unwrap_err(), ProtocolError::Closed);
}

#[test]
fn a_reconfigure_the_shell_could_not_apply_is_reverted_and_told() {
    let mut s = started(hello_msg(|_| {}));
    let before = s.resolved().unwrap().clone();
    let fhd = Mode {
        width: 1920,
        height: 1080,
        refresh_mhz: 30_000,
    };
    let a = s
        .on_message(
            1,
            cm(client_message::Msg::Reconfigure(Reconfigure {
                mode: Some(fhd),
                bitrate_kbps: 7_000,
            })),
        )
        .unwrap();
    assert!(matches!(a[0], HostAction::Reconfigure { .. }));
    // Media refused it: what still holds is the old mode and bitrate, and the client hears so.
    let m = s
        .reconfigure_refused(before.mode, before.bitrate_kbps)
        .expect("streaming");
    let Some(host_message::Msg::Reconfigured(r)) = m.msg else {
        panic!("expected Reconfigured, got {m:?}")
    };
    assert_eq!(
        (r.mode, r.bitrate_kbps),
        (Some(before.mode), before.bitrate_kbps)
    );
    let now = s.resolved().unwrap();
    assert_eq!(
        (now.mode, now.bitrate_kbps),
        (before.mode, before.bitrate_kbps)
    );
    assert_eq!(now.data_plane, before.data_plane);
}

#[test]
fn reconfigure_rules() {
    let mut s = started(hello_msg(|_| {}));
    let rc = |mode, kbps| {
        cm(client_message::Msg::Reconfigure(Reconfigure {
            mode,
            bitrate_kbps: kbps,
        }))
    };
    let reconfigured = |a: &HostAction| match a {
        HostAction::Send(HostMessage {
            msg: Some(host_message::Msg::Reconfigured(r)),
        }) => *r,
        other => panic!("expected reconfigured, got {other:?}"),
    };
    let fhd = Mode {
        width: 1920,
        height: 1080,
        refresh_mhz: 60_000,
    };
    let a = s.on_message(1, rc(Some(fhd), 9_000_000)).unwrap();
    assert_eq!(
        a[0],
        HostAction::Reconfigure {
            mode: fhd,
            bitrate_kbps: 2_000_000
        }
    );
    assert_eq!(reconfigured(&a[1]).mode, Some(fhd));
    assert_eq!(
        s.resolved().unwrap().data_plane.frame_interval_ns,
        16_666_667
    );
    // Nothing changes: only the answer.
    let a = s.on_message(2, rc(None, 0)).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(reconfigured(&a[0]).bitrate_kbps, 2_000_000);
    // Unacceptable mode: kept, bitrate still applied, session goes on.
    let a = s
        .on_message(
            3,
            rc(
                Some(Mode {
                    width: 99_999,
                    height: 5,
                    refresh_mhz: 60_000,
                }),
                1_000,
            ),
        )
        .unwrap();
    assert_eq!(
        a[0],
        HostAction::Reconfigure {
            mode: fhd,
            bitrate_kbps: 1_000
        }
    );
    assert_eq!(reconfigured(&a[1]).mode, Some(fhd));
    assert!(!s.is_closed());
}

#[test]
fn probe_only_session() {
    let mut s = HostSession::new(policy()).unwrap();
    let a = s
        .on_message(
            0,
            hello_with(|h| {
                h.probe_only = true;
                h.mode = None;
                h.codecs.clear();
            }),
        )
        .unwrap();
    assert_eq!(welcome_of(&a).mode, Some(PROBE_ONLY_MODE));
    let HostAction::StartProbeSession(r) = &a[1] else {
        panic!("expected StartProbeSession, got {:?}", a[1])
    };
    assert!(r.probe_only);
    assert!(
        s.clone()
            .on_message(
                1,
                cm(client_message::Msg::KeyframeRequest(Default::default()))
            )
            .is_err()
    );
    assert!(
        s.on_message(
            1,
            cm(client_message::Msg::ProbeRequest(ProbeRequest {
                target_kbps: 100_000,
                duration_ms: 2000
            }))
        )
        .is_ok()
    );
}

// ---- client against host, wired together in memory ----

fn request() -> ClientRequest {
    ClientRequest {
        name: "living-room".into(),
        mode: Mode {
            width: 2560,
            height: 1440,
            refresh_mhz: 165_000,
        },
        codecs: vec![Codec::Hevc, Codec::H264],
        bitrate_kbps: 150_000,
        audio: Some(AudioConfig {
            enabled: true,
            channels: 2,
            sample_rate: 48_000,
        }),
        data_port: 47_000,
        compositor: None,
        app: None,
        probe_only: false,
        gamepads: Vec::new(),
    }
}

/// Host clock = client clock + SKEW. Uplink/downlink delays vary per round; round 5 is the
/// fastest and symmetric-ish.
const SKEW: i64 = -1_234_567_890_123;
const UP: [u64; 8] = [
    900_000, 400_000, 2_000_000, 350_000, 700_000, 120_000, 3_000_000, 500_000,
];
const DOWN: [u64; 8] = [
    100_000, 1_600_000, 300_000, 900_000, 650_000, 180_000, 200_000, 2_500_000,
];

#[test]
fn client_and_host_end_in_clock_sync() {
    let mut host = HostSession::new(policy()).unwrap();
    let mut client = ClientSession::new(request());
    let to_host = |c: u64| (i128::from(c) + i128::from(SKEW)) as u64;

    let mut client_now: u64 = 5_000_000_000_000;
    // Messages go through the real framing in both directions.
    let mut c2h = Vec::new();
    encode(&client.hello(), &mut c2h).unwrap();
    let mut host_dec = FrameDecoder::<ClientMessage>::new();
    let mut client_dec = FrameDecoder::<HostMessage>::new();

    let mut round = 0usize;
    let mut welcomed = None;
    let mut synced = None;
    let mut started = false;
    for _ in 0..100 {
        if c2h.is_empty() {
            break;
        }
        // Client → host: uplink delay.
        let up = UP[round.min(7)];
        let down = DOWN[round.min(7)];
        client_now += up;
        let mut h2c = Vec::new();
        for m in host_dec.push(&std::mem::take(&mut c2h)).unwrap() {
            let is_probe = matches!(m.msg, Some(client_message::Msg::ClockProbe(_)));
            for a in host.on_message(to_host(client_now), m).unwrap() {
                match a {
                    HostAction::Send(m) => encode(&m, &mut h2c).unwrap(),
                    HostAction::StartStream(r) => {
                        assert_eq!(r.client_name, "living-room");
                        assert_eq!(r.data_port, 47_000);
                        started = true;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if is_probe {
                round += 1;
            }
        }
        // Host processing time, then downlink.
        client_now += 20_000 + down;
        for m in client_dec.push(&h2c).unwrap() {
            for a in client.on_message(client_now, m).unwrap() {
                match a {
                    ClientAction::Send(m) => encode(&m, &mut c2h).unwrap(),
                    ClientAction::Welcomed(w) => welcomed = Some(w),
                    ClientAction::ClockSynced(e) => synced = Some(e),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    assert!(started);
    let w = welcomed.expect("welcomed");
    assert_eq!(w.codec, Codec::Hevc as i32);
    assert_eq!(w.bitrate_kbps, 150_000);
    assert_eq!(client.data_plane().unwrap().frame_interval_ns, 6_060_606);
    assert_eq!(round, 8, "eight clock rounds");
    let est = synced.expect("clock synced");
    assert_eq!(client.clock(), Some(est));
    // The minimum-RTT round (index 5): 120 µs up + 180 µs down + the 20 µs the host held the
    // probe (HostSession stamps host_recv = host_send = receipt time, so the hold counts as
    // downlink delay unless the shell patches host_send_ns).
    assert_eq!(est.rtt_ns, 320_000);
    let err = (i128::from(est.offset_ns) - i128::from(SKEW)).unsigned_abs();
    assert!(
        err <= u128::from(est.error_bound_ns()),
        "error {err} > bound"
    );
    assert_eq!(err, 40_000, "(down + hold − up) / 2 of the best round");
    // Conversions.
    let host_t = to_host(client_now);
    let back = est.to_client_time(host_t);
    assert!(back.abs_diff(client_now) <= est.error_bound_ns());

    // Goodbye from the client closes the host session.
    let bye = client.goodbye("user quit");
    let a = host.on_message(to_host(client_now), bye).unwrap();
    assert_eq!(
        a,
        vec![HostAction::Close {
            reason: "user quit".into()
        }]
    );
}

#[test]
fn client_sees_host_refusal_as_closed() {
    let mut host = HostSession::new(policy()).unwrap();
    let mut req = request();
    req.codecs = vec![Codec::Av1];
    let mut client = ClientSession::new(req);
    let a = host.on_message(0, client.hello()).unwrap();
    let HostAction::Send(err) = a[0].clone() else {
        panic!()
    };
    let ca = client.on_message(0, err).unwrap();
    assert!(matches!(
        &ca[0],
        ClientAction::Closed { code: Some(c), reason } if c == CODE_UNSUPPORTED_CODEC && reason.contains("no codec in common")
    ));
    assert!(client.is_closed());
}

#[test]
fn client_protocol_rules() {
    let welcome = |s: &mut ClientSession| {
        let mut host = HostSession::new(policy()).unwrap();
        let a = host.on_message(0, s.hello()).unwrap();
        let HostAction::Send(w) = a[0].clone() else {
            panic!()
        };
        w
    };
    // Welcome before Hello.
    let mut c = ClientSession::new(request());
    let w = welcome(&mut ClientSession::new(request()));
    assert!(c.on_message(0, w.clone()).is_err());
    // Duplicate Welcome, echo mismatch, unsolicited ProbeResult.
    let mut c = ClientSession::new(request());
    let w = welcome(&mut c);
    let a = c.on_message(10, w.clone()).unwrap();
    assert!(matches!(a[0], ClientAction::Welcomed(_)));
    assert!(matches!(
        &a[1],
        ClientAction::Send(ClientMessage {
            msg: Some(client_message::Msg::ClockProbe(ClockProbe {
                round: 0,
                client_send_ns: 10
            }))
        })
    ));
    assert_eq!(
        c.clone().on_message(11, w).unwrap_err(),
        ProtocolError::DuplicateWelcome
    );
    let bad_echo = HostMessage {
        msg: Some(host_message::Msg::ClockEcho(
            punktfunk_proto::control::ClockEcho {
                round: 0,
                client_send_ns: 9,
                host_recv_ns: 1,
                host_send_ns: 1,
            },
        )),
    };
    assert!(c.clone().on_message(12, bad_echo).is_err());
    assert!(
        c.clone()
            .on_message(
                12,
                HostMessage {
                    msg: Some(host_message::Msg::ProbeResult(Default::default()))
                }
            )
            .is_err()
    );
    assert_eq!(
        c.clone()
            .on_message(12, HostMessage { msg: None })
            .unwrap_err(),
        ProtocolError::EmptyMessage
    );
    // Probe requests are one at a time.
    assert!(c.probe_request(10_000, 1000).is_some());
    assert!(c.probe_request(10_000, 1000).is_none());
    let a = c
        .on_message(
            13,
            HostMessage {
                msg: Some(host_message::Msg::ProbeResult(ProbeResult {
                    packets_sent: 5,
                    ..Default::default()
                })),
            },
        )
        .unwrap();
    assert!(matches!(a[0], ClientAction::ProbeResult(_)));
    assert!(c.probe_request(10_000, 1000).is_some());
    // A Welcome whose codec we never offered is rejected.
    let mut c = ClientSession::new(request());
    let mut w = welcome(&mut c);
    if let Some(host_message::Msg::Welcome(ww)) = &mut w.msg {
        ww.codec = Codec::Av1 as i32;
    }
    assert!(c.on_message(0, w).is_err());
}
