//! Unit tests: layout edge cases, the drop policy, corruption and attach validation.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::layout::*;
use crate::*;

const CAP: usize = 4096;
const MAX: usize = 1024;

fn ring(cap: usize, max: usize) -> (Producer, Consumer) {
    let (p, fds) = Ring::create(cap, max).expect("create");
    let c = Consumer::attach(fds).expect("attach");
    (p, c)
}

/// Payload whose bytes depend on `seed` and the position.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn meta(frame: u64) -> RecordMeta {
    RecordMeta {
        frame_index: frame,
        flags: RecordFlags::empty(),
        captured_ns: frame * 10 + 1,
        encode_start_ns: frame * 10 + 2,
        encode_end_ns: frame * 10 + 3,
    }
}

fn write_ok(p: &mut Producer, frame: u64, len: usize) -> Published {
    match p.write(&meta(frame), &payload(frame, len)).expect("write") {
        WriteOutcome::Written(w) => w,
        other => panic!("frame {frame} ({len} B) not written: {other:?}"),
    }
}

fn read_ok(c: &mut Consumer, frame: u64, len: usize) {
    let r = c.try_read().expect("read").expect("a record");
    assert_eq!(r.frame_index(), frame);
    assert_eq!(
        r.payload(),
        &payload(frame, len)[..],
        "payload of frame {frame}"
    );
    let m = r.meta();
    assert_eq!(
        (m.captured_ns, m.encode_start_ns, m.encode_end_ns),
        (frame * 10 + 1, frame * 10 + 2, frame * 10 + 3)
    );
}

fn head(p: &Producer) -> u64 {
    p.mapping().atomic(OFF_HEAD).load(Ordering::Acquire)
}

/// Writes raw bytes into the data area at `off` (test-only corruption).
fn poke(p: &Producer, off: usize, bytes: &[u8]) {
    assert!(off + bytes.len() <= p.capacity() as usize);
    // SAFETY: bounds checked just above against the data area; single-threaded test, nobody
    // holds a reference into these bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.mapping().data().add(off), bytes.len())
    };
}

fn is_corrupt<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(RingError::Corrupt(_)))
}

#[test]
fn roundtrip_meta_flags_and_stamp() {
    let (mut p, mut c) = ring(CAP, MAX);
    assert!(c.try_read().unwrap().is_none());
    let before = monotonic_ns();
    let m = RecordMeta {
        flags: RecordFlags::KEYFRAME | RecordFlags::AUDIO,
        ..meta(7)
    };
    let WriteOutcome::Written(w) = p.write(&m, b"hello").unwrap() else {
        panic!("dropped")
    };
    assert_eq!(w.dropped_before, 0);
    assert!(w.written_ns >= before);
    let r = c.try_read().unwrap().unwrap();
    assert_eq!(*r.meta(), m);
    assert_eq!(r.payload(), b"hello");
    assert_eq!(r.written_ns(), w.written_ns);
    assert_eq!(r.dropped_before(), 0);
    assert!(!r.flags().contains(RecordFlags::DISCONTINUITY));
    drop(r);
    assert!(c.try_read().unwrap().is_none());
    let s = c.stats();
    assert_eq!(
        (s.records_written, s.records_read, s.lag_records),
        (1, 1, 0)
    );
    assert_eq!((s.bytes_written, s.lag_bytes), (5, 0));
}

#[test]
fn zero_length_record() {
    let (mut p, mut c) = ring(CAP, MAX);
    write_ok(&mut p, 1, 0);
    read_ok(&mut c, 1, 0);
    assert_eq!(head(&p), RECORD_HEADER_SIZE as u64);
}

