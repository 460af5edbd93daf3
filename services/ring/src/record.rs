//! Record metadata types shared by both ends.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::OwnedFd;

/// Per-record flag bits (the `flags` field of the record header).
///
/// Unknown bits read from the ring are kept as they are (see [`RecordFlags::from_bits_retain`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RecordFlags(u32);

impl RecordFlags {
    /// The AU is a keyframe (IDR): decodable without earlier AUs.
    pub const KEYFRAME: Self = Self(1 << 0);
    /// Records were dropped right before this one (set by the ring; also settable by the caller,
    /// e.g. after an encoder restart). `dropped_before` says how many the ring dropped.
    pub const DISCONTINUITY: Self = Self(1 << 1);
    /// The AU belongs to the audio stream (clear: video).
    pub const AUDIO: Self = Self(1 << 2);
    /// The producer will write nothing after this record.
    pub const END_OF_STREAM: Self = Self(1 << 3);
    /// The AU carries codec configuration (parameter sets) only.
    pub const CODEC_CONFIG: Self = Self(1 << 4);

    const NAMES: [(Self, &'static str); 5] = [
        (Self::KEYFRAME, "KEYFRAME"),
        (Self::DISCONTINUITY, "DISCONTINUITY"),
        (Self::AUDIO, "AUDIO"),
        (Self::END_OF_STREAM, "END_OF_STREAM"),
        (Self::CODEC_CONFIG, "CODEC_CONFIG"),
    ];

    /// No flags.
    pub const fn empty() -> Self {
        Self(0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// Flags from raw bits, keeping bits this version does not know.
    pub const fn from_bits_retain(bits: u32) -> Self {
        Self(bits)
    }
    /// All bits of `other` are set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }
    /// `self` with the bits of `other` set or cleared according to `on`.
    pub const fn with(self, other: Self, on: bool) -> Self {
        if on {
            Self(self.0 | other.0)
        } else {
            Self(self.0 & !other.0)
        }
    }
}

impl BitOr for RecordFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for RecordFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for RecordFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        f.write_str("RecordFlags(")?;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{rest:#x}")?;
        }
        f.write_str(")")
    }
}

/// What the producer's caller says about an access unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// Frame / AU index (the caller's numbering; the ring does not interpret it).
    pub frame_index: u64,
    /// Flags. The ring adds [`RecordFlags::DISCONTINUITY`] when it dropped records before this one.
    pub flags: RecordFlags,
    /// CLOCK_MONOTONIC ns when the frame was captured.
    pub captured_ns: u64,
    /// CLOCK_MONOTONIC ns when encoding started.
    pub encode_start_ns: u64,
    /// CLOCK_MONOTONIC ns when encoding finished.
    pub encode_end_ns: u64,
}

/// The two file descriptors that make up a ring; send both to the consumer process (SCM_RIGHTS).
#[derive(Debug)]
pub struct RingFds {
    /// The sealed memfd holding header + data area.
    pub memfd: OwnedFd,
    /// The eventfd the producer writes after every published record.
    pub doorbell: OwnedFd,
}

/// A snapshot of the ring's counters.
///
/// The counters are written by the other process and read with relaxed loads, so a snapshot is
/// approximate (fields may be from slightly different instants) and, on the consumer side, only
/// as trustworthy as the producer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Records published by the producer since the ring was created.
    pub records_written: u64,
    /// Records the producer dropped (ring full, too large, aborted reservations).
    pub records_dropped: u64,
    /// Payload bytes published.
    pub bytes_written: u64,
    /// Records the consumer has released.
    pub records_read: u64,
    /// Bytes of the data area in use (published, not yet released; includes headers and padding).
    pub lag_bytes: u64,
    /// Records published and not yet released.
    pub lag_records: u64,
    /// Data-area capacity in bytes.
    pub capacity: u64,
    /// The producer has closed the ring (no more records will come).
    pub producer_closed: bool,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of every timestamp in a record. The clock is
/// system-wide, so stamps from different processes on the host are comparable. Defined once,
/// in `punktfunk-clock`.
pub use punktfunk_clock::monotonic_ns;
