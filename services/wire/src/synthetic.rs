//! Deterministic synthetic access units whose every byte the receiver can verify.
//!
//! Layout of a synthetic AU (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `PFSY` |
//! | 4 | 8 | frame index |
//! | 12 | 4 | total length |
//! | 16 | 8 | FNV-1a 64 checksum of bytes 24.. |
//! | 24 | len−24 | splitmix64 byte stream seeded with the frame index |
//!
//! [`verify`] regenerates the body and compares it, so any change is caught; the checksum lets
//! a cheap checker skip regeneration.

/// Header size; the smallest synthetic AU.
pub const SYNTH_HEADER_LEN: usize = 24;
const MAGIC: &[u8; 4] = b"PFSY";

/// Why an AU failed verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The AU (length given) is shorter than [`SYNTH_HEADER_LEN`].
    #[error("AU of {0} bytes is shorter than the synthetic header")]
    TooShort(usize),
    /// The AU does not start with the `PFSY` magic.
    #[error("bad magic")]
    Magic,
    /// The AU carries another frame index than expected.
    #[error("AU carries index {found}, expected {expected}")]
    Index {
        /// The frame index the caller expected.
        expected: u64,
        /// The frame index written in the AU.
        found: u64,
    },
    /// The AU's length disagrees with its header.
    #[error("AU is {actual} bytes, header says {claimed}")]
    Length {
        /// The length written in the header.
        claimed: u32,
        /// The AU's real length.
        actual: usize,
    },
    /// The FNV-1a checksum does not match the body.
    #[error("checksum mismatch")]
    Checksum,
    /// The body differs from the regenerated stream at the given byte offset.
    #[error("content differs at byte {0}")]
    Content(usize),
}

/// Parameters of the synthetic stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Average bitrate of the stream in bits per second.
    pub bitrate_bps: u64,
    /// Frames per second.
    pub fps: u32,
    /// Every `keyframe_every`-th frame (starting with frame 0) is a keyframe.
    pub keyframe_every: u32,
    /// A keyframe is this many times the size of an average non-keyframe.
    pub keyframe_factor: u32,
    /// Upper bound on an AU (e.g. the data plane's max_frame_bytes).
    pub max_frame_bytes: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: 20_000_000,
            fps: 60,
            keyframe_every: 120,
            keyframe_factor: 10,
            max_frame_bytes: 4 << 20,
        }
    }
}

/// Metadata of a generated AU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticFrame {
    /// Frame index, from 0.
    pub index: u64,
    /// True for every `keyframe_every`-th frame.
    pub keyframe: bool,
    /// Size of the AU in bytes.
    pub len: usize,
    /// Presentation time relative to frame 0, ns.
    pub pts_ns: u64,
}

/// Generator of AUs at a given bitrate and frame rate, with periodic keyframe spikes.
#[derive(Clone, Debug)]
pub struct SyntheticSource {
    cfg: SyntheticConfig,
    next: u64,
}

impl SyntheticSource {
    /// A source that starts at frame 0.
    pub fn new(cfg: SyntheticConfig) -> Self {
        Self { cfg, next: 0 }
    }

    /// Size and keyframe flag of frame `index` (pure). Sizes average to the bitrate over a
    /// keyframe period, with ±12.5 % deterministic jitter on non-keyframes.
    pub fn frame_shape(&self, index: u64) -> (usize, bool) {
        let c = &self.cfg;
        let fps = u64::from(c.fps.max(1));
        let n = u64::from(c.keyframe_every.max(1));
        let k = u64::from(c.keyframe_factor.max(1));
        let per_period = c.bitrate_bps / 8 * n / fps;
        let p_size = per_period / (n - 1 + k);
        let keyframe = index.is_multiple_of(n);
        let size = if keyframe {
            p_size * k
        } else {
            let j = splitmix64(index ^ 0x5eed) % 1000;
            p_size * (875 + j / 4) / 1000
        };
        let size = (size as usize).clamp(SYNTH_HEADER_LEN, c.max_frame_bytes.max(SYNTH_HEADER_LEN));
        (size, keyframe)
    }

    /// Writes the next AU into `out` (cleared and refilled; reuse it to avoid allocation).
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> SyntheticFrame {
        let index = self.next;
        self.next += 1;
        let (len, keyframe) = self.frame_shape(index);
        fill(index, len, out);
        SyntheticFrame {
            index,
            keyframe,
            len,
            pts_ns: index * 1_000_000_000 / u64::from(self.cfg.fps.max(1)),
        }
    }
}

/// Writes the synthetic AU of `index` with `len` bytes (at least [`SYNTH_HEADER_LEN`]).
pub fn fill(index: u64, len: usize, out: &mut Vec<u8>) {
    let len = len.max(SYNTH_HEADER_LEN);
    out.clear();
    out.resize(len, 0);
    body(index, &mut out[SYNTH_HEADER_LEN..]);
    let sum = fnv1a(&out[SYNTH_HEADER_LEN..]);
    out[0..4].copy_from_slice(MAGIC);
    out[4..12].copy_from_slice(&index.to_le_bytes());
    out[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    out[16..24].copy_from_slice(&sum.to_le_bytes());
}

/// Checks that `bytes` is exactly the synthetic AU of frame `index`.
pub fn verify(index: u64, bytes: &[u8]) -> Result<(), VerifyError> {
    let Some((h, rest)) = bytes.split_first_chunk::<SYNTH_HEADER_LEN>() else {
        return Err(VerifyError::TooShort(bytes.len()));
    };
    if &h[0..4] != MAGIC {
        return Err(VerifyError::Magic);
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&h[4..12]);
    let found = u64::from_le_bytes(b8);
    if found != index {
        return Err(VerifyError::Index {
            expected: index,
            found,
        });
    }
    let claimed = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if claimed as usize != bytes.len() {
        return Err(VerifyError::Length {
            claimed,
            actual: bytes.len(),
        });
    }
    b8.copy_from_slice(&h[16..24]);
    if fnv1a(rest) != u64::from_le_bytes(b8) {
        return Err(VerifyError::Checksum);
    }
    let mut state = index;
    for (i, chunk) in rest.chunks(8).enumerate() {
        let word = splitmix_next(&mut state).to_le_bytes();
        if chunk != &word[..chunk.len()] {
            return Err(VerifyError::Content(SYNTH_HEADER_LEN + i * 8));
        }
    }
    Ok(())
}

fn body(index: u64, out: &mut [u8]) {
    let mut state = index;
    for chunk in out.chunks_mut(8) {
        let word = splitmix_next(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

fn splitmix_next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    splitmix64(*state)
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
