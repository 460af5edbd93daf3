//! Pacing schedule for one frame's packets: microburst first, then spread.
//!
//! With the default 64 KiB burst and 1248-byte packets a chunk is normally at most 52 packets
//! (64 896 bytes), which fits one UDP GSO send (≤ 64 segments, ≤ 65 507 payload bytes); the
//! send thread sends `batch.range_bytes(chunk.packets)` (one GSO super-buffer per 64 KiB) with
//! segment size `batch.stride()` at `frame_start + chunk.offset_ns`, sleeping in between.
//!
//! Chunks start at least [`MIN_CHUNK_GAP_NS`] apart: a frame that would need more chunks than
//! fit the spread at that gap gets fewer, larger ones. Every chunk after the first costs the
//! send thread a timer wake-up (~20 µs of CPU on our 2-core guests, docs/performance.md), so a
//! 1 MiB frame at 60 fps goes out in 12 chunks of ~88 packets instead of 21 of 52.

use core::ops::Range;

/// The least time between the starts of two chunks of one frame (1 ms): it caps a frame's
/// chunks, and with them the send thread's wake-ups, at `spread / MIN_CHUNK_GAP_NS` (12 at
/// 60 fps), whatever the frame's size.
pub const MIN_CHUNK_GAP_NS: u64 = 1_000_000;

/// Sender-local pacing knobs (not negotiated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacingConfig {
    /// A frame of at most this many bytes is sent at once; larger frames are cut into chunks of
    /// at most this many bytes, unless that would put chunks closer than [`MIN_CHUNK_GAP_NS`]
    /// (then fewer, larger chunks).
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
/// - otherwise `n` chunks: as many as chunks of `max(1, burst_bytes / packet_len)` packets need,
///   but at most `max(1, spread / MIN_CHUNK_GAP_NS)`, the packets shared out evenly (the first
///   chunks one packet larger); chunk `i` of `n` starts at `i × spread / n` with
///   `spread = frame_interval_ns × spread_permille / 1000`, so the first chunk goes at once and
///   the last one starts before `spread × (n−1)/n`.
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
    let spread =
        u128::from(cfg.frame_interval_ns) * u128::from(cfg.spread_permille.min(1000)) / 1000;
    let max_chunks = usize::try_from(spread / u128::from(MIN_CHUNK_GAP_NS))
        .unwrap_or(usize::MAX)
        .max(1);
    let n = packet_count.div_ceil(per_chunk).min(max_chunks);
    let (base, extra) = (packet_count / n, packet_count % n);
    let mut start = 0;
    for i in 0..n {
        let end = start + base + usize::from(i < extra);
        let offset = spread * i as u128 / n as u128;
        out.push(PaceChunk {
            packets: start..end,
            offset_ns: offset as u64,
        });
        start = end;
    }
}

/// How a sender's pacing schedule is carried out: the fact a host reports (transport's status
/// line, `Welcome.pacing`, the client's report as [`PacingMode::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PacingMode {
    /// The whole frame is handed to the kernel at once, each chunk with its departure time
    /// (`SO_TXTIME`); the `fq` qdisc on the egress device holds every chunk until then (EDT).
    /// No wake-ups on the send thread.
    KernelFq,
    /// The send thread sleeps until each chunk's time and sends it then (the egress device
    /// has no `fq`, or UDP GSO is unavailable).
    #[default]
    UserSpace,
    /// Not paced: every frame goes out at once (audio).
    Off,
}

impl PacingMode {
    /// The name in reports: `"kernel-fq"`, `"user-space"`, `"off"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KernelFq => "kernel-fq",
            Self::UserSpace => "user-space",
            Self::Off => "off",
        }
    }
}

impl core::fmt::Display for PacingMode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
