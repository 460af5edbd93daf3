//! Property test: random interleavings of writes, in-place reservations and reads against a
//! `VecDeque` model. Checks contents, order, the drop policy and the gap accounting.

use std::collections::VecDeque;

use proptest::prelude::*;
use punktfunk_ring::{
    Consumer, RecordFlags, RecordMeta, Ring, WriteOutcome, max_payload_for_capacity,
    record_footprint,
};

#[derive(Clone, Debug)]
enum Op {
    /// Copying write of `len` bytes (as a fraction of the max, so every ring size gets big ones).
    Write { permille: u16, keyframe: bool },
    /// Two-phase write in place; `abort` drops the slot uncommitted.
    Reserve { permille: u16, abort: bool },
    /// Read (and release) up to `n` records.
    Read { n: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u16..=1000, any::<bool>()).prop_map(|(permille, keyframe)| Op::Write { permille, keyframe }),
        2 => (0u16..=1000, prop::bool::weighted(0.2)).prop_map(|(permille, abort)| Op::Reserve { permille, abort }),
        3 => (0u8..6).prop_map(|n| Op::Read { n }),
    ]
}

fn byte(frame: u64, i: usize) -> u8 {
    (frame.wrapping_mul(0x9E37_79B9).wrapping_add(i as u64 * 13) >> 3) as u8
}

fn fill(frame: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte(frame, i);
    }
}

#[derive(Debug)]
struct Expected {
    frame: u64,
    len: usize,
    dropped_before: u64,
    keyframe: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn ring_matches_model(
        cap_words in prop::sample::select(vec![512usize, 520, 700, 1024, 2048]),
        max_divisor in 1u64..4,
        ops in prop::collection::vec(op(), 1..400),
    ) {
        let capacity = cap_words * 8;
        let max = (max_payload_for_capacity(capacity as u64) / max_divisor) as usize;
        let (mut producer, fds) = Ring::create(capacity, max).unwrap();
        let mut consumer = Consumer::attach(fds).unwrap();

        let mut model: VecDeque<Expected> = VecDeque::new();
        let mut pending: u64 = 0;
        let mut dropped_total: u64 = 0;
        let mut written_total: u64 = 0;
        let mut frame: u64 = 0;

        for op in ops {
            match op {
                Op::Write { permille, keyframe } => {
                    let len = max * permille as usize / 1000;
                    let footprint = record_footprint(len as u64).unwrap();
                    let free_before = capacity as u64 - producer.stats().lag_bytes;
                    let mut payload = vec![0u8; len];
                    fill(frame, &mut payload);
                    let meta = RecordMeta {
                        frame_index: frame,
                        flags: RecordFlags::empty().with(RecordFlags::KEYFRAME, keyframe),
                        captured_ns: frame + 1,
                        encode_start_ns: frame + 2,
                        encode_end_ns: frame + 3,
                    };
                    match producer.write(&meta, &payload).unwrap() {
                        WriteOutcome::Written(w) => {
                            prop_assert!(footprint <= free_before);
                            prop_assert_eq!(w.dropped_before, pending);
                            model.push_back(Expected { frame, len, dropped_before: pending, keyframe });
                            pending = 0;
                            written_total += 1;
                        }
                        WriteOutcome::Dropped { pending_dropped } => {
                            // An empty ring always takes a record of at most max bytes.
                            prop_assert!(!model.is_empty(), "dropped although the ring was empty");
                            pending += 1;
                            dropped_total += 1;
                            prop_assert_eq!(pending_dropped, pending);
                        }
                    }
                    frame += 1;
                }
                Op::Reserve { permille, abort } => {
                    let len = max * permille as usize / 1000;
                    match producer.reserve(len).unwrap() {
                        Some(mut slot) => {
                            fill(frame, slot.payload_mut());
                            if abort {
                                drop(slot);
                                pending += 1;
                                dropped_total += 1;
                            } else {
                                let meta = RecordMeta { frame_index: frame, captured_ns: frame + 1,
                                    encode_start_ns: frame + 2, encode_end_ns: frame + 3,
                                    ..RecordMeta::default() };
                                let w = slot.commit(&meta);
                                prop_assert_eq!(w.dropped_before, pending);
                                model.push_back(Expected { frame, len, dropped_before: pending, keyframe: false });
                                pending = 0;
                                written_total += 1;
                            }
                        }
                        None => {
                            prop_assert!(!model.is_empty(), "reservation refused on an empty ring");
                            pending += 1;
                            dropped_total += 1;
                        }
                    }
                    frame += 1;
                }
                Op::Read { n } => {
                    for _ in 0..n {
                        let got = consumer.try_read().unwrap();
                        match (got, model.pop_front()) {
                            (None, None) => break,
                            (Some(r), Some(e)) => {
                                prop_assert_eq!(r.frame_index(), e.frame);
                                prop_assert_eq!(r.payload().len(), e.len);
                                prop_assert!(r.payload().iter().enumerate().all(|(i, &b)| b == byte(e.frame, i)),
                                    "payload of frame {} differs", e.frame);
                                prop_assert_eq!(r.dropped_before(), e.dropped_before);
                                prop_assert_eq!(r.flags().contains(RecordFlags::DISCONTINUITY), e.dropped_before > 0);
                                prop_assert_eq!(r.flags().contains(RecordFlags::KEYFRAME), e.keyframe);
                                prop_assert_eq!(r.meta().captured_ns, e.frame + 1);
                                prop_assert_eq!(r.meta().encode_end_ns, e.frame + 3);
                            }
                            (got, want) => {
                                let got = got.map(|r| r.frame_index());
                                prop_assert!(false, "ring gave {:?}, model expected {:?}", got, want);
                            }
                        }
                    }
                }
            }
            let s = consumer.stats();
            prop_assert!(s.lag_bytes <= capacity as u64);
            prop_assert_eq!(s.lag_records, model.len() as u64);
            prop_assert_eq!(s.records_written, written_total);
            prop_assert_eq!(s.records_dropped, dropped_total);
            prop_assert_eq!(producer.pending_dropped(), pending);
        }
        // Drain: everything the model holds comes out, in order, then nothing.
        while let Some(e) = model.pop_front() {
            let r = consumer.try_read().unwrap();
            prop_assert_eq!(r.map(|r| r.frame_index()), Some(e.frame));
        }
        prop_assert!(consumer.try_read().unwrap().is_none());
        prop_assert_eq!(consumer.stats().lag_bytes, 0);
    }
}
