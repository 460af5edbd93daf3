//! The control-stream framing: round trips, every split point, truncation and the size limit.

use punktfunk_control::framing::{FrameDecoder, FrameError, MAX_CONTROL_MESSAGE, encode};
use punktfunk_proto::common::Mode;
use punktfunk_proto::control::{
    ClientMessage, ClockProbe, Goodbye, Hello, HostMessage, Stats, client_message,
};

fn sample_messages() -> Vec<ClientMessage> {
    vec![
        ClientMessage {
            msg: Some(client_message::Msg::Hello(Hello {
                version: 1,
                client_name: "tv".into(),
                mode: Some(Mode {
                    width: 3840,
                    height: 2160,
                    refresh_mhz: 119_880,
                }),
                codecs: vec![2, 1],
                bitrate_kbps: 80_000,
                data_port: 50_000,
                ..Default::default()
            })),
        },
        ClientMessage {
            msg: Some(client_message::Msg::ClockProbe(ClockProbe {
                round: 3,
                client_send_ns: u64::MAX,
            })),
        },
        // An empty message: zero-length frame.
        ClientMessage { msg: None },
        ClientMessage {
            msg: Some(client_message::Msg::Stats(Stats {
                frames_received: 1 << 40,
                ..Default::default()
            })),
        },
        ClientMessage {
            msg: Some(client_message::Msg::Goodbye(Goodbye {
                reason: "x".repeat(300),
            })),
        },
    ]
}

fn stream() -> Vec<u8> {
    let mut out = Vec::new();
    for m in sample_messages() {
        encode(&m, &mut out).unwrap();
    }
    out
}

#[test]
fn round_trip_whole_stream() {
    let mut dec = FrameDecoder::<ClientMessage>::new();
    assert_eq!(dec.push(&stream()).unwrap(), sample_messages());
    dec.finish().unwrap();
}

#[test]
fn split_at_every_byte_boundary() {
    let bytes = stream();
    for cut in 0..=bytes.len() {
        let mut dec = FrameDecoder::<ClientMessage>::new();
        let mut got = dec.push(&bytes[..cut]).unwrap();
        got.extend(dec.push(&bytes[cut..]).unwrap());
        assert_eq!(got, sample_messages(), "cut at {cut}");
        dec.finish().unwrap();
    }
}

#[test]
fn one_byte_at_a_time_and_finish_detects_truncation() {
    let bytes = stream();
    let mut dec = FrameDecoder::<ClientMessage>::new();
    let mut got = Vec::new();
    for b in &bytes[..bytes.len() - 1] {
        got.extend(dec.push(core::slice::from_ref(b)).unwrap());
        assert!(dec.buffered() <= MAX_CONTROL_MESSAGE);
    }
    assert_eq!(got.len(), sample_messages().len() - 1);
    assert!(matches!(dec.finish(), Err(FrameError::Truncated { .. })));
    got.extend(dec.push(&bytes[bytes.len() - 1..]).unwrap());
    assert_eq!(got, sample_messages());
    dec.finish().unwrap();
}

#[test]
fn decode_leaves_the_rest_of_the_chunk() {
    let bytes = stream();
    let mut dec = FrameDecoder::<ClientMessage>::new();
    let mut rest = &bytes[..];
    let first = dec.decode(&mut rest).unwrap().unwrap();
    assert_eq!(first, sample_messages()[0]);
    assert!(!rest.is_empty());
    assert_eq!(bytes.len() - rest.len(), {
        let mut v = Vec::new();
        encode(&sample_messages()[0], &mut v).unwrap();
        v.len()
    });
}

#[test]
fn oversize_declared_length_is_refused_before_buffering() {
    // varint(MAX + 1) followed by a few body bytes.
    let mut bytes = Vec::new();
    prost::encoding::encode_varint((MAX_CONTROL_MESSAGE + 1) as u64, &mut bytes);
    bytes.extend_from_slice(&[0u8; 16]);
    let mut dec = FrameDecoder::<ClientMessage>::new();
    let err = dec.push(&bytes).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLong {
            declared: (MAX_CONTROL_MESSAGE + 1) as u64,
            max: MAX_CONTROL_MESSAGE
        }
    );
    assert_eq!(dec.buffered(), 0);
    // Sticky.
    assert_eq!(dec.push(&[0]).unwrap_err(), err);

    // A huge varint is refused at the byte that crosses the bound, not after 10 bytes.
    let mut dec = FrameDecoder::<ClientMessage>::new();
    let mut rest: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        dec.decode(&mut rest),
        Err(FrameError::TooLong { .. })
    ));
    assert_eq!(rest.len(), 2, "refused on the third prefix byte");

    // Exactly at the bound is accepted (declared; body still incomplete).
    let mut bytes = Vec::new();
    prost::encoding::encode_varint(MAX_CONTROL_MESSAGE as u64, &mut bytes);
    let mut dec = FrameDecoder::<ClientMessage>::new();
    assert_eq!(dec.push(&bytes).unwrap(), vec![]);

    // A smaller configured bound.
    let mut dec = FrameDecoder::<ClientMessage>::with_max(8);
    assert!(matches!(dec.push(&[9]), Err(FrameError::TooLong { .. })));
}

#[test]
fn encode_refuses_oversize_messages() {
    let big = ClientMessage {
        msg: Some(client_message::Msg::Goodbye(Goodbye {
            reason: "y".repeat(MAX_CONTROL_MESSAGE),
        })),
    };
    let mut out = vec![7u8];
    assert!(matches!(
        encode(&big, &mut out),
        Err(FrameError::TooLong { .. })
    ));
    assert_eq!(out, vec![7u8], "nothing appended");
}

#[test]
fn overlong_varint_is_rejected() {
    // Eleven continuation bytes of zero value: a non-terminating varint.
    let bytes = [0x80u8; 11];
    let mut dec = FrameDecoder::<ClientMessage>::new();
    assert_eq!(dec.push(&bytes).unwrap_err(), FrameError::BadLength);
}

#[test]
fn garbage_body_is_a_clear_error() {
    // length 3, body = field 1 (Hello, length-delimited) claiming 100 bytes.
    let bytes = [3u8, 0x0a, 100, 0];
    let mut dec = FrameDecoder::<ClientMessage>::new();
    let err = dec.push(&bytes).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
    assert!(err.to_string().starts_with("malformed control message"));

    // Invalid wire type 7.
    let mut dec = FrameDecoder::<HostMessage>::new();
    assert!(matches!(
        dec.push(&[1u8, 0x0f]),
        Err(FrameError::Malformed(_))
    ));
}
