//! AES-128-GCM sealing with sequence-number nonces, and the receive-side replay window.
//!
//! ## The sealing seam
//!
//! Every packet is sealed and opened through one small trait, [`Aead`]: a 12-byte nonce, the
//! associated data, the body in place, a detached 16-byte tag. The protocol decides the nonce
//! and the AAD (punktfunk/1: [`Sealer`] / [`Opener`] below; GameStream's packetizers in
//! `punktfunk-gamestream` build their own nonces on the same trait); the backend only does AES-128-GCM.
//!
//! Two backends implement it, [`AeadBackend::Ring`] (`ring` 0.17, already in the dependency
//! tree through rustls/quinn) and [`AeadBackend::RustCrypto`] (`aes-gcm` 0.11). The data plane
//! uses [`AeadBackend::FASTEST`] = `Ring`: `cargo bench -p punktfunk-wire --bench frame`
//! measures both in the same run on our packets (1200-byte shard, 32-byte header as AAD), and
//! ring seals a packet 3–4× faster (docs/performance.md has the numbers: its AES-GCM is
//! assembly end to end, aes-gcm's glue around its VAES/CLMUL kernels is compiled for baseline
//! x86-64). `aes-gcm` stays as the second, independent implementation the tests cross-check
//! ring against (a packet sealed by one opens with the other) and as the bench's comparison.
//! No AES or GHASH is written here.

use crate::packet::{HEADER_LEN, SEQ_OFFSET, StreamKind, TAG_LEN};
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, KeyInit};

/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// AES-128-GCM with a detached tag: the one seam every packet is sealed and opened through.
///
/// Implementations hold an expanded key and are stateless per call (`&self`), so one key can
/// seal on one thread while another opens.
pub trait Aead: Send + Sync {
    /// Encrypts `in_out` in place, authenticating `aad` with it, and returns the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError>;

    /// Authenticates `ciphertext` + `aad` against `tag` and writes the plaintext into `out`
    /// (exactly `ciphertext.len()` bytes). On error `out` holds garbage and must not be used.
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthError>;
}

/// Which AES-128-GCM implementation backs an [`Aead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadBackend {
    /// `ring` 0.17 (assembly AES-GCM with AES-NI/VAES + CLMUL).
    Ring,
    /// RustCrypto `aes-gcm` 0.11 (run-time detected AES-NI + CLMUL kernels).
    RustCrypto,
}

impl AeadBackend {
    /// The backend the data plane uses: the faster one in `just bench` (see the module docs).
    pub const FASTEST: Self = Self::Ring;

    /// Both backends, for benchmarks and cross-checks.
    pub const ALL: [Self; 2] = [Self::Ring, Self::RustCrypto];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::RustCrypto => "aes-gcm",
        }
    }

    /// An AES-128-GCM key of this backend.
    pub fn aes128_gcm(self, key: &[u8; 16]) -> Box<dyn Aead> {
        match self {
            Self::Ring => Box::new(RingAes128Gcm::new(key)),
            Self::RustCrypto => Box::new(RustCryptoAes128Gcm::new(key)),
        }
    }
}

/// [`Aead`] by `ring`.
pub struct RingAes128Gcm(ring::aead::LessSafeKey);

impl RingAes128Gcm {
    /// Expands `key`.
    pub fn new(key: &[u8; 16]) -> Self {
        // A 16-byte key is exactly what AES_128_GCM takes: `new` fails only on a wrong length.
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, key)
            .unwrap_or_else(|_| unreachable!("AES-128 key is 16 bytes"));
        Self(ring::aead::LessSafeKey::new(unbound))
    }
}

impl Aead for RingAes128Gcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), in_out)
            .map_err(|_| SealError::TooLong)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthError> {
        if out.len() != ciphertext.len() {
            return Err(AuthError);
        }
        // ring opens in place: copy first (a cache-hot 1.2 KB copy, ~2 % of the open).
        out.copy_from_slice(ciphertext);
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = ring::aead::Tag::from(*tag);
        self.0
            .open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, out, 0..)
            .map(|_| ())
            .map_err(|_| AuthError)
    }
}

