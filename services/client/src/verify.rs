//! The verifier thread: checks every received video frame, records what the report and
//! `--frames-out` need, spots delivery gaps, and hands encoded frames on to the decoder.

use anyhow::{Context, anyhow};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;

use punktfunk_wire::au::{AuTiming, FLAG_DISCONTINUITY, FLAG_KEYFRAME};

use crate::decode::DecodeInput;
use crate::report::Gap;

/// What video frames carry (`Welcome.payload`; an old host's UNSPECIFIED means synthetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The data-plane generator's bytes, checked byte for byte.
    Synthetic,
    /// An Annex-B access unit of the negotiated codec.
    Encoded,
}

impl Payload {
    pub fn name(self) -> &'static str {
        match self {
            Payload::Synthetic => "synthetic",
            Payload::Encoded => "encoded",
        }
    }
}

/// A delivery gap worth reporting: longer than this between two received frames.
pub const GAP_NS: u64 = 250_000_000;
/// Per-frame records kept (about 4.5 hours at 60 fps); gaps kept.
const MAX_FRAMES: usize = 1 << 20;
const MAX_GAPS: usize = 1 << 16;

/// One received frame as the verifier thread gets it.
pub struct RxRecord {
    pub index: u64,
    pub data: Vec<u8>,
    pub first_arrival_ns: u64,
    pub delivered_ns: u64,
}

/// What the verifier kept of one frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    pub index: u64,
    /// Envelope flags (0 when the envelope did not parse).
    pub flags: u8,
    pub bytes: u64,
    pub timing: Option<AuTiming>,
    pub verified: bool,
    pub first_arrival_ns: u64,
    pub delivered_ns: u64,
}

/// What the verifier thread found.
#[derive(Default)]
pub struct Verified {
    pub frames: u64,
    pub ok: u64,
    pub failures: u64,
    pub bytes: u64,
    pub keyframes: u64,
    pub discontinuities: u64,
    pub first_delivered_ns: Option<u64>,
    /// Index and delivery time of the last frame received.
    pub last: Option<(u64, u64)>,
    /// Every received frame in order (bounded).
    pub infos: Vec<FrameInfo>,
    pub gaps: Vec<Gap>,
    /// Frames the decoder's full channel could not take.
    pub decoder_overflow: u64,
}

/// Checks one frame: the envelope parses and the payload is what `payload` promises.
/// Returns the timing and where the AU starts in `data`.
pub fn check(payload: Payload, index: u64, data: &[u8]) -> anyhow::Result<(AuTiming, usize)> {
    let (timing, au) = AuTiming::parse(data).map_err(|e| anyhow!("no valid AU envelope: {e}"))?;
    match payload {
        Payload::Synthetic => punktfunk_wire::synthetic::verify(index, au)?,
        Payload::Encoded => {
            if !(au.starts_with(&[0, 0, 1]) || au.starts_with(&[0, 0, 0, 1])) {
                anyhow::bail!("the access unit does not start with an Annex-B start code");
            }
        }
    }
    Ok((timing, data.len() - au.len()))
}

/// Finds delivery gaps between consecutive received frames.
#[derive(Debug, Default)]
pub struct GapTracker {
    prev: Option<(u64, u64)>,
}

impl GapTracker {
    /// A gap before this frame: delivered more than [`GAP_NS`] after the previous one, or
    /// flagged DISCONTINUITY (the host lost frames, e.g. its media worker restarted).
    pub fn on_frame(&mut self, index: u64, delivered_ns: u64, discontinuity: bool) -> Option<Gap> {
        let prev = self.prev.replace((index, delivered_ns));
        let (after_frame, at) = prev?;
        let ns = delivered_ns.saturating_sub(at);
        (ns > GAP_NS || discontinuity).then(|| Gap {
            after_frame: Some(after_frame),
            ms: ns as f64 / 1e6,
            discontinuity,
            trailing: false,
        })
    }
}

/// The time without video at the end of a run, when longer than [`GAP_NS`]: from the last
/// frame's delivery (`last`: index, delivery time) — or, when none arrived, from the start of
/// the stream — to the end of the run. All times CLOCK_MONOTONIC ns.
pub fn trailing_gap(last: Option<(u64, u64)>, started_ns: u64, ended_ns: u64) -> Option<Gap> {
    let (after_frame, since) = match last {
        Some((index, delivered)) => (Some(index), delivered),
        None => (None, started_ns),
    };
    let ns = ended_ns.saturating_sub(since);
    (ns > GAP_NS).then(|| Gap {
        after_frame,
        ms: ns as f64 / 1e6,
        discontinuity: false,
        trailing: true,
    })
}

