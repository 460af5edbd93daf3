//! `--decode`: decodes the received access units with GStreamer and reads back the frame
//! counter the host's test source draws into every picture.
//!
//! One plain thread takes frames from a bounded channel, in index order, and pushes them into
//! `appsrc ! h264parse|h265parse ! avdec_h264|avdec_h265 ! videoconvert ! I420 ! appsink`.
//! After a gap in the indices (network loss, a full channel) or a host-side discontinuity on a
//! non-keyframe, the reference chain is broken: frames are skipped until the next keyframe
//! instead of feeding the decoder AUs it cannot decode (the client asks the host for that
//! keyframe elsewhere). Every pushed AU gets a unique PTS and a pending entry; the appsink
//! callback (on GStreamer's streaming thread) matches each picture to its frame by PTS, so
//! decoding is accounted 1:1 and a pushed frame without a picture counts as a decode error.

use anyhow::{Context, anyhow};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use punktfunk_dataplane::sys::monotonic_ns;
use punktfunk_wire::au::{FLAG_DISCONTINUITY, FLAG_KEYFRAME};

/// Frames waiting in the channel in front of the decoder thread.
pub const CHANNEL_FRAMES: usize = 16;
/// Frames pushed into the pipeline that have not come out yet; beyond this the thread waits
/// (the channel then fills and the sender drops frames, which become a gap and a keyframe wait).
const MAX_IN_FLIGHT: usize = 8;
/// A pipeline that takes no frame out for this long while frames are in flight is stuck
/// (corrupt input, a wedged element): it is rebuilt. A safety net, not a measurement.
const STALL: Duration = Duration::from_secs(2);
/// How long the end of stream may take to drain through the pipeline.
const DRAIN: Duration = Duration::from_secs(10);
/// PTS step between pushed AUs: only a key for matching pictures to frames.
const PTS_STEP_NS: u64 = 1_000_000;
/// Decoded pictures kept for the report (about 4.5 hours at 60 fps).
const MAX_PICTURES: usize = 1 << 20;

/// The video codecs the decoder handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Hevc,
}

impl VideoCodec {
    /// The decoder for a codec of the contract (`None`: one this client cannot decode). The
    /// one conversion from the protocol's vocabulary.
    pub fn of(codec: punktfunk_proto::common::Codec) -> Option<Self> {
        use punktfunk_proto::common::Codec;
        match codec {
            Codec::H264 => Some(VideoCodec::H264),
            Codec::Hevc => Some(VideoCodec::Hevc),
            _ => None,
        }
    }

    /// The report's name.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Hevc => "hevc",
        }
    }

    fn pipeline(self) -> String {
        let (caps, parse, dec) = match self {
            VideoCodec::H264 => ("video/x-h264", "h264parse", "avdec_h264"),
            VideoCodec::Hevc => ("video/x-h265", "h265parse", "avdec_h265"),
        };
        // Slice threads only: frame threading would hold pictures back by a frame per thread.
        // A corrupt picture is dropped (and counted) rather than shown as if decoded.
        format!(
            "appsrc name=src is-live=true format=time do-timestamp=false \
             caps={caps},stream-format=byte-stream,alignment=au ! \
             {parse} ! {dec} thread-type=slice output-corrupt=false max-errors=-1 ! \
             videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false qos=false"
        )
    }
}

/// What the decoder thread is configured with.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub codec: VideoCodec,
    /// Keep a copy of the decoded picture with this ordinal (0-based) for `--save-frame`; every
    /// picture before it is kept too (each replacing the last), so a shorter run keeps its last.
    pub keep_picture: Option<u64>,
}

/// One received video frame handed to the decoder.
pub struct DecodeInput {
    /// Data-plane frame index (consecutive for consecutive frames).
    pub index: u64,
    /// AU envelope flags ([`FLAG_KEYFRAME`], [`FLAG_DISCONTINUITY`]).
    pub flags: u8,
    /// The data-plane frame; the access unit starts at `au_start` (after the envelope).
    pub frame: Vec<u8>,
    pub au_start: usize,
    /// CLOCK_MONOTONIC ns when the data plane handed the frame over (reassembled).
    pub reassembled_ns: u64,
}

/// The AU part of a received frame, given to GStreamer without copying.
struct AuBytes {
    frame: Vec<u8>,
    start: usize,
}

impl AsRef<[u8]> for AuBytes {
    fn as_ref(&self) -> &[u8] {
        self.frame.get(self.start..).unwrap_or_default()
    }
}

