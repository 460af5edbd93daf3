//! The consumer end: attaches to a ring received as fds and reads records in place. Treats the
//! shared memory as untrusted.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{OFlags, SealFlags};

use crate::error::{Result, RingError};
use crate::layout::*;
use crate::record::{RecordFlags, RecordMeta, RingFds, RingStats, monotonic_ns};
use crate::shm::Mapping;

/// The reading end.
pub struct Consumer {
    map: Mapping,
    doorbell: OwnedFd,
    /// Data-area capacity, derived from `fstat` (and checked against the header) at attach time
    /// and never re-read from shared memory.
    capacity: u64,
    /// Largest payload, read once at attach time and validated against `capacity`.
    max_record: u64,
    /// Authoritative read position (bytes since creation); mirrored into the header on release.
    tail: u64,
    records_read: u64,
    /// [`wait`](Consumer::wait) polls the ring this long before it blocks (0: never spins).
    spin_ns: u64,
}

impl Consumer {
    /// Maps a ring received from the producer and validates it: the memfd must be sealed against
    /// shrinking and growing, its `fstat` size must be `512 + capacity`, and the header's magic,
    /// version, sizes and positions must be consistent with that size.
    pub fn attach(fds: RingFds) -> Result<Consumer> {
        let RingFds { memfd, doorbell } = fds;
        let seals = rustix::fs::fcntl_get_seals(&memfd)
            .map_err(|e| RingError::Incompatible(format!("not a sealable memfd ({e})")))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            // Without F_SEAL_SHRINK the peer could truncate the file under our mapping and make
            // every access a SIGBUS.
            return Err(RingError::Incompatible(format!(
                "memfd is not sealed against shrink and grow (seals: {seals:?})"
            )));
        }
        let st = rustix::fs::fstat(&memfd).map_err(|e| RingError::os("fstat", e))?;
        let size = u64::try_from(st.st_size)
            .map_err(|_| RingError::Incompatible(format!("negative memfd size {}", st.st_size)))?;
        let min = HEADER_SIZE as u64 + MIN_CAPACITY;
        if size < min {
            return Err(RingError::Incompatible(format!(
                "memfd is {size} bytes, smaller than the minimum ring of {min} bytes"
            )));
        }
        let capacity = size - HEADER_SIZE as u64;
        if capacity > MAX_CAPACITY || !capacity.is_multiple_of(ALIGN) {
            return Err(RingError::Incompatible(format!(
                "memfd size {size} does not give a valid data capacity"
            )));
        }
        let len = usize::try_from(size)
            .map_err(|_| RingError::Incompatible(format!("memfd of {size} bytes is too large")))?;
        // The doorbell is drained with non-blocking reads; make sure it is non-blocking whatever
        // the peer created.
        let fl =
            rustix::fs::fcntl_getfl(&doorbell).map_err(|e| RingError::os("fcntl(F_GETFL)", e))?;
        rustix::fs::fcntl_setfl(&doorbell, fl | OFlags::NONBLOCK)
            .map_err(|e| RingError::os("fcntl(F_SETFL)", e))?;

        let map = Mapping::map(memfd.as_fd(), len)?;
        drop(memfd); // the mapping keeps the memory alive

