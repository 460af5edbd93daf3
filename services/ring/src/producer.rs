//! The producer end: creates the ring and writes records. Never blocks.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::event::EventfdFlags;
use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Result, RingError};
use crate::layout::*;
use crate::record::{RecordFlags, RecordMeta, RingFds, RingStats, monotonic_ns};
use crate::shm::Mapping;

/// Namespace for creating rings.
pub struct Ring;

impl Ring {
    /// Creates a ring with a data area of `capacity_bytes` (a multiple of 8, at least
    /// [`MIN_CAPACITY`]) for payloads of at most `max_record_bytes`, which must satisfy
    /// `64 + align8(max_record_bytes) <= capacity_bytes / 2` (see [`min_capacity_for`]).
    ///
    /// Returns the producer (which keeps its own mapping and a duplicate of the doorbell) and the
    /// fds to hand to the consumer process.
    pub fn create(capacity_bytes: usize, max_record_bytes: usize) -> Result<(Producer, RingFds)> {
        let capacity = capacity_bytes as u64;
        let max_record = max_record_bytes as u64;
        if !capacity.is_multiple_of(ALIGN) || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(RingError::InvalidConfig(format!(
                "capacity {capacity} must be a multiple of {ALIGN} in {MIN_CAPACITY}..={MAX_CAPACITY}"
            )));
        }
        if max_record == 0 || max_record > max_payload_for_capacity(capacity) {
            return Err(RingError::InvalidConfig(format!(
                "max_record_bytes {max_record} must be in 1..={} for capacity {capacity} \
                 (a record may use at most half of the data area)",
                max_payload_for_capacity(capacity)
            )));
        }
        let total = HEADER_SIZE as u64 + capacity;
        let total_len = usize::try_from(total)
            .map_err(|_| RingError::InvalidConfig(format!("ring of {total} bytes is too large")))?;

        let memfd = rustix::fs::memfd_create(
            "punktfunk-au-ring",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| RingError::os("memfd_create", e))?;
        rustix::fs::ftruncate(&memfd, total).map_err(|e| RingError::os("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(
            &memfd,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        )
        .map_err(|e| RingError::os("fcntl(F_ADD_SEALS)", e))?;
        let map = Mapping::map(memfd.as_fd(), total_len)?;

        // The memfd is zero-filled: head, tail and all counters start at 0.
        map.write_header_u32(OFF_VERSION, LAYOUT_VERSION);
        map.write_header_u32(OFF_HEADER_SIZE, HEADER_SIZE as u32);
        map.write_header_u32(OFF_RECORD_HEADER_SIZE, RECORD_HEADER_SIZE as u32);
        map.atomic(OFF_CAPACITY).store(capacity, Ordering::Relaxed);
        map.atomic(OFF_MAX_RECORD)
            .store(max_record, Ordering::Relaxed);
        // Magic last, with Release: whoever sees the magic (Acquire) sees the fields above.
        map.atomic(OFF_MAGIC).store(MAGIC, Ordering::Release);

        let doorbell = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| RingError::os("eventfd", e))?;
        let own_doorbell = doorbell.try_clone().map_err(|e| RingError::Os {
            op: "dup",
            source: e,
        })?;

        let producer = Producer {
            map,
            doorbell: own_doorbell,
            capacity,
            max_record,
            head: 0,
            pending_dropped: 0,
            records_written: 0,
            records_dropped: 0,
            bytes_written: 0,
        };
        Ok((producer, RingFds { memfd, doorbell }))
    }
}

/// Result of [`Producer::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The record was published.
    Written(Published),
    /// The ring had no room: this record was dropped (nothing in the ring was touched). The next
    /// published record will carry `DISCONTINUITY` and `dropped_before == pending_dropped` (or
    /// more, if further records are dropped first).
    Dropped {
        /// Records dropped since the last published one, including this one.
        pending_dropped: u64,
    },
}

/// Details of a published record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// Records dropped right before this one (0: no gap).
    pub dropped_before: u64,
    /// The `written_ns` stamp stored in the record.
    pub written_ns: u64,
}

/// The writing end. Owns its mapping and doorbell; dropping it marks the ring closed.
pub struct Producer {
    map: Mapping,
    doorbell: OwnedFd,
    capacity: u64,
    max_record: u64,
    /// Authoritative write position (bytes since creation); mirrored into the header on publish.
    head: u64,
    pending_dropped: u64,
    records_written: u64,
    records_dropped: u64,
    bytes_written: u64,
}

