//! The shared-memory layout: one fixed 512-byte ring header, then the data area.
//!
//! Everything is native-endian (both processes run on the same host) and every field sits at a
//! fixed offset, so the layout does not depend on the compiler's struct layout.

/// `b"PFAURING"` as a little-endian u64: identifies a punktfunk AU ring.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PFAURING");
/// Bumped on every incompatible change of the header or record layout.
pub const LAYOUT_VERSION: u32 = 1;
/// Size of the ring header at the start of the memfd; the data area follows it.
pub const HEADER_SIZE: usize = 512;
/// Size of the fixed header in front of every record's payload.
pub const RECORD_HEADER_SIZE: usize = 64;
/// Record headers, payloads and the capacity are multiples of this.
pub const ALIGN: u64 = 8;
/// Smallest accepted data-area capacity.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest accepted data-area capacity (1 TiB; a sanity bound, not a practical one).
pub const MAX_CAPACITY: u64 = 1 << 40;

// --- cache line 0..128: written once by the producer before the fds are handed out -----------
pub(crate) const OFF_MAGIC: usize = 0; // u64
pub(crate) const OFF_VERSION: usize = 8; // u32
pub(crate) const OFF_HEADER_SIZE: usize = 12; // u32
pub(crate) const OFF_RECORD_HEADER_SIZE: usize = 16; // u32
pub(crate) const OFF_CAPACITY: usize = 24; // u64
pub(crate) const OFF_MAX_RECORD: usize = 32; // u64
// --- 128..256: producer-owned write position ---------------------------------------------------
pub(crate) const OFF_HEAD: usize = 128; // AtomicU64
// --- 256..384: consumer-owned read position + its counter -------------------------------------
pub(crate) const OFF_TAIL: usize = 256; // AtomicU64
pub(crate) const OFF_RECORDS_READ: usize = 264; // AtomicU64
// --- 384..512: producer statistics and the closed flag ------------------------------------------
pub(crate) const OFF_RECORDS_WRITTEN: usize = 384; // AtomicU64
pub(crate) const OFF_RECORDS_DROPPED: usize = 392; // AtomicU64
pub(crate) const OFF_BYTES_WRITTEN: usize = 400; // AtomicU64
pub(crate) const OFF_PRODUCER_CLOSED: usize = 408; // AtomicU64 (0 or 1)

/// Tag of a record header: `b"AUR1"`.
pub(crate) const TAG_RECORD: u32 = u32::from_le_bytes(*b"AUR1");
/// Tag of a wrap marker: the rest of the data area up to its end is padding, continue at 0.
pub(crate) const TAG_PAD: u32 = u32::from_le_bytes(*b"PAD1");

/// The 64-byte record header as it lies in the data area (8-byte aligned).
///
/// ```text
/// off size field
///   0    4 tag              TAG_RECORD ("AUR1") or TAG_PAD ("PAD1")
///   4    4 flags            RecordFlags bits
///   8    8 payload_len      bytes of payload that follow this header
///  16    8 frame_index      caller's frame / AU index
///  24    8 dropped_before   records dropped by the producer right before this one
///  32    8 captured_ns      CLOCK_MONOTONIC ns, from the producer's caller
///  40    8 encode_start_ns  CLOCK_MONOTONIC ns, from the producer's caller
///  48    8 encode_end_ns    CLOCK_MONOTONIC ns, from the producer's caller
///  56    8 written_ns       CLOCK_MONOTONIC ns, stamped by the ring when it publishes
///  64      payload (payload_len bytes, then padding up to the next multiple of 8)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawRecordHeader {
    pub tag: u32,
    pub flags: u32,
    pub payload_len: u64,
    pub frame_index: u64,
    pub dropped_before: u64,
    pub captured_ns: u64,
    pub encode_start_ns: u64,
    pub encode_end_ns: u64,
    pub written_ns: u64,
}

const _: () = assert!(std::mem::size_of::<RawRecordHeader>() == RECORD_HEADER_SIZE);
const _: () = assert!(std::mem::align_of::<RawRecordHeader>() <= ALIGN as usize);
const _: () = assert!(OFF_PRODUCER_CLOSED + 8 <= HEADER_SIZE);
const _: () = assert!(HEADER_SIZE.is_multiple_of(64));

/// Bytes a record with `payload_len` bytes of payload occupies in the data area, or `None` on
/// overflow (only reachable with garbage lengths).
#[inline]
pub const fn record_footprint(payload_len: u64) -> Option<u64> {
    match payload_len.checked_add(RECORD_HEADER_SIZE as u64 + ALIGN - 1) {
        Some(n) => Some(n & !(ALIGN - 1)),
        None => None,
    }
}

/// The largest payload a ring of `capacity` data bytes accepts: a record may take at most half
/// of the data area, which guarantees that an empty ring can always take a maximal record no
/// matter where the write position stands (either the contiguous run to the end or the run from
/// 0 to the write position is at least half of the area).
#[inline]
pub const fn max_payload_for_capacity(capacity: u64) -> u64 {
    let half = (capacity / 2) & !(ALIGN - 1);
    half.saturating_sub(RECORD_HEADER_SIZE as u64)
}

/// Smallest data-area capacity that admits records of `max_record_bytes` payload.
#[inline]
pub const fn min_capacity_for(max_record_bytes: u64) -> Option<u64> {
    match record_footprint(max_record_bytes) {
        Some(f) => match f.checked_mul(2) {
            Some(c) if c < MIN_CAPACITY => Some(MIN_CAPACITY),
            other => other,
        },
        None => None,
    }
}