        let magic = map.atomic(OFF_MAGIC).load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(RingError::Incompatible(format!("bad magic {magic:#018x}")));
        }
        let version = map.read_header_u32(OFF_VERSION);
        if version != LAYOUT_VERSION {
            return Err(RingError::Incompatible(format!(
                "layout version {version}, this build speaks {LAYOUT_VERSION}"
            )));
        }
        let hs = map.read_header_u32(OFF_HEADER_SIZE);
        let rhs = map.read_header_u32(OFF_RECORD_HEADER_SIZE);
        if hs as usize != HEADER_SIZE || rhs as usize != RECORD_HEADER_SIZE {
            return Err(RingError::Incompatible(format!(
                "header sizes {hs}/{rhs}, expected {HEADER_SIZE}/{RECORD_HEADER_SIZE}"
            )));
        }
        let hdr_capacity = map.atomic(OFF_CAPACITY).load(Ordering::Relaxed);
        if hdr_capacity != capacity {
            return Err(RingError::Incompatible(format!(
                "header claims capacity {hdr_capacity}, memfd size gives {capacity}"
            )));
        }
        let max_record = map.atomic(OFF_MAX_RECORD).load(Ordering::Relaxed);
        if max_record == 0 || max_record > max_payload_for_capacity(capacity) {
            return Err(RingError::Incompatible(format!(
                "max record {max_record} is impossible for capacity {capacity}"
            )));
        }
        let head = map.atomic(OFF_HEAD).load(Ordering::Acquire);
        let tail = map.atomic(OFF_TAIL).load(Ordering::Acquire);
        if head.checked_sub(tail).is_none_or(|used| used > capacity)
            || !head.is_multiple_of(ALIGN)
            || !tail.is_multiple_of(ALIGN)
        {
            return Err(RingError::Corrupt(format!(
                "positions head {head} / tail {tail} are inconsistent"
            )));
        }
        let records_read = map.atomic(OFF_RECORDS_READ).load(Ordering::Relaxed);
        Ok(Consumer {
            map,
            doorbell,
            capacity,
            max_record,
            tail,
            records_read,
            spin_ns: 0,
        })
    }

    /// Data-area capacity in bytes (from `fstat`).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Largest payload the producer may write.
    pub fn max_record_bytes(&self) -> u64 {
        self.max_record
    }

    /// The doorbell eventfd, for callers that multiplex it in their own poll/epoll loop (it is
    /// readable when records may be available; [`Consumer::wait`] drains it).
    pub fn doorbell_fd(&self) -> BorrowedFd<'_> {
        self.doorbell.as_fd()
    }

    /// Loads and validates the producer's write position.
    fn load_head(&self) -> Result<u64> {
        // Acquire pairs with the producer's Release store: the record bytes below `head` are
        // visible to us once we see `head`.
        let head = self.map.atomic(OFF_HEAD).load(Ordering::Acquire);
        match head.checked_sub(self.tail) {
            Some(used) if used <= self.capacity && head.is_multiple_of(ALIGN) => Ok(head),
            _ => Err(RingError::Corrupt(format!(
                "producer write position {head} is outside [{}, {}]",
                self.tail,
                self.tail.saturating_add(self.capacity)
            ))),
        }
    }

    /// Stores our read position (frees space for the producer).
    fn store_tail(&mut self, tail: u64) {
        self.tail = tail;
        // Release: our reads of the released records happen-before the producer's Acquire load
        // that lets it overwrite them.
        self.map.atomic(OFF_TAIL).store(tail, Ordering::Release);
    }

    /// The next record, in place, or `Ok(None)` if the ring is empty. The record stays in the
    /// ring (the producer cannot overwrite it) until the returned [`RecordRef`] is dropped or
    /// released.
    ///
    /// Every offset and length is checked against the capacity known from `fstat` and against
    /// the write position; anything inconsistent is [`RingError::Corrupt`] (the read position is
    /// not advanced past it).
    pub fn try_read(&mut self) -> Result<Option<RecordRef<'_>>> {
        let head = self.load_head()?;
        let cap = self.capacity;
        let mut pos = self.tail;
        // Each iteration either returns or advances `pos` by at least 8 bytes without passing
        // `head`, so the loop runs at most (head - tail) / 8 + 1 times (in practice: at most 3).
        loop {
            if pos == head {
                if pos != self.tail {
                    self.store_tail(pos); // give skipped wrap padding back to the producer
                }
                return Ok(None);
            }
            let off = pos % cap;
            let contig = cap - off;
            if contig < RECORD_HEADER_SIZE as u64 {
                // Implicit wrap: too little room before the end for a header; the producer
                // continued at offset 0.
                pos = self.skip(pos, contig, head)?;
                continue;
            }
            // SAFETY: `off + 64 <= cap`, so the header lies inside the data area (mapped for the
            // lifetime of `self`); `off` is a multiple of 8 (the tail is 8-aligned when attached,
            // `head` is checked to be 8-aligned, `cap` is a multiple of 8 and every advance is a
            // multiple of 8), and the data area starts 512 bytes into a page-aligned mapping, so
            // the read is aligned. It is one volatile copy: every field is validated on the copy, so
            // a concurrently-writing (buggy) producer cannot make us use a value we did not check.
            let hdr = unsafe {
                self.map
                    .data()
                    .add(off as usize)
                    .cast::<RawRecordHeader>()
                    .read_volatile()
            };
            match hdr.tag {
                TAG_PAD => {
                    pos = self.skip(pos, contig, head)?;
                    continue;
                }
                TAG_RECORD => {}
                other => {
                    return Err(RingError::Corrupt(format!(
                        "bad record tag {other:#010x} at position {pos}"
                    )));
                }
            }
            let len = hdr.payload_len;
            if len > self.max_record {
                return Err(RingError::Corrupt(format!(
                    "record at position {pos} claims {len} payload bytes, max is {}",
                    self.max_record
                )));
            }
            // `len <= max_record <= capacity / 2`: no overflow.
            let footprint = RECORD_HEADER_SIZE as u64 + len.next_multiple_of(ALIGN);
            if footprint > contig {
                return Err(RingError::Corrupt(format!(
                    "record at position {pos} ({footprint} bytes) crosses the end of the data area"
                )));
            }
            let end = pos.saturating_add(footprint);
            if end > head {
                return Err(RingError::Corrupt(format!(
                    "record at position {pos} ends at {end}, beyond the write position {head}"
                )));
            }
            let meta = RecordMeta {
                frame_index: hdr.frame_index,
                flags: RecordFlags::from_bits_retain(hdr.flags),
                captured_ns: hdr.captured_ns,
                encode_start_ns: hdr.encode_start_ns,
                encode_end_ns: hdr.encode_end_ns,
            };
            // SAFETY: `off + 64 + len <= off + footprint <= cap`, so the payload is inside the
            // data area.
            let payload = unsafe { self.map.data().add(off as usize + RECORD_HEADER_SIZE) };
            return Ok(Some(RecordRef {
                meta,
                dropped_before: hdr.dropped_before,
                written_ns: hdr.written_ns,
                payload,
                len: len as usize,
                end,
                consumer: self,
            }));
        }
    }

    /// Advances over wrap padding of `contig` bytes at `pos`, checked against `head`.
    fn skip(&self, pos: u64, contig: u64, head: u64) -> Result<u64> {
        let next = pos.saturating_add(contig);
        if next > head {
            return Err(RingError::Corrupt(format!(
                "wrap padding at position {pos} runs past the write position {head}"
            )));
        }
        Ok(next)
    }

    /// `true` if a record is ready (cheap, no system call).
    pub fn has_data(&self) -> Result<bool> {
        Ok(self.load_head()? != self.tail)
    }

    /// The producer closed the ring (it may still hold unread records).
    pub fn is_producer_closed(&self) -> bool {
        self.map.atomic(OFF_PRODUCER_CLOSED).load(Ordering::Acquire) != 0
    }

    /// The producer closed the ring and every record has been read: nothing more will come.
    pub fn is_finished(&self) -> Result<bool> {
        // `closed` is stored after the final head (Release/Acquire), so loading it first makes
        // the head load below see the final head.
        let closed = self.is_producer_closed();
        Ok(closed && self.load_head()? == self.tail)
    }

    /// Makes [`wait`](Consumer::wait) watch the ring for up to `spin` (no system calls) before
    /// it blocks on the doorbell (default: 0, block at once). A record that lands within the
    /// spin is taken without a sleep and wake-up; records further apart cost `spin` of CPU
    /// each. The handoff bench measures both (docs/performance.md).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin_ns = spin.as_nanos().min(u128::from(u64::MAX)) as u64;
    }

    /// Blocks until a record may be ready, the producer closed the ring, or `timeout` passes
    /// (`None`: no limit). Returns `Ok(false)` on timeout. Spurious `true` returns are possible
    /// (then [`try_read`](Consumer::try_read) returns `None`): just wait again.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout
            .map(|t| monotonic_ns().saturating_add(t.as_nanos().min(u64::MAX as u128) as u64));
        if self.spin_ns > 0 {
            let spin_end = monotonic_ns()
                .saturating_add(self.spin_ns)
                .min(deadline.unwrap_or(u64::MAX));
            while monotonic_ns() < spin_end {
                if self.has_data()? || self.is_producer_closed() {
                    return Ok(true);
                }
                std::hint::spin_loop();
            }
        }
        loop {
            if self.has_data()? || self.is_producer_closed() {
                return Ok(true);
            }
            let ts;
            let ts_ref = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_sub(monotonic_ns());
                    if left == 0 {
                        return Ok(false);
                    }
                    ts = Timespec {
                        tv_sec: (left / 1_000_000_000) as _,
                        tv_nsec: (left % 1_000_000_000) as _,
                    };
                    Some(&ts)
                }
            };
            let mut fds = [PollFd::new(&self.doorbell, PollFlags::IN)];
            match rustix::event::poll(&mut fds, ts_ref) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    // Reset the eventfd counter (non-blocking; EAGAIN just means another wakeup
                    // already consumed it) and re-check the ring.
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(&self.doorbell, &mut buf);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(RingError::os("poll", e)),
            }
        }
    }

    /// A snapshot of the counters. `lag_*` are computed from our own read position; the
    /// producer's counters come from shared memory and are only as trustworthy as the producer.
    pub fn stats(&self) -> RingStats {
        let records_written = self.map.atomic(OFF_RECORDS_WRITTEN).load(Ordering::Relaxed);
        let head = self.map.atomic(OFF_HEAD).load(Ordering::Acquire);
        RingStats {
            records_written,
            records_dropped: self.map.atomic(OFF_RECORDS_DROPPED).load(Ordering::Relaxed),
            bytes_written: self.map.atomic(OFF_BYTES_WRITTEN).load(Ordering::Relaxed),
            records_read: self.records_read,
            lag_bytes: head.saturating_sub(self.tail).min(self.capacity),
            lag_records: records_written.saturating_sub(self.records_read),
            capacity: self.capacity,
            producer_closed: self.is_producer_closed(),
        }
    }
}

