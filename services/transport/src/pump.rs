//! The ring pump: a plain thread that moves access units from punktfunk-media's AU ring into a
//! data-plane [`Sender`], wrapping each in the AU envelope with the worker's stage stamps.
//!
//! One pump per ring and media stream; the [`Sender`] and the [`PumpShared`] state outlive
//! pumps, so when media restarts (a new stream, new rings) the wire frame index continues and
//! the AES-GCM sequence is never restarted. The pump never blocks on the network: a full send
//! queue drops the frame (its index is skipped, so the client sees the loss) and asks for a
//! keyframe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use punktfunk_dataplane::{Frame, Sender};
use punktfunk_ring::{Consumer, RecordFlags};
use punktfunk_wire::au::{AuTiming, ENVELOPE_LEN, FLAG_DISCONTINUITY, FLAG_KEYFRAME};

use crate::stream::now_ns;

/// What a pump tells the session's supervisor (never blocks: an unbounded control channel
/// carrying at most one message per frame, and in practice a handful per minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEvent {
    /// Frames were lost on the host (ring overflow or full send queue): the decoder's
    /// references are broken until the next IDR.
    NeedKeyframe,
    /// The producer closed the ring or the ring broke: this media stream is over.
    Ended,
}

/// State shared by the successive pumps of one stream kind in one session.
#[derive(Debug, Default)]
pub struct PumpShared {
    /// The next wire frame index (contiguous across media restarts).
    pub next_index: AtomicU64,
    /// CLOCK_MONOTONIC ns of the last record read (0: none yet); the supervisor's liveness
    /// signal for the media worker.
    pub last_record_ns: AtomicU64,
    /// Frames handed to the sender.
    pub frames_sent: Arc<AtomicU64>,
    /// Frames dropped at the send queue.
    pub frames_dropped: AtomicU64,
    /// Records skipped as too old (see [`PumpConfig::max_age`]).
    pub stale_skipped: AtomicU64,
    /// Set by the supervisor when a new media stream starts: the next frame is flagged
    /// discontinuous (the client reports the gap).
    pub discontinuity: AtomicBool,
}

/// A running pump thread.
/// Dropping it stops the thread (it notices within its 50 ms wait) and joins it.
pub struct Pump {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What a pump needs besides its ring.
pub struct PumpConfig {
    pub name: &'static str,
    pub sender: Arc<Sender>,
    pub shared: Arc<PumpShared>,
    /// Whether lost frames call for a keyframe (video) or not (audio: every packet decodes).
    pub keyframes: bool,
    /// Records captured longer ago than this are skipped before they get a wire index (audio:
    /// a backlog that built up before the pump started, or behind a stall, is stale sound the
    /// client should not queue behind; every Opus packet decodes alone). `None`: send all
    /// (video: later frames reference earlier ones).
    pub max_age: Option<Duration>,
    /// How long a frame may wait for room in a full send queue before it is dropped (see
    /// [`Sender::send_within`]: bursts after an encoder stall clear in microseconds).
    pub send_budget: Duration,
    pub events: tokio::sync::mpsc::UnboundedSender<PumpEvent>,
}

impl Pump {
    pub fn start(consumer: Consumer, cfg: PumpConfig) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pf-pump-{}", cfg.name))
            .spawn(move || run(consumer, &cfg, &s))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (it notices within its 50 ms wait) and joins it. Blocks: call it off
    /// the async workers.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pump {
    /// Only tells the thread to stop (it exits within one 50 ms ring wait); never waits.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The envelope flags of a ring record: keyframe, and discontinuity when the ring (or an
/// earlier stage) lost frames before it or the supervisor marked a new media stream.
pub fn envelope_flags(flags: RecordFlags, dropped_before: u64, restarted: bool) -> u8 {
    let mut f = 0;
    if flags.contains(RecordFlags::KEYFRAME) {
        f |= FLAG_KEYFRAME;
    }
    if flags.contains(RecordFlags::DISCONTINUITY) || dropped_before > 0 || restarted {
        f |= FLAG_DISCONTINUITY;
    }
    f
}

fn run(mut consumer: Consumer, cfg: &PumpConfig, stop: &AtomicBool) {
    let mut ask_keyframe = false;
    while !stop.load(Ordering::Relaxed) {
        match consumer.wait(Some(Duration::from_millis(50))) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(pump = cfg.name, error = %e, "AU ring wait failed");
                let _ = cfg.events.send(PumpEvent::Ended);
                return;
            }
        }
        loop {
            let record = match consumer.try_read() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    // A corrupt ring is the producer's fault; this stream is unusable.
                    tracing::warn!(pump = cfg.name, error = %e, "AU ring is unreadable");
                    let _ = cfg.events.send(PumpEvent::Ended);
                    return;
                }
            };
            let read_ns = now_ns();
            cfg.shared.last_record_ns.store(read_ns, Ordering::Relaxed);
            let meta = *record.meta();
            if meta.flags.contains(RecordFlags::END_OF_STREAM) {
                record.release();
                let _ = cfg.events.send(PumpEvent::Ended);
                return;
            }
            if let Some(age) = cfg.max_age
                && read_ns.saturating_sub(meta.captured_ns) > age.as_nanos() as u64
            {
                record.release();
                cfg.shared.stale_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let restarted = cfg.shared.discontinuity.swap(false, Ordering::Relaxed);
            let flags = envelope_flags(meta.flags, record.dropped_before(), restarted);
            // A ring gap broke the references; a restart starts with an IDR anyway.
            if flags & FLAG_DISCONTINUITY != 0 && !restarted && flags & FLAG_KEYFRAME == 0 {
                ask_keyframe = true;
            }
            let keyframe = flags & FLAG_KEYFRAME != 0;
            let mut data = cfg.sender.buffer();
            data.clear();
            data.reserve(ENVELOPE_LEN + record.payload().len());
            AuTiming {
                flags,
                captured_ns: meta.captured_ns,
                encode_start_ns: meta.encode_start_ns,
                encode_end_ns: meta.encode_end_ns,
                handed_ns: now_ns(),
            }
            .push_to(&mut data);
            data.extend_from_slice(record.payload());
            record.release();
            let index = cfg.shared.next_index.fetch_add(1, Ordering::Relaxed);
            match cfg
                .sender
                .send_within(Frame::new(index, keyframe, data), cfg.send_budget)
            {
                Ok(()) => {
                    cfg.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // The index stays used: the client sees the hole and the decoder waits
                    // for the keyframe we ask for.
                    cfg.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pump = cfg.name, index, error = ?e, "frame dropped at the send queue");
                    ask_keyframe = true;
                }
            }
            if ask_keyframe && cfg.keyframes {
                let _ = cfg.events.send(PumpEvent::NeedKeyframe);
            }
            ask_keyframe = false;
        }
        if consumer.is_finished().unwrap_or(true) {
            let _ = cfg.events.send(PumpEvent::Ended);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_record() {
        assert_eq!(
            envelope_flags(RecordFlags::KEYFRAME, 0, false),
            FLAG_KEYFRAME
        );
        assert_eq!(envelope_flags(RecordFlags::empty(), 0, false), 0);
        assert_eq!(
            envelope_flags(RecordFlags::DISCONTINUITY, 0, false),
            FLAG_DISCONTINUITY
        );
        assert_eq!(
            envelope_flags(RecordFlags::empty(), 3, false),
            FLAG_DISCONTINUITY
        );
        assert_eq!(
            envelope_flags(RecordFlags::KEYFRAME, 0, true),
            FLAG_KEYFRAME | FLAG_DISCONTINUITY
        );
    }
}
