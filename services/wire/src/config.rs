//! Negotiated data-plane parameters and the frame/block layout derived from them.

use crate::packet::{HEADER_LEN, TAG_LEN};
use reed_solomon_simd::ReedSolomonEncoder;

/// Largest number of data shards in one FEC block that this crate accepts.
///
/// reed-solomon-simd works over GF(2^16) (65536 shards in total per block); we keep half for
/// data so that any parity fraction up to 100 % stays representable.
pub const MAX_DATA_SHARDS_LIMIT: u32 = 32_768;
/// Largest frame (access unit) this crate accepts in any configuration (256 MiB).
pub const MAX_FRAME_BYTES_LIMIT: u32 = 256 << 20;
/// Largest number of frames a receiver tracks at once.
pub const MAX_FRAMES_IN_FLIGHT: u32 = 1024;
/// Largest UDP payload (IPv4, 65535 − 20 − 8).
pub const MAX_UDP_PAYLOAD: u32 = 65_507;

/// Parameters both ends agree on (in the QUIC control plane) before the data plane starts.
///
/// Every receive-side buffer bound derives from these values; packet fields are only ever
/// checked *against* them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// Bytes of AU data per shard (= per packet, before the tag). Even (GF(2^16) symbols), ≥ 2.
    pub shard_bytes: u32,
    /// Most data shards in one FEC block; larger frames are cut into several balanced blocks.
    pub max_data_shards: u32,
    /// Parity shards per block as a fraction of its data shards, in per-mille (rounded up).
    pub parity_permille: u32,
    /// Minimum parity shards per block (protects small frames, e.g. audio or P-frames).
    pub parity_floor: u32,
    /// Largest access unit, in bytes.
    pub max_frame_bytes: u32,
    /// Frames the receiver assembles concurrently; an older incomplete frame falling out of this
    /// window is reported lost.
    pub frames_in_flight: u32,
    /// Nominal frame interval in nanoseconds (e.g. 16 666 667 for 60 Hz).
    pub frame_interval_ns: u64,
    /// `k` of the loss deadline: a frame that is not complete `k × frame_interval_ns` after the
    /// first evidence of it (see crate docs) is reported lost.
    pub loss_deadline_intervals: u32,
    /// Largest UDP payload a packet may have (default 1452: a 1500-byte MTU over IPv6).
    pub max_udp_payload: u32,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            shard_bytes: 1200,
            max_data_shards: 1024,
            parity_permille: 100,
            parity_floor: 2,
            max_frame_bytes: 4 << 20,
            frames_in_flight: 4,
            frame_interval_ns: 16_666_667,
            loss_deadline_intervals: 3,
            max_udp_payload: 1452,
        }
    }
}

/// Why a [`DataPlaneConfig`] was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `shard_bytes` is odd or below 2.
    #[error("shard_bytes must be even and at least 2 (got {0})")]
    ShardBytes(u32),
    #[error(
        "packet of {packet} bytes (header {HEADER_LEN} + shard + tag {TAG_LEN}) exceeds max_udp_payload {max}"
    )]
    /// A sealed packet would exceed `max_udp_payload`.
    PacketTooLarge {
        /// Size of one sealed packet in bytes.
        packet: u32,
        /// The configured `max_udp_payload`.
        max: u32,
    },
    /// `max_udp_payload` is above [`MAX_UDP_PAYLOAD`].
    #[error("max_udp_payload must be at most {MAX_UDP_PAYLOAD} (got {0})")]
    UdpPayload(u32),
    /// `max_data_shards` is zero or above the limit.
    #[error("max_data_shards must be in 1..={MAX_DATA_SHARDS_LIMIT} (got {0})")]
    MaxDataShards(u32),
    /// `parity_permille` is above 1000.
    #[error("parity_permille must be at most 1000 (got {0})")]
    ParityPermille(u32),
    /// `parity_floor` is above `max_data_shards`.
    #[error("parity_floor must be at most max_data_shards (got {0})")]
    ParityFloor(u32),
    /// `max_frame_bytes` is zero or above the limit.
    #[error("max_frame_bytes must be in 1..={MAX_FRAME_BYTES_LIMIT} (got {0})")]
    MaxFrameBytes(u32),
    /// A max-size frame would need more blocks (given) than the 16-bit header field holds.
    #[error("a max-size frame would need {0} blocks; at most 65535 fit the header")]
    TooManyBlocks(u64),
    /// `frames_in_flight` is zero or above the limit.
    #[error("frames_in_flight must be in 1..={MAX_FRAMES_IN_FLIGHT} (got {0})")]
    FramesInFlight(u32),
    /// `frame_interval_ns` is zero or above 10 s.
    #[error("frame_interval_ns must be in 1..=10 s (got {0})")]
    FrameInterval(u64),
    /// `loss_deadline_intervals` is outside 1..=1000.
    #[error("loss_deadline_intervals must be in 1..=1000 (got {0})")]
    LossDeadline(u32),
}

