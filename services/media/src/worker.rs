//! The encode worker: builds the pipeline from its [`PipelineDesc`], runs it with gstreamer-rs,
//! and writes every access unit into the AU ring.
//!
//! Per-frame work happens on GStreamer's streaming threads only (pad probes and the appsink
//! callback); the control calls (start, stop, reconfigure, keyframe, stats) take locks briefly.
//!
//! Timestamps (CLOCK_MONOTONIC ns, [`monotonic_ns`]):
//! * `captured_ns` — when the frame left the source (a probe on the capsfilter after the source;
//!   for the test source this is also where the frame counter is drawn);
//! * `encode_start_ns` — when the frame reached the encoder's sink pad;
//! * `encode_end_ns` — when the parsed AU reached the appsink, just before the ring write.
//!
//! The three are joined per frame through the buffer PTS, which the encoder and parser keep.
//! `frame_index` is the capture counter (the number drawn into test frames); frames the leaky
//! queue drops before the encoder show up as gaps in it.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use punktfunk_ring::{
    Producer, RecordFlags, RecordMeta, Ring, RingFds, WriteOutcome, monotonic_ns,
};

use crate::counter;
use crate::description::{
    AudioSourceDesc, Codec, EncoderKind, Mode, ModeExt, PipelineDesc, SourceDesc, choose_encoder,
    ladder, names,
};
use crate::lease::RingProgress;

/// Video ring: 32 MiB of data, AUs up to 8 MiB (a 4K IDR at high rate fits).
pub const VIDEO_RING_CAPACITY: usize = 32 << 20;
/// The largest video record (one AU with its envelope) the ring accepts.
pub const VIDEO_RING_MAX_RECORD: usize = 8 << 20;
/// Audio ring: 1 MiB, packets up to 64 KiB.
pub const AUDIO_RING_CAPACITY: usize = 1 << 20;
/// The largest audio record the ring accepts.
pub const AUDIO_RING_MAX_RECORD: usize = 64 << 10;
/// How long start waits for the pipeline to reach PLAYING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many in-flight frames' stamps are remembered (frames between capture and appsink).
const STAMP_WINDOW: usize = 64;
/// How many recent encode times feed the percentiles.
const ENCODE_SAMPLES: usize = 1024;

/// Why a stream could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// GStreamer failed to initialise (the reason is given).
    #[error("GStreamer cannot be initialised: {0}")]
    Init(String),
    #[error(
        "no {codec} encoder is available (tried {tried}); install gstreamer1.0-plugins-ugly (x264enc) or the GPU plugins"
    )]
    /// No encoder of the ladder for the codec is installed.
    NoEncoder {
        /// The codec asked for.
        codec: &'static str,
        /// The encoder elements looked for.
        tried: String,
    },
    /// The mode cannot be encoded (what is wrong is given).
    #[error("invalid mode: {0}")]
    Mode(String),
    #[error("cannot build the pipeline `{launch}`: {message}")]
    /// GStreamer could not build the pipeline.
    Build {
        /// The pipeline in gst-launch syntax.
        launch: String,
        /// GStreamer's error message.
        message: String,
    },
    /// The pipeline did not reach PLAYING (the reason is given).
    #[error("the pipeline did not start: {0}")]
    Start(String),
    /// The AU ring could not be created (the reason is given).
    #[error("cannot create the AU ring: {0}")]
    Ring(String),
    /// The stream was stopped already.
    #[error("the stream is stopped")]
    Stopped,
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), WorkerError> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(WorkerError::Init)
}

/// The encoder element names GStreamer's registry has (of those the ladders name).
pub fn available_encoders() -> Result<HashSet<String>, WorkerError> {
    init()?;
    Ok(ladder(Codec::H264)
        .iter()
        .chain(ladder(Codec::Hevc))
        .map(|k| k.element())
        .filter(|e| gst::ElementFactory::find(e).is_some())
        .map(str::to_string)
        .collect())
}

