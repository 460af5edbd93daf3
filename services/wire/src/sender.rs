//! Sender core: cut an access unit into equal-size shards, add Reed-Solomon parity per
//! block, seal every packet, all into one reusable contiguous buffer.

use crate::config::{ConfigError, DataPlaneConfig};
use crate::crypto::{SealError, Sealer, SessionKey};
use crate::packet::{
    FLAG_KEYFRAME, FLAG_LAST_BLOCK, FLAG_PARITY, HEADER_LEN, PacketHeader, StreamKind,
};
pub use crate::transmit::PacketBatch;
use crate::transmit::{FrameRef, Packetize};
use reed_solomon_simd::ReedSolomonEncoder;

/// What [`Packetizer::packetize`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSummary {
    /// Total packets in the batch.
    pub packets: u32,
    /// Packets carrying data shards.
    pub data_packets: u32,
    /// Packets carrying Reed-Solomon parity shards.
    pub parity_packets: u32,
    /// FEC blocks the frame was cut into.
    pub blocks: u32,
    /// Sequence number of the first packet; the rest follow consecutively.
    pub first_seq: u64,
}

/// Why a frame could not be packetized (nothing was written; no sequence numbers consumed).
/// The error of every [`Packetize`] implementation (a new packetizer adds its variants here).
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum PacketizeError {
    /// The access unit is larger than the config's `max_frame_bytes`.
    #[error("access unit of {len} bytes exceeds max_frame_bytes {max}")]
    FrameTooLarge {
        /// Size of the access unit in bytes.
        len: usize,
        /// The config's `max_frame_bytes`.
        max: u32,
    },
    /// Sealing failed (the sequence space is exhausted).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The Reed-Solomon encoder rejected the block.
    #[error("reed-solomon encoder: {0}")]
    Fec(reed_solomon_simd::Error),
}

/// Sender-side core for one stream kind in one direction (owns that kind's sequence space).
///
/// Create exactly one per (key, kind) for the lifetime of a key: two sealers with the same
/// key and kind would repeat nonces. To change the config mid-session, carry the sealer over
/// ([`Packetizer::into_sealer`] + [`Packetizer::with_sealer`]).
pub struct Packetizer {
    cfg: DataPlaneConfig,
    kind: StreamKind,
    sealer: Sealer,
    encoder: Option<ReedSolomonEncoder>,
}

impl Packetizer {
    /// Validates `cfg` and sets up the sealer.
    pub fn new(
        cfg: DataPlaneConfig,
        key: &SessionKey,
        kind: StreamKind,
    ) -> Result<Self, ConfigError> {
        Self::with_sealer(cfg, kind, Sealer::new(key, kind))
    }