#[test]
fn wrap_around_implicit_and_marker() {
    let (mut p, mut c) = ring(CAP, MAX);
    // Four records of footprint 1016 leave 32 bytes (< one record header) before the end.
    for f in 0..4 {
        write_ok(&mut p, f, 952);
    }
    assert_eq!(head(&p), 4064);
    for f in 0..4 {
        read_ok(&mut c, f, 952);
    }
    // Implicit wrap: nothing can be written in the last 32 bytes; the record goes to offset 0.
    write_ok(&mut p, 4, 100);
    assert_eq!(head(&p), 4096 + 168);
    read_ok(&mut c, 4, 100);

    // Move the write offset to 4000: 96 bytes left, enough for a marker but not for the record.
    write_ok(&mut p, 5, 1000 - 64); // 168 + 1000 = 1168
    write_ok(&mut p, 6, 1000 - 64); // 2168
    write_ok(&mut p, 7, 1000 - 64); // 3168
    write_ok(&mut p, 8, 832 - 64); // 4000
    assert_eq!(head(&p) % 4096, 4000);
    for f in 5..8 {
        read_ok(&mut c, f, 936);
    }
    read_ok(&mut c, 8, 768);
    write_ok(&mut p, 9, 200);
    // SAFETY: the wrap marker lies at offset 4000 of the data area (inside the mapping).
    let tag = unsafe { p.mapping().data().add(4000).cast::<u32>().read() };
    assert_eq!(tag, TAG_PAD, "a wrap marker was written");
    assert_eq!(head(&p), 2 * 4096 + 264);
    read_ok(&mut c, 9, 200);
    assert!(c.try_read().unwrap().is_none());
    assert_eq!(c.stats().lag_bytes, 0);
}

#[test]
fn exact_fit_at_end_and_full_ring() {
    let max = max_payload_for_capacity(CAP as u64) as usize; // 1984: footprint 2048 = CAP / 2
    assert_eq!(record_footprint(max as u64), Some(2048));
    let (mut p, mut c) = ring(CAP, max);
    write_ok(&mut p, 0, max);
    write_ok(&mut p, 1, max); // ends exactly at the end of the data area: no marker, no wrap
    assert_eq!(head(&p), 4096);
    assert_eq!(p.stats().lag_bytes, 4096, "ring exactly full");
    assert!(matches!(
        p.write(&meta(2), &[]).unwrap(),
        WriteOutcome::Dropped { pending_dropped: 1 }
    ));
    read_ok(&mut c, 0, max);
    let w = write_ok(&mut p, 3, max); // fits exactly in the freed first half
    assert_eq!(w.dropped_before, 1);
    assert_eq!(head(&p), 4096 + 2048);
    read_ok(&mut c, 1, max);
    let r = c.try_read().unwrap().unwrap();
    assert_eq!(r.frame_index(), 3);
    assert!(r.flags().contains(RecordFlags::DISCONTINUITY));
    assert_eq!(r.dropped_before(), 1);
}

#[test]
fn oversize_rejected_and_counted() {
    let (mut p, mut c) = ring(CAP, MAX);
    let err = p.write(&meta(0), &vec![0u8; MAX + 1]).unwrap_err();
    assert!(
        matches!(err, RingError::RecordTooLarge { len, max } if len == MAX as u64 + 1 && max == MAX as u64),
        "{err}"
    );
    assert!(matches!(
        p.reserve(MAX + 1),
        Err(RingError::RecordTooLarge { .. })
    ));
    assert_eq!(p.pending_dropped(), 2);
    let w = write_ok(&mut p, 1, MAX); // exactly the maximum is fine
    assert_eq!(w.dropped_before, 2);
    let r = c.try_read().unwrap().unwrap();
    assert!(r.flags().contains(RecordFlags::DISCONTINUITY));
    assert_eq!(r.dropped_before(), 2);
    drop(r);
    assert_eq!(c.stats().records_dropped, 2);
}

