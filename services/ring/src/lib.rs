//! # punktfunk-ring: the access-unit ring
//!
//! A single-producer single-consumer ring of encoded access units (AUs) shared between two
//! processes: `punktfunk-media` writes AUs ([`Producer`]), `punktfunk-transport` reads them in place
//! ([`Consumer`]) and sends them on the network. The ring lives in a sealed memfd; an eventfd is
//! the doorbell. Both fds ([`RingFds`]) are passed once over the fd channel (SCM_RIGHTS).
//!
//! ```no_run
//! use punktfunk_ring::{Consumer, Ring, RecordFlags, RecordMeta, WriteOutcome, monotonic_ns};
//! # fn main() -> Result<(), punktfunk_ring::RingError> {
//! // media
//! let (mut producer, fds) = Ring::create(32 << 20, 4 << 20)?;
//! // ... send fds.memfd and fds.doorbell to transport ...
//! let meta = RecordMeta { frame_index: 0, flags: RecordFlags::KEYFRAME, captured_ns: monotonic_ns(),
//!                         ..Default::default() };
//! match producer.write(&meta, b"AU bytes")? {
//!     WriteOutcome::Written(_) => {}
//!     WriteOutcome::Dropped { .. } => { /* counted; the next record carries DISCONTINUITY */ }
//! }
//! // transport
//! let mut consumer = Consumer::attach(fds)?;
//! while !consumer.is_finished()? {
//!     consumer.wait(None)?;
//!     while let Some(rec) = consumer.try_read()? {
//!         if rec.flags().contains(RecordFlags::DISCONTINUITY) { /* request a keyframe */ }
//!         let _bytes: &[u8] = rec.payload(); // in place; released when `rec` drops
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! The memfd is `512 + capacity` bytes, sealed with `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`
//! before it is handed out, so its size — which the consumer takes from `fstat`, never from the
//! header — cannot change under either mapping. Both sides map it `MAP_SHARED`. All integers are
//! native-endian (both ends are on one host).
//!
//! ```text
//! ring header (512 bytes; each group on its own 128-byte block so the producer's and the
//! consumer's hot fields never share a cache line or an adjacent-line prefetch pair)
//!     0  u64 magic "PFAURING"     8 u32 layout version (1)    12 u32 header size (512)
//!    16  u32 record header size (64)    24 u64 capacity (data bytes)    32 u64 max payload
//!   128  AtomicU64 head            producer's write position (bytes since creation)
//!   256  AtomicU64 tail            consumer's read position  (bytes since creation)
//!   264  AtomicU64 records_read    consumer counter
//!   384  AtomicU64 records_written, 392 records_dropped, 400 bytes_written (payload),
//!   408  AtomicU64 producer_closed (0/1)
//! data area (capacity bytes, a multiple of 8), starting at offset 512
//! ```
//!
//! Positions are monotonically increasing byte counts; a position's offset in the data area is
//! `pos % capacity`; `head - tail` is the number of bytes in use. Each record is a 64-byte
//! header (see below) followed by its payload, padded to a multiple of 8, and is always
//! **contiguous**: when it does not fit between the write offset and the end of the data area, the
//! producer writes a wrap marker (a record header with tag `PAD1`) there — or nothing, if fewer
//! than 64 bytes are left (an implicit wrap the consumer also applies) — and places the record at
//! offset 0. The skipped bytes count as used until the consumer passes them.
//!
//! ```text
//! record header (64 bytes, 8-aligned)
//!    0 u32 tag "AUR1" (record) / "PAD1" (wrap marker)    4 u32 flags (RecordFlags)
//!    8 u64 payload_len    16 u64 frame_index    24 u64 dropped_before
//!   32 u64 captured_ns    40 u64 encode_start_ns    48 u64 encode_end_ns    (from the caller)
//!   56 u64 written_ns     (stamped by the ring just before publishing)
//!   64 payload, then 0..7 bytes of padding
//! ```
//!
//! Timestamps are CLOCK_MONOTONIC nanoseconds ([`monotonic_ns`]), comparable across processes.
//!
//! ## Memory ordering
//!
//! * The producer writes payload, record header, wrap marker and counters with plain stores, then
//!   publishes with `head.store(new_head, Release)`. The consumer loads `head` with `Acquire`;
//!   everything before the Release store is visible to it for all bytes below `head`.
//! * The consumer releases a record with `tail.store(end, Release)` after its last read of the
//!   record. The producer loads `tail` with `Acquire` before reusing space, so the consumer's
//!   reads happen-before the producer's overwrites (no reuse-while-reading).
//! * Each side keeps its own position in a local variable and only ever *stores* it to shared
//!   memory; it never trusts a read-back of its own field.
//! * `producer_closed` is stored with `Release` after the final `head` store; a consumer that
//!   observes it (`Acquire`) and then loads `head` sees the final head ([`Consumer::is_finished`]).
//! * Counters are relaxed: statistics, not synchronisation.
//! * The doorbell is a level-triggered counter: the producer writes it after every publish; the
//!   consumer checks `head` before sleeping in `poll` and drains the eventfd after waking, so a
//!   publish racing with the check leaves the counter non-zero and `poll` returns at once — no lost
//!   wakeups.
//!
//! ## Falling behind: drop newest, never block, never overwrite
//!
//! The producer **never blocks**. If a record does not fit in the free space (including any wrap
//! padding it would need), the producer drops **that new record**, counts it (`records_dropped`),
//! and the next record it does publish carries [`RecordFlags::DISCONTINUITY`] and
//! `dropped_before` = the number of records dropped since the previous published one. Records
//! already in the ring are never overwritten or modified. Transport reacts to `DISCONTINUITY` by
//! asking the encoder for a keyframe (media's gRPC API).
//!
//! Why drop-newest rather than overwrite-oldest: the consumer reads records **in place** (no
//! copy); overwriting the oldest record would race with a reader still sending it, and making that
//! safe needs per-record sequence checks and retries on the reader's hot path. And the newest
//! records are worth no more than the oldest: after any gap, a P-frame is undecodable until the
//! next IDR, so what matters is that the gap is flagged exactly, which drop-newest does with one
//! counter and no coordination.
//!
//! Records whose payload exceeds `max_record_bytes` are rejected with
//! [`RingError::RecordTooLarge`] (and counted as dropped, so the consumer still sees the gap).
//! `max_record_bytes` may be at most half the data area minus the header
//! ([`max_payload_for_capacity`]): that guarantees an *empty* ring always accepts a maximal record
//! wherever the write position stands, so a consumer that catches up always unblocks the stream.
//! A [`WriteSlot`] (two-phase write, for encoders that write in place) that is dropped without
//! [`WriteSlot::commit`] also counts as one dropped record.
//!
//! ## Trust model
//!
//! The consumer (transport, network-facing) treats the shared memory as **untrusted**: the
//! producer may crash mid-write or be buggy. It maps the memfd only after checking the shrink/grow
//! seals (so the peer cannot truncate it into SIGBUS) and takes the capacity from `fstat`; it
//! then reads each record header **once** (a volatile copy) and bounds-checks every length, tag
//! and position against that capacity and the published head before touching a byte. Anything
//! inconsistent is [`RingError::Corrupt`] — never a panic, never an out-of-bounds access, never an
//! allocation sized from shared memory (the ring allocates nothing on the data path). After
//! `Corrupt`, abandon the ring (ask media for a new one). A buggy producer can still change
//! payload bytes while they are borrowed; that corrupts the AU's content, not our memory.
//! The producer likewise validates the consumer's `tail` and returns `Corrupt` rather than write
//! outside the free space. The ring is strictly SPSC: one `Producer`, one `Consumer` at a time —
//! the API enforces this within a process (`&mut self`), the fd channel must across processes.
//! If the producer process dies without closing, `producer_closed` stays 0; transport learns of
//! it from media's supervision, not from the ring.

mod consumer;
mod error;
mod layout;
mod producer;
mod record;
mod shm;

#[cfg(test)]
mod tests;

pub use consumer::{Consumer, RecordRef};
pub use error::{Result, RingError};
pub use layout::{
    HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MIN_CAPACITY, RECORD_HEADER_SIZE,
    max_payload_for_capacity, min_capacity_for, record_footprint,
};
pub use producer::{Producer, Published, Ring, WriteOutcome, WriteSlot};
pub use record::{RecordFlags, RecordMeta, RingFds, RingStats, monotonic_ns};