/// [`Aead`] by RustCrypto `aes-gcm`.
pub struct RustCryptoAes128Gcm(aes_gcm::Aes128Gcm);

impl RustCryptoAes128Gcm {
    /// Expands `key`.
    pub fn new(key: &[u8; 16]) -> Self {
        Self(aes_gcm::Aes128Gcm::new(&(*key).into()))
    }
}

impl Aead for RustCryptoAes128Gcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError> {
        let tag = self
            .0
            .encrypt_inout_detached(&(*nonce).into(), aad, InOutBuf::from(in_out))
            .map_err(|_| SealError::TooLong)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthError> {
        let buf = InOutBuf::new(ciphertext, out).map_err(|_| AuthError)?;
        self.0
            .decrypt_inout_detached(&(*nonce).into(), aad, buf, &(*tag).into())
            .map_err(|_| AuthError)
    }
}

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
    /// The backend refused the message (longer than AES-GCM allows under one nonce).
    #[error("message too long for AES-GCM")]
    TooLong,
}

/// The last sequence number a [`Sealer`] will ever hand out is `SEQ_LIMIT - 1`; it refuses to
/// seal once `SEQ_LIMIT` would be used. It is never reached in practice (2^64 packets).
pub const SEQ_LIMIT: u64 = u64::MAX;

/// punktfunk/1's 96-bit nonce: `salt[0..3] ‖ salt[3] ⊕ kind ‖ seq (64-bit big-endian)`.
pub fn nonce(salt: &[u8; 4], kind: StreamKind, seq: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(salt);
    n[3] ^= kind as u8;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Seals packets of one stream kind in one direction, assigning strictly increasing
/// sequence numbers (never reused, never wrapped).
pub struct Sealer {
    aead: Box<dyn Aead>,
    salt: [u8; 4],
    kind: StreamKind,
    next_seq: u64,
}

impl Sealer {
    /// A sealer for `kind` under `key`, starting at sequence number 0, on
    /// [`AeadBackend::FASTEST`].
    pub fn new(key: &SessionKey, kind: StreamKind) -> Self {
        Self::with_initial_sequence(key, kind, 0)
    }

    /// Starts at `seq` (a replacement sender resumes there; tests exercise exhaustion).
    pub fn with_initial_sequence(key: &SessionKey, kind: StreamKind, seq: u64) -> Self {
        Self::with_backend(key, kind, seq, AeadBackend::FASTEST)
    }

    /// Starts at `seq` on a chosen backend (benchmarks and cross-checks).
    pub fn with_backend(
        key: &SessionKey,
        kind: StreamKind,
        seq: u64,
        backend: AeadBackend,
    ) -> Self {
        Self {
            aead: backend.aes128_gcm(&key.key),
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
            .aead
            .seal_in_place(&nonce(&self.salt, self.kind, seq), header, body)?;
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
    aead: Box<dyn Aead>,
    salt: [u8; 4],
    kind: StreamKind,
}

/// Authentication failed (wrong key, modified header or payload, wrong kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("packet failed authentication")]
pub struct AuthError;

impl Opener {
    /// An opener for `kind` packets sealed under `key`, on [`AeadBackend::FASTEST`].
    pub fn new(key: &SessionKey, kind: StreamKind) -> Self {
        Self::with_backend(key, kind, AeadBackend::FASTEST)
    }

    /// An opener on a chosen backend (benchmarks and cross-checks).
    pub fn with_backend(key: &SessionKey, kind: StreamKind, backend: AeadBackend) -> Self {
        Self {
            aead: backend.aes128_gcm(&key.key),
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
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| AuthError)?;
        self.aead
            .open(&nonce(&self.salt, self.kind, seq), header, body, tag, out)
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