impl Producer {
    /// Data-area capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Largest accepted payload.
    pub fn max_record_bytes(&self) -> u64 {
        self.max_record
    }

    /// Records dropped since the last published record.
    pub fn pending_dropped(&self) -> u64 {
        self.pending_dropped
    }

    /// Copies `payload` into the ring as one record and rings the doorbell, or drops it if the
    /// ring is full. Never blocks.
    ///
    /// Errors: [`RingError::RecordTooLarge`] (counted as dropped), [`RingError::Corrupt`] if the
    /// consumer's read position in shared memory is impossible (counted as dropped).
    pub fn write(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<WriteOutcome> {
        let published = match self.reserve(payload.len())? {
            Some(mut slot) => {
                slot.payload_mut().copy_from_slice(payload);
                Some(slot.commit(meta))
            }
            None => None,
        };
        Ok(match published {
            Some(p) => WriteOutcome::Written(p),
            None => WriteOutcome::Dropped {
                pending_dropped: self.pending_dropped,
            },
        })
    }

    /// Reserves room for a record of `len` payload bytes so it can be written in place.
    ///
    /// `Ok(None)` means the ring is full and the record has been counted as dropped. A returned
    /// slot is published by [`WriteSlot::commit`]; dropping it uncommitted counts the record as
    /// dropped, so the consumer still learns about the gap. Never blocks.
    pub fn reserve(&mut self, len: usize) -> Result<Option<WriteSlot<'_>>> {
        let len = len as u64;
        if len > self.max_record {
            self.count_drop();
            return Err(RingError::RecordTooLarge {
                len,
                max: self.max_record,
            });
        }
        // Acquire pairs with the consumer's Release store of `tail`: the consumer's reads of the
        // records it released happen-before our overwriting them.
        let tail = self.map.atomic(OFF_TAIL).load(Ordering::Acquire);
        let used = match self.head.checked_sub(tail) {
            Some(used) if used <= self.capacity => used,
            _ => {
                self.count_drop();
                return Err(RingError::Corrupt(format!(
                    "consumer read position {tail} is outside [{}, {}]",
                    self.head.saturating_sub(self.capacity),
                    self.head
                )));
            }
        };
        let free = self.capacity - used;
        // `len <= max_record <= capacity / 2`, so this cannot overflow.
        let footprint = RECORD_HEADER_SIZE as u64 + len.next_multiple_of(ALIGN);
        let off = self.head % self.capacity;
        let contig = self.capacity - off;
        let skip = if footprint <= contig { 0 } else { contig };
        if skip + footprint > free {
            self.count_drop();
            return Ok(None);
        }
        Ok(Some(WriteSlot {
            start: self.head + skip,
            wrap_from: (skip > 0).then_some(self.head),
            reserved: len,
            len,
            committed: false,
            producer: self,
        }))
    }

    /// A snapshot of the counters (the producer's own, plus the consumer's read position).
    pub fn stats(&self) -> RingStats {
        let tail = self.map.atomic(OFF_TAIL).load(Ordering::Acquire);
        let records_read = self.map.atomic(OFF_RECORDS_READ).load(Ordering::Relaxed);
        RingStats {
            records_written: self.records_written,
            records_dropped: self.records_dropped,
            bytes_written: self.bytes_written,
            records_read,
            lag_bytes: self.head.saturating_sub(tail).min(self.capacity),
            lag_records: self.records_written.saturating_sub(records_read),
            capacity: self.capacity,
            producer_closed: false,
        }
    }

    /// The producer's mapping (tests poke garbage into it).
    #[cfg(test)]
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// Marks the ring closed and wakes the consumer (same as dropping the producer).
    pub fn close(self) {}

    fn count_drop(&mut self) {
        self.pending_dropped += 1;
        self.records_dropped += 1;
        self.map
            .atomic(OFF_RECORDS_DROPPED)
            .store(self.records_dropped, Ordering::Relaxed);
    }

    fn ring_doorbell(&self) {
        // The eventfd is non-blocking. The only possible failure is EAGAIN when the counter is
        // near u64::MAX, i.e. it is already non-zero and the consumer will wake anyway; the record
        // is published regardless, so there is nothing useful to report.
        let _ = rustix::io::write(&self.doorbell, &1u64.to_ne_bytes());
    }