/// The ladder's best encoder for `codec` among `available` ([`available_encoders`]), or
/// [`WorkerError::NoEncoder`] naming what was tried.
pub fn pick_encoder(codec: Codec, available: &HashSet<String>) -> Result<EncoderKind, WorkerError> {
    choose_encoder(codec, available).ok_or_else(|| WorkerError::NoEncoder {
        codec: codec.name(),
        tried: ladder(codec)
            .iter()
            .map(|k| k.element())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Where frames come from, as the worker holds it.
#[derive(Debug)]
pub enum Source {
    /// videotestsrc with the frame counter; `pattern` is a videotestsrc pattern nick.
    Test {
        /// The videotestsrc pattern nick.
        pattern: String,
    },
    /// A PipeWire node through a remote fd (kept open for the worker's life).
    PipeWire {
        /// `None`: the default PipeWire daemon of this user.
        fd: Option<OwnedFd>,
        /// The PipeWire node to capture.
        node_id: u32,
        /// Negotiate DMA-BUF frames (zero-copy to a hardware encoder).
        dmabuf: bool,
        /// The `Audio/Sink` (node name) on the same remote whose monitor is the stream's sound;
        /// `None`: the test tone.
        audio_sink: Option<String>,
    },
}

impl Source {
    /// The stream's sound for this source.
    fn audio(&self) -> AudioSourceDesc {
        match self {
            Source::PipeWire {
                fd,
                audio_sink: Some(sink),
                ..
            } => AudioSourceDesc::PipeWireSink {
                fd: fd.as_ref().map(|f| f.as_raw_fd()),
                sink: sink.clone(),
            },
            Source::Test { .. } | Source::PipeWire { .. } => AudioSourceDesc::TestTone,
        }
    }
}

/// What to start.
#[derive(Debug)]
pub struct StreamConfig {
    /// Where frames come from.
    pub source: Source,
    /// Resolution and frame rate.
    pub mode: Mode,
    /// The codec to encode.
    pub codec: Codec,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Force an encoder instead of walking the ladder (tests, benches).
    pub encoder: Option<EncoderKind>,
}

/// A snapshot of the stream's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerStats {
    /// Frames captured per second since the previous snapshot.
    pub fps_in: f64,
    /// Access units written per second since the previous snapshot.
    pub fps_out: f64,
    /// Median encode time of recent frames, in µs.
    pub encode_p50_us: u64,
    /// 99th-percentile encode time of recent frames, in µs.
    pub encode_p99_us: u64,
    /// Frames captured that never reached the encoder (leaky queue) or left it.
    pub dropped_frames: u64,
    /// Records the ring dropped (consumer too slow) or refused (too large).
    pub ring_dropped: u64,
    /// Frames captured since the start.
    pub frames_captured: u64,
    /// Access units written to the ring since the start.
    pub aus_written: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Pipeline generation: 1 at start, +1 per restart (mode change).
    pub generation: u64,
    /// The last error the pipeline reported, if any.
    pub last_error: Option<String>,
}

#[derive(Clone, Copy, Debug)]
struct Stamp {
    /// Running time of the frame's PTS.
    pts: u64,
    frame: u64,
    captured_ns: u64,
    encode_start_ns: u64,
}

/// State shared between the control side and the streaming threads.
struct Shared {
    producer: Mutex<Option<Producer>>,
    stamps: Mutex<VecDeque<Stamp>>,
    encode_ns: Mutex<VecDeque<u64>>,
    next_frame: AtomicU64,
    encoder_in: AtomicU64,
    aus: AtomicU64,
    keyframes: AtomicU64,
    ring_refused: AtomicU64,
    discontinuity: AtomicBool,
    last_error: Mutex<Option<String>>,
    draw_counter: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new(producer: Producer) -> Arc<Self> {
        Arc::new(Shared {
            producer: Mutex::new(Some(producer)),
            stamps: Mutex::new(VecDeque::with_capacity(STAMP_WINDOW)),
            encode_ns: Mutex::new(VecDeque::with_capacity(ENCODE_SAMPLES)),
            next_frame: AtomicU64::new(0),
            encoder_in: AtomicU64::new(0),
            aus: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            ring_refused: AtomicU64::new(0),
            discontinuity: AtomicBool::new(false),
            last_error: Mutex::new(None),
            draw_counter: AtomicBool::new(false),
        })
    }

    /// Source probe: number the frame, draw the counter, stamp capture time.
    fn on_captured(
        &self,
        pad: &gst::Pad,
        buf: &mut gst::BufferRef,
        info: Option<&gst_video::VideoInfo>,
    ) {
        let now = monotonic_ns();
        let frame = self.next_frame.fetch_add(1, Ordering::Relaxed);
        if self.draw_counter.load(Ordering::Relaxed)
            && let Some(info) = info
        {
            draw_counter(buf, info, frame as u32);
        }
        let Some(pts) = pad_running_time(pad, buf) else {
            return;
        };
        let mut s = lock(&self.stamps);
        if s.len() >= STAMP_WINDOW {
            s.pop_front();
        }
        s.push_back(Stamp {
            pts,
            frame,
            captured_ns: now,
            encode_start_ns: 0,
        });
    }

    /// Encoder sink probe.
    fn on_encode_start(&self, pad: &gst::Pad, buf: &gst::BufferRef) {
        let now = monotonic_ns();
        self.encoder_in.fetch_add(1, Ordering::Relaxed);
        let Some(pts) = pad_running_time(pad, buf) else {
            return;
        };
        let mut s = lock(&self.stamps);
        if let Some(st) = s.iter_mut().rev().find(|st| st.pts == pts) {
            st.encode_start_ns = now;
        }
    }

    /// appsink: one AU → one ring record.
    fn on_au(
        &self,
        buf: &gst::BufferRef,
        segment: Option<&gst::Segment>,
        flags_extra: RecordFlags,
    ) {
        let now = monotonic_ns();
        let stamp = buf.pts().and_then(|pts| {
            let pts = running_time(segment, pts);
            let mut s = lock(&self.stamps);
            let pos = s.iter().position(|st| st.pts == pts)?;
            // Everything older belongs to frames dropped before or inside the encoder.
            let st = s.get(pos).copied();
            s.drain(..=pos);
            st
        });
        let index = self.aus.fetch_add(1, Ordering::Relaxed);
        let mut flags = flags_extra;
        if !buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            flags |= RecordFlags::KEYFRAME;
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        if self.discontinuity.swap(false, Ordering::Relaxed) {
            flags |= RecordFlags::DISCONTINUITY;
        }
        let meta = RecordMeta {
            frame_index: stamp.map_or(index, |s| s.frame),
            flags,
            captured_ns: stamp.map_or(now, |s| s.captured_ns),
            encode_start_ns: stamp
                .map(|s| s.encode_start_ns)
                .filter(|&t| t != 0)
                .unwrap_or(now),
            encode_end_ns: now,
        };
        if meta.encode_start_ns != 0 && meta.encode_start_ns <= now {
            let mut e = lock(&self.encode_ns);
            if e.len() >= ENCODE_SAMPLES {
                e.pop_front();
            }
            e.push_back(now - meta.encode_start_ns);
        }
        let Ok(map) = buf.map_readable() else {
            self.ring_refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut producer = lock(&self.producer);
        let Some(p) = producer.as_mut() else { return };
        match p.write(&meta, &map) {
            Ok(WriteOutcome::Written(_)) | Ok(WriteOutcome::Dropped { .. }) => {}
            Err(e) => {
                self.ring_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, bytes = map.len(), "AU not written to the ring");
            }
        }
    }
}

/// The running time of `pts` under `segment` (what stays comparable across the encoder, which may
/// shift PTS — x264enc moves its output by `min-pts` — but shifts the segment with it).
fn running_time(segment: Option<&gst::Segment>, pts: gst::ClockTime) -> u64 {
    segment
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(pts))
        .unwrap_or(pts)
        .nseconds()
}

/// The running time of a buffer's PTS on `pad` (its sticky segment).
fn pad_running_time(pad: &gst::Pad, buf: &gst::BufferRef) -> Option<u64> {
    let pts = buf.pts()?;
    let seg = pad
        .sticky_event::<gst::event::Segment>(0)
        .map(|e| e.segment().clone());
    Some(running_time(seg.as_ref(), pts))
}

/// Writes the counter into the I420 planes of `buf` (copy-on-write if shared).
fn draw_counter(buf: &mut gst::BufferRef, info: &gst_video::VideoInfo, value: u32) {
    if info.format() != gst_video::VideoFormat::I420 {
        return;
    }
    let (w, h) = (info.width() as usize, info.height() as usize);
    let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, info) else {
        return;
    };
    let strides: Vec<usize> = frame
        .plane_stride()
        .iter()
        .map(|&s| s.max(0) as usize)
        .collect();
    for plane in 0..3u32 {
        let (pw, ph) = if plane == 0 {
            (w, h)
        } else {
            (w.div_ceil(2), h.div_ceil(2))
        };
        let stride = strides.get(plane as usize).copied().unwrap_or(pw);
        let Ok(data) = frame.plane_data_mut(plane) else {
            return;
        };
        let mut p = counter::PlaneMut {
            data,
            stride,
            width: pw,
            height: ph,
        };
        if plane == 0 {
            counter::draw_luma(&mut p, value);
        } else {
            counter::neutral_chroma(&mut p, w, h);
        }
    }
}