impl DataPlaneConfig {
    /// Checks every field; all other methods assume a validated config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shard_bytes < 2 || !self.shard_bytes.is_multiple_of(2) {
            return Err(ConfigError::ShardBytes(self.shard_bytes));
        }
        if self.max_udp_payload > MAX_UDP_PAYLOAD {
            return Err(ConfigError::UdpPayload(self.max_udp_payload));
        }
        let packet = u64::from(self.shard_bytes) + (HEADER_LEN + TAG_LEN) as u64;
        if packet > u64::from(self.max_udp_payload) {
            return Err(ConfigError::PacketTooLarge {
                packet: u32::try_from(packet).unwrap_or(u32::MAX),
                max: self.max_udp_payload,
            });
        }
        if self.max_data_shards == 0 || self.max_data_shards > MAX_DATA_SHARDS_LIMIT {
            return Err(ConfigError::MaxDataShards(self.max_data_shards));
        }
        if self.parity_permille > 1000 {
            return Err(ConfigError::ParityPermille(self.parity_permille));
        }
        if self.parity_floor > self.max_data_shards {
            return Err(ConfigError::ParityFloor(self.parity_floor));
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > MAX_FRAME_BYTES_LIMIT {
            return Err(ConfigError::MaxFrameBytes(self.max_frame_bytes));
        }
        let shards = u64::from(self.max_frame_bytes).div_ceil(u64::from(self.shard_bytes));
        let blocks = shards.div_ceil(u64::from(self.max_data_shards));
        if blocks > u64::from(u16::MAX) {
            return Err(ConfigError::TooManyBlocks(blocks));
        }
        if self.frames_in_flight == 0 || self.frames_in_flight > MAX_FRAMES_IN_FLIGHT {
            return Err(ConfigError::FramesInFlight(self.frames_in_flight));
        }
        if self.frame_interval_ns == 0 || self.frame_interval_ns > 10_000_000_000 {
            return Err(ConfigError::FrameInterval(self.frame_interval_ns));
        }
        if self.loss_deadline_intervals == 0 || self.loss_deadline_intervals > 1000 {
            return Err(ConfigError::LossDeadline(self.loss_deadline_intervals));
        }
        Ok(())
    }

    /// Size of every packet on the wire: header + shard + tag.
    pub fn packet_len(&self) -> usize {
        HEADER_LEN + self.shard_bytes as usize + TAG_LEN
    }

    /// Parity shards for a block of `data` data shards:
    /// `max(ceil(data × parity_permille / 1000), parity_floor)`, reduced until
    /// reed-solomon-simd supports the combination (0 means "no FEC for this block").
    pub fn parity_for(&self, data: u32) -> u32 {
        if data == 0 {
            return 0;
        }
        let frac = (u64::from(data) * u64::from(self.parity_permille)).div_ceil(1000);
        let mut p = frac.max(u64::from(self.parity_floor)).min(65_535) as u32;
        while p > 0 && !ReedSolomonEncoder::supports(data as usize, p as usize) {
            p -= 1;
        }
        p
    }

    /// Layout of a frame of `len` bytes, or `None` if `len > max_frame_bytes`.
    pub fn layout(&self, len: u32) -> Option<FrameLayout> {
        FrameLayout::new(self, len)
    }

    /// Data shards of the largest frame.
    pub fn max_data_shards_per_frame(&self) -> u32 {
        self.max_frame_bytes.div_ceil(self.shard_bytes).max(1)
    }

    /// Upper bound on packets (data + parity) of any frame under this config.
    pub fn max_packets_per_frame(&self) -> u32 {
        let n = self.max_data_shards_per_frame();
        let blocks = n.div_ceil(self.max_data_shards);
        let parity = (u64::from(n) * u64::from(self.parity_permille)).div_ceil(1000)
            + u64::from(blocks) * (u64::from(self.parity_floor) + 1);
        u32::try_from(u64::from(n) + parity).unwrap_or(u32::MAX)
    }

    /// Upper bound on a [`crate::Reassembler`]'s frame buffers in bytes:
    /// `frames_in_flight × max_packets_per_frame × shard_bytes`. The control plane can refuse
    /// a config whose bound exceeds its memory budget.
    pub fn receive_memory_bound(&self) -> u64 {
        u64::from(self.frames_in_flight)
            * u64::from(self.max_packets_per_frame())
            * u64::from(self.shard_bytes)
    }

    /// Loss deadline span: `loss_deadline_intervals × frame_interval_ns`.
    pub fn loss_deadline_ns(&self) -> u64 {
        self.frame_interval_ns
            .saturating_mul(u64::from(self.loss_deadline_intervals))
    }
}