/// One decoded picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    pub index: u64,
    pub reassembled_ns: u64,
    /// CLOCK_MONOTONIC ns when the picture left the appsink.
    pub decoded_ns: u64,
    /// The frame counter read from the picture, `None` if it was not there.
    pub counter: Option<u32>,
    /// A frame flagged DISCONTINUITY arrived since the previous picture: the host may have
    /// restarted its media worker, so the counter may start again here.
    pub segment_start: bool,
}

/// Consecutive decoded pictures of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SizeRun {
    pub width: u32,
    pub height: u32,
    pub pictures: u64,
}

impl SizeRun {
    /// Counts one picture of `width`x`height` into `runs`.
    pub fn count(runs: &mut Vec<SizeRun>, width: u32, height: u32) {
        match runs.last_mut() {
            Some(r) if (r.width, r.height) == (width, height) => r.pictures += 1,
            _ => runs.push(SizeRun {
                width,
                height,
                pictures: 1,
            }),
        }
    }
}

/// A decoded picture kept for `--save-frame` (a deep copy: the decoder's pool keeps its own).
pub struct KeptPicture {
    pub index: u64,
    pub counter: Option<u32>,
    pub caps: gst::Caps,
    pub buffer: gst::Buffer,
    pub width: u32,
    pub height: u32,
}

/// What the decoder thread did, once it is finished.
#[derive(Default)]
pub struct DecodeOutcome {
    /// AUs pushed into the decoder.
    pub pushed: u64,
    /// Pictures that came out, matched to their frame.
    pub decoded: u64,
    /// Pushed AUs that produced no picture (dropped as corrupt, or lost in a pipeline restart).
    pub errors: u64,
    /// Received frames not pushed because the decoder waited for a keyframe.
    pub skipped: u64,
    /// Times the pipeline was rebuilt after a GStreamer error or a stall.
    pub restarts: u64,
    /// Pictures whose PTS matched no pushed frame (should stay 0).
    pub unmatched: u64,
    /// Decoded pictures in order (bounded).
    pub pictures: Vec<Picture>,
    /// The pictures' sizes in the order they came, one run per size (a mode change shows as
    /// a new run).
    pub sizes: Vec<SizeRun>,
    pub kept: Option<KeptPicture>,
}

/// A frame pushed into the pipeline, waiting for its picture.
#[derive(Clone, Copy)]
struct Pending {
    index: u64,
    reassembled_ns: u64,
    segment_start: bool,
}

/// What the pushing thread and the appsink callback share.
struct Shared {
    pending: BTreeMap<u64, Pending>,
    out: DecodeOutcome,
    keep_picture: Option<u64>,
}

impl Shared {
    /// The pending frame of a picture with PTS `pts`; earlier pending frames produced none.
    fn take(&mut self, pts: u64) -> Option<Pending> {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= pts {
                break;
            }
            entry.remove();
            self.out.errors += 1;
        }
        self.pending.remove(&pts)
    }

    /// Everything still pending will never come out (end of stream, pipeline torn down).
    fn abandon_pending(&mut self) {
        self.out.errors += self.pending.len() as u64;
        self.pending.clear();
    }
}

