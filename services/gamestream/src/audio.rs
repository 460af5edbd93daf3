//! The audio packetizer: RTP Opus (PT 97, millisecond timestamps), optional AES-128-CBC, and
//! RS(4,2) FEC blocks with the fixed matrix.
//!
//! Data packet: `80 61 seq(u16be) ts(u32be, ms) 00000000` ‖ Opus (CBC-encrypted with PKCS#7
//! if enabled; IV = `u32be(rikeyid + seq) ‖ 0×12`). After every 4 data packets whose
//! sequence numbers are `4k..4k+3` come 2 FEC packets: `80 7F seq 00000000 00000000` ‖
//! shard index u8 ‖ 97 ‖ base seq u16be ‖ base ts u32be ‖ SSRC 0 ‖ parity over the 4 RTP
//! payloads (as sent). The clients permanently disable audio FEC when the 4 payloads of a
//! block differ in length, so a block with unequal payloads (VBR) gets no FEC packets.
//!
//! Call order: one [`AudioPacketizer`] per session; per Opus packet
//! [`AudioPacketizer::packetize`]`(opus, &mut packets)`, then send every datagram of
//! [`AudioPackets::iter`] (1 or 3) to the client's audio endpoint.

use crate::fec;
use aes::Aes128;
use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};

/// Largest audio datagram (what the client accepts).
pub const MAX_AUDIO_PACKET: usize = 1400;
/// RTP header length.
pub const RTP_HEADER_LEN: usize = 12;
/// FEC header after the RTP header.
pub const FEC_HEADER_LEN: usize = 12;
/// Largest Opus packet accepted: an encrypted one grows by up to 16 bytes of padding, and
/// its FEC packets carry 12 more header bytes.
pub const MAX_OPUS_PACKET: usize = MAX_AUDIO_PACKET - RTP_HEADER_LEN - FEC_HEADER_LEN - 16;
/// Data packets per FEC block.
pub const DATA_SHARDS: usize = 4;
/// RTP payload type of audio data.
pub const PT_AUDIO: u8 = 97;
/// RTP payload type of audio FEC.
pub const PT_FEC: u8 = 127;

/// Why an Opus packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    /// Empty or larger than [`MAX_OPUS_PACKET`].
    #[error("Opus packet of {0} bytes out of range")]
    PacketSize(usize),
}

/// The datagrams produced for one Opus packet: the data packet and, after a block's fourth,
/// its two FEC packets.
#[derive(Debug, Default)]
pub struct AudioPackets {
    data: Vec<u8>,
    fec: [Vec<u8>; 2],
    has_fec: bool,
}

impl AudioPackets {
    /// An empty set (reused across calls).
    pub fn new() -> Self {
        Self::default()
    }

    /// The data datagram (RTP + Opus).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The block's two FEC datagrams, after its fourth data packet (12 bytes longer than the
    /// data datagrams; send them right after [`data`](Self::data), e.g. on the same socket).
    pub fn fec(&self) -> Option<[&[u8]; 2]> {
        self.has_fec
            .then(|| [self.fec[0].as_slice(), self.fec[1].as_slice()])
    }

    /// The datagrams, in send order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.data.as_slice())
            .chain(self.fec.iter().filter(|_| self.has_fec).map(Vec::as_slice))
    }
}

/// Session key material for audio encryption.
#[derive(Clone, PartialEq, Eq)]
pub struct AudioKey {
    /// AES-128 key (`rikey`).
    pub key: [u8; 16],
    /// The IV seed (`rikeyid`).
    pub key_id: u32,
}

impl std::fmt::Debug for AudioKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AudioKey { .. }")
    }
}

/// The audio packetizer of one session.
#[derive(Debug)]
pub struct AudioPacketizer {
    key: Option<AudioKey>,
    duration_ms: u32,
    seq: u16,
    ts: u32,
    /// Payloads of the current block as sent (after encryption), back to back.
    block: Vec<u8>,
    block_lens: [usize; DATA_SHARDS],
    block_base_ts: u32,
    /// FEC blocks skipped because their payloads differed in length.
    pub fec_skipped: u64,
}