    /// Uses a given sealer (e.g. one resumed at a sequence number).
    pub fn with_sealer(
        cfg: DataPlaneConfig,
        kind: StreamKind,
        sealer: Sealer,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            kind,
            sealer,
            encoder: None,
        })
    }

    /// The validated data-plane config this packetizer runs with.
    pub fn config(&self) -> &DataPlaneConfig {
        &self.cfg
    }

    /// The sealer (e.g. to read [`Sealer::remaining`]).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Gives the sealer back, e.g. to build a new `Packetizer` for a renegotiated config with
    /// [`Packetizer::with_sealer`] without restarting the sequence: a new [`Packetizer::new`]
    /// with the same key and kind would reuse nonces, which AES-GCM must never do.
    pub fn into_sealer(self) -> Sealer {
        self.sealer
    }

    /// Writes all packets of frame `index` into `batch`: per block, its data shards (the AU
    /// bytes, last shard zero-padded) then its parity shards, every packet sealed.
    ///
    /// The wire carries the low 32 bits of `index`. Allocation-free once `batch` and the
    /// encoder have grown to the largest frame size seen.
    pub fn packetize(
        &mut self,
        index: u64,
        keyframe: bool,
        au: &[u8],
        batch: &mut PacketBatch,
    ) -> Result<FrameSummary, PacketizeError> {
        let too_large = PacketizeError::FrameTooLarge {
            len: au.len(),
            max: self.cfg.max_frame_bytes,
        };
        let len = u32::try_from(au.len()).map_err(|_| too_large)?;
        let layout = self.cfg.layout(len).ok_or(too_large)?;
        let packets = layout.packets();
        let first_seq = self.sealer.reserve(u64::from(packets))?;

        let stride = self.cfg.packet_len();
        let shard = self.cfg.shard_bytes as usize;
        batch.prepare(stride, packets as usize);
        let base_flags = if keyframe { FLAG_KEYFRAME } else { 0 };

        let mut p = 0usize; // packet cursor
        for b in 0..layout.blocks {
            let blk = layout.block(b);
            let mut flags = base_flags;
            if b + 1 == layout.blocks {
                flags |= FLAG_LAST_BLOCK;
            }
            let mut hdr = PacketHeader {
                kind: self.kind,
                flags,
                seq: 0,
                frame_index: index as u32,
                frame_len: len,
                block_index: b as u16,
                block_count: layout.blocks as u16,
                shard_index: 0,
                data_shards: blk.data as u16,
                parity_shards: blk.parity as u16,
            };
            let mut enc = if blk.parity > 0 {
                Some(match &mut self.encoder {
                    Some(e) => {
                        e.reset(blk.data as usize, blk.parity as usize, shard)
                            .map_err(PacketizeError::Fec)?;
                        e
                    }
                    none => none.insert(
                        ReedSolomonEncoder::new(blk.data as usize, blk.parity as usize, shard)
                            .map_err(PacketizeError::Fec)?,
                    ),
                })
            } else {
                None
            };
            // Data shards: copy AU bytes straight into the packet payload, hand the plaintext
            // to the encoder and seal the packet while it is still in cache (one pass over
            // the frame instead of three).
            for k in 0..blk.data {
                let pkt = &mut batch.buf[p * stride..(p + 1) * stride];
                hdr.shard_index = k as u16;
                write_header(&hdr, pkt);
                let off = (blk.first_data_shard as usize + k as usize) * shard;
                let payload = &mut pkt[HEADER_LEN..HEADER_LEN + shard];
                let src = au.get(off..).unwrap_or(&[]);
                let n = src.len().min(shard);
                payload[..n].copy_from_slice(&src[..n]);
                payload[n..].fill(0);
                if let Some(e) = enc.as_deref_mut() {
                    e.add_original_shard(&*payload)
                        .map_err(PacketizeError::Fec)?;
                }
                self.sealer.seal_reserved(first_seq + p as u64, pkt)?;
                p += 1;
            }
            // Parity shards.
            if let Some(e) = enc {
                let result = e.encode().map_err(PacketizeError::Fec)?;
                hdr.flags |= FLAG_PARITY;
                for (j, rec) in result.recovery_iter().enumerate() {
                    let pkt = &mut batch.buf[p * stride..(p + 1) * stride];
                    hdr.shard_index = (blk.data as usize + j) as u16;
                    write_header(&hdr, pkt);
                    pkt[HEADER_LEN..HEADER_LEN + shard].copy_from_slice(rec);
                    self.sealer.seal_reserved(first_seq + p as u64, pkt)?;
                    p += 1;
                }
            }
        }
        debug_assert_eq!(p, packets as usize);
        Ok(FrameSummary {
            packets,
            data_packets: layout.data_shards,
            parity_packets: layout.parity_shards(),
            blocks: layout.blocks,
            first_seq,
        })
    }
}

/// punktfunk/1 through the send-thread seam: FEC + AES-GCM seal + headers.
impl Packetize for Packetizer {
    fn packetize(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut PacketBatch,
    ) -> Result<(), PacketizeError> {
        Packetizer::packetize(self, frame.index, frame.keyframe, frame.data, out).map(|_| ())
    }

    fn next_sequence(&self) -> u64 {
        self.sealer.next_sequence()
    }

    fn new_batch(&self) -> PacketBatch {
        PacketBatch::for_config(&self.cfg)
    }
}

fn write_header(hdr: &PacketHeader, pkt: &mut [u8]) {
    if let Some(h) = pkt.first_chunk_mut::<HEADER_LEN>() {
        hdr.write(h);
    }
}
