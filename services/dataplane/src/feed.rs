//! Drives a [`Sender`] from wire's [`SyntheticSource`] at its bitrate and frame rate: the
//! `synthetic` video source of transport until media exists, and the load of the tests,
//! the loss sweep and speed-test probes.

use crate::send::{Frame, Sender, TrySendError};
use crate::sys;
use punktfunk_wire::synthetic::{SyntheticConfig, SyntheticSource};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;

/// What to feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedConfig {
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
}

impl FeedConfig {
    /// Real time: one frame every `1 / fps`.
    pub fn realtime(source: SyntheticConfig, frames: Option<u64>) -> Self {
        Self {
            source,
            frames,
            interval_ns: 1_000_000_000 / u64::from(source.fps.max(1)),
            backpressure: false,
        }
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
    pub elapsed_ns: u64,
}

/// Runs the feed on the calling thread until `cfg.frames` are produced or `stop` is set.
/// `on_drop(index)` is called for each frame the queue refused (where a real source would
/// request a keyframe).
pub fn run_synthetic(
    sender: &Sender,
    cfg: &FeedConfig,
    stop: &AtomicBool,
    mut on_drop: impl FnMut(u64),
) -> FeedReport {
    let mut src = SyntheticSource::new(cfg.source);
    let mut report = FeedReport::default();
    let start = sys::monotonic_ns();
    let mut i: u64 = 0;
    while cfg.frames.is_none_or(|n| i < n) && !stop.load(Relaxed) {
        if cfg.interval_ns > 0 {
            let tick = start.saturating_add(i.saturating_mul(cfg.interval_ns));
            sys::wait_until(tick, 200_000);
            if sys::monotonic_ns() > tick + cfg.interval_ns {
                report.late_ticks += 1;
            }
        }
        let mut buf = sender.buffer();
        let meta = src.next_frame(&mut buf);
        report.produced += 1;
        let mut frame = Frame::new(meta.index, meta.keyframe, buf);
        if cfg.backpressure {
            loop {
                match sender.try_send(frame) {
                    Err(TrySendError::Full(f)) if !stop.load(Relaxed) => {
                        // try_send counted it as dropped; it is retried, not dropped.
                        sender.uncount_queue_drop();
                        report.backpressure_waits += 1;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        frame = f;
                    }
                    r => {
                        frame = match r {
                            Ok(()) => {
                                report.queued += 1;
                                break;
                            }
                            Err(e) => e.into_frame(),
                        };
                        report.dropped += 1;
                        on_drop(frame.index);
                        break;
                    }
                }
            }
            i += 1;
            continue;
        }
        match sender.try_send(frame) {
            Ok(()) => report.queued += 1,
            Err(TrySendError::Full(_)) => {
                report.dropped += 1;
                on_drop(meta.index);
            }
            Err(TrySendError::Disconnected(_)) => {
                report.dropped += 1;
                on_drop(meta.index);
                break;
            }
        }
        i += 1;
    }
    report.elapsed_ns = sys::monotonic_ns() - start;
    report
}

/// A synthetic feed on its own thread (`pf-dp-synth`). [`join`](Self::join) and
/// [`stop`](Self::stop) block (call them off the async workers); dropping only tells the
/// thread to stop (it exits after its current frame) and never waits.
pub struct SyntheticFeed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<FeedReport>>,
}

impl SyntheticFeed {
    pub fn spawn(sender: Arc<Sender>, cfg: FeedConfig) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pf-dp-synth".into())
            .spawn(move || run_synthetic(&sender, &cfg, &stop2, |_| {}))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
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
        self.stop.store(true, Relaxed);
        self.join()
    }
}

impl Drop for SyntheticFeed {
    /// Only signals the thread to stop; never waits for it.
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}
