//! Infinite GOP: exactly one IDR in 10 s of 720p60 x264, then exactly one more on request.

mod common;

use std::time::Duration;

use common::{read_for, read_n};
use punktfunk_media::description::{Codec, EncoderKind, mode};
use punktfunk_media::nal;
use punktfunk_media::worker::{EncodeWorker, Source, StreamConfig};
use punktfunk_ring::{Consumer, RecordFlags};

#[test]
fn x264_one_idr_in_10s_then_one_on_request() {
    let (worker, fds) = EncodeWorker::start(
        StreamConfig {
            source: Source::Test {
                pattern: "ball".into(),
            },
            mode: mode(1280, 720, 60),
            codec: Codec::H264,
            bitrate_kbps: 10_000,
            encoder: Some(EncoderKind::X264),
        },
        false,
    )
    .expect("start x264 pipeline");
    let mut consumer = Consumer::attach(fds.video).expect("attach");

    let aus = read_for(&mut consumer, Duration::from_secs(10));
    let idrs: Vec<usize> = (0..aus.len())
        .filter(|&i| aus[i].idr(Codec::H264))
        .collect();
    eprintln!(
        "10 s: {} AUs, IDRs at {idrs:?}, {} bytes",
        aus.len(),
        aus.iter().map(|a| a.payload.len()).sum::<usize>()
    );
    // 10 s at 60 fps; the check only means something past x264's default GOP (250 frames).
    assert!(aus.len() > 260, "only {} AUs in 10 s", aus.len());
    assert_eq!(idrs, vec![0], "exactly one IDR, the first AU");
    assert!(aus[0].flags.contains(RecordFlags::KEYFRAME));
    assert!(nal::has_parameter_sets(Codec::H264, &aus[0].payload));
    for a in &aus[1..] {
        assert!(
            !a.flags.contains(RecordFlags::KEYFRAME),
            "frame {}",
            a.frame
        );
    }
    for w in aus.windows(2) {
        assert!(w[1].frame > w[0].frame, "frame indices increase");
    }
    for a in &aus {
        // Strict: each stamp comes from a different stage (a fallback to "now" would tie them).
        assert!(
            a.captured_ns < a.encode_start_ns && a.encode_start_ns < a.encode_end_ns,
            "stamps of frame {}: {} {} {}",
            a.frame,
            a.captured_ns,
            a.encode_start_ns,
            a.encode_end_ns
        );
        assert!(a.encode_end_ns <= a.written_ns);
    }

    // Request a keyframe: it must be one of the next 3 AUs the encoder produces (the frame in the
    // encoder or one of the ≤ 2 waiting in the queue), and be the only one.
    let before = worker.stats().aus_written;
    worker.request_keyframe().expect("request keyframe");
    let mut rest = read_for(&mut consumer, Duration::from_millis(10));
    rest.extend(read_n(&mut consumer, 60, Duration::from_secs(10)));
    let all: Vec<_> = aus.iter().chain(rest.iter()).collect();
    let idrs: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].idr(Codec::H264))
        .collect();
    assert_eq!(idrs.len(), 2, "one more IDR after the request: {idrs:?}");
    let ordinal = idrs[1] as u64; // AU number since start (records are never dropped here)
    eprintln!("keyframe requested after AU {before}; IDR is AU {ordinal}");
    assert!(
        ordinal >= before && ordinal <= before + 2,
        "IDR at AU {ordinal}, request after AU {before}"
    );
    let idr = all[idrs[1]];
    assert!(idr.flags.contains(RecordFlags::KEYFRAME));
    assert!(
        nal::has_parameter_sets(Codec::H264, &idr.payload),
        "SPS/PPS in band"
    );
    let stats = worker.stats();
    assert_eq!(stats.ring_dropped, 0);
    assert_eq!(stats.keyframes, 2);
    assert_eq!(stats.generation, 1);
    worker.stop();
}
