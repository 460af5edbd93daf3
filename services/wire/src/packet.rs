//! The punktfunk/1 data-plane packet header (see the crate docs for the byte table).

/// Wire format version carried in byte 0.
pub const VERSION: u8 = 1;
/// Header length in bytes; the header is the AEAD associated data.
pub const HEADER_LEN: usize = 32;
/// AES-GCM tag length in bytes, appended after the encrypted shard.
pub const TAG_LEN: usize = 16;

/// Byte offset of the 64-bit sequence number (the AEAD nonce counter) in the header.
pub(crate) const SEQ_OFFSET: usize = 4;

/// Which stream a packet belongs to. Each kind has its own frame index space, its own
/// sequence space (the kind is part of the nonce) and its own [`crate::Reassembler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamKind {
    /// Encoded video access units.
    Video = 0,
    /// Encoded audio packets (Opus).
    Audio = 1,
    /// Speed-test probe traffic (content is synthetic).
    Probe = 2,
}

impl StreamKind {
    /// Decodes the wire byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Video),
            1 => Some(Self::Audio),
            2 => Some(Self::Probe),
            _ => None,
        }
    }
}

/// Flag bit: the frame is a keyframe (set on every packet of the frame).
pub const FLAG_KEYFRAME: u8 = 0x01;
/// Flag bit: this packet belongs to the frame's last block.
pub const FLAG_LAST_BLOCK: u8 = 0x02;
/// Flag bit: this packet carries a parity (recovery) shard.
pub const FLAG_PARITY: u8 = 0x04;
const FLAGS_KNOWN: u8 = FLAG_KEYFRAME | FLAG_LAST_BLOCK | FLAG_PARITY;

/// Decoded packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    /// The stream this packet belongs to.
    pub kind: StreamKind,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Per-direction, per-kind packet sequence number; the AEAD nonce counter.
    pub seq: u64,
    /// Low 32 bits of the frame index (receivers extend it, see crate docs).
    pub frame_index: u32,
    /// Length of the whole access unit in bytes (padding is stripped with it).
    pub frame_len: u32,
    /// Index of this packet's FEC block within the frame.
    pub block_index: u16,
    /// Number of FEC blocks the frame is split into.
    pub block_count: u16,
    /// Shard index within the block: `0..data_shards` are data, then parity.
    pub shard_index: u16,
    /// Number of data shards in this block.
    pub data_shards: u16,
    /// Number of parity shards in this block.
    pub parity_shards: u16,
}

/// Why a byte string is not a well-formed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The packet (length given) cannot hold a header and a tag.
    #[error("packet of {0} bytes is shorter than header + tag")]
    TooShort(usize),
    /// The version byte (given) is not [`VERSION`].
    #[error("unsupported version {0}")]
    Version(u8),
    /// The stream-kind byte (given) names no [`StreamKind`].
    #[error("unknown stream kind {0}")]
    Kind(u8),
    /// Flag bits outside the known `FLAG_*` set are set (the flags byte is given).
    #[error("reserved flag bits set: {0:#04x}")]
    Flags(u8),
    /// Reserved header bytes are not zero.
    #[error("reserved header bytes are not zero")]
    Reserved,
    /// The block index is not below the block count.
    #[error("block index {index} not below block count {count}")]
    BlockIndex {
        /// The packet's block index.
        index: u16,
        /// The frame's block count.
        count: u16,
    },
    /// The block claims zero data shards.
    #[error("block has no data shards")]
    NoDataShards,
    /// The shard index is beyond the block's data + parity shards.
    #[error("shard index {index} beyond data {data} + parity {parity}")]
    ShardIndex {
        /// The packet's shard index.
        index: u16,
        /// Data shards in the block.
        data: u16,
        /// Parity shards in the block.
        parity: u16,
    },
    /// The parity flag disagrees with whether the shard index is a parity index.
    #[error("parity flag disagrees with the shard index")]
    ParityFlag,
    /// The last-block flag disagrees with whether this is the frame's last block.
    #[error("last-block flag disagrees with the block index")]
    LastBlockFlag,
}

impl PacketHeader {
    /// True if this packet carries a parity shard.
    pub fn is_parity(&self) -> bool {
        self.flags & FLAG_PARITY != 0
    }

    /// True if the frame is a keyframe.
    pub fn is_keyframe(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0
    }

    /// Serialises the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = VERSION;
        out[1] = self.kind as u8;
        out[2] = self.flags;
        out[3] = 0;
        out[4..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.frame_index.to_be_bytes());
        out[16..20].copy_from_slice(&self.frame_len.to_be_bytes());
        out[20..22].copy_from_slice(&self.block_index.to_be_bytes());
        out[22..24].copy_from_slice(&self.block_count.to_be_bytes());
        out[24..26].copy_from_slice(&self.shard_index.to_be_bytes());
        out[26..28].copy_from_slice(&self.data_shards.to_be_bytes());
        out[28..30].copy_from_slice(&self.parity_shards.to_be_bytes());
        out[30..32].copy_from_slice(&[0, 0]);
    }

    /// Parses and structurally checks a packet; returns the header and the sealed payload
    /// (ciphertext + tag). Total: never panics, any input gives `Ok` or a [`ParseError`].
    /// Checks against the negotiated config happen in the [`crate::Reassembler`].
    pub fn parse(packet: &[u8]) -> Result<(PacketHeader, &[u8]), ParseError> {
        let Some((h, payload)) = packet.split_first_chunk::<HEADER_LEN>() else {
            return Err(ParseError::TooShort(packet.len()));
        };
        if payload.len() < TAG_LEN {
            return Err(ParseError::TooShort(packet.len()));
        }
        if h[0] != VERSION {
            return Err(ParseError::Version(h[0]));
        }
        let kind = StreamKind::from_u8(h[1]).ok_or(ParseError::Kind(h[1]))?;
        let flags = h[2];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(ParseError::Flags(flags));
        }
        if h[3] != 0 || h[30] != 0 || h[31] != 0 {
            return Err(ParseError::Reserved);
        }
        let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&h[4..12]);
        let hdr = PacketHeader {
            kind,
            flags,
            seq: u64::from_be_bytes(seq),
            frame_index: u32_at(12),
            frame_len: u32_at(16),
            block_index: u16_at(20),
            block_count: u16_at(22),
            shard_index: u16_at(24),
            data_shards: u16_at(26),
            parity_shards: u16_at(28),
        };
        if hdr.block_index >= hdr.block_count {
            return Err(ParseError::BlockIndex {
                index: hdr.block_index,
                count: hdr.block_count,
            });
        }
        if hdr.data_shards == 0 {
            return Err(ParseError::NoDataShards);
        }
        if u32::from(hdr.shard_index) >= u32::from(hdr.data_shards) + u32::from(hdr.parity_shards) {
            return Err(ParseError::ShardIndex {
                index: hdr.shard_index,
                data: hdr.data_shards,
                parity: hdr.parity_shards,
            });
        }
        if hdr.is_parity() != (hdr.shard_index >= hdr.data_shards) {
            return Err(ParseError::ParityFlag);
        }
        if (flags & FLAG_LAST_BLOCK != 0) != (hdr.block_index + 1 == hdr.block_count) {
            return Err(ParseError::LastBlockFlag);
        }
        Ok((hdr, payload))
    }
}

/// Reads the stream kind of a packet without parsing the rest (for demultiplexing received
/// datagrams to the per-kind [`crate::Reassembler`]).
pub fn peek_kind(packet: &[u8]) -> Option<StreamKind> {
    match packet {
        [VERSION, k, ..] => StreamKind::from_u8(*k),
        _ => None,
    }
}