/// Starts the verifier. Encoded frames that verified go to `decoder` (never blocking: a full
/// channel drops the frame and calls `on_dropped` with its index, so a keyframe is requested).
pub fn spawn(
    rx: mpsc::Receiver<RxRecord>,
    payload: Payload,
    decoder: Option<SyncSender<DecodeInput>>,
    on_dropped: impl Fn(u64) + Send + 'static,
) -> anyhow::Result<JoinHandle<Verified>> {
    std::thread::Builder::new()
        .name("pf-verify".into())
        .spawn(move || {
            let mut v = Verified::default();
            let mut gaps = GapTracker::default();
            for r in rx {
                v.frames += 1;
                v.bytes += r.data.len() as u64;
                v.first_delivered_ns.get_or_insert(r.delivered_ns);
                v.last = Some((r.index, r.delivered_ns));
                let checked = check(payload, r.index, &r.data);
                let (timing, au_start) = match checked {
                    Ok((t, s)) => (Some(t), Some(s)),
                    Err(e) => {
                        v.failures += 1;
                        tracing::warn!(index = r.index, error = %e, "frame failed verification");
                        // A frame with an envelope still has flags and stamps worth keeping.
                        (AuTiming::parse(&r.data).ok().map(|(t, _)| t), None)
                    }
                };
                let flags = timing.map_or(0, |t| t.flags);
                let disc = flags & FLAG_DISCONTINUITY != 0;
                v.keyframes += u64::from(flags & FLAG_KEYFRAME != 0);
                v.discontinuities += u64::from(disc);
                if let Some(g) = gaps.on_frame(r.index, r.delivered_ns, disc)
                    && v.gaps.len() < MAX_GAPS
                {
                    v.gaps.push(g);
                }
                if au_start.is_some() {
                    v.ok += 1;
                }
                if v.infos.len() < MAX_FRAMES {
                    v.infos.push(FrameInfo {
                        index: r.index,
                        flags,
                        bytes: r.data.len() as u64,
                        timing,
                        verified: au_start.is_some(),
                        first_arrival_ns: r.first_arrival_ns,
                        delivered_ns: r.delivered_ns,
                    });
                }
                if let (Some(tx), Some(au_start), Payload::Encoded) = (&decoder, au_start, payload)
                {
                    let input = DecodeInput {
                        index: r.index,
                        flags,
                        frame: r.data,
                        au_start,
                        reassembled_ns: r.delivered_ns,
                    };
                    match tx.try_send(input) {
                        Ok(()) => {}
                        Err(TrySendError::Full(i)) => {
                            v.decoder_overflow += 1;
                            on_dropped(i.index);
                        }
                        Err(TrySendError::Disconnected(_)) => {}
                    }
                }
            }
            v
        })
        .context("cannot start the verifier thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flags: u8, au: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        AuTiming {
            flags,
            ..Default::default()
        }
        .push_to(&mut v);
        v.extend_from_slice(au);
        v
    }

    #[test]
    fn encoded_frames_need_an_envelope_and_a_start_code() {
        let (t, start) = check(
            Payload::Encoded,
            0,
            &framed(FLAG_KEYFRAME, &[0, 0, 0, 1, 0x65]),
        )
        .expect("4-byte");
        assert_eq!((t.flags, start), (FLAG_KEYFRAME, 40));
        assert!(check(Payload::Encoded, 0, &framed(0, &[0, 0, 1, 0x41])).is_ok());
        assert!(check(Payload::Encoded, 0, &framed(0, &[0, 1, 0x41])).is_err());
        assert!(check(Payload::Encoded, 0, &framed(0, &[])).is_err());
        assert!(check(Payload::Encoded, 0, &[0, 0, 0, 1, 0x65]).is_err());
        // Synthetic bytes are checked against the generator, so an AU is not accepted there.
        assert!(check(Payload::Synthetic, 0, &framed(0, &[0, 0, 0, 1, 0x65])).is_err());
    }

    #[test]
    fn gaps_are_long_deliveries_or_discontinuities() {
        let ms = 1_000_000u64;
        let mut g = GapTracker::default();
        assert_eq!(
            g.on_frame(0, 1000 * ms, true),
            None,
            "no frame before the first"
        );
        assert_eq!(g.on_frame(1, 1016 * ms, false), None);
        assert_eq!(
            g.on_frame(2, 1266 * ms, false),
            None,
            "250 ms is not more than 250 ms"
        );
        let gap = g.on_frame(3, 1600 * ms, false).expect("334 ms");
        assert_eq!(
            (gap.after_frame, gap.ms, gap.discontinuity, gap.trailing),
            (Some(2), 334.0, false, false)
        );
        let gap = g.on_frame(4, 1610 * ms, true).expect("discontinuity");
        assert_eq!(
            (gap.after_frame, gap.ms, gap.discontinuity),
            (Some(3), 10.0, true)
        );
    }

    #[test]
    fn the_time_after_the_last_frame_is_a_trailing_gap() {
        let ms = 1_000_000u64;
        // Frame 41 arrived 2 s before the end of the run.
        let gap = trailing_gap(Some((41, 3000 * ms)), 1000 * ms, 5000 * ms).expect("2 s");
        assert_eq!(
            (gap.after_frame, gap.ms, gap.discontinuity, gap.trailing),
            (Some(41), 2000.0, false, true)
        );
        // The same threshold as between frames: 250 ms is not a gap, 251 ms is.
        assert_eq!(trailing_gap(Some((9, 1000 * ms)), 0, 1250 * ms), None);
        assert!(trailing_gap(Some((9, 1000 * ms)), 0, 1251 * ms).is_some());
        // No frame at all: the whole stream is the gap.
        let gap = trailing_gap(None, 1000 * ms, 4000 * ms).expect("3 s");
        assert_eq!((gap.after_frame, gap.ms), (None, 3000.0));
        assert_eq!(
            trailing_gap(None, 1000 * ms, 1100 * ms),
            None,
            "a short run"
        );
        // A frame delivered after the end was measured (the receiver still draining).
        assert_eq!(trailing_gap(Some((9, 2000 * ms)), 0, 1000 * ms), None);
    }
}
