//! The one synthetic feed: drives a [`Sender`] from wire's [`SyntheticSource`] at its bitrate and
//! frame rate. It is transport's `synthetic` video source and speed-test load (each frame in the
//! AU envelope with its stage timestamps, bitrate and keyframes steered live through
//! [`FeedControl`]), and the load of the tests, the loss sweep and the benches (bare synthetic
//! AUs, optionally with backpressure).

use crate::send::{Frame, Sender, TrySendError};
use crate::sys;
use punktfunk_wire::au::{AuTiming, ENVELOPE_LEN, FLAG_DISCONTINUITY, FLAG_KEYFRAME};
use punktfunk_wire::synthetic::{self, SyntheticConfig, SyntheticSource};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;

/// What to feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedConfig {
    /// The synthetic stream to generate (bitrate, frame rate, keyframe shape).
    pub source: SyntheticConfig,
    /// Frames to produce (`None`: until stopped).
    pub frames: Option<u64>,
    /// Frame `i` is produced at `start + i × interval_ns` (CLOCK_MONOTONIC, absolute
    /// schedule: a late tick does not shift the later ones). 0 = as fast as the queue takes
    /// them (a full queue then drops, as it would for a real encoder).
    pub interval_ns: u64,
    /// Test/benchmark only: when the queue is full, wait (1 ms steps) instead of dropping.
    /// A real source never does this (the hot path must not block); tests use it to check
    /// delivery when the build is too slow to keep up (unoptimized debug builds).
    pub backpressure: bool,
    /// Wrap each frame in the AU envelope (flags and capture/encode/handed stamps), as a host
    /// sends it; the first frame after a queue drop is flagged DISCONTINUITY.
    pub envelope: bool,
}

impl FeedConfig {
    /// Real time: one frame every `1 / fps`, bare synthetic AUs.
    pub fn realtime(source: SyntheticConfig, frames: Option<u64>) -> Self {
        Self {
            source,
            frames,
            interval_ns: 1_000_000_000 / u64::from(source.fps.max(1)),
            backpressure: false,
            envelope: false,
        }
    }
}

/// Knobs another thread turns while the feed runs; each is read once per frame.
#[derive(Debug)]
pub struct FeedControl {
    /// The bitrate the frame sizes follow (starts at `FeedConfig::source.bitrate_bps`).
    pub bitrate_bps: AtomicU64,
    /// Make the next frame a keyframe (a client asked for one).
    pub force_keyframe: AtomicBool,
    /// Frames the sender accepted, for whoever reports on the session.
    pub frames_sent: Arc<AtomicU64>,
    stop: AtomicBool,
}

impl FeedControl {
    /// Controls starting at `cfg`'s bitrate, counting accepted frames into `frames_sent`.
    pub fn new(cfg: &FeedConfig, frames_sent: Arc<AtomicU64>) -> Self {
        Self {
            bitrate_bps: AtomicU64::new(cfg.source.bitrate_bps),
            force_keyframe: AtomicBool::new(false),
            frames_sent,
            stop: AtomicBool::new(false),
        }
    }

    /// Tells the feed to stop after its current frame.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }
}

/// What a feed did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedReport {
    /// Frames produced.
    pub produced: u64,
    /// Frames the sender accepted.
    pub queued: u64,
    /// Frames refused because the send queue was full (the sender counts them too).
    pub dropped: u64,
    /// Frames produced more than one interval after their tick (the producer fell behind).
    pub late_ticks: u64,
    /// Waits for queue space (only with `backpressure`).
    pub backpressure_waits: u64,
    /// How long the feed ran, in ns.
    pub elapsed_ns: u64,
}

/// The frame sizes of the source, rebuilt when the controlled bitrate changes.
struct Shaper {
    base: SyntheticConfig,
    source: SyntheticSource,
    bitrate_bps: u64,
}

impl Shaper {
    fn new(base: SyntheticConfig) -> Self {
        Self {
            base,
            source: SyntheticSource::new(base),
            bitrate_bps: base.bitrate_bps,
        }
    }

    /// Length and keyframe flag of frame `index` at `bitrate_bps`, keyframe forced or not.
    fn shape(&mut self, index: u64, bitrate_bps: u64, force_keyframe: bool) -> (usize, bool) {
        if bitrate_bps != self.bitrate_bps {
            self.source = SyntheticSource::new(SyntheticConfig {
                bitrate_bps,
                ..self.base
            });
            self.bitrate_bps = bitrate_bps;
        }
        let (mut len, mut keyframe) = self.source.frame_shape(index);
        if force_keyframe && !keyframe {
            keyframe = true;
            len = (len * self.base.keyframe_factor.max(1) as usize).min(self.base.max_frame_bytes);
        }
        (len, keyframe)
    }
}