/// One record, borrowed in place from the ring. Dropping it (or [`release`](RecordRef::release))
/// hands its space back to the producer.
pub struct RecordRef<'a> {
    consumer: &'a mut Consumer,
    meta: RecordMeta,
    dropped_before: u64,
    written_ns: u64,
    payload: *const u8,
    len: usize,
    /// Position just past this record.
    end: u64,
}

impl RecordRef<'_> {
    /// The producer's metadata (flags include `DISCONTINUITY` when records were dropped before).
    pub fn meta(&self) -> &RecordMeta {
        &self.meta
    }

    /// Frame index.
    pub fn frame_index(&self) -> u64 {
        self.meta.frame_index
    }

    /// Flags.
    pub fn flags(&self) -> RecordFlags {
        self.meta.flags
    }

    /// Records the producer dropped right before this one.
    pub fn dropped_before(&self) -> u64 {
        self.dropped_before
    }

    /// CLOCK_MONOTONIC ns at which the ring published the record.
    pub fn written_ns(&self) -> u64 {
        self.written_ns
    }

    /// The payload, in place in the shared mapping.
    pub fn payload(&self) -> &[u8] {
        // SAFETY: `try_read` checked that `payload .. payload + len` lies inside the data area,
        // which stays mapped while the `&mut Consumer` borrow in `self` lives. The bytes are below
        // the published head and not yet released, so a correct producer does not write them
        // until we release; a buggy producer could only change their values (any bytes are valid
        // `u8`s) — see the trust model in the crate docs.
        unsafe { std::slice::from_raw_parts(self.payload, self.len) }
    }

    /// Releases the record (same as dropping it).
    pub fn release(self) {}
}

impl Drop for RecordRef<'_> {
    fn drop(&mut self) {
        self.consumer.records_read += 1;
        let records_read = self.consumer.records_read;
        self.consumer
            .map
            .atomic(OFF_RECORDS_READ)
            .store(records_read, Ordering::Relaxed);
        self.consumer.store_tail(self.end);
    }
}

impl std::fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("meta", &self.meta)
            .field("dropped_before", &self.dropped_before)
            .field("written_ns", &self.written_ns)
            .field("len", &self.len)
            .finish()
    }
}