#[test]
fn create_rejects_impossible_configs() {
    for (cap, max) in [
        (CAP, CAP / 2),                  // record larger than half the ring
        (CAP, CAP / 2 - 64 + 1),         // one byte too many
        (CAP, 0),                        // nothing fits
        (CAP + 4, 16),                   // capacity not a multiple of 8
        (MIN_CAPACITY as usize - 8, 16), // too small
    ] {
        assert!(
            matches!(Ring::create(cap, max), Err(RingError::InvalidConfig(_))),
            "cap {cap} max {max} accepted"
        );
    }
    assert!(Ring::create(CAP, CAP / 2 - 64).is_ok());
    assert_eq!(min_capacity_for(2 << 20), Some(2 * ((2 << 20) + 64)));
}

#[test]
fn drop_newest_keeps_ring_intact_and_flags_gap() {
    let (mut p, mut c) = ring(CAP, MAX);
    for f in 0..3 {
        write_ok(&mut p, f, 1000); // 3 x 1064 = 3192 used, 904 free
    }
    for (i, f) in (3..6).enumerate() {
        assert_eq!(
            p.write(&meta(f), &payload(f, 1000)).unwrap(),
            WriteOutcome::Dropped {
                pending_dropped: i as u64 + 1
            }
        );
    }
    let w = write_ok(&mut p, 6, 800); // still fits: 864 <= 904
    assert_eq!(w.dropped_before, 3);
    assert_eq!(p.stats().records_dropped, 3);
    for f in 0..3 {
        read_ok(&mut c, f, 1000); // untouched by the drops
    }
    let r = c.try_read().unwrap().unwrap();
    assert_eq!((r.frame_index(), r.dropped_before()), (6, 3));
    assert!(r.flags().contains(RecordFlags::DISCONTINUITY));
    assert_eq!(r.payload(), &payload(6, 800)[..]);
    drop(r);
    // The counter resets after a published record.
    write_ok(&mut p, 7, 10);
    let r = c.try_read().unwrap().unwrap();
    assert_eq!(r.dropped_before(), 0);
    assert!(!r.flags().contains(RecordFlags::DISCONTINUITY));
    drop(r);
    let s = c.stats();
    assert_eq!((s.records_written, s.records_dropped), (5, 3));
}

#[test]
fn caller_discontinuity_is_kept() {
    let (mut p, mut c) = ring(CAP, MAX);
    let m = RecordMeta {
        flags: RecordFlags::DISCONTINUITY,
        ..meta(1)
    };
    p.write(&m, b"x").unwrap();
    let r = c.try_read().unwrap().unwrap();
    assert!(r.flags().contains(RecordFlags::DISCONTINUITY));
    assert_eq!(r.dropped_before(), 0);
}

#[test]
fn reserve_in_place_shrink_and_abort() {
    let (mut p, mut c) = ring(CAP, MAX);
    let mut slot = p.reserve(MAX).unwrap().unwrap();
    assert_eq!(slot.len(), MAX);
    slot.payload_mut()[..4].copy_from_slice(b"abcd");
    assert!(slot.set_len(MAX + 1).is_err());
    slot.set_len(4).unwrap();
    slot.commit(&meta(1));
    assert_eq!(head(&p), 64 + 8);
    {
        let _aborted = p.reserve(10).unwrap().unwrap(); // dropped uncommitted
    }
    assert_eq!(p.pending_dropped(), 1);
    let r = c.try_read().unwrap().unwrap();
    assert_eq!(r.payload(), b"abcd");
    drop(r);
    assert!(
        c.try_read().unwrap().is_none(),
        "aborted slot was not published"
    );
    write_ok(&mut p, 2, 3);
    assert_eq!(c.try_read().unwrap().unwrap().dropped_before(), 1);
}

#[test]
fn forgotten_record_is_read_again_and_release_frees() {
    let (mut p, mut c) = ring(CAP, MAX);
    write_ok(&mut p, 1, 10);
    write_ok(&mut p, 2, 10);
    std::mem::forget(c.try_read().unwrap().unwrap());
    assert_eq!(p.stats().lag_records, 2, "not released yet");
    let r = c.try_read().unwrap().unwrap();
    assert_eq!(r.frame_index(), 1);
    r.release();
    assert_eq!(p.stats().lag_records, 1);
    read_ok(&mut c, 2, 10);
    assert_eq!(p.stats().lag_bytes, 0);
}

