//! The video packetizer: RTP + NV video header, multi-block Cauchy FEC, optional AES-GCM,
//! as a [`punktfunk_wire::Packetize`] so the protocol-agnostic paced sender sends it.
//!
//! Datagram (unencrypted), `S` = ANNOUNCE `packetSize`, `B = S + 16`, `L = S − 16`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 12 | RTP: `0x90`, PT 0, seq u16be (+1 per datagram, from 0), 90 kHz ts u32be, SSRC 0 |
//! | 12 | 4 | 0 |
//! | 16 | 4 | `streamPacketIndex` u32le = (24-bit packet counter) << 8 |
//! | 20 | 4 | `frameIndex` u32le (from 1) |
//! | 24 | 1 | flags: 0x01 picture data, 0x04 SOF / 0x02 EOF on the first / last data shard of every FEC block |
//! | 25 | 1 | extraFlags 0 |
//! | 26 | 1 | multiFecFlags `0x10` |
//! | 27 | 1 | multiFecBlocks: block index << 4, last block index << 6 |
//! | 28 | 4 | fecInfo u32le: shard index << 12, data shards << 22, FEC percent << 4 |
//! | 32 | L | slice of (8-byte frame header ‖ access unit), zero-padded in a block's last shard |
//!
//! Every data shard is sent at full `B` bytes, data first then parity per block; parity is
//! computed over the whole `B`-byte images ([`crate::fec`]) and then gets its own RTP
//! header, `frameIndex`, `multiFecBlocks` and `fecInfo`. With video encryption each image is
//! sealed into `IV(12) ‖ frameIndex u32le ‖ tag(16) ‖ ciphertext(B)` (`S + 48` bytes), IV =
//! packet counter u64le ‖ 0 0 0 ‖ `'V'`.
//!
//! Frame numbers are `FrameRef::index + 1` (a frame the sender skipped is a gap the client
//! answers with an IDR request, as it should); RTP timestamps are `index × 90000 / fps`.

use crate::fec::{self, FramePlan};
use punktfunk_wire::{FrameRef, PacketBatch, Packetize, PacketizeError};

/// RTP + NV video header bytes before the payload.
pub const HEADER_LEN: usize = 32;
/// The per-frame header in front of the access unit.
pub const FRAME_HEADER_LEN: usize = 8;
/// The encryption prefix (IV, frame number, tag).
pub const ENCRYPTION_PREFIX: usize = 32;

/// Frame type byte of the frame header: P-frame.
pub const FRAME_TYPE_P: u8 = 1;
/// Frame type byte of the frame header: IDR.
pub const FRAME_TYPE_IDR: u8 = 2;

/// Why a [`VideoConfig`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoConfigError {
    /// `packet_size` outside [`crate::rtsp::PACKET_SIZE_RANGE`] or not a multiple of 16.
    #[error("video packet size {0} invalid")]
    PacketSize(u32),
    /// FEC percentage above 255.
    #[error("FEC percentage {0} above 255")]
    FecPercent(u32),
    /// Frame rate 0.
    #[error("frame rate must be positive")]
    Fps,
}

/// The negotiated video parameters.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// ANNOUNCE `x-nv-video[0].packetSize` (`S`).
    pub packet_size: u32,
    /// FEC percentage (host policy; Sunshine's default is 20; 0 = no parity).
    pub fec_percent: u32,
    /// ANNOUNCE `minRequiredFecPackets`.
    pub min_parity: u32,
    /// Frame rate (RTP timestamps).
    pub fps: u32,
    /// AES-128-GCM with the launch's `rikey` if ANNOUNCE enabled video encryption.
    pub encryption_key: Option<[u8; 16]>,
    /// Largest access unit accepted (the ring's bound); also capped by the 4 × 1023 shards the
    /// header fields can describe.
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for VideoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoConfig")
            .field("packet_size", &self.packet_size)
            .field("fec_percent", &self.fec_percent)
            .field("min_parity", &self.min_parity)
            .field("fps", &self.fps)
            .field("encrypted", &self.encryption_key.is_some())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