/// The CBC IV: `u32be(key_id + seq) ‖ 0×12`.
pub fn audio_iv(key_id: u32, seq: u16) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..4].copy_from_slice(&key_id.wrapping_add(u32::from(seq)).to_be_bytes());
    iv
}

impl AudioPacketizer {
    /// `duration_ms` = ANNOUNCE `packetDuration`; `key` if audio encryption is on.
    pub fn new(duration_ms: u32, key: Option<AudioKey>) -> Self {
        Self {
            key,
            duration_ms,
            seq: 0,
            ts: 0,
            block: Vec::with_capacity(DATA_SHARDS * MAX_AUDIO_PACKET),
            block_lens: [0; DATA_SHARDS],
            block_base_ts: 0,
            fec_skipped: 0,
        }
    }

    /// The session's audio packetizer from ANNOUNCE and the launch keys (encrypted iff
    /// [`crate::rtsp::StreamConfig::audio_encryption`]).
    pub fn for_stream(stream: &crate::rtsp::StreamConfig, keys: &crate::http::SessionKeys) -> Self {
        let key = stream.audio_encryption.then_some(AudioKey {
            key: keys.rikey,
            key_id: keys.rikeyid,
        });
        Self::new(stream.audio_packet_duration_ms, key)
    }

    /// Packetizes one Opus packet into `out` (see [`AudioPackets::iter`]).
    pub fn packetize(&mut self, opus: &[u8], out: &mut AudioPackets) -> Result<(), AudioError> {
        if opus.is_empty() || opus.len() > MAX_OPUS_PACKET {
            return Err(AudioError::PacketSize(opus.len()));
        }
        let seq = self.seq;
        let d = &mut out.data;
        d.clear();
        d.extend([0x80, PT_AUDIO]);
        d.extend(seq.to_be_bytes());
        d.extend(self.ts.to_be_bytes());
        d.extend([0; 4]);
        match &self.key {
            None => d.extend_from_slice(opus),
            Some(k) => {
                let padded = (opus.len() / 16 + 1) * 16;
                d.resize(RTP_HEADER_LEN + padded, 0);
                d[RTP_HEADER_LEN..RTP_HEADER_LEN + opus.len()].copy_from_slice(opus);
                let enc =
                    cbc::Encryptor::<Aes128>::new(&k.key.into(), &audio_iv(k.key_id, seq).into());
                // The buffer holds exactly the padded length: padding cannot fail.
                if enc
                    .encrypt_padded::<Pkcs7>(&mut d[RTP_HEADER_LEN..], opus.len())
                    .is_err()
                {
                    return Err(AudioError::PacketSize(opus.len()));
                }
            }
        }
        let shard = usize::from(seq) % DATA_SHARDS;
        if shard == 0 {
            self.block.clear();
            self.block_base_ts = self.ts;
        }
        self.block.extend_from_slice(&d[RTP_HEADER_LEN..]);
        self.block_lens[shard] = d.len() - RTP_HEADER_LEN;
        out.has_fec = false;
        if shard == DATA_SHARDS - 1 {
            self.write_fec(seq, out);
        }
        self.seq = seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.duration_ms);
        Ok(())
    }

    fn write_fec(&mut self, last_seq: u16, out: &mut AudioPackets) {
        let n = self.block_lens[0];
        if self.block_lens.iter().any(|&l| l != n) || self.block.len() != n * DATA_SHARDS {
            self.fec_skipped += 1;
            return;
        }
        let base_seq = last_seq.wrapping_sub(DATA_SHARDS as u16 - 1);
        let [f0, f1] = &mut out.fec;
        for (idx, f) in [&mut *f0, &mut *f1].into_iter().enumerate() {
            f.clear();
            f.extend([0x80, PT_FEC]);
            f.extend(last_seq.wrapping_add(1 + idx as u16).to_be_bytes());
            f.extend([0; 8]);
            f.extend([idx as u8, PT_AUDIO]);
            f.extend(base_seq.to_be_bytes());
            f.extend(self.block_base_ts.to_be_bytes());
            f.extend([0; 4]);
            f.resize(RTP_HEADER_LEN + FEC_HEADER_LEN + n, 0);
        }
        let h = RTP_HEADER_LEN + FEC_HEADER_LEN;
        let b = &self.block;
        fec::encode_audio(
            [&b[..n], &b[n..2 * n], &b[2 * n..3 * n], &b[3 * n..]],
            [&mut f0[h..], &mut f1[h..]],
        );
        out.has_fec = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockModeDecrypt;

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    #[test]
    fn appendix_c_audio_iv_and_ciphertext() {
        assert_eq!(audio_iv(0xFFFF_FFFF, 1), [0; 16]);
        let mut p = AudioPacketizer::new(
            5,
            Some(AudioKey {
                key: KEY,
                key_id: 0xFFFF_FFFF,
            }),
        );
        let mut out = AudioPackets::new();
        p.packetize(&[1], &mut out).unwrap(); // seq 0
        p.packetize(&[0xfc, 0xff, 0xfe], &mut out).unwrap(); // seq 1
        let d = out.iter().next().unwrap();
        assert_eq!(&d[..12], &[0x80, 0x61, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0]);
        assert_eq!(
            &d[12..],
            &[
                0xa7, 0x84, 0xd4, 0x7f, 0x08, 0x53, 0x07, 0x4c, 0x00, 0xe0, 0x57, 0x08, 0x3f, 0x73,
                0x1b, 0xd2
            ]
        );
    }

    #[test]
    fn fec_blocks_follow_every_fourth_packet_and_recover() {
        let mut p = AudioPacketizer::new(
            10,
            Some(AudioKey {
                key: KEY,
                key_id: 7,
            }),
        );
        let mut out = AudioPackets::new();
        let mut sent = Vec::new();
        for i in 0..8u8 {
            p.packetize(&[i; 60], &mut out).unwrap();
            let pk: Vec<Vec<u8>> = out.iter().map(<[u8]>::to_vec).collect();
            assert_eq!(pk.len(), if i % 4 == 3 { 3 } else { 1 }, "packet {i}");
            sent.push(pk);
        }
        assert_eq!(out.data(), &sent[7][0][..]);
        assert_eq!(out.fec().map(|f| f[1].to_vec()), Some(sent[7][2].clone()));
        let fec0 = &sent[7][1];
        assert_eq!(&fec0[..4], &[0x80, 0x7F, 0, 8]);
        assert_eq!(&fec0[12..16], &[0, 97, 0, 4]);
        assert_eq!(&fec0[16..20], &40u32.to_be_bytes());
        // Payloads of block 1 (seq 4..8) and their parity per the fixed matrix.
        let payloads: Vec<&[u8]> = (4..8).map(|i| &sent[i][0][12..]).collect();
        let n = payloads[0].len();
        assert_eq!(n, 64);
        let (mut p0, mut p1) = (vec![0; n], vec![0; n]);
        fec::encode_audio(
            [payloads[0], payloads[1], payloads[2], payloads[3]],
            [&mut p0, &mut p1],
        );
        assert_eq!(&sent[7][1][24..], &p0[..]);
        assert_eq!(&sent[7][2][24..], &p1[..]);
        // The ciphertext decrypts with the seq-derived IV.
        let mut c = sent[5][0][12..].to_vec();
        let dec = cbc::Decryptor::<Aes128>::new(&KEY.into(), &audio_iv(7, 5).into());
        assert_eq!(dec.decrypt_padded::<Pkcs7>(&mut c).unwrap(), &[5u8; 60]);
        // Timestamps in ms.
        assert_eq!(&sent[3][0][4..8], &30u32.to_be_bytes());
    }

    #[test]
    fn unequal_blocks_get_no_fec_and_bad_sizes_are_refused() {
        let mut p = AudioPacketizer::new(5, None);
        let mut out = AudioPackets::new();
        for len in [10, 10, 11, 10] {
            p.packetize(&vec![1; len], &mut out).unwrap();
        }
        assert_eq!(out.iter().count(), 1);
        assert_eq!(p.fec_skipped, 1);
        assert_eq!(p.packetize(&[], &mut out), Err(AudioError::PacketSize(0)));
        assert!(
            p.packetize(&vec![0; MAX_OPUS_PACKET + 1], &mut out)
                .is_err()
        );
        p.packetize(&vec![0; MAX_OPUS_PACKET], &mut out).unwrap();
        assert!(out.iter().all(|d| d.len() <= MAX_AUDIO_PACKET));
    }
}
