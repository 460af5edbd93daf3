//! The frame counter survives x264enc → avdec_h264, and equals the ring's frame index, on the
//! ball and on the busy game pattern (which fills the bitrate it is given); a mode change
//! restarts the pipeline with an IDR flagged DISCONTINUITY.

mod common;

use std::time::Duration;

use common::read_n;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use punktfunk_media::counter;
use punktfunk_media::description::{BALL_PATTERN, Codec, EncoderKind, GAME_PATTERN, Mode, mode};
use punktfunk_media::worker::{EncodeWorker, Source, StreamConfig};
use punktfunk_ring::{Consumer, RecordFlags};

fn start(mode: Mode) -> (EncodeWorker, Consumer) {
    start_with(BALL_PATTERN, mode, 4_000)
}

fn start_with(pattern: &str, mode: Mode, bitrate_kbps: u32) -> (EncodeWorker, Consumer) {
    let (worker, fds) = EncodeWorker::start(
        StreamConfig {
            source: Source::Test {
                pattern: pattern.into(),
            },
            mode,
            codec: Codec::H264,
            bitrate_kbps,
            encoder: Some(EncoderKind::X264),
        },
        false,
    )
    .expect("start");
    let consumer = Consumer::attach(fds.video).expect("attach");
    (worker, consumer)
}

/// Decodes Annex-B AUs with avdec_h264; returns each decoded frame's counter.
fn decode_counters(aus: &[Vec<u8>], w: usize, h: usize) -> Vec<Option<u32>> {
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au ! \
         h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=I420 ! \
         appsink name=sink sync=false",
    )
    .expect("decoder pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .expect("appsrc");
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("play");
    for (i, au) in aus.iter().enumerate() {
        let mut b = gst::Buffer::from_slice(au.clone());
        b.get_mut()
            .expect("fresh buffer")
            .set_pts(gst::ClockTime::from_mseconds(i as u64 * 16));
        src.push_buffer(b).expect("push");
    }
    src.end_of_stream().expect("eos");
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buf = sample.buffer().expect("buffer");
        let map = buf.map_readable().expect("map");
        out.push(counter::read_from_i420(&map, w, h));
    }
    pipeline.set_state(gst::State::Null).expect("stop");
    out
}

#[test]
fn counter_survives_x264_and_avdec_and_matches_frame_index() {
    let (worker, mut consumer) = start(mode(640, 480, 30));
    let aus = read_n(&mut consumer, 45, Duration::from_secs(20));
    worker.stop();
    let payloads: Vec<Vec<u8>> = aus.iter().map(|a| a.payload.clone()).collect();
    let decoded = decode_counters(&payloads, 640, 480);
    assert_eq!(decoded.len(), aus.len(), "every AU decodes to one frame");
    for (a, c) in aus.iter().zip(&decoded) {
        assert_eq!(
            *c,
            Some(a.frame as u32),
            "decoded counter vs ring frame index"
        );
    }
}

/// Issue 15: the default test source looks like a game to the encoder. At 20 Mbit/s, 720p60,
/// x264 spends ≥ 80 % of the rate on it (measured as bytes per frame × 60, so a loaded machine
/// that delays frames does not change the figure), and every frame's counter still reads back.
#[test]
fn game_pattern_fills_20_mbit_at_720p60_and_its_counter_survives() {
    let (worker, mut consumer) = start_with(GAME_PATTERN, mode(1280, 720, 60), 20_000);
    let aus = read_n(&mut consumer, 150, Duration::from_secs(30));
    worker.stop();
    // The first 30 frames: the IDR and x264's rate control settling.
    let steady = &aus[30..];
    let bytes: usize = steady.iter().map(|a| a.payload.len()).sum();
    let bps = bytes as f64 * 8.0 / steady.len() as f64 * 60.0;
    eprintln!(
        "game pattern: {:.1} Mbit/s at 20 Mbit/s ({} frames)",
        bps / 1e6,
        steady.len()
    );
    assert!(
        bps >= 0.8 * 20e6,
        "x264 produced {bps:.0} bit/s of 20 Mbit/s"
    );
    let payloads: Vec<Vec<u8>> = aus.iter().map(|a| a.payload.clone()).collect();
    let decoded = decode_counters(&payloads, 1280, 720);
    assert_eq!(decoded.len(), aus.len(), "every AU decodes to one frame");
    for (a, c) in aus.iter().zip(&decoded) {
        assert_eq!(
            *c,
            Some(a.frame as u32),
            "decoded counter vs ring frame index"
        );
    }
}

#[test]
fn mode_change_restarts_with_idr_and_discontinuity() {
    let (worker, mut consumer) = start(mode(640, 480, 30));
    let first = read_n(&mut consumer, 10, Duration::from_secs(20));
    assert!(first[0].idr(Codec::H264));
    let restarted = worker
        .reconfigure(None, Some(mode(800, 600, 30)))
        .expect("reconfigure");
    assert!(restarted);
    assert_eq!(worker.generation(), 2);
    // Skip what the old pipeline wrote before it stopped; the new one starts with an IDR.
    let rest = read_n(&mut consumer, 20, Duration::from_secs(20));
    let k = rest
        .iter()
        .position(|a| a.flags.contains(RecordFlags::DISCONTINUITY))
        .expect("a DISCONTINUITY record after the restart");
    assert!(
        rest[k].idr(Codec::H264),
        "first AU of the new pipeline is an IDR"
    );
    assert!(rest[k].frame > first[9].frame, "frame index keeps counting");
    let decoded = decode_counters(
        &rest[k..]
            .iter()
            .map(|a| a.payload.clone())
            .collect::<Vec<_>>(),
        800,
        600,
    );
    assert_eq!(
        decoded.first().copied().flatten(),
        Some(rest[k].frame as u32)
    );
    worker.stop();
}