/// The shared state, and a wake-up for the pushing thread when a picture came out.
struct Link {
    shared: Mutex<Shared>,
    /// Signalled when a picture came out (in-flight frames went down).
    progress: Condvar,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic on the streaming thread must not take the report with it.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the counter from the Y plane of an I420 picture, honouring its stride (decoders pad
/// rows): `read_from_gray8` is the reader `read_from_i420` uses for tightly packed frames.
pub fn read_counter(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> Option<u32> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()?;
    let stride = usize::try_from(*frame.plane_stride().first()?).ok()?;
    let luma = frame.plane_data(0).ok()?;
    punktfunk_framecount::read_from_gray8(
        luma,
        stride,
        info.width() as usize,
        info.height() as usize,
    )
}

/// The appsink callback's work for one picture.
fn on_sample(link: &Link, sample: &gst::Sample, decoded_ns: u64) {
    let Some(buffer) = sample.buffer() else {
        return;
    };
    let caps = sample.caps();
    let info = caps.and_then(|c| gst_video::VideoInfo::from_caps(c).ok());
    let counter = info.as_ref().and_then(|i| read_counter(buffer, i));
    let mut s = link.lock();
    let Some(p) = buffer.pts().and_then(|pts| s.take(pts.nseconds())) else {
        s.out.unmatched += 1;
        drop(s);
        link.progress.notify_all();
        return;
    };
    let ordinal = s.out.decoded;
    s.out.decoded += 1;
    if let Some(i) = &info {
        SizeRun::count(&mut s.out.sizes, i.width(), i.height());
    }
    if s.out.pictures.len() < MAX_PICTURES {
        s.out.pictures.push(Picture {
            index: p.index,
            reassembled_ns: p.reassembled_ns,
            decoded_ns,
            counter,
            segment_start: p.segment_start,
        });
    }
    if let (Some(keep), Some(info), Some(caps)) = (s.keep_picture, &info, caps)
        && ordinal <= keep
        && let Ok(copy) = buffer.copy_deep()
    {
        s.out.kept = Some(KeptPicture {
            index: p.index,
            counter,
            caps: caps.to_owned(),
            buffer: copy,
            width: info.width(),
            height: info.height(),
        });
    }
    drop(s);
    link.progress.notify_all();
}

/// One built, playing pipeline.
struct Pipe {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    bus: gst::Bus,
}

impl Pipe {
    fn build(codec: VideoCodec, link: &Arc<Link>) -> anyhow::Result<Pipe> {
        let pipeline = gst::parse::launch(&codec.pipeline())
            .map_err(|e| {
                anyhow!(
                    "cannot build the {} decoder (are gstreamer1.0-libav and plugins-bad installed?): {e}",
                    codec.name()
                )
            })?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("the decoder description is not a pipeline"))?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .context("the decoder pipeline has no appsrc")?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("the decoder pipeline has no appsink")?;
        let bus = pipeline.bus().context("the decoder pipeline has no bus")?;
        let cb = link.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let decoded_ns = monotonic_ns();
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    on_sample(&cb, &sample, decoded_ns);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| anyhow!("the decoder pipeline does not start: {e}"))?;
        Ok(Pipe { pipeline, src, bus })
    }

    /// The first error GStreamer reported, if any (other messages are discarded).
    fn error(&self) -> Option<String> {
        self.bus
            .pop_filtered(&[gst::MessageType::Error])
            .map(|m| match m.view() {
                gst::MessageView::Error(e) => e.error().to_string(),
                _ => "error".into(),
            })
    }

