//! Test helper: real x264enc output for frames that carry the frame counter.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use punktfunk_dataplane::sys::monotonic_ns;
use punktfunk_wire::au::{AuTiming, FLAG_KEYFRAME};

use crate::decode::{self, DecodeInput, DecodeOutcome, DecoderConfig, VideoCodec};

/// One encoded access unit.
pub struct Au {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

impl Au {
    pub fn flags(&self) -> u8 {
        if self.keyframe { FLAG_KEYFRAME } else { 0 }
    }

    /// The AU as a data-plane frame (envelope + AU) and where the AU starts.
    pub fn framed(&self) -> (Vec<u8>, usize) {
        let t = AuTiming {
            flags: self.flags(),
            captured_ns: 1,
            encode_start_ns: 2,
            encode_end_ns: 3,
            handed_ns: 4,
        };
        let mut v = Vec::with_capacity(self.data.len() + 40);
        t.push_to(&mut v);
        v.extend_from_slice(&self.data);
        (v, punktfunk_wire::au::ENVELOPE_LEN)
    }
}

/// A tightly packed I420 frame with a moving gradient and counter `n`.
pub fn frame(w: usize, h: usize, n: u32) -> Vec<u8> {
    let mut f = vec![128u8; w * h + 2 * w.div_ceil(2) * h.div_ceil(2)];
    for y in 0..h {
        for x in 0..w {
            f[y * w + x] = (16 + (x + y + 4 * n as usize) % 200) as u8;
        }
    }
    assert!(punktfunk_framecount::encode_into_i420(&mut f, w, h, n));
    f
}

/// Encodes frames with counters 0..n with x264enc (zerolatency, ultrafast, IDR every
/// `key_int_max` frames at most), Annex-B, one AU per buffer.
pub fn encode_h264(w: usize, h: usize, n: u32, key_int_max: u32) -> Vec<Au> {
    encode(
        w,
        h,
        n,
        &format!(
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={key_int_max} bitrate=2000 ! \
             h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au"
        ),
    )
}

/// The same with x265enc (HEVC).
pub fn encode_hevc(w: usize, h: usize, n: u32) -> Vec<Au> {
    encode(
        w,
        h,
        n,
        "x265enc tune=zerolatency speed-preset=ultrafast bitrate=2000 ! \
         h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au",
    )
}

fn encode(w: usize, h: usize, n: u32, encoder: &str) -> Vec<Au> {
    gst::init().expect("gst init");
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=I420,width={w},height={h},framerate=30/1 ! \
         {encoder} ! appsink name=sink sync=false"
    ))
    .expect("encoder pipeline")
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
    for i in 0..n {
        let mut b = gst::Buffer::from_slice(frame(w, h, i));
        let bm = b.get_mut().expect("fresh buffer");
        bm.set_pts(gst::ClockTime::from_mseconds(u64::from(i) * 33));
        bm.set_duration(gst::ClockTime::from_mseconds(33));
        src.push_buffer(b).expect("push");
    }
    src.end_of_stream().expect("eos");
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buf = sample.buffer().expect("buffer");
        let map = buf.map_readable().expect("map");
        out.push(Au {
            data: map.to_vec(),
            keyframe: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
        });
    }
    pipeline.set_state(gst::State::Null).expect("stop");
    out
}

/// Feeds the AUs (frame index = position) through a real H.264 decoder; `lose` are never sent.
pub fn decode(aus: &[Au], lose: &[u64], keep: Option<u64>) -> DecodeOutcome {
    decode_codec(VideoCodec::H264, aus, lose, keep)
}

pub fn decode_codec(
    codec: VideoCodec,
    aus: &[Au],
    lose: &[u64],
    keep: Option<u64>,
) -> DecodeOutcome {
    let (tx, handle) = decode::spawn(DecoderConfig {
        codec,
        keep_picture: keep,
    })
    .expect("decoder");
    for (i, au) in aus.iter().enumerate() {
        let index = i as u64;
        if lose.contains(&index) {
            continue;
        }
        let (frame, au_start) = au.framed();
        tx.send(DecodeInput {
            index,
            flags: au.flags(),
            frame,
            au_start,
            reassembled_ns: monotonic_ns(),
        })
        .expect("decoder alive");
    }
    drop(tx);
    handle.join().expect("join")
}