/// How one frame is cut into FEC blocks. Derived from the config and the frame length only,
/// so sender and receiver compute the same layout; packets must agree with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FrameLayout {
    /// AU length in bytes.
    pub frame_len: u32,
    /// Shard size in bytes.
    pub shard_bytes: u32,
    /// Data shards of the whole frame: `max(1, ceil(frame_len / shard_bytes))`.
    pub data_shards: u32,
    /// Number of blocks: `ceil(data_shards / max_data_shards)`.
    pub blocks: u32,
    base: u32,
    extra: u32,
    parity_big: u32,
    parity_small: u32,
}

/// One FEC block of a [`FrameLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// Index of the block's first data shard within the frame.
    pub first_data_shard: u32,
    /// Data shards in this block.
    pub data: u32,
    /// Parity shards in this block.
    pub parity: u32,
    /// Index of the block's first parity shard among all parity shards of the frame.
    pub first_parity_shard: u32,
}

impl FrameLayout {
    fn new(cfg: &DataPlaneConfig, frame_len: u32) -> Option<Self> {
        if frame_len > cfg.max_frame_bytes {
            return None;
        }
        let data_shards = frame_len.div_ceil(cfg.shard_bytes).max(1);
        let blocks = data_shards.div_ceil(cfg.max_data_shards);
        let base = data_shards / blocks;
        let extra = data_shards % blocks;
        Some(Self {
            frame_len,
            shard_bytes: cfg.shard_bytes,
            data_shards,
            blocks,
            base,
            extra,
            parity_big: cfg.parity_for(base + 1),
            parity_small: cfg.parity_for(base),
        })
    }

    /// Layout of block `b` (`b < blocks`). Blocks differ in size by at most one shard; the
    /// first `data_shards % blocks` blocks are the larger ones.
    pub fn block(&self, b: u32) -> BlockLayout {
        let big = b.min(self.extra);
        let small = b - big;
        let is_big = b < self.extra;
        BlockLayout {
            first_data_shard: b * self.base + big,
            data: if is_big { self.base + 1 } else { self.base },
            parity: if is_big {
                self.parity_big
            } else {
                self.parity_small
            },
            first_parity_shard: big * self.parity_big + small * self.parity_small,
        }
    }

    /// Parity shards of the whole frame.
    pub fn parity_shards(&self) -> u32 {
        self.extra * self.parity_big + (self.blocks - self.extra) * self.parity_small
    }

    /// Packets of the whole frame (data + parity).
    pub fn packets(&self) -> u32 {
        self.data_shards + self.parity_shards()
    }
}
