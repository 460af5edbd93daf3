//! AES-128-GCM sealing with sequence-number nonces, and the receive-side replay window.

use crate::packet::{HEADER_LEN, SEQ_OFFSET, StreamKind, TAG_LEN};
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes128Gcm, KeyInit, Nonce, Tag};

/// Key material of one direction (host→client or client→host).
///
/// Both values come from the QUIC TLS exporter in production.
#[derive(Clone)]
pub struct SessionKey {
    /// AES-128 key.
    pub key: [u8; 16],
    /// Fixed per-direction nonce prefix.
    pub salt: [u8; 4],
}

impl core::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionKey { .. }")
    }
}

/// Why sealing refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The sequence space of this key is used up; a new key (rekey) is required.
    #[error("sequence numbers exhausted for this key: rekey required")]
    SequenceExhausted,
    /// The packet buffer is too short to hold header and tag.
    #[error("packet buffer too short")]
    BufferTooShort,
}

/// The last sequence number a [`Sealer`] will ever hand out is `SEQ_LIMIT - 1`; it refuses to
/// seal once `SEQ_LIMIT` would be used. It is never reached in practice (2^64 packets).
pub const SEQ_LIMIT: u64 = u64::MAX;

/// 96-bit nonce: `salt[0..3] ‖ salt[3] ⊕ kind ‖ seq (64-bit big-endian)`.
fn nonce(salt: &[u8; 4], kind: StreamKind, seq: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[3] ^= kind as u8;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::from(n)
}

/// Seals packets of one stream kind in one direction, assigning strictly increasing
/// sequence numbers (never reused, never wrapped).
pub struct Sealer {
    cipher: Aes128Gcm,
    salt: [u8; 4],
    kind: StreamKind,
    next_seq: u64,
}

impl Sealer {
    /// A sealer for `kind` under `key`, starting at sequence number 0.
    pub fn new(key: &SessionKey, kind: StreamKind) -> Self {
        Self::with_initial_sequence(key, kind, 0)
    }

    /// Starts at `seq` (tests use this to exercise exhaustion).
    pub fn with_initial_sequence(key: &SessionKey, kind: StreamKind, seq: u64) -> Self {
        Self {
            cipher: Aes128Gcm::new(&key.key.into()),
            salt: key.salt,
            kind,
            next_seq: seq,
        }
    }

    /// Sequence number the next sealed packet gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// Packets that can still be sealed with this key.
    pub fn remaining(&self) -> u64 {
        SEQ_LIMIT - self.next_seq
    }

    /// Reserves `n` consecutive sequence numbers, or refuses if that would reach [`SEQ_LIMIT`].
    pub(crate) fn reserve(&mut self, n: u64) -> Result<u64, SealError> {
        if n > self.remaining() {
            return Err(SealError::SequenceExhausted);
        }
        let first = self.next_seq;
        self.next_seq += n;
        Ok(first)
    }

    /// Seals `packet` in place with a previously reserved `seq`: writes `seq` into the header,
    /// encrypts `packet[HEADER_LEN..len-TAG_LEN]` with the header as associated data and
    /// writes the tag into the last [`TAG_LEN`] bytes.
    pub(crate) fn seal_reserved(&self, seq: u64, packet: &mut [u8]) -> Result<(), SealError> {
        if packet.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::BufferTooShort);
        }
        packet[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&seq.to_be_bytes());
        let (header, rest) = packet.split_at_mut(HEADER_LEN);
        let (body, tag_out) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce(&self.salt, self.kind, seq),
                header,
                InOutBuf::from(body),
            )
            .map_err(|_| SealError::BufferTooShort)?;
        tag_out.copy_from_slice(&tag);
        Ok(())
    }

    /// Seals one packet (header already written except the sequence) with the next sequence
    /// number and returns it.
    pub fn seal(&mut self, packet: &mut [u8]) -> Result<u64, SealError> {
        if packet.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::BufferTooShort);
        }
        let seq = self.reserve(1)?;
        self.seal_reserved(seq, packet)?;
        Ok(seq)
    }
}