/// One built and running pipeline.
struct Running {
    pipeline: gst::Pipeline,
    encoder: gst::Element,
    desc: PipelineDesc,
    generation: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

struct RateMark {
    at: Instant,
    captured: u64,
    aus: u64,
}

/// A running stream: video pipeline (+ optional audio pipeline) feeding rings.
pub struct EncodeWorker {
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
    source: Source,
    encoder: EncoderKind,
    audio: Option<AudioWorker>,
    mark: Mutex<RateMark>,
}

/// The fds handed to transport.
pub struct StreamFds {
    /// The video AU ring (memfd and doorbell).
    pub video: RingFds,
    /// The audio ring, when the stream has audio.
    pub audio: Option<RingFds>,
}

impl EncodeWorker {
    /// Picks the encoder, creates the ring(s), builds and starts the pipeline.
    pub fn start(config: StreamConfig, audio: bool) -> Result<(Self, StreamFds), WorkerError> {
        init()?;
        config.mode.validate().map_err(WorkerError::Mode)?;
        let encoder = match config.encoder {
            Some(e) => e,
            None => pick_encoder(config.codec, &available_encoders()?)?,
        };
        let (producer, video_fds) = Ring::create(VIDEO_RING_CAPACITY, VIDEO_RING_MAX_RECORD)
            .map_err(|e| WorkerError::Ring(e.to_string()))?;
        let shared = Shared::new(producer);
        shared.draw_counter.store(
            matches!(config.source, Source::Test { .. }),
            Ordering::Relaxed,
        );
        let (audio, audio_fds) = if audio {
            let (a, fds) = AudioWorker::start(&config.source.audio())?;
            (Some(a), Some(fds))
        } else {
            (None, None)
        };
        let worker = EncodeWorker {
            shared,
            running: Mutex::new(None),
            source: config.source,
            encoder,
            audio,
            mark: Mutex::new(RateMark {
                at: Instant::now(),
                captured: 0,
                aus: 0,
            }),
        };
        let desc = worker.describe(config.mode, config.bitrate_kbps);
        let running = worker.build(desc, 1)?;
        *lock(&worker.running) = Some(running);
        Ok((
            worker,
            StreamFds {
                video: video_fds,
                audio: audio_fds,
            },
        ))
    }