/// Sunshine's default FEC percentage (the host's policy, not negotiated).
pub const DEFAULT_FEC_PERCENT: u32 = 20;

impl VideoConfig {
    /// The session's video parameters from ANNOUNCE and the launch keys: packet size,
    /// minimum parity, frame rate, and the key only if ANNOUNCE enabled video encryption.
    pub fn for_stream(
        stream: &crate::rtsp::StreamConfig,
        keys: &crate::http::SessionKeys,
        fec_percent: u32,
        max_frame_bytes: usize,
    ) -> Self {
        Self {
            packet_size: stream.packet_size,
            fec_percent,
            min_parity: stream.min_fec_packets,
            fps: stream.fps,
            encryption_key: stream.video_encryption.then_some(keys.rikey),
            max_frame_bytes,
        }
    }

    /// Payload bytes per datagram (`L = S − 16`).
    pub fn payload_len(&self) -> usize {
        self.packet_size as usize - 16
    }

    /// Plaintext datagram size (`B = S + 16`).
    pub fn shard_len(&self) -> usize {
        self.packet_size as usize + 16
    }

    /// Bytes per datagram on the wire.
    pub fn datagram_len(&self) -> usize {
        self.shard_len()
            + if self.encryption_key.is_some() {
                ENCRYPTION_PREFIX
            } else {
                0
            }
    }

    /// The largest access unit a frame can carry.
    pub fn frame_limit(&self) -> usize {
        let fields = (fec::MAX_BLOCKS * fec::MAX_BLOCK_DATA_SHARDS) as usize * self.payload_len()
            - FRAME_HEADER_LEN;
        fields.min(self.max_frame_bytes)
    }

    fn validate(&self) -> Result<(), VideoConfigError> {
        if !crate::rtsp::PACKET_SIZE_RANGE.contains(&self.packet_size)
            || !self.packet_size.is_multiple_of(16)
        {
            return Err(VideoConfigError::PacketSize(self.packet_size));
        }
        if self.fec_percent > fec::MAX_FEC_PERCENT {
            return Err(VideoConfigError::FecPercent(self.fec_percent));
        }
        if self.fps == 0 {
            return Err(VideoConfigError::Fps);
        }
        Ok(())
    }
}

/// The GameStream video packetizer of one stream (one per session and key).
pub struct VideoPacketizer {
    cfg: VideoConfig,
    /// The data plane's AES-128-GCM seam (`wire::Aead`, the faster backend), when encrypted.
    cipher: Option<Box<dyn punktfunk_wire::Aead>>,
    /// Packets sent so far: RTP sequence (low 16 bits), streamPacketIndex (low 24 bits) and
    /// the GCM IV counter.
    counter: u64,
    parity: Vec<u8>,
}

