//! The packetizer seam: what a send thread needs from a protocol, and nothing more.
//!
//! A send shell (`punktfunk-dataplane`'s `SendPipeline`) paces and batches bytes; it knows
//! nothing of packet formats, FEC or encryption. Per frame it asks a [`Packetize`]
//! implementation to fill a [`PacketBatch`] — every packet of the frame, back to back with one
//! fixed stride (the UDP GSO segment size), like quinn-udp's `Transmit` (contents + segment
//! size) — and then sends packet ranges of that batch at the times of its pacing schedule.
//!
//! Implementations:
//! - [`Packetizer`](crate::Packetizer): punktfunk/1 (Reed-Solomon FEC over GF(2^16), AES-GCM
//!   seal, 32-byte headers);
//! - GameStream's RTP + GF(2^8) FEC video packetizer and its RTP Opus audio packetizer, in
//!   `punktfunk-gamestream` (services/gamestream): the protocol's crate, sealing through
//!   [`crate::crypto`]'s seam.
//!
//! ## Call order (what a send shell does per frame)
//!
//! 1. Once, before the first frame: `let mut batch = packetizer.new_batch();` (pre-sized so
//!    that steady-state packetizing never allocates).
//! 2. Per frame: [`Packetize::packetize`]`(frame, &mut batch)`. On `Ok`, `batch` holds
//!    `batch.len()` packets of `batch.stride()` bytes each; on `Err` the frame is not sent
//!    (the batch content is unspecified, and must not be sent).
//! 3. After `packetize`, whatever its outcome: [`Packetize::next_sequence`] (the resume
//!    point a replacement packetizer of the same key and stream must start at).
//! 4. Send `batch.range_bytes(r)` for the packet ranges `r` of the pacing schedule
//!    ([`pacing_schedule`](crate::pacing_schedule)`(.., batch.len(), batch.stride(), ..)`),
//!    each as one `sendmmsg` (messages of one packet, or UDP GSO super-buffers with segment
//!    size `batch.stride()`). The per-packet work of this step never calls into the
//!    packetizer.

use crate::config::DataPlaneConfig;
use crate::sender::PacketizeError;
use core::ops::Range;

/// One frame (access unit) handed to a [`Packetize`] implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Frame index of this stream (a session starts at 0).
    pub index: u64,
    /// The frame is a keyframe (IDR).
    pub keyframe: bool,
    /// The frame's bytes.
    pub data: &'a [u8],
}

/// Turns frames into packets for a protocol-agnostic send thread.
///
/// A packetizer owns everything protocol-specific: headers, FEC, encryption, sequence
/// numbers. It is called once per frame (dynamic dispatch there costs nothing measurable);
/// the per-packet send loop only reads the [`PacketBatch`] it filled. See the
/// [module documentation](self) for the call order.
pub trait Packetize: Send {
    /// Writes every packet of `frame`, in send order, into `out` (after
    /// [`PacketBatch::prepare`] with the stride and count of this frame). On error nothing
    /// of the frame may be sent.
    fn packetize(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut PacketBatch,
    ) -> Result<(), PacketizeError>;

    /// The sequence number the next packet would carry: a packetizer that replaces this one
    /// for the same key and stream starts there, so that no nonce is used twice. Packetizers
    /// without a sequence space return 0.
    fn next_sequence(&self) -> u64;

    /// An empty batch for this packetizer, pre-sized for its largest frame if it knows it
    /// (default: empty; it grows on first use and is then reused).
    fn new_batch(&self) -> PacketBatch {
        PacketBatch::new()
    }
}

impl<P: Packetize + ?Sized> Packetize for Box<P> {
    fn packetize(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut PacketBatch,
    ) -> Result<(), PacketizeError> {
        (**self).packetize(frame, out)
    }

    fn next_sequence(&self) -> u64 {
        (**self).next_sequence()
    }

    fn new_batch(&self) -> PacketBatch {
        (**self).new_batch()
    }
}

/// All packets of one frame, back to back with a fixed stride (= packet size), so the whole
/// batch (or any packet range of it) is a valid UDP GSO super-buffer with segment size
/// [`PacketBatch::stride`]: the bytes-plus-segment-size of quinn-udp's `Transmit`. Reused
/// across frames: it only grows, up to the largest frame.
///
/// Writers (a [`Packetize`] implementation) call [`prepare`](Self::prepare) with the frame's
/// stride and packet count, then fill every packet ([`packet_mut`](Self::packet_mut) or
/// [`packets_mut`](Self::packets_mut)); readers (the send shell) use
/// [`range_bytes`](Self::range_bytes) / [`packet`](Self::packet).
#[derive(Default)]
pub struct PacketBatch {
    pub(crate) buf: Vec<u8>,
    stride: usize,
    count: usize,
}

impl PacketBatch {
    /// An empty batch; it grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch pre-sized for the largest punktfunk/1 frame of `cfg`, so that packetizing
    /// never allocates.
    pub fn for_config(cfg: &DataPlaneConfig) -> Self {
        let stride = cfg.packet_len();
        Self::with_capacity(stride, cfg.max_packets_per_frame() as usize)
    }

    /// A batch pre-sized for `count` packets of `stride` bytes.
    pub fn with_capacity(stride: usize, count: usize) -> Self {
        Self {
            buf: vec![0; stride.saturating_mul(count)],
            stride,
            count: 0,
        }
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No packets (nothing to send).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of every packet (the GSO segment size).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Packet `i`.
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        if i >= self.count {
            return None;
        }
        self.buf.get(i * self.stride..(i + 1) * self.stride)
    }

    /// All packets as one contiguous buffer (`len() * stride()` bytes).
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.count * self.stride]
    }

    /// Packets `range` as one contiguous buffer (clamped to the batch).
    pub fn range_bytes(&self, range: Range<usize>) -> &[u8] {
        let end = range.end.min(self.count);
        let start = range.start.min(end);
        &self.buf[start * self.stride..end * self.stride]
    }

    /// Iterator over the packets.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.bytes().chunks_exact(self.stride.max(1))
    }

    /// Makes the batch `count` packets of `stride` bytes (growing the buffer if needed).
    /// The packets' contents are left over from earlier frames: the writer overwrites every
    /// byte of each.
    pub fn prepare(&mut self, stride: usize, count: usize) {
        let need = stride.saturating_mul(count);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        self.stride = stride;
        self.count = count;
    }

    /// Packet `i`, writable.
    pub fn packet_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        if i >= self.count {
            return None;
        }
        self.buf.get_mut(i * self.stride..(i + 1) * self.stride)
    }

    /// The packets, writable, in order.
    pub fn packets_mut(&mut self) -> impl ExactSizeIterator<Item = &mut [u8]> {
        let len = self.count * self.stride;
        self.buf[..len].chunks_exact_mut(self.stride.max(1))
    }
}