    fn describe(&self, mode: Mode, bitrate_kbps: u32) -> PipelineDesc {
        let source = match &self.source {
            Source::Test { pattern } => SourceDesc::Test {
                pattern: pattern.clone(),
            },
            Source::PipeWire {
                fd,
                node_id,
                dmabuf,
                ..
            } => SourceDesc::PipeWire {
                fd: fd.as_ref().map(|f| f.as_raw_fd()),
                node_id: *node_id,
                dmabuf: *dmabuf && self.encoder.is_nvenc(),
            },
        };
        PipelineDesc::new(source, mode, self.encoder, bitrate_kbps)
    }

    fn build(&self, desc: PipelineDesc, generation: u64) -> Result<Running, WorkerError> {
        let launch = desc.launch();
        let build_err = |message: String| WorkerError::Build {
            launch: launch.clone(),
            message,
        };
        let pipeline = gst::parse::launch(&launch)
            .map_err(|e| build_err(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| build_err("not a pipeline".into()))?;
        let get = |name: &str| {
            pipeline
                .by_name(name)
                .ok_or_else(|| build_err(format!("no element named {name}")))
        };
        let captured = get(names::CAPTURED)?;
        let encoder = get(names::ENCODER)?;
        let sink = get(names::SINK)?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| build_err("the sink is not an appsink".into()))?;

        // Errors from streaming threads are recorded; nobody pops the bus.
        if let Some(bus) = pipeline.bus() {
            let shared = self.shared.clone();
            bus.set_sync_handler(move |_, msg| {
                if let gst::MessageView::Error(e) = msg.view() {
                    let text = format!(
                        "{} ({})",
                        e.error(),
                        e.debug().map(|d| d.to_string()).unwrap_or_default()
                    );
                    tracing::error!(error = %text, "pipeline error");
                    *lock(&shared.last_error) = Some(text);
                }
                gst::BusSyncReply::Drop
            });
        }

        let probe_pad = captured
            .static_pad("src")
            .ok_or_else(|| build_err("capsfilter has no src pad".into()))?;
        let shared = self.shared.clone();
        let info: Mutex<Option<(gst::Caps, gst_video::VideoInfo)>> = Mutex::new(None);
        probe_pad.add_probe(gst::PadProbeType::BUFFER, move |pad, probe| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = probe.data.as_mut() {
                let mut info = lock(&info);
                if let Some(caps) = pad.current_caps()
                    && info.as_ref().is_none_or(|(c, _)| *c != caps)
                {
                    *info = gst_video::VideoInfo::from_caps(&caps)
                        .ok()
                        .map(|i| (caps, i));
                }
                shared.on_captured(pad, buffer.make_mut(), info.as_ref().map(|(_, i)| i));
            }
            gst::PadProbeReturn::Ok
        });
        let enc_sink = encoder
            .static_pad("sink")
            .ok_or_else(|| build_err("encoder has no sink pad".into()))?;
        let shared = self.shared.clone();
        enc_sink.add_probe(gst::PadProbeType::BUFFER, move |pad, probe| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = probe.data.as_ref() {
                shared.on_encode_start(pad, buffer);
            }
            gst::PadProbeReturn::Ok
        });
        let shared = self.shared.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    if let Some(buf) = sample.buffer() {
                        shared.on_au(buf, sample.segment(), RecordFlags::empty());
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );

        let running = Running {
            pipeline,
            encoder,
            desc,
            generation,
        };
        running
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| WorkerError::Start(self.error_or(e.to_string())))?;
        let (res, _, _) = running.pipeline.state(gst::ClockTime::from_mseconds(
            START_TIMEOUT.as_millis() as u64,
        ));
        if let Err(e) = res {
            return Err(WorkerError::Start(self.error_or(e.to_string())));
        }
        if let Some(e) = lock(&self.shared.last_error).clone() {
            return Err(WorkerError::Start(e));
        }
        tracing::info!(launch = %running.desc.launch(), generation, "pipeline playing");
        Ok(running)
    }

    fn error_or(&self, fallback: String) -> String {
        lock(&self.shared.last_error).clone().unwrap_or(fallback)
    }

    /// The encoder element chosen from the ladder.
    pub fn encoder(&self) -> EncoderKind {
        self.encoder
    }

    /// The current pipeline description.
    pub fn desc(&self) -> Option<PipelineDesc> {
        lock(&self.running).as_ref().map(|r| r.desc.clone())
    }

    /// The pipeline generation (changes only on restart).
    pub fn generation(&self) -> u64 {
        lock(&self.running).as_ref().map_or(0, |r| r.generation)
    }

    /// Asks the encoder for an IDR (with parameter sets) as soon as possible: the encoder marks
    /// the next frame it receives as a forced keyframe.
    pub fn request_keyframe(&self) -> Result<(), WorkerError> {
        let guard = lock(&self.running);
        let r = guard.as_ref().ok_or(WorkerError::Stopped)?;
        let ev = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        let pad = r
            .encoder
            .static_pad("src")
            .ok_or_else(|| WorkerError::Start("encoder has no src pad".into()))?;
        if !pad.send_event(ev) {
            tracing::warn!("the encoder did not accept the force-key-unit event");
        }
        Ok(())
    }

    /// Applies a new bitrate and/or mode. A bitrate change alone is applied live on the encoder
    /// (no restart, no IDR); a mode change rebuilds the pipeline (→ `Ok(true)`), and the first AU
    /// of the new pipeline is an IDR flagged DISCONTINUITY.
    pub fn reconfigure(
        &self,
        bitrate_kbps: Option<u32>,
        mode: Option<Mode>,
    ) -> Result<bool, WorkerError> {
        let mut guard = lock(&self.running);
        let r = guard.as_mut().ok_or(WorkerError::Stopped)?;
        let new_mode = mode.filter(|m| *m != r.desc.mode);
        if let Some(m) = new_mode {
            m.validate().map_err(WorkerError::Mode)?;
            let kbps = bitrate_kbps.unwrap_or(r.desc.bitrate_kbps);
            let generation = r.generation + 1;
            // The old pipeline must let go of the source (one PipeWire consumer per node) first.
            *guard = None;
            lock(&self.shared.stamps).clear();
            self.shared.discontinuity.store(true, Ordering::Relaxed);
            let desc = self.describe(m, kbps);
            *guard = Some(self.build(desc, generation)?);
            return Ok(true);
        }
        if let Some(kbps) = bitrate_kbps.filter(|&k| k != r.desc.bitrate_kbps) {
            let (name, value) = self.encoder.bitrate_property(kbps);
            r.encoder.set_property_from_str(name, &value);
            r.desc.bitrate_kbps = kbps;
            tracing::info!(kbps, "bitrate changed live");
        }
        Ok(false)
    }

    /// Counters; rates are over the time since the previous call (or the start).
    pub fn stats(&self) -> WorkerStats {
        let s = &self.shared;
        let captured = s.next_frame.load(Ordering::Relaxed);
        let aus = s.aus.load(Ordering::Relaxed);
        let (fps_in, fps_out) = {
            let mut m = lock(&self.mark);
            let dt = m.at.elapsed().as_secs_f64();
            let rates = if dt > 0.0 {
                (
                    (captured.saturating_sub(m.captured)) as f64 / dt,
                    (aus.saturating_sub(m.aus)) as f64 / dt,
                )
            } else {
                (0.0, 0.0)
            };
            *m = RateMark {
                at: Instant::now(),
                captured,
                aus,
            };
            rates
        };
        let (p50, p99) = {
            let e = lock(&s.encode_ns);
            let mut v: Vec<u64> = e.iter().copied().collect();
            v.sort_unstable();
            (percentile(&v, 50) / 1000, percentile(&v, 99) / 1000)
        };
        let ring = lock(&s.producer).as_ref().map(|p| p.stats());
        WorkerStats {
            fps_in,
            fps_out,
            encode_p50_us: p50,
            encode_p99_us: p99,
            // In flight (≤ queue + encoder depth) counts too; it is small and transient.
            dropped_frames: captured.saturating_sub(aus),
            ring_dropped: ring.map_or(0, |r| r.records_dropped),
            frames_captured: captured,
            aus_written: aus,
            keyframes: s.keyframes.load(Ordering::Relaxed),
            generation: self.generation(),
            last_error: lock(&s.last_error).clone(),
        }
    }

    /// What the consumer has read, summed over the video and the audio ring (for the lease:
    /// a read of either ring is progress).
    pub fn ring_progress(&self) -> RingProgress {
        let rings = [Some(&self.shared), self.audio.as_ref().map(|a| &a.shared)];
        rings
            .into_iter()
            .flatten()
            .filter_map(|s| lock(&s.producer).as_ref().map(Producer::stats))
            .fold(RingProgress::default(), |acc, r| RingProgress {
                records_read: acc.records_read + r.records_read,
                unread: acc.unread + r.lag_records,
            })
    }

    /// True while the video pipeline runs and GStreamer has reported no error (false after a
    /// failure, or when a mode change could not build its new pipeline).
    ///
    /// Never waits: while a mode change holds the pipeline (building can take seconds), the
    /// stream counts as alive.
    pub fn is_alive(&self) -> bool {
        if self.failure().is_some() {
            return false;
        }
        match self.running.try_lock() {
            Ok(running) => running.is_some(),
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Poisoned(p)) => p.into_inner().is_some(),
        }
    }

    /// Stops the pipeline(s) and closes the ring(s) (the consumer sees the producer closed).
    pub fn stop(&self) {
        *lock(&self.running) = None;
        if let Some(p) = lock(&self.shared.producer).take() {
            p.close();
        }
        if let Some(a) = &self.audio {
            a.stop();
        }
    }

    /// The error that stopped the pipeline, if one did (GStreamer errors are fatal to a
    /// pipeline: restart the stream).
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// One human line for the health status.
    pub fn status_line(&self) -> String {
        if let Some(e) = self.failure() {
            return format!("stream failed: {e}");
        }
        match self.desc() {
            Some(d) => format!(
                "encoding {} {} {} → ring",
                d.mode.label(),
                d.encoder.codec().name(),
                d.encoder.element()
            ),
            None => "stopped".into(),
        }
    }
}