#[test]
fn close_wait_and_finish() {
    let (mut p, mut c) = ring(CAP, MAX);
    assert!(
        !c.wait(Some(Duration::from_millis(5))).unwrap(),
        "empty ring: timeout"
    );
    write_ok(&mut p, 1, 10);
    assert!(c.wait(Some(Duration::from_millis(5))).unwrap());
    assert!(!c.is_finished().unwrap());
    p.close();
    assert!(c.is_producer_closed());
    assert!(!c.is_finished().unwrap(), "one record still unread");
    read_ok(&mut c, 1, 10);
    assert!(c.is_finished().unwrap());
    assert!(c.wait(None).unwrap(), "closed ring never blocks");
    assert!(c.stats().producer_closed);
}

#[test]
fn doorbell_wakes_a_blocked_consumer() {
    let (mut p, mut c) = ring(CAP, MAX);
    let t = std::thread::spawn(move || {
        assert!(c.wait(None).unwrap());
        c.try_read().unwrap().unwrap().frame_index()
    });
    std::thread::sleep(Duration::from_millis(20));
    write_ok(&mut p, 42, 10);
    assert_eq!(t.join().unwrap(), 42);
}

#[test]
fn spinning_consumer_still_times_out_and_still_wakes() {
    let (mut p, mut c) = ring(CAP, MAX);
    c.set_spin(Duration::from_millis(50));
    // An empty ring still times out.
    assert!(!c.wait(Some(Duration::from_millis(5))).unwrap());
    // A record already there is seen by the spin without blocking.
    write_ok(&mut p, 7, 10);
    assert!(c.wait(None).unwrap());
    read_ok(&mut c, 7, 10);
    // A record written after the spin ran out wakes the blocked consumer.
    c.set_spin(Duration::from_micros(10));
    let t = std::thread::spawn(move || {
        assert!(c.wait(None).unwrap());
        c.try_read().unwrap().unwrap().frame_index()
    });
    std::thread::sleep(Duration::from_millis(20));
    write_ok(&mut p, 8, 10);
    assert_eq!(t.join().unwrap(), 8);
}

// ------------------------------------------------------------------------------ corruption

/// A ring with three 100-byte records; returns the raw producer for poking.
fn populated() -> (Producer, Consumer) {
    let (mut p, c) = ring(CAP, MAX);
    for f in 0..3 {
        write_ok(&mut p, f, 100);
    }
    (p, c)
}

#[test]
fn corrupt_tag() {
    let (p, mut c) = populated();
    poke(&p, 0, b"EVIL");
    assert!(is_corrupt(c.try_read()));
    // The error is sticky (position not advanced) and nothing panics.
    assert!(is_corrupt(c.try_read()));
}

#[test]
fn corrupt_lengths() {
    for bad_len in [u64::MAX, u64::MAX - 60, MAX as u64 + 1, 4000, 600] {
        let (p, mut c) = populated();
        poke(&p, 8, &bad_len.to_ne_bytes());
        let r = c.try_read();
        assert!(is_corrupt(r), "len {bad_len}");
    }
}

#[test]
fn corrupt_after_implicit_wrap() {
    let (mut p, mut c) = ring(CAP, MAX);
    for f in 0..4 {
        write_ok(&mut p, f, 952); // ends at 4064: 32 bytes left
    }
    for f in 0..4 {
        read_ok(&mut c, f, 952);
    }
    // Publish one header's worth past the implicit wrap without writing a record: offset 0
    // still holds frame 0's stale header (952 bytes), which then runs beyond the head.
    p.mapping()
        .atomic(OFF_HEAD)
        .store(4096 + 64, Ordering::Release);
    let e = c.try_read().unwrap_err();
    assert!(
        matches!(e, RingError::Corrupt(ref m) if m.contains("beyond the write position")),
        "{e}"
    );
}

