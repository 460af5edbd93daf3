//! `--save-frame`: one decoded picture written as a PNG.
//!
//! Done with GStreamer (`videoconvert ! pngenc`) rather than the `png` crate and our own
//! BT.601 arithmetic: videoconvert applies the matrix and range the decoder put in the caps
//! (BT.601 or BT.709, limited or full), the plugins are already loaded for decoding, and the
//! client gains no dependency.

use anyhow::{Context, anyhow};
use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::decode::KeptPicture;

/// Encodes `pic` as a PNG (RGB, 8 bit).
pub fn encode_png(pic: &KeptPicture) -> anyhow::Result<Vec<u8>> {
    gst::init().map_err(|e| anyhow!("GStreamer does not initialise: {e}"))?;
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time ! videoconvert ! video/x-raw,format=RGB ! pngenc ! \
         appsink name=sink sync=false",
    )
    .map_err(|e| anyhow!("cannot build the PNG pipeline (gstreamer1.0-plugins-good): {e}"))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("the PNG description is not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("the PNG pipeline has no appsrc")?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("the PNG pipeline has no appsink")?;
    src.set_caps(Some(&pic.caps));
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| anyhow!("the PNG pipeline does not start: {e}"))?;
        let mut buffer = pic.buffer.clone();
        buffer.make_mut().set_pts(gst::ClockTime::ZERO);
        src.push_buffer(buffer)
            .map_err(|e| anyhow!("the PNG pipeline refused the picture: {e}"))?;
        src.end_of_stream()
            .map_err(|e| anyhow!("the PNG pipeline refused end of stream: {e}"))?;
        let sample = sink
            .pull_sample()
            .map_err(|_| anyhow!("the PNG pipeline produced no image"))?;
        let buf = sample.buffer().context("the PNG sample has no buffer")?;
        let map = buf
            .map_readable()
            .map_err(|e| anyhow!("cannot read the PNG: {e}"))?;
        Ok(map.to_vec())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Writes `pic` to `path` as a PNG.
pub fn save_png(path: &Path, pic: &KeptPicture) -> anyhow::Result<()> {
    let png = encode_png(pic)?;
    std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenc::{self, decode};

    fn png_size(png: &[u8]) -> (u32, u32) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&png[12..16], b"IHDR", "first chunk is IHDR");
        let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn keeps_the_middle_picture_and_writes_a_png_of_its_size() {
        let aus = testenc::encode_h264(640, 360, 40, 1000);
        let out = decode(&aus, &[], Some(20));
        let kept = out.kept.expect("a kept picture");
        assert_eq!((kept.index, kept.counter), (20, Some(20)));
        assert_eq!((kept.width, kept.height), (640, 360));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("frame.png");
        save_png(&path, &kept).expect("save");
        let png = std::fs::read(&path).expect("read back");
        assert_eq!(png_size(&png), (640, 360));
        // Bit depth 8, colour type 2 (RGB).
        assert_eq!((png[24], png[25]), (8, 2));
    }

    #[test]
    fn a_short_run_keeps_its_last_picture() {
        let aus = testenc::encode_h264(640, 360, 12, 1000);
        let out = decode(&aus, &[], Some(1000));
        let kept = out.kept.expect("a kept picture");
        assert_eq!((kept.index, kept.counter), (11, Some(11)));
        assert_eq!(png_size(&encode_png(&kept).expect("png")), (640, 360));
    }
}