/// Opens (authenticates and decrypts) packets of one stream kind in one direction.
pub struct Opener {
    cipher: Aes128Gcm,
    salt: [u8; 4],
    kind: StreamKind,
}

/// Authentication failed (wrong key, modified header or payload, wrong kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("packet failed authentication")]
pub struct AuthError;

impl Opener {
    /// An opener for `kind` packets sealed under `key`.
    pub fn new(key: &SessionKey, kind: StreamKind) -> Self {
        Self {
            cipher: Aes128Gcm::new(&key.key.into()),
            salt: key.salt,
            kind,
        }
    }

    /// Authenticates `packet` (whole datagram; `seq` is its header's sequence number) and
    /// writes the plaintext shard into `out`, which must be exactly
    /// `packet.len() - HEADER_LEN - TAG_LEN` long. On error `out` holds garbage.
    pub fn open(&self, seq: u64, packet: &[u8], out: &mut [u8]) -> Result<(), AuthError> {
        if packet.len() < HEADER_LEN + TAG_LEN {
            return Err(AuthError);
        }
        let (header, rest) = packet.split_at(HEADER_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let tag = Tag::<aes_gcm::aead::consts::U16>::try_from(tag).map_err(|_| AuthError)?;
        let buf = InOutBuf::new(body, out).map_err(|_| AuthError)?;
        self.cipher
            .decrypt_inout_detached(&nonce(&self.salt, self.kind, seq), header, buf, &tag)
            .map_err(|_| AuthError)
    }
}

/// Sliding-window replay filter over 64-bit sequence numbers (RFC 4303 style, bitmap of
/// `bits` sequence numbers below the highest accepted one).
pub struct ReplayWindow {
    bits: Vec<u64>,
    size: u64,
    highest: Option<u64>,
}

/// Verdict of [`ReplayWindow::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Not seen before.
    Fresh,
    /// Already accepted once.
    Duplicate,
    /// Older than the window: cannot tell, treated as late.
    TooOld,
}

impl ReplayWindow {
    /// A window of at least `bits` sequence numbers (rounded up to a power of two, ≥ 64).
    pub fn new(bits: usize) -> Self {
        let size = bits.max(64).next_power_of_two();
        Self {
            bits: vec![0; size / 64],
            size: size as u64,
            highest: None,
        }
    }

    /// Classifies `seq` without recording it.
    pub fn check(&self, seq: u64) -> Replay {
        let Some(h) = self.highest else {
            return Replay::Fresh;
        };
        if seq > h {
            return Replay::Fresh;
        }
        if h - seq >= self.size {
            return Replay::TooOld;
        }
        if self.get(seq) {
            Replay::Duplicate
        } else {
            Replay::Fresh
        }
    }

    /// Records `seq` as accepted (call only after authentication succeeded).
    pub fn commit(&mut self, seq: u64) {
        match self.highest {
            Some(h) if seq <= h => {
                if h - seq < self.size {
                    self.set(seq);
                }
            }
            Some(h) => {
                let advance = seq - h;
                if advance >= self.size {
                    self.bits.fill(0);
                } else {
                    for s in h + 1..seq {
                        self.clear(s);
                    }
                }
                self.set(seq);
                self.highest = Some(seq);
            }
            None => {
                self.set(seq);
                self.highest = Some(seq);
            }
        }
    }

    fn pos(&self, seq: u64) -> (usize, u64) {
        let bit = seq & (self.size - 1);
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }
    fn get(&self, seq: u64) -> bool {
        let (w, m) = self.pos(seq);
        self.bits.get(w).is_some_and(|x| x & m != 0)
    }
    fn set(&mut self, seq: u64) {
        let (w, m) = self.pos(seq);
        if let Some(x) = self.bits.get_mut(w) {
            *x |= m;
        }
    }
    fn clear(&mut self, seq: u64) {
        let (w, m) = self.pos(seq);
        if let Some(x) = self.bits.get_mut(w) {
            *x &= !m;
        }
    }
}