#[test]
fn corrupt_record_header_crossing_end_of_area() {
    // A record header placed where the payload would run past the end of the data area.
    let (mut p, mut c) = ring(CAP, MAX);
    for f in 0..3 {
        write_ok(&mut p, f, 1000); // 3192
    }
    for f in 0..3 {
        read_ok(&mut c, f, 1000);
    }
    write_ok(&mut p, 3, 800); // at 3192, footprint 864: ends exactly at 4056
    poke(&p, 3192 + 8, &1000u64.to_ne_bytes()); // now claims to end at 4256 > 4096
    p.mapping()
        .atomic(OFF_HEAD)
        .store(3192 + 4096 / 2, Ordering::Release);
    let e = c.try_read().unwrap_err();
    assert!(
        matches!(e, RingError::Corrupt(ref m) if m.contains("crosses the end")),
        "{e}"
    );
}

#[test]
fn corrupt_record_beyond_head() {
    let (p, mut c) = populated();
    poke(&p, 8, &200u64.to_ne_bytes()); // record 0 now overlaps records 1 and 2 ...
    p.mapping()
        .atomic(OFF_HEAD)
        .store(64 + 104, Ordering::Release); // ... and runs past head
    let e = c.try_read().unwrap_err();
    assert!(
        matches!(e, RingError::Corrupt(ref m) if m.contains("beyond the write position")),
        "{e}"
    );
}

#[test]
fn corrupt_head_positions() {
    for bad_head in [u64::MAX, CAP as u64 + 8, 5, 3 * 168 + 4] {
        let (p, mut c) = populated();
        p.mapping()
            .atomic(OFF_HEAD)
            .store(bad_head, Ordering::Release);
        assert!(is_corrupt(c.try_read()), "head {bad_head}");
        assert!(is_corrupt(c.has_data()), "head {bad_head}");
    }
    // Head moving backwards behind our read position.
    let (p, mut c) = populated();
    read_ok(&mut c, 0, 100);
    p.mapping().atomic(OFF_HEAD).store(0, Ordering::Release);
    assert!(is_corrupt(c.try_read()));
}

#[test]
fn corrupt_wrap_marker_past_head() {
    let (p, mut c) = populated();
    poke(&p, 0, &TAG_PAD.to_ne_bytes()); // a marker at 0 skips the whole area, past head
    let e = c.try_read().unwrap_err();
    assert!(
        matches!(e, RingError::Corrupt(ref m) if m.contains("wrap padding")),
        "{e}"
    );
}

#[test]
fn producer_rejects_corrupt_tail() {
    for bad_tail in [u64::MAX, 3 * 168 + 8] {
        let (mut p, _c) = populated();
        p.mapping()
            .atomic(OFF_TAIL)
            .store(bad_tail, Ordering::Release);
        assert!(is_corrupt(p.write(&meta(9), b"x")), "tail {bad_tail}");
        assert_eq!(p.pending_dropped(), 1, "the rejected record is counted");
    }
}