    /// Sends end of stream and waits (bounded) until it drained or the pipeline failed.
    fn drain(&self) {
        if self.src.end_of_stream().is_err() {
            return;
        }
        let timeout = gst::ClockTime::from_nseconds(DRAIN.as_nanos() as u64);
        if let Some(m) = self
            .bus
            .timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error])
            && let gst::MessageView::Error(e) = m.view()
        {
            tracing::warn!(error = %e.error(), "the decoder failed while draining");
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The running decoder thread.
pub struct DecoderHandle {
    thread: JoinHandle<DecodeOutcome>,
}

impl DecoderHandle {
    /// Waits until every sender is gone and the decoder drained, then returns what it did.
    pub fn join(self) -> anyhow::Result<DecodeOutcome> {
        self.thread
            .join()
            .map_err(|_| anyhow!("the decoder thread panicked"))
    }
}

/// Initialises GStreamer and loads the parser and decoder plugins of both codecs, before the
/// client connects: the registry scan and plugin loading take tens of milliseconds of CPU,
/// which on a small machine would otherwise land exactly while the host starts streaming.
pub fn preload() -> anyhow::Result<()> {
    gst::init().map_err(|e| anyhow!("GStreamer does not initialise: {e}"))?;
    for name in [
        "h264parse",
        "avdec_h264",
        "h265parse",
        "avdec_h265",
        "videoconvert",
    ] {
        if let Some(f) = gst::ElementFactory::find(name) {
            // A missing plugin is reported by `spawn`, with the codec it is needed for.
            let _ = f.load();
        }
    }
    Ok(())
}

/// Builds the pipeline (so a missing plugin is reported at once) and starts the decoder
/// thread. Frames go in through the returned sender, in index order; the thread drains and
/// finishes when every sender is dropped.
pub fn spawn(cfg: DecoderConfig) -> anyhow::Result<(SyncSender<DecodeInput>, DecoderHandle)> {
    gst::init().map_err(|e| anyhow!("GStreamer does not initialise: {e}"))?;
    let link = Arc::new(Link {
        shared: Mutex::new(Shared {
            pending: BTreeMap::new(),
            out: DecodeOutcome::default(),
            keep_picture: cfg.keep_picture,
        }),
        progress: Condvar::new(),
    });
    let pipe = Pipe::build(cfg.codec, &link)?;
    let (tx, rx) = mpsc::sync_channel(CHANNEL_FRAMES);
    let thread = std::thread::Builder::new()
        .name("pf-decode".into())
        .spawn(move || run(cfg.codec, pipe, &link, rx))
        .context("cannot start the decoder thread")?;
    Ok((tx, DecoderHandle { thread }))
}

/// Skip-to-keyframe gating of received frames, separate from GStreamer so it is plain logic.
#[derive(Debug, Default)]
struct Gate {
    last_index: Option<u64>,
    /// Set at the start and after a break in the reference chain.
    have_reference: bool,
    /// A DISCONTINUITY frame arrived since the last pushed frame.
    discontinuity: bool,
}

impl Gate {
    /// Whether to push this frame; `Some(segment_start)` if so.
    fn admit(&mut self, index: u64, flags: u8) -> Option<bool> {
        let key = flags & FLAG_KEYFRAME != 0;
        let disc = flags & FLAG_DISCONTINUITY != 0;
        let gap = self.last_index.is_some_and(|l| index != l.wrapping_add(1));
        self.last_index = Some(index);
        self.discontinuity |= disc;
        if gap || (disc && !key) {
            self.have_reference = false;
        }
        if !key && !self.have_reference {
            return None;
        }
        self.have_reference = true;
        Some(std::mem::take(&mut self.discontinuity))
    }

    /// The decoder lost its state (pipeline rebuilt): wait for a keyframe.
    fn reset(&mut self) {
        self.have_reference = false;
    }
}

/// The decoder thread: every frame from `rx` through [`DecodeLoop::on_input`], then drains.
fn run(
    codec: VideoCodec,
    first: Pipe,
    link: &Arc<Link>,
    rx: Receiver<DecodeInput>,
) -> DecodeOutcome {
    let mut d = DecodeLoop {
        codec,
        link,
        pipe: Some(first),
        gate: Gate::default(),
        next_pts: 0,
    };
    for input in rx {
        d.on_input(input);
    }
    d.finish()
}

/// The decoder thread's state: the pipeline (rebuilt when it fails; `None` when it could
/// not be), the keyframe gate, and the next presentation time.
struct DecodeLoop<'a> {
    codec: VideoCodec,
    link: &'a Arc<Link>,
    pipe: Option<Pipe>,
    gate: Gate,
    next_pts: u64,
}

impl DecodeLoop<'_> {
    /// Pushes one frame, or counts it skipped (waiting for a keyframe, no pipeline, a
    /// pipeline that stopped producing).
    fn on_input(&mut self, input: DecodeInput) {
        if let Some(e) = self.pipe.as_ref().and_then(Pipe::error) {
            self.restart(&e);
        }
        let Some(segment_start) = self.gate.admit(input.index, input.flags) else {
            self.link.lock().out.skipped += 1;
            return;
        };
        if self.pipe.is_none() {
            self.link.lock().out.skipped += 1;
            return;
        }
        if self.stalled() {
            self.restart("no picture came out");
            self.link.lock().out.skipped += 1;
            return;
        }
        let pts = self.next_pts;
        self.next_pts += PTS_STEP_NS;
        let key = input.flags & FLAG_KEYFRAME != 0;
        let mut buffer = gst::Buffer::from_slice(AuBytes {
            frame: input.frame,
            start: input.au_start,
        });
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            if !key {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        {
            let mut s = self.link.lock();
            let pending = Pending {
                index: input.index,
                reassembled_ns: input.reassembled_ns,
                segment_start,
            };
            s.pending.insert(pts, pending);
            s.out.pushed += 1;
        }
        let pushed = self.pipe.as_ref().map(|p| p.src.push_buffer(buffer));
        if let Some(Err(e)) = pushed {
            self.restart(&format!("appsrc refused a buffer: {e}"));
        }
    }

    /// Bounds the frames inside the pipeline: waits up to [`STALL`] for room; `true` when
    /// none came (the pipeline stopped producing and is rebuilt).
    fn stalled(&self) -> bool {
        let mut s = self.link.lock();
        let mut waited = Duration::ZERO;
        while s.pending.len() >= MAX_IN_FLIGHT && waited < STALL {
            let step = Duration::from_millis(50);
            s = self
                .link
                .progress
                .wait_timeout(s, step)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            waited += step;
        }
        s.pending.len() >= MAX_IN_FLIGHT
    }

    /// Rebuilds the pipeline (`why`: for the log); the frames inside it are lost.
    fn restart(&mut self, why: &str) {
        tracing::warn!(reason = why, "restarting the decoder pipeline");
        // Drop (→ NULL) before touching the pending frames: the streaming thread is gone then.
        self.pipe = None;
        let mut s = self.link.lock();
        s.abandon_pending();
        s.out.restarts += 1;
        drop(s);
        self.gate.reset();
        match Pipe::build(self.codec, self.link) {
            Ok(p) => self.pipe = Some(p),
            Err(e) => tracing::error!(error = %e, "the decoder pipeline cannot be rebuilt"),
        }
    }

    /// Drains the pipeline; what the decoder did.
    fn finish(mut self) -> DecodeOutcome {
        if let Some(p) = self.pipe.take() {
            p.drain();
        }
        let mut s = self.link.lock();
        s.abandon_pending();
        std::mem::take(&mut s.out)
    }
}

