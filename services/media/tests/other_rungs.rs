//! The other software rungs run as described: openh264enc (bitrate in bit/s, gop-size 0) and
//! x265enc (keyint=-1 in the option string) each give exactly one IDR over more frames than
//! their default GOPs (openh264 90, x265 250), and answer a keyframe request.

mod common;

use std::time::Duration;

use common::read_n;
use punktfunk_media::description::{Codec, EncoderKind, mode};
use punktfunk_media::nal;
use punktfunk_media::worker::{EncodeWorker, Source, StreamConfig};
use punktfunk_ring::Consumer;

fn one_idr_then_one_on_request(kind: EncoderKind, codec: Codec, frames: usize) {
    let (worker, fds) = EncodeWorker::start(
        StreamConfig {
            source: Source::Test {
                pattern: "ball".into(),
            },
            mode: mode(640, 360, 60),
            codec,
            bitrate_kbps: 2_000,
            encoder: Some(kind),
        },
        false,
    )
    .unwrap_or_else(|e| panic!("start {kind:?}: {e}"));
    let mut consumer = Consumer::attach(fds.video).expect("attach");
    let aus = read_n(&mut consumer, frames, Duration::from_secs(60));
    let idrs: Vec<usize> = (0..aus.len()).filter(|&i| aus[i].idr(codec)).collect();
    assert_eq!(idrs, vec![0], "{kind:?}: one IDR in {} AUs", aus.len());
    assert!(
        nal::has_parameter_sets(codec, &aus[0].payload),
        "{kind:?}: parameter sets in band"
    );
    worker.request_keyframe().expect("keyframe");
    let more = read_n(&mut consumer, 20, Duration::from_secs(30));
    let k = more.iter().position(|a| a.idr(codec)).unwrap_or_else(|| {
        let types: Vec<Vec<u8>> = more
            .iter()
            .map(|a| nal::nal_types(codec, &a.payload))
            .collect();
        panic!("{kind:?}: no IDR after the request: {types:?}")
    });
    assert!(k <= 3, "{kind:?}: IDR {k} AUs after the request");
    assert!(nal::has_parameter_sets(codec, &more[k].payload));
    worker.stop();
}

#[test]
fn openh264_infinite_gop_and_forced_idr() {
    one_idr_then_one_on_request(EncoderKind::OpenH264, Codec::H264, 200);
}

#[test]
fn x265_infinite_gop_and_forced_idr() {
    one_idr_then_one_on_request(EncoderKind::X265, Codec::Hevc, 300);
}
