//! Pacing schedule for one frame's packets: microburst first, then spread.
//!
//! With the default 64 KiB burst and 1248-byte packets a chunk is at most 52 packets
//! (64 896 bytes), which fits one UDP GSO send (≤ 64 segments, ≤ 65 507 payload bytes); the
//! send thread sends `batch.range_bytes(chunk.packets)` with segment size `batch.stride()` at
//! `frame_start + chunk.offset_ns`, sleeping or spinning in between.

use core::ops::Range;

/// Sender-local pacing knobs (not negotiated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacingConfig {
    /// A frame of at most this many bytes is sent at once; larger frames are cut into chunks of
    /// at most this many bytes.
    pub burst_bytes: usize,
    /// The chunks of a large frame start within this fraction (per-mille) of the frame
    /// interval.
    pub spread_permille: u32,
    /// Frame interval in ns.
    pub frame_interval_ns: u64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            burst_bytes: 64 * 1024,
            spread_permille: 750,
            frame_interval_ns: 16_666_667,
        }
    }
}

/// A run of consecutive packets to send `offset_ns` after the frame's send start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaceChunk {
    /// Indices of the packets in this run, into the frame's batch.
    pub packets: Range<usize>,
    /// When to send the run, in ns after the frame's send start.
    pub offset_ns: u64,
}

/// Computes the schedule for `packet_count` packets of `packet_len` bytes into `out`
/// (cleared first; reuse it to avoid allocation).
///
/// - total ≤ `burst_bytes` (or a single packet): one chunk at offset 0;
/// - otherwise chunks of `max(1, burst_bytes / packet_len)` packets; chunk `i` of `n` starts at
///   `i × spread / n` with `spread = frame_interval_ns × spread_permille / 1000`, so the first
///   chunk goes at once and the last one starts before `spread × (n−1)/n`.
///
/// Offsets are non-decreasing and strictly below `spread` (or 0).
pub fn pacing_schedule(
    cfg: &PacingConfig,
    packet_count: usize,
    packet_len: usize,
    out: &mut Vec<PaceChunk>,
) {
    out.clear();
    if packet_count == 0 {
        return;
    }
    let total = packet_count.saturating_mul(packet_len);
    if total <= cfg.burst_bytes || packet_count == 1 {
        out.push(PaceChunk {
            packets: 0..packet_count,
            offset_ns: 0,
        });
        return;
    }
    let per_chunk = (cfg.burst_bytes / packet_len.max(1)).max(1);
    let n = packet_count.div_ceil(per_chunk);
    let spread =
        u128::from(cfg.frame_interval_ns) * u128::from(cfg.spread_permille.min(1000)) / 1000;
    for i in 0..n {
        let start = i * per_chunk;
        let end = (start + per_chunk).min(packet_count);
        let offset = spread * i as u128 / n as u128;
        out.push(PaceChunk {
            packets: start..end,
            offset_ns: offset as u64,
        });
    }
}
