//! The access-unit envelope: what one data-plane frame carries besides the encoded bytes.
//!
//! The data plane moves opaque frames; the host's per-stage timestamps must travel with each
//! one so the client can split latency by stage (docs/protocol.md, docs/performance.md). The
//! envelope is a fixed 40-byte header in front of the access unit, inside the sealed payload
//! (so it is authenticated like the AU itself). All integers big-endian; timestamps are the
//! host's CLOCK_MONOTONIC nanoseconds (0 = not measured), which the client maps to its own
//! clock with the control plane's clock-sync estimate.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `PFAU` |
//! | 4 | 1 | version = 1 |
//! | 5 | 1 | flags: bit 0 keyframe, bit 1 discontinuity (frames were dropped before this one) |
//! | 6 | 2 | header length = 40 (lets a later version append fields) |
//! | 8 | 8 | captured |
//! | 16 | 8 | encode start |
//! | 24 | 8 | encode end |
//! | 32 | 8 | handed to transport (read from the AU ring / the generator) |

/// Bytes of the version-1 envelope.
pub const ENVELOPE_LEN: usize = 40;
const MAGIC: &[u8; 4] = b"PFAU";
const VERSION: u8 = 1;

/// Envelope flag: the AU is a keyframe.
pub const FLAG_KEYFRAME: u8 = 1;
/// Envelope flag: frames were dropped before this one (e.g. media restarted).
pub const FLAG_DISCONTINUITY: u8 = 2;

/// The host-side stage timestamps of one AU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuTiming {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// When the frame was captured (CLOCK_MONOTONIC ns).
    pub captured_ns: u64,
    /// When the encoder received the frame.
    pub encode_start_ns: u64,
    /// When the encoder produced the access unit.
    pub encode_end_ns: u64,
    /// When transport read the AU (from the ring or the generator).
    pub handed_ns: u64,
}

/// Why an envelope was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The frame (length given) is shorter than [`ENVELOPE_LEN`].
    #[error("frame of {0} bytes is shorter than the AU envelope")]
    Short(usize),
    /// The frame does not start with the `PFAU` magic.
    #[error("frame does not start with the AU envelope magic")]
    Magic,
    /// The envelope version (given) is not supported.
    #[error("AU envelope version {0} is not supported")]
    Version(u8),
    /// The envelope's header-length field (given) is invalid.
    #[error("AU envelope header length {0} is invalid")]
    HeaderLen(u16),
}

impl AuTiming {
    /// Writes the envelope into the first [`ENVELOPE_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8; ENVELOPE_LEN]) {
        out[0..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = self.flags;
        out[6..8].copy_from_slice(&(ENVELOPE_LEN as u16).to_be_bytes());
        out[8..16].copy_from_slice(&self.captured_ns.to_be_bytes());
        out[16..24].copy_from_slice(&self.encode_start_ns.to_be_bytes());
        out[24..32].copy_from_slice(&self.encode_end_ns.to_be_bytes());
        out[32..40].copy_from_slice(&self.handed_ns.to_be_bytes());
    }

    /// Appends the envelope to `out` (then append the AU).
    pub fn push_to(&self, out: &mut Vec<u8>) {
        let mut h = [0u8; ENVELOPE_LEN];
        self.write(&mut h);
        out.extend_from_slice(&h);
    }

    /// Splits a received frame into its timing and the AU. Total: any input gives Ok or Err.
    pub fn parse(frame: &[u8]) -> Result<(AuTiming, &[u8]), EnvelopeError> {
        if frame.len() < ENVELOPE_LEN {
            return Err(EnvelopeError::Short(frame.len()));
        }
        if &frame[0..4] != MAGIC {
            return Err(EnvelopeError::Magic);
        }
        if frame[4] != VERSION {
            return Err(EnvelopeError::Version(frame[4]));
        }
        let hlen = u16::from_be_bytes([frame[6], frame[7]]);
        if usize::from(hlen) < ENVELOPE_LEN || usize::from(hlen) > frame.len() {
            return Err(EnvelopeError::HeaderLen(hlen));
        }
        let u = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&frame[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let timing = AuTiming {
            flags: frame[5],
            captured_ns: u(8),
            encode_start_ns: u(16),
            encode_end_ns: u(24),
            handed_ns: u(32),
        };
        Ok((timing, &frame[usize::from(hlen)..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let t = AuTiming {
            flags: FLAG_KEYFRAME,
            captured_ns: 1,
            encode_start_ns: 2,
            encode_end_ns: 3,
            handed_ns: 4,
        };
        let mut v = Vec::new();
        t.push_to(&mut v);
        v.extend_from_slice(b"payload");
        let (got, au) = AuTiming::parse(&v).unwrap();
        assert_eq!((got, au), (t, &b"payload"[..]));
        assert_eq!(AuTiming::parse(&v[..10]), Err(EnvelopeError::Short(10)));
        let mut bad = v.clone();
        bad[0] = b'X';
        assert_eq!(AuTiming::parse(&bad), Err(EnvelopeError::Magic));
        let mut bad = v.clone();
        bad[4] = 9;
        assert_eq!(AuTiming::parse(&bad), Err(EnvelopeError::Version(9)));
        let mut bad = v.clone();
        bad[6..8].copy_from_slice(&60000u16.to_be_bytes());
        assert_eq!(AuTiming::parse(&bad), Err(EnvelopeError::HeaderLen(60000)));
    }
}