#[test]
fn random_garbage_never_panics() {
    // xorshift64*: deterministic garbage.
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut corrupt = 0;
    for round in 0..300 {
        let (p, mut c) = populated();
        // Overwrite a few random 8-byte words of the data area with garbage, sometimes plausible.
        for _ in 0..(1 + round % 8) {
            let off = (next() % (CAP as u64 / 8)) as usize * 8;
            let v = match next() % 4 {
                0 => next(),
                1 => next() % 5000,
                2 => u64::from(TAG_PAD) | (next() << 32),
                _ => u64::from(TAG_RECORD) | (next() << 32),
            };
            poke(&p, off, &v.to_ne_bytes());
        }
        if round % 3 == 0 {
            let h = next() % 8192;
            p.mapping().atomic(OFF_HEAD).store(h, Ordering::Release);
        }
        for _ in 0..8 {
            match c.try_read() {
                Ok(Some(r)) => {
                    assert!(r.payload().len() <= MAX);
                }
                Ok(None) => break,
                Err(RingError::Corrupt(_)) => {
                    corrupt += 1;
                    break;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    assert!(corrupt > 50, "garbage was detected ({corrupt} rounds)");
}

// ------------------------------------------------------------------------------ attach

fn attach_err(fds: RingFds) -> RingError {
    match Consumer::attach(fds) {
        Ok(_) => panic!("attach accepted a bad ring"),
        Err(e) => e,
    }
}

#[test]
fn attach_rejects_wrong_magic_version_and_fields() {
    for (off, val, what) in [
        (OFF_MAGIC, 0xdead_beef_u64, "magic"),
        (OFF_CAPACITY, CAP as u64 * 2, "capacity"),
        (OFF_MAX_RECORD, CAP as u64, "max record"),
        (OFF_MAX_RECORD, 0, "max record 0"),
    ] {
        let (p, fds) = Ring::create(CAP, MAX).unwrap();
        p.mapping().atomic(off).store(val, Ordering::Release);
        let e = attach_err(fds);
        assert!(matches!(e, RingError::Incompatible(_)), "{what}: {e}");
    }
    let (p, fds) = Ring::create(CAP, MAX).unwrap();
    p.mapping().write_header_u32(OFF_VERSION, 99);
    assert!(matches!(attach_err(fds), RingError::Incompatible(m) if m.contains("version")));
    let (p, fds) = Ring::create(CAP, MAX).unwrap();
    p.mapping().atomic(OFF_TAIL).store(8, Ordering::Release); // tail beyond head
    assert!(matches!(attach_err(fds), RingError::Corrupt(_)));
}

fn memfd(size: u64, seal: bool) -> std::os::fd::OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd =
        rustix::fs::memfd_create("test", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    if seal {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    }
    fd
}

fn eventfd() -> std::os::fd::OwnedFd {
    rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap()
}

#[test]
fn attach_rejects_small_unsealed_and_foreign_fds() {
    let e = attach_err(RingFds {
        memfd: memfd(100, true),
        doorbell: eventfd(),
    });
    assert!(
        matches!(e, RingError::Incompatible(ref m) if m.contains("smaller")),
        "{e}"
    );
    let e = attach_err(RingFds {
        memfd: memfd(HEADER_SIZE as u64 + CAP as u64, false),
        doorbell: eventfd(),
    });
    assert!(
        matches!(e, RingError::Incompatible(ref m) if m.contains("sealed")),
        "{e}"
    );
    // A correctly sized and sealed memfd that is all zeroes: no magic.
    let e = attach_err(RingFds {
        memfd: memfd(HEADER_SIZE as u64 + CAP as u64, true),
        doorbell: eventfd(),
    });
    assert!(
        matches!(e, RingError::Incompatible(ref m) if m.contains("magic")),
        "{e}"
    );
    // Not a memfd at all (a pipe cannot carry seals).
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let e = attach_err(RingFds {
        memfd: r,
        doorbell: eventfd(),
    });
    assert!(matches!(e, RingError::Incompatible(_)), "{e}");
}

#[test]
fn attach_reports_geometry() {
    let (p, fds) = Ring::create(CAP, MAX).unwrap();
    assert_eq!(
        p.mapping().len(),
        HEADER_SIZE + CAP,
        "the mapping covers header + data"
    );
    let c = Consumer::attach(fds).unwrap();
    assert_eq!(c.capacity(), CAP as u64);
    assert_eq!(c.max_record_bytes(), MAX as u64);
    let _ = c.doorbell_fd().as_fd();
}

#[test]
fn flags_debug_and_bits() {
    let f = RecordFlags::KEYFRAME | RecordFlags::from_bits_retain(1 << 20);
    assert_eq!(format!("{f:?}"), "RecordFlags(KEYFRAME | 0x100000)");
    let mut g = f;
    g.remove(RecordFlags::KEYFRAME);
    assert!(!g.contains(RecordFlags::KEYFRAME));
    assert_eq!(g.bits(), 1 << 20);
}
