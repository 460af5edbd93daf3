//! RTSP against the requests the real client sent (spec Appendix A.2).

use punktfunk_gamestream::rtsp::*;
use punktfunk_gamestream::xml::CodecSupport;

const ANNOUNCE_BODY: &str = "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\na=x-ml-general.featureFlags:3 \r\na=x-ss-general.encryptionEnabled:5 \r\na=x-ss-video[0].chromaSamplingType:0 \r\na=x-nv-video[0].clientViewportWd:1920 \r\na=x-nv-video[0].clientViewportHt:1080 \r\na=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\na=x-nv-video[0].rateControlMode:4 \r\na=x-nv-video[0].timeoutLengthMs:7000 \r\na=x-nv-video[0].framesWithInvalidRefThreshold:0 \r\na=x-nv-video[0].initialBitrateKbps:15500 \r\na=x-nv-video[0].initialPeakBitrateKbps:15500 \r\na=x-nv-vqos[0].bw.minimumBitrateKbps:15500 \r\na=x-nv-vqos[0].bw.maximumBitrateKbps:15500 \r\na=x-ml-video.configuredBitrateKbps:20000 \r\na=x-nv-vqos[0].fec.enable:1 \r\na=x-nv-vqos[0].videoQualityScoreUpdateTime:5000 \r\na=x-nv-vqos[0].qosTrafficType:0 \r\na=x-nv-aqos.qosTrafficType:0 \r\na=x-nv-general.featureFlags:167 \r\na=x-nv-general.useReliableUdp:13 \r\na=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\na=x-nv-vqos[0].bllFec.enable:0 \r\na=x-nv-vqos[0].drc.enable:0 \r\na=x-nv-general.enableRecoveryMode:0 \r\na=x-nv-video[0].videoEncoderSlicesPerFrame:1 \r\na=x-nv-clientSupportHevc:1 \r\na=x-nv-vqos[0].bitStreamFormat:1 \r\na=x-nv-video[0].dynamicRangeMode:0 \r\na=x-nv-video[0].maxNumReferenceFrames:1 \r\na=x-nv-video[0].clientRefreshRateX100:0 \r\na=x-nv-audio.surround.numChannels:2 \r\na=x-nv-audio.surround.channelMask:3 \r\na=x-nv-audio.surround.enable:0 \r\na=x-nv-audio.surround.AudioQuality:0 \r\na=x-nv-aqos.packetDuration:5 \r\na=x-nv-video[0].encoderCscMode:0 \r\nt=0 0\r\nm=video 47998  \r\n";

fn config() -> RtspConfig {
    RtspConfig {
        audio_port: 48000,
        video_port: 47998,
        control_port: 47999,
        session_token: "DEADBEEFCAFE".into(),
        ping_payload: *b"8F1E0C2A55D0B7E3",
        connect_data: 2_864_434_397,
        codecs: CodecSupport {
            hevc: true,
            ..Default::default()
        },
        surround: true,
        encryption_supported: 5,
        encryption_requested: 1,
        encryption_mandatory: false,
        feature_flags: 0,
    }
}

fn req(text: &str) -> RtspRequest {
    let (r, used) = parse_request(text.as_bytes()).unwrap().expect("complete");
    assert_eq!(used, text.len());
    r
}