impl std::fmt::Debug for VideoPacketizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoPacketizer")
            .field("cfg", &self.cfg)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl VideoPacketizer {
    /// A packetizer whose first datagram has sequence 0.
    pub fn new(cfg: VideoConfig) -> Result<Self, VideoConfigError> {
        Self::with_initial_sequence(cfg, 0)
    }

    /// Continues a stream at packet `counter` (from [`Packetize::next_sequence`] of the one
    /// it replaces), so RTP sequence numbers and GCM IVs carry on.
    pub fn with_initial_sequence(cfg: VideoConfig, counter: u64) -> Result<Self, VideoConfigError> {
        cfg.validate()?;
        let cipher = cfg
            .encryption_key
            .map(|k| punktfunk_wire::AeadBackend::FASTEST.aes128_gcm(&k));
        Ok(Self {
            cfg,
            cipher,
            counter,
            parity: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VideoConfig {
        &self.cfg
    }
}

/// Copies `out.len()` bytes of the virtual buffer `header ‖ au` starting at `offset`,
/// zero-filling past its end.
fn copy_virtual(header: &[u8], au: &[u8], offset: usize, out: &mut [u8]) {
    let mut o = offset;
    let mut w = 0;
    if o < header.len() {
        let n = (header.len() - o).min(out.len());
        out[..n].copy_from_slice(&header[o..o + n]);
        w = n;
        o += n;
    }
    if o < header.len() {
        // `out` ended inside the header.
        return;
    }
    let start = o - header.len();
    if start < au.len() {
        let n = (au.len() - start).min(out.len() - w);
        out[w..w + n].copy_from_slice(&au[start..start + n]);
        w += n;
    }
    out[w..].fill(0);
}

struct ShardHeader {
    seq: u64,
    ts: u32,
    frame: u32,
    flags: u8,
    multi_fec_blocks: u8,
    fec_info: u32,
}

/// RTP bytes 0-11 (a parity shard keeps its parity bytes from 12 on).
fn write_rtp(img: &mut [u8], seq: u64, ts: u32) {
    img[0] = 0x90;
    img[1] = 0;
    img[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    img[4..8].copy_from_slice(&ts.to_be_bytes());
    img[8..12].fill(0);
}

fn write_data_header(img: &mut [u8], h: &ShardHeader) {
    write_rtp(img, h.seq, h.ts);
    img[12..16].fill(0);
    img[16..20].copy_from_slice(&(((h.seq & 0xFF_FFFF) as u32) << 8).to_le_bytes());
    img[20..24].copy_from_slice(&h.frame.to_le_bytes());
    img[24] = h.flags;
    img[25] = 0;
    img[26] = 0x10;
    img[27] = h.multi_fec_blocks;
    img[28..32].copy_from_slice(&h.fec_info.to_le_bytes());
}

fn write_parity_header(img: &mut [u8], h: &ShardHeader) {
    write_rtp(img, h.seq, h.ts);
    img[20..24].copy_from_slice(&h.frame.to_le_bytes());
    img[27] = h.multi_fec_blocks;
    img[28..32].copy_from_slice(&h.fec_info.to_le_bytes());
}

impl VideoPacketizer {
    fn frame_header(&self, frame: &FrameRef<'_>) -> [u8; FRAME_HEADER_LEN] {
        let l = self.cfg.payload_len();
        let last = match (FRAME_HEADER_LEN + frame.data.len()) % l {
            0 => l,
            r => r,
        };
        let last = (last as u16).to_le_bytes();
        let kind = if frame.keyframe {
            FRAME_TYPE_IDR
        } else {
            FRAME_TYPE_P
        };
        [0x01, 0, 0, kind, last[0], last[1], 0, 0]
    }

    /// Fills the data shards of one block at packets `first..first + d` and computes its
    /// parity into the packets after them.
    #[allow(clippy::too_many_arguments)]
    fn write_block(
        &mut self,
        out: &mut PacketBatch,
        plan: &FramePlan,
        b: usize,
        first: usize,
        shard0: usize,
        header: &[u8],
        frame: &FrameRef<'_>,
        ts: u32,
    ) {
        let blk = plan.blocks[b];
        let (d, p) = (blk.data as usize, blk.parity as usize);
        let off = if self.cipher.is_some() {
            ENCRYPTION_PREFIX
        } else {
            0
        };
        let b_len = self.cfg.shard_len();
        let l = self.cfg.payload_len();
        let frame_no = (frame.index.wrapping_add(1)) as u32;
        let mfb = ((b as u8) << 4) | (((plan.count - 1) as u8) << 6);
        for i in 0..d {
            let Some(pkt) = out.packet_mut(first + i) else {
                return;
            };
            let img = &mut pkt[off..off + b_len];
            let flags = 0x01 | if i == 0 { 0x04 } else { 0 } | if i + 1 == d { 0x02 } else { 0 };
            write_data_header(
                img,
                &ShardHeader {
                    seq: self.counter + (first + i) as u64,
                    ts,
                    frame: frame_no,
                    flags,
                    multi_fec_blocks: mfb,
                    fec_info: ((i as u32) << 12) | (blk.data << 22) | (blk.percent << 4),
                },
            );
            copy_virtual(header, frame.data, (shard0 + i) * l, &mut img[HEADER_LEN..]);
        }
        if p == 0 {
            return;
        }
        self.parity.resize(p * b_len, 0);
        {
            let data: Vec<&[u8]> = (0..d)
                .filter_map(|i| out.packet(first + i).map(|pkt| &pkt[off..off + b_len]))
                .collect();
            let mut parity: Vec<&mut [u8]> = self.parity.chunks_exact_mut(b_len).collect();
            fec::encode_video(&data, &mut parity);
        }
        for j in 0..p {
            let Some(pkt) = out.packet_mut(first + d + j) else {
                return;
            };
            let img = &mut pkt[off..off + b_len];
            img.copy_from_slice(&self.parity[j * b_len..(j + 1) * b_len]);
            write_parity_header(
                img,
                &ShardHeader {
                    seq: self.counter + (first + d + j) as u64,
                    ts,
                    frame: frame_no,
                    flags: 0,
                    multi_fec_blocks: mfb,
                    fec_info: (((d + j) as u32) << 12) | (blk.data << 22) | (blk.percent << 4),
                },
            );
        }
    }

    fn seal_all(&self, out: &mut PacketBatch, frame_no: u32) -> Result<(), PacketizeError> {
        let Some(cipher) = &self.cipher else {
            return Ok(());
        };
        for (k, pkt) in out.packets_mut().enumerate() {
            let counter = self.counter + k as u64;
            let mut iv = [0u8; 12];
            iv[..8].copy_from_slice(&counter.to_le_bytes());
            iv[11] = b'V';
            let (prefix, body) = pkt.split_at_mut(ENCRYPTION_PREFIX);
            let tag = cipher
                .seal_in_place(&iv, &[], body)
                .map_err(PacketizeError::Seal)?;
            prefix[..12].copy_from_slice(&iv);
            prefix[12..16].copy_from_slice(&frame_no.to_le_bytes());
            prefix[16..32].copy_from_slice(&tag);
        }
        Ok(())
    }
}

impl Packetize for VideoPacketizer {
    fn packetize(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut PacketBatch,
    ) -> Result<(), PacketizeError> {
        let too_large = PacketizeError::FrameTooLarge {
            len: frame.data.len(),
            max: u32::try_from(self.cfg.frame_limit()).unwrap_or(u32::MAX),
        };
        if frame.data.len() > self.cfg.frame_limit() {
            return Err(too_large);
        }
        let l = self.cfg.payload_len();
        let dtot = (FRAME_HEADER_LEN + frame.data.len()).div_ceil(l) as u32;
        let plan =
            fec::plan_frame(dtot, self.cfg.fec_percent, self.cfg.min_parity).ok_or(too_large)?;
        let total = plan.packets() as usize;
        if self.cipher.is_some() && self.counter.checked_add(total as u64).is_none() {
            return Err(PacketizeError::Seal(
                punktfunk_wire::SealError::SequenceExhausted,
            ));
        }
        out.prepare(self.cfg.datagram_len(), total);
        let header = self.frame_header(&frame);
        let ts = (u128::from(frame.index) * 90_000 / u128::from(self.cfg.fps)) as u32;
        let (mut first, mut shard0) = (0usize, 0usize);
        for b in 0..plan.count {
            self.write_block(out, &plan, b, first, shard0, &header, &frame, ts);
            let blk = plan.blocks[b];
            first += (blk.data + blk.parity) as usize;
            shard0 += blk.data as usize;
        }
        self.seal_all(out, frame.index.wrapping_add(1) as u32)?;
        self.counter += total as u64;
        Ok(())
    }

    fn next_sequence(&self) -> u64 {
        self.counter
    }

    fn new_batch(&self) -> PacketBatch {
        let l = self.cfg.payload_len();
        let dtot = (FRAME_HEADER_LEN + self.cfg.frame_limit()).div_ceil(l) as u32;
        let packets = fec::plan_frame(dtot, self.cfg.fec_percent, self.cfg.min_parity)
            .map(|p| p.packets() as usize)
            .unwrap_or(0);
        PacketBatch::with_capacity(self.cfg.datagram_len(), packets)
    }
}