/// What the decoded counters say (documented in the README's report schema).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CounterSummary {
    pub first: Option<u32>,
    pub last: Option<u32>,
    /// Every readable counter is greater than the previous one within its segment (segments
    /// start at pictures after a DISCONTINUITY frame).
    pub strictly_increasing: bool,
    /// Times the counter went down at the start of a segment (a host media restart).
    pub resets: u64,
    /// Pictures without a readable counter.
    pub unreadable: u64,
}

/// Judges the counters of decoded pictures in order.
pub fn summarise_counters(pictures: &[Picture]) -> CounterSummary {
    let mut s = CounterSummary {
        strictly_increasing: true,
        ..Default::default()
    };
    let mut new_segment = false;
    for p in pictures {
        new_segment |= p.segment_start;
        let Some(c) = p.counter else {
            s.unreadable += 1;
            continue;
        };
        if let Some(prev) = s.last {
            if new_segment {
                if c < prev {
                    s.resets += 1;
                }
            } else if c <= prev {
                s.strictly_increasing = false;
            }
        }
        s.first.get_or_insert(c);
        s.last = Some(c);
        new_segment = false;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenc::{self, decode};

    #[test]
    fn picture_sizes_are_counted_in_runs() {
        let mut runs = Vec::new();
        for (w, h) in [(1280, 720), (1280, 720), (800, 600), (800, 600), (800, 600)] {
            SizeRun::count(&mut runs, w, h);
        }
        SizeRun::count(&mut runs, 1280, 720);
        let run = |width, height, pictures| SizeRun {
            width,
            height,
            pictures,
        };
        assert_eq!(
            runs,
            [run(1280, 720, 2), run(800, 600, 3), run(1280, 720, 1)]
        );
    }

    fn pic(counter: Option<u32>, segment_start: bool) -> Picture {
        Picture {
            index: 0,
            reassembled_ns: 0,
            decoded_ns: 0,
            counter,
            segment_start,
        }
    }

    #[test]
    fn counter_segments_and_resets() {
        let s = summarise_counters(&[pic(Some(5), false), pic(None, false), pic(Some(7), false)]);
        assert_eq!(
            s,
            CounterSummary {
                first: Some(5),
                last: Some(7),
                strictly_increasing: true,
                resets: 0,
                unreadable: 1
            }
        );
        // Going down without a discontinuity is a failure, not a reset.
        let s = summarise_counters(&[pic(Some(5), false), pic(Some(3), false)]);
        assert!(!s.strictly_increasing);
        assert_eq!(s.resets, 0);
        // A repeat is not an increase either.
        assert!(
            !summarise_counters(&[pic(Some(5), false), pic(Some(5), false)]).strictly_increasing
        );
        // Down at a segment start (here on an unreadable picture, carried to the next) is a reset.
        let s = summarise_counters(&[
            pic(Some(50), false),
            pic(None, true),
            pic(Some(0), false),
            pic(Some(1), false),
        ]);
        assert!(s.strictly_increasing);
        assert_eq!((s.resets, s.first, s.last), (1, Some(50), Some(1)));
    }

    #[test]
    fn gate_skips_to_the_next_keyframe() {
        let k = FLAG_KEYFRAME;
        let mut g = Gate::default();
        // Nothing before the first keyframe.
        assert_eq!(g.admit(0, 0), None);
        assert_eq!(g.admit(1, k), Some(false));
        assert_eq!(g.admit(2, 0), Some(false));
        // 3 lost: 4 and 5 are skipped, 6 is a keyframe.
        assert_eq!(g.admit(4, 0), None);
        assert_eq!(g.admit(5, 0), None);
        assert_eq!(g.admit(6, k), Some(false));
        // A host-side drop on a delta frame breaks the chain too, and starts a segment.
        assert_eq!(g.admit(7, FLAG_DISCONTINUITY), None);
        assert_eq!(g.admit(8, k), Some(true));
        // A restarted encoder's IDR with DISCONTINUITY goes straight in.
        assert_eq!(g.admit(9, k | FLAG_DISCONTINUITY), Some(true));
        assert_eq!(g.admit(10, 0), Some(false));
    }

    #[test]
    fn decodes_x264_one_to_one_with_counters_in_order() {
        let aus = testenc::encode_h264(640, 360, 60, 1000);
        assert_eq!(aus.len(), 60, "x264enc gives one AU per frame");
        assert!(aus[0].keyframe, "the stream starts with an IDR");
        let out = decode(&aus, &[], None);
        assert_eq!(out.pushed, 60);
        assert_eq!(out.decoded, 60);
        assert_eq!(
            (out.errors, out.skipped, out.unmatched, out.restarts),
            (0, 0, 0, 0)
        );
        let counters: Vec<Option<u32>> = out.pictures.iter().map(|p| p.counter).collect();
        let expected: Vec<Option<u32>> = (0..60).map(Some).collect();
        assert_eq!(counters, expected);
        let indices: Vec<u64> = out.pictures.iter().map(|p| p.index).collect();
        assert_eq!(indices, (0..60).collect::<Vec<u64>>());
        assert!(
            out.pictures
                .iter()
                .all(|p| p.decoded_ns >= p.reassembled_ns)
        );
        let s = summarise_counters(&out.pictures);
        assert!(s.strictly_increasing);
        assert_eq!(
            (s.first, s.last, s.resets, s.unreadable),
            (Some(0), Some(59), 0, 0)
        );
    }

    #[test]
    fn decodes_x265_one_to_one() {
        let aus = testenc::encode_hevc(640, 360, 30);
        assert_eq!(aus.len(), 30);
        assert!(aus[0].keyframe);
        let out = testenc::decode_codec(VideoCodec::Hevc, &aus, &[], None);
        assert_eq!((out.pushed, out.decoded, out.errors), (30, 30, 0));
        let counters: Vec<Option<u32>> = out.pictures.iter().map(|p| p.counter).collect();
        assert_eq!(counters, (0..30).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_lost_frame_skips_to_the_next_keyframe() {
        let aus = testenc::encode_h264(640, 360, 60, 20);
        let keys: Vec<u64> = (0..60u64).filter(|&i| aus[i as usize].keyframe).collect();
        // Drop a delta frame that has a later keyframe (not right after it).
        let lost = 5u64;
        let resume = *keys
            .iter()
            .find(|&&k| k > lost + 1)
            .expect("x264enc key-int-max=20 gives a second keyframe");
        assert!(!aus[lost as usize].keyframe);
        let out = decode(&aus, &[lost], None);
        let skipped = resume - lost - 1;
        assert_eq!(
            out.skipped, skipped,
            "frames between the loss and the keyframe"
        );
        assert_eq!(out.pushed, 59 - skipped);
        // Nothing broken went in: every pushed AU decoded, with the right counter.
        assert_eq!((out.errors, out.unmatched, out.restarts), (0, 0, 0));
        assert_eq!(out.decoded, out.pushed);
        let counters: Vec<u32> = out.pictures.iter().filter_map(|p| p.counter).collect();
        let expected: Vec<u32> = (0..lost as u32).chain(resume as u32..60).collect();
        assert_eq!(counters, expected);
        assert!(summarise_counters(&out.pictures).strictly_increasing);
    }

    #[test]
    fn a_corrupt_au_is_an_error_not_a_picture() {
        let mut aus = testenc::encode_h264(640, 360, 20, 1000);
        // Keep the start code and NAL header of frame 10, garble the slice data.
        let au = &mut aus[10].data;
        for b in au.iter_mut().skip(8) {
            *b = 0x55;
        }
        let out = decode(&aus, &[], None);
        assert_eq!(out.pushed, 20);
        assert!(out.errors >= 1, "the garbled AU produced no picture");
        assert_eq!(out.decoded + out.errors, out.pushed, "1:1 accounting");
    }
}