fn announce_request(body: &str) -> String {
    format!(
        "ANNOUNCE streamid=control/13/0 RTSP/1.0\r\nCSeq: 6\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\nSession: DEADBEEFCAFE\r\nContent-type: application/sdp\r\nContent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn text(r: &RtspResponse) -> String {
    String::from_utf8(r.to_bytes()).unwrap()
}

#[test]
fn the_captured_handshake() {
    let mut s = RtspSession::new(config());
    let (r, ev) = s.handle(&req("OPTIONS rtsp://127.0.0.1:48010 RTSP/1.0\r\nCSeq: 1\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\n\r\n"));
    assert_eq!(text(&r), "RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    assert_eq!(ev, None);

    let (r, _) = s.handle(&req("DESCRIBE rtsp://127.0.0.1:48010 RTSP/1.0\r\nCSeq: 2\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\nAccept: application/sdp\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"));
    let t = text(&r);
    assert!(t.starts_with("RTSP/1.0 200 OK\r\nCSeq: 2\r\n"));
    let body = t.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        body,
        "a=x-ss-general.featureFlags:0\na=x-ss-general.encryptionSupported:5\na=x-ss-general.encryptionRequested:1\nsprop-parameter-sets=AAAAAU\na=fmtp:97 surround-params=21101\na=fmtp:97 surround-params=21101\na=fmtp:97 surround-params=642012453\na=fmtp:97 surround-params=660012345\na=fmtp:97 surround-params=85301245673\na=fmtp:97 surround-params=88001234567\n"
    );

    let (r, ev) = s.handle(&req("SETUP streamid=audio/0/0 RTSP/1.0\r\nCSeq: 3\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\nTransport: unicast;X-GS-ClientPort=50000-50001\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"));
    assert_eq!(
        text(&r),
        "RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: DEADBEEFCAFE;timeout = 90\r\nTransport: server_port=48000\r\nX-SS-Ping-Payload: 8F1E0C2A55D0B7E3\r\n\r\n"
    );
    assert_eq!(ev, Some(RtspEvent::AudioSetup));
    let (r, ev) = s.handle(&req(
        "SETUP streamid=video/0/0 RTSP/1.0\r\nCSeq: 4\r\nSession: DEADBEEFCAFE\r\n\r\n",
    ));
    assert!(
        text(&r)
            .contains("Transport: server_port=47998\r\nX-SS-Ping-Payload: 8F1E0C2A55D0B7E3\r\n")
    );
    assert_eq!(ev, Some(RtspEvent::VideoSetup));
    let (r, ev) = s.handle(&req(
        "SETUP streamid=control/13/0 RTSP/1.0\r\nCSeq: 5\r\nSession: DEADBEEFCAFE\r\n\r\n",
    ));
    assert_eq!(
        text(&r),
        "RTSP/1.0 200 OK\r\nCSeq: 5\r\nSession: DEADBEEFCAFE;timeout = 90\r\nTransport: server_port=47999\r\nX-SS-Connect-Data: 2864434397\r\n\r\n"
    );
    assert_eq!(ev, Some(RtspEvent::ControlSetup));

    // PLAY before ANNOUNCE is refused.
    let play = "PLAY / RTSP/1.0\r\nCSeq: 7\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\nSession: DEADBEEFCAFE\r\n\r\n";
    assert_eq!(s.handle(&req(play)).0.status, 455);

    let (r, ev) = s.handle(&req(&announce_request(ANNOUNCE_BODY)));
    assert_eq!(r.status, 200);
    let Some(RtspEvent::Announced(c)) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!((c.width, c.height, c.fps), (1920, 1080, 60));
    assert_eq!(c.packet_size, 1024);
    assert_eq!(c.codec, VideoCodec::Hevc);
    assert_eq!(c.max_bitrate_kbps, 15500);
    assert_eq!(c.configured_bitrate_kbps, Some(20000));
    assert_eq!(c.min_fec_packets, 2);
    assert!(c.control_v2 && !c.video_encryption && c.audio_encryption);
    assert_eq!(
        (
            c.audio_channels,
            c.audio_channel_mask,
            c.audio_packet_duration_ms
        ),
        (2, 3, 5)
    );
    assert!(
        c.audio_high_quality,
        "Host: 127.0.0.1 means stereo high quality"
    );
    assert_eq!(c.max_reference_frames, 1);
    assert_eq!(c.ml_feature_flags, 3);
    assert!(!c.qos);
    // 20000 * 0.8 = 16000, - min(2*256, 3200) = 15488, - min(500, 1548) = 14988.
    assert_eq!(c.encoder_bitrate_kbps(20), 14988);
    assert_eq!(s.stream_config(), Some(&c));
    // The packetizers' parameters follow from it.
    let keys = punktfunk_gamestream::http::SessionKeys {
        rikey: [1; 16],
        rikeyid: 5,
    };
    let v = punktfunk_gamestream::video::VideoConfig::for_stream(&c, &keys, 20, 1 << 20);
    assert_eq!(
        (v.packet_size, v.min_parity, v.fps, v.encryption_key),
        (1024, 2, 60, None)
    );
    assert!(punktfunk_gamestream::video::VideoPacketizer::new(v).is_ok());
    let _audio = punktfunk_gamestream::audio::AudioPacketizer::for_stream(&c, &keys);

    let (r, ev) = s.handle(&req(play));
    assert_eq!(text(&r), "RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n");
    assert_eq!(ev, Some(RtspEvent::Play));
}

#[test]
fn incomplete_requests_wait_for_more_bytes() {
    let full = announce_request(ANNOUNCE_BODY);
    for cut in [0, 10, full.find("\r\n\r\n").unwrap() + 2, full.len() - 1] {
        assert_eq!(
            parse_request(&full.as_bytes()[..cut]),
            Ok(None),
            "cut {cut}"
        );
    }
    assert!(parse_request(full.as_bytes()).unwrap().is_some());
}

#[test]
fn bounds_and_malformed_requests() {
    assert_eq!(
        parse_request(&vec![b'A'; MAX_HEAD + 1]),
        Err(RtspError::HeadTooLarge)
    );
    assert_eq!(
        parse_request(
            format!(
                "ANNOUNCE x RTSP/1.0\r\nContent-length: {}\r\n\r\n",
                MAX_BODY + 1
            )
            .as_bytes()
        ),
        Err(RtspError::BodyTooLarge(MAX_BODY + 1))
    );
    assert_eq!(parse_request(&[0x80, 0, 0, 10]), Err(RtspError::Encrypted));
    assert!(parse_request(b"OPTIONS x HTTP/1.1\r\n\r\n").is_err());
    assert!(parse_request(b"OPTIONS\r\n\r\n").is_err());
    assert!(parse_request(b"OPTIONS x RTSP/1.0\r\nnocolon\r\n\r\n").is_err());
    assert!(parse_request(b"OPTIONS x RTSP/1.0\r\nContent-length: -1\r\n\r\n").is_err());
    let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
    assert_eq!(
        parse_request(format!("OPTIONS x RTSP/1.0\r\n{many}\r\n").as_bytes()),
        Err(RtspError::HeadTooLarge)
    );
}

#[test]
fn unknown_streams_sessions_and_methods() {
    let mut s = RtspSession::new(config());
    assert_eq!(
        s.handle(&req("SETUP streamid=mic/0/0 RTSP/1.0\r\nCSeq: 3\r\n\r\n"))
            .0
            .status,
        404
    );
    assert_eq!(
        s.handle(&req(
            "SETUP streamid=video/0/0 RTSP/1.0\r\nCSeq: 4\r\nSession: OTHER\r\n\r\n"
        ))
        .0
        .status,
        454
    );
    assert_eq!(
        s.handle(&req("TEARDOWN / RTSP/1.0\r\nCSeq: 9\r\n\r\n"))
            .0
            .status,
        400
    );
}

fn with(attr: &str, value: &str) -> String {
    ANNOUNCE_BODY
        .lines()
        .map(|l| {
            if l.starts_with(&format!("a={attr}:")) {
                format!("a={attr}:{value} ")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn without(attr: &str) -> String {
    ANNOUNCE_BODY
        .lines()
        .filter(|l| !l.starts_with(&format!("a={attr}:")))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn announce_is_validated_against_the_offer_and_bounds() {
    let cfg = config();
    let ok = |b: &str| parse_announce(&cfg, b.as_bytes(), Some("0.0.0.0"));
    let c = ok(ANNOUNCE_BODY).unwrap();
    assert!(!c.audio_high_quality, "Host 0.0.0.0 = normal quality");
    assert!(matches!(
        ok(&without("x-nv-video[0].packetSize")),
        Err(AnnounceError::Missing(_))
    ));
    assert!(matches!(
        ok(&without("x-nv-audio.surround.numChannels")),
        Err(AnnounceError::Missing(_))
    ));
    for (attr, bad) in [
        ("x-nv-video[0].packetSize", "1000"),
        ("x-nv-video[0].packetSize", "16"),
        ("x-nv-video[0].packetSize", "65536"),
        ("x-nv-video[0].clientViewportWd", "0"),
        ("x-nv-video[0].maxFPS", "99999"),
        ("x-nv-vqos[0].fec.minRequiredFecPackets", "1000"),
        ("x-nv-audio.surround.numChannels", "3"),
        ("x-nv-aqos.packetDuration", "7"),
        ("x-nv-video[0].clientViewportHt", "-1"),
    ] {
        assert!(ok(&with(attr, bad)).is_err(), "{attr}={bad}");
    }
    // A codec we did not offer, HDR without Main10, video encryption we did not offer.
    let h264_only = RtspConfig {
        codecs: CodecSupport::default(),
        ..config()
    };
    assert_eq!(
        parse_announce(&h264_only, ANNOUNCE_BODY.as_bytes(), None),
        Err(AnnounceError::Codec)
    );
    assert_eq!(
        ok(&with("x-nv-video[0].dynamicRangeMode", "1")),
        Err(AnnounceError::Codec)
    );
    assert_eq!(
        ok(&with("x-ss-general.encryptionEnabled", "7")),
        Err(AnnounceError::Encryption)
    );
    // Surround only when offered.
    let six = with("x-nv-audio.surround.numChannels", "6");
    assert_eq!(ok(&six).unwrap().audio_channels, 6);
    let stereo_only = RtspConfig {
        surround: false,
        ..config()
    };
    assert!(parse_announce(&stereo_only, six.as_bytes(), None).is_err());
    // Mandatory encryption refuses a client that does not enable it (403).
    let strict = RtspConfig {
        encryption_requested: 5,
        encryption_mandatory: true,
        ..config()
    };
    assert!(parse_announce(&strict, ANNOUNCE_BODY.as_bytes(), None).is_ok());
    let mut s = RtspSession::new(strict);
    let body = with("x-ss-general.encryptionEnabled", "1");
    assert_eq!(s.handle(&req(&announce_request(&body))).0.status, 403);
    // Legacy audio flag alone turns audio encryption on.
    let legacy = with("x-ss-general.encryptionEnabled", "0");
    let c = ok(&legacy).unwrap();
    assert!(c.audio_encryption && !c.control_v2);
}

#[test]
fn fresh_ids() {
    let p = new_ping_payload();
    assert!(p.iter().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(new_ping_payload(), p);
}

#[test]
fn v2_pings() {
    // The captured ping of the spec (payload "0123456789abcdef", counter 1).
    let ping = b"0123456789abcdef\x00\x00\x00\x01";
    assert_eq!(parse_ping(ping), Some((*b"0123456789abcdef", 1)));
    assert_eq!(parse_ping(b"PING"), None);
}