    /// Writes the record header (and wrap marker) for a reserved slot and publishes it.
    fn publish(
        &mut self,
        start: u64,
        wrap_from: Option<u64>,
        len: u64,
        meta: &RecordMeta,
    ) -> Published {
        let data = self.map.data();
        if let Some(pos) = wrap_from {
            let off = pos % self.capacity;
            if self.capacity - off >= RECORD_HEADER_SIZE as u64 {
                let pad = RawRecordHeader {
                    tag: TAG_PAD,
                    ..RawRecordHeader::default()
                };
                // SAFETY: `off + 64 <= capacity`, so the write is inside the data area; it is
                // 8-byte aligned (positions are multiples of 8, the data area is 64-aligned); and
                // the bytes from `pos` on are free space (reserved in `reserve`), which a correct
                // consumer does not read until we publish below.
                unsafe { data.add(off as usize).cast::<RawRecordHeader>().write(pad) };
            }
        }
        let dropped_before = self.pending_dropped;
        let written_ns = monotonic_ns();
        // A caller-set DISCONTINUITY is kept; the ring adds it when it dropped records.
        let mut flags = meta.flags;
        if dropped_before > 0 {
            flags.insert(RecordFlags::DISCONTINUITY);
        }
        let header = RawRecordHeader {
            tag: TAG_RECORD,
            flags: flags.bits(),
            payload_len: len,
            frame_index: meta.frame_index,
            dropped_before,
            captured_ns: meta.captured_ns,
            encode_start_ns: meta.encode_start_ns,
            encode_end_ns: meta.encode_end_ns,
            written_ns,
        };
        let off = start % self.capacity;
        // SAFETY: `reserve` placed the record so that `off + 64 + align8(reserved) <= capacity`
        // (no record crosses the end of the data area), the position is 8-aligned, and the bytes
        // are free space the consumer does not read before the head store below.
        unsafe {
            data.add(off as usize)
                .cast::<RawRecordHeader>()
                .write(header)
        };

        let new_head = start + RECORD_HEADER_SIZE as u64 + len.next_multiple_of(ALIGN);
        self.records_written += 1;
        self.bytes_written += len;
        self.pending_dropped = 0;
        self.map
            .atomic(OFF_RECORDS_WRITTEN)
            .store(self.records_written, Ordering::Relaxed);
        self.map
            .atomic(OFF_BYTES_WRITTEN)
            .store(self.bytes_written, Ordering::Relaxed);
        // Release: every write above (payload, header, wrap marker, counters) happens-before the
        // consumer's Acquire load that observes `new_head`.
        self.map.atomic(OFF_HEAD).store(new_head, Ordering::Release);
        self.head = new_head;
        self.ring_doorbell();
        Published {
            dropped_before,
            written_ns,
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Release after the last head store: a consumer that sees `closed` sees the final head.
        self.map
            .atomic(OFF_PRODUCER_CLOSED)
            .store(1, Ordering::Release);
        self.ring_doorbell();
    }
}

/// Room for one record, reserved by [`Producer::reserve`]; write the payload in place, then
/// [`commit`](WriteSlot::commit). Dropping it uncommitted counts the record as dropped.
pub struct WriteSlot<'a> {
    producer: &'a mut Producer,
    /// Absolute position of the record header.
    start: u64,
    /// Absolute position where a wrap marker goes (the record was placed at offset 0).
    wrap_from: Option<u64>,
    reserved: u64,
    len: u64,
    committed: bool,
}

impl WriteSlot<'_> {
    /// The payload area (`len()` bytes; contents are stale until you write them).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let off = (self.start % self.producer.capacity) as usize + RECORD_HEADER_SIZE;
        // SAFETY: `reserve` guaranteed `off + reserved <= capacity` inside the data area, and
        // `len <= reserved`. The region is free space: the consumer does not read it before the
        // record is published, and `&mut self` makes this the only reference into it. `u8` has
        // no invalid values, so stale bytes are fine.
        unsafe {
            std::slice::from_raw_parts_mut(self.producer.map.data().add(off), self.len as usize)
        }
    }

    /// Current payload length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// `true` when the payload length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shrinks the payload to `len` bytes (for encoders that reserve an upper bound). Growing is
    /// refused with [`RingError::RecordTooLarge`] (the slot stays usable).
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        let len = len as u64;
        if len > self.reserved {
            return Err(RingError::RecordTooLarge {
                len,
                max: self.reserved,
            });
        }
        self.len = len;
        Ok(())
    }

    /// Publishes the record (stamping `written_ns`) and rings the doorbell.
    pub fn commit(mut self, meta: &RecordMeta) -> Published {
        self.committed = true;
        let (start, wrap_from, len) = (self.start, self.wrap_from, self.len);
        self.producer.publish(start, wrap_from, len, meta)
    }
}

impl Drop for WriteSlot<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.producer.count_drop();
        }
    }
}