/// Builds frame `index` into `buf`: the synthetic AU, in its envelope if asked.
fn build(
    index: u64,
    len: usize,
    keyframe: bool,
    discontinuity: bool,
    envelope: bool,
    scratch: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) {
    if !envelope {
        synthetic::fill(index, len, buf);
        return;
    }
    let captured_ns = sys::monotonic_ns();
    synthetic::fill(index, len, scratch);
    let encode_end_ns = sys::monotonic_ns();
    let mut flags = if keyframe { FLAG_KEYFRAME } else { 0 };
    if discontinuity {
        flags |= FLAG_DISCONTINUITY;
    }
    buf.clear();
    buf.reserve(ENVELOPE_LEN + scratch.len());
    AuTiming {
        flags,
        captured_ns,
        encode_start_ns: captured_ns,
        encode_end_ns,
        handed_ns: sys::monotonic_ns(),
    }
    .push_to(buf);
    buf.extend_from_slice(scratch);
}

/// Hands `frame` to the sender, waiting for room when `backpressure` is set; true if queued.
fn hand_over(
    sender: &Sender,
    mut frame: Frame,
    backpressure: bool,
    ctl: &FeedControl,
    report: &mut FeedReport,
) -> Result<bool, ()> {
    loop {
        match sender.try_send(frame) {
            Ok(()) => return Ok(true),
            Err(TrySendError::Full(f)) if backpressure && !ctl.stop.load(Relaxed) => {
                // try_send counted it as dropped; it is retried, not dropped.
                sender.uncount_queue_drop();
                report.backpressure_waits += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
                frame = f;
            }
            Err(TrySendError::Full(_)) => return Ok(false),
            Err(TrySendError::Disconnected(_)) => return Err(()),
        }
    }
}

/// Runs the feed on the calling thread until `cfg.frames` are produced or `ctl` is stopped.
/// `on_drop(index)` is called for each frame the queue refused (where a real source would
/// request a keyframe).
pub fn run_synthetic(
    sender: &Sender,
    cfg: &FeedConfig,
    ctl: &FeedControl,
    mut on_drop: impl FnMut(u64),
) -> FeedReport {
    let mut shaper = Shaper::new(cfg.source);
    let mut report = FeedReport::default();
    let mut scratch = Vec::new();
    let mut dropped_before = false;
    let start = sys::monotonic_ns();
    let mut index: u64 = 0;
    while cfg.frames.is_none_or(|n| index < n) && !ctl.stop.load(Relaxed) {
        if cfg.interval_ns > 0 {
            let tick = start.saturating_add(index.saturating_mul(cfg.interval_ns));
            sys::wait_until(tick, 50_000);
            if sys::monotonic_ns() > tick + cfg.interval_ns {
                report.late_ticks += 1;
            }
        }
        let forced = ctl.force_keyframe.swap(false, Relaxed);
        let (len, keyframe) = shaper.shape(index, ctl.bitrate_bps.load(Relaxed), forced);
        let mut buf = sender.buffer();
        build(
            index,
            len,
            keyframe,
            dropped_before,
            cfg.envelope,
            &mut scratch,
            &mut buf,
        );
        report.produced += 1;
        match hand_over(
            sender,
            Frame::new(index, keyframe, buf),
            cfg.backpressure,
            ctl,
            &mut report,
        ) {
            Ok(true) => {
                report.queued += 1;
                dropped_before = false;
                ctl.frames_sent.fetch_add(1, Relaxed);
            }
            Ok(false) => {
                // The send thread is behind: this frame is lost; the next one says so.
                report.dropped += 1;
                dropped_before = true;
                on_drop(index);
            }
            Err(()) => {
                report.dropped += 1;
                on_drop(index);
                break;
            }
        }
        index += 1;
    }
    report.elapsed_ns = sys::monotonic_ns() - start;
    report
}

/// A synthetic feed on its own thread (`pf-dp-synth`). [`join`](Self::join) and
/// [`stop`](Self::stop) block (call them off the async workers); dropping only tells the
/// thread to stop (it exits after its current frame) and never waits.
pub struct SyntheticFeed {
    control: Arc<FeedControl>,
    thread: Option<JoinHandle<FeedReport>>,
}

impl SyntheticFeed {
    /// Starts the feed thread, pushing `cfg`'s frames into `sender`.
    pub fn spawn(sender: Arc<Sender>, cfg: FeedConfig) -> std::io::Result<Self> {
        Self::spawn_counting(sender, cfg, Arc::new(AtomicU64::new(0)))
    }

    /// Like [`SyntheticFeed::spawn`], counting accepted frames into `frames_sent`.
    pub fn spawn_counting(
        sender: Arc<Sender>,
        cfg: FeedConfig,
        frames_sent: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let control = Arc::new(FeedControl::new(&cfg, frames_sent));
        let ctl = control.clone();
        let thread = std::thread::Builder::new()
            .name("pf-dp-synth".into())
            .spawn(move || run_synthetic(&sender, &cfg, &ctl, |_| {}))?;
        Ok(Self {
            control,
            thread: Some(thread),
        })
    }

    /// The knobs of the running feed.
    pub fn control(&self) -> &FeedControl {
        &self.control
    }

    /// Waits for the feed to produce all its frames.
    pub fn join(mut self) -> FeedReport {
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }

    /// Stops the feed now.
    pub fn stop(self) -> FeedReport {
        self.control.stop();
        self.join()
    }
}

impl Drop for SyntheticFeed {
    /// Only signals the thread to stop; never waits for it.
    fn drop(&mut self) {
        self.control.stop();
    }
}