impl Drop for EncodeWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) * p).div_ceil(100);
    sorted[i.min(sorted.len() - 1)]
}

/// The audio pipeline ([`AudioSourceDesc`]: the test tone, or the monitor of a compositor
/// output's sink) → Opus → audio ring.
pub struct AudioWorker {
    pipeline: gst::Pipeline,
    shared: Arc<Shared>,
}

impl AudioWorker {
    fn start(source: &AudioSourceDesc) -> Result<(Self, RingFds), WorkerError> {
        let (producer, fds) = Ring::create(AUDIO_RING_CAPACITY, AUDIO_RING_MAX_RECORD)
            .map_err(|e| WorkerError::Ring(e.to_string()))?;
        let shared = Shared::new(producer);
        let launch = source.launch();
        let err = |message: String| WorkerError::Build {
            launch: launch.clone(),
            message,
        };
        let pipeline = gst::parse::launch(&launch)
            .map_err(|e| err(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| err("not a pipeline".into()))?;
        let sink = pipeline
            .by_name(names::SINK)
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| err("no appsink".into()))?;
        if let Some(bus) = pipeline.bus() {
            let sh = shared.clone();
            bus.set_sync_handler(move |_, msg| {
                if let gst::MessageView::Error(e) = msg.view() {
                    // The video goes on without sound; say so.
                    tracing::warn!(error = %e.error(), "the stream's audio pipeline failed");
                    *lock(&sh.last_error) = Some(e.error().to_string());
                }
                gst::BusSyncReply::Drop
            });
        }
        let sh = shared.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    if let Some(buf) = sample.buffer() {
                        // Every Opus packet decodes on its own.
                        sh.on_au(buf, sample.segment(), RecordFlags::AUDIO);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| WorkerError::Start(format!("audio: {e}")))?;
        Ok((AudioWorker { pipeline, shared }, fds))
    }

    fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(p) = lock(&self.shared.producer).take() {
            p.close();
        }
    }
}
